"""The recognisers' verdict on a fabricated optic: does the part a fab delivers keep the design's privacy?

`simulate.py tolerance --judge-data DIR` runs optics' tolerance analysis (PSF correlation and
centre spot of the fabricated optic, optics.fabrication.tolerance) and then this judge: the
evaluation protocol (evaluation.evaluate: oblivious SFace and dlib, clean gallery) on a small
seeded subset of a face set, once through the design's PSF and once through the fabricated one,
on the same identities and images, by the rule in RULE (fixed before any run). A small subset
resolves only large losses: the report gives each interval's half-width, so a pass on few
identities reads "no loss larger than that".
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation import evaluate
from evaluation.analysis import RECOGNISERS
from faces.face_sets import load_face_set, read_split
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.fabrication.tolerance import ToleranceConfig, run_tolerance
from optics.optic_file import strict_json

JUDGED_PSFS = ("design", "fabricated")
RULE = (
    "for each recogniser (SFace, dlib) and figure (oracle rank-1 against chance = 1 / identities; oracle verification "
    "AUC against chance = 0.5; oracle: each probe aligned with its clean image's landmarks), with ref = max(design's figure, chance): the fabricated PSF loses privacy when "
    "its figure exceeds ref by more than the allowed gain (max_rank1_gain, max_auc_gain) and the lower end of "
    "its 95 % bootstrap interval lies above ref (more than the sampling noise of the subset)"
)


@dataclass
class FabricationJudgeConfig:
    """Which faces judge the fabricated PSF, and how much worse than the design it may be."""

    data: str = ""  # folder of <identity>/<image> files; empty: the recognisers do not judge
    split: str | None = None  # identity names to draw from (e.g. weights/splits/test.txt); None: all of them
    identities: int = bounded(20, ge=2)  # drawn with `seed` from those with >= images_per_identity images
    images_per_identity: int = bounded(10, ge=2)  # each identity's first K images by name: 1 gallery + K-1 probes
    seed: int = 0
    max_rank1_gain: float = bounded(0.02, ge=0, le=1)
    max_auc_gain: float = bounded(0.05, ge=0, le=1)
    workers: int = bounded(2, ge=1)
    cache_dir: str | None = None  # None: the evaluation's default cache
    bootstrap: int = bounded(1000, ge=1)
    progress: bool = True


@dataclass
class JudgedToleranceConfig(ToleranceConfig):
    """A tolerance run (optics.fabrication.tolerance) plus the recognisers' judge of its fabricated PSF."""

    judge: FabricationJudgeConfig = field(default_factory=FabricationJudgeConfig)


def draw_identities(cfg: FabricationJudgeConfig) -> list[str]:
    """`cfg.identities` names drawn with `cfg.seed` from the identities with enough readable images (sorted)."""
    if not Path(cfg.data).is_dir():
        raise ObscuraError(f"--judge-data {cfg.data}: not a folder (expected <identity>/<image> files)")
    names = read_split(cfg.split) if cfg.split else None
    face_set = load_face_set(cfg.data, cfg.images_per_identity, names, max_images=cfg.images_per_identity)
    pool = face_set.identities
    if len(pool) <= cfg.identities:
        return pool
    rng = np.random.default_rng(cfg.seed)
    return sorted(rng.choice(pool, size=cfg.identities, replace=False).tolist())


def run(cfg: JudgedToleranceConfig, out: Path) -> dict:
    """The tolerance analysis, then (with `judge.data`) the recognisers' verdict merged into its privacy check."""
    config.check(cfg)
    identities = draw_identities(cfg.judge) if cfg.judge.data else []  # a bad face folder fails before the sweeps
    report = run_tolerance(cfg, out)
    if not cfg.judge.data:
        return report
    files = {label: out / report["psf_files"][label] for label in JUDGED_PSFS}
    judge = judge_psfs(cfg.judge, identities, files, out / "judge")
    check = report["privacy_check"]
    check.update(recognisers=judge, failures=check["failures"] + judge["failures"])
    check["passed"] = not check["failures"]
    atomic.write_json(out / "tolerance.json", strict_json(report))
    return report


def judge_psfs(cfg: FabricationJudgeConfig, identities: list[str], psf_files: dict[str, Path], out: Path) -> dict:
    """Evaluate each PSF file of JUDGED_PSFS on the same identities; write out/judge.json and one report per PSF."""
    start = time.time()
    split = out / "identities.txt"
    atomic.write_text(split, "".join(f"{name}\n" for name in identities))
    reports = {}
    for label in JUDGED_PSFS:
        run_cfg = evaluate.EvaluateConfig(
            data=cfg.data,
            method=f"psf:{psf_files[label]}",
            out=str(out / label),
            min_images=cfg.images_per_identity,
            max_images=cfg.images_per_identity,
            split=str(split),
            cache_dir=cfg.cache_dir,
            workers=cfg.workers,
            bootstrap=cfg.bootstrap,
            progress=cfg.progress,
        )
        reports[label] = evaluate.run(run_cfg)
    result = {
        **verdict(reports["design"], reports["fabricated"], cfg),
        "data": reports["design"]["data"],
        "identities_file": str(split),
        "n_identities": reports["design"]["n_identities"],
        "n_probes": reports["design"]["n_probes"],
        "reports": {label: str(out / label / "report.json") for label in JUDGED_PSFS},
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / "judge.json", result)
    return result


def verdict(design: dict, fabricated: dict, cfg: FabricationJudgeConfig) -> dict:
    """RULE applied to two evaluation results of the same faces: per recogniser and figure, the comparison and failures."""
    failures, figures = [], {}
    for name in RECOGNISERS:
        d, f = design["privacy"][name], fabricated["privacy"][name]
        rows = {
            "rank1_oracle": (
                d["rank1_oracle"],
                f["rank1_oracle"],
                f["rank1_oracle_ci95"],
                d["chance"],
                cfg.max_rank1_gain,
            ),
            "auc_oracle": (d["auc_oracle"], f["auc_oracle"], f["auc_oracle_ci95"], 0.5, cfg.max_auc_gain),
        }
        figures[name] = {}
        for figure, (design_value, value, ci, chance, gain) in rows.items():
            ref = max(design_value, chance)
            lost = value - ref > gain and ci[0] > ref
            figures[name][figure] = {
                "design": design_value,
                "fabricated": value,
                "fabricated_ci95": ci,
                "chance": chance,
                "ci_half_width": (ci[1] - ci[0]) / 2,
                "lost": bool(lost),
            }
            if lost:
                failures.append(
                    f"{name}: the fabricated PSF's {figure} is {value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}], above "
                    f"max(design {design_value:.3f}, chance {chance:.3f}) by {value - ref:.4f}; "
                    f"expected at most +{gain:g} (or within the interval)"
                )
    return {"passed": not failures, "failures": failures, "figures": figures, "rule": RULE}
