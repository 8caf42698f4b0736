"""`sensitivity`: how far each modification moves a face's template as its strength grows.

For each family of methods (blur sigma, lowres size, FGSM / PGD epsilon, the cloaks' SSIM budget)
and each strength: the mean cosine distance between a probe's template after the method and its
clean template (by SFace, dlib and the in-house recogniser; images where either has no face are
left out and counted), and rank-1 of the modified probes against the clean gallery. One curve per
family and judge, in one PNG. The learned optic's strength is its lambda_priv: give stage-I runs
trained at several as `optic:RUN` points of an `optic` family (`--set 'optic=[0.1:RUN,...]'`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from evaluation import metrics
from evaluation.analysis import INHOUSE, RECOGNISERS, inhouse_file
from evaluation.evaluate import Records, analyse, cache_root_of, embeddings, face_set_of, similarity
from evaluation.methods import get
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError

REPORT = "sensitivity.json"
JUDGES = (*RECOGNISERS, INHOUSE)
# family -> (what its strength is, [(strength, method spec), ...] weakest first)
FAMILIES: dict[str, tuple[str, list[tuple[float, str]]]] = {
    "blur": ("sigma px", [(2, "blur2"), (4, "blur4"), (8, "blur8")]),
    "lowres": ("1 / side px", [(1 / 32, "lowres32"), (1 / 16, "lowres16"), (1 / 12, "lowres12"), (1 / 8, "lowres8")]),
    "fgsm": ("epsilon x 255", [(e, f"fgsm:epsilon={e / 255!r}") for e in (2, 4, 8, 16)]),
    "pgd": ("epsilon x 255", [(e, f"pgd:epsilon={e / 255!r}") for e in (2, 4, 8, 16)]),
    "lowkey": ("1 - SSIM budget", [(b, f"lowkey:ssim={1 - b:g}") for b in (0.02, 0.05, 0.1, 0.15)]),
    "fawkes": ("1 - SSIM budget", [(b, f"fawkes:dssim={b / 2:g}") for b in (0.02, 0.05, 0.1, 0.15)]),
}


@dataclass
class SensitivityConfig:
    """Everything that decides a sensitivity run; written resolved next to its report."""

    data: str = ""
    out: str = ""
    families: list[str] = field(default_factory=lambda: sorted(FAMILIES))
    optic: list[str] = field(default_factory=list)  # "LAMBDA_PRIV:RUN" points of an `optic` family
    min_images: int = bounded(2, ge=2)
    max_images: int | None = bounded(None, ge=2)
    split: str | None = None
    inhouse: str = ""  # the in-house recogniser's file; "": weights/inhouse_recogniser_seed0.pt
    cache_dir: str | None = None
    workers: int = bounded(2, ge=1)
    progress: bool = True


def sweeps(cfg: SensitivityConfig) -> dict[str, tuple[str, list[tuple[float, str]]]]:
    """The families to run, each checked; `optic` points parsed from `LAMBDA:RUN`."""
    unknown = [f for f in cfg.families if f not in FAMILIES]
    if unknown:
        raise ObscuraError(f"config key 'families' has {unknown[0]!r}; expected some of: {', '.join(sorted(FAMILIES))}")
    chosen = {f: FAMILIES[f] for f in cfg.families}
    points = []
    for item in cfg.optic:
        strength, _, run = item.partition(":")
        try:
            points.append((float(strength), f"optic:{run}"))
        except ValueError:
            raise ObscuraError(
                f"config key 'optic' has {item!r}; expected LAMBDA_PRIV:RUN, e.g. 0.1:runs/stage1/a"
            ) from None
    if points:
        chosen["optic"] = ("lambda_priv", sorted(points))
    for _, specs in chosen.values():
        for _, spec in specs:
            get(spec)  # a bad spec fails before any image is judged
    return chosen


def point(rec: Records, judge: str) -> dict:
    """Mean cosine distance of modified to clean templates of the probes, and rank-1 against the clean gallery."""
    clean = embeddings(rec.probes, 0, f"{judge}.emb")
    modified = embeddings(rec.probes, 1, f"{judge}.auto")
    both = ~(np.isnan(clean).any(axis=1) | np.isnan(modified).any(axis=1))
    distance = 1.0 - np.sum(clean[both] * modified[both], axis=1)
    gallery = embeddings(rec.gallery, 0, f"{judge}.emb")
    rank1 = float(metrics.rank1_correct(similarity(modified, gallery), rec.probe_labels).mean())
    return {
        "cosine_distance": float(distance.mean()) if both.any() else float("nan"),
        "rank1": rank1,
        "pairs": int(both.sum()),
    }


def write_png(result: dict, path: Path) -> None:
    """One column per family: cosine distance to the clean template (top) and rank-1 (bottom) per judge."""
    matplotlib.use("Agg")
    families = result["families"]
    fig, axes = plt.subplots(2, len(families), figsize=(3.4 * len(families), 5.6), squeeze=False)
    for col, (family, found) in enumerate(families.items()):
        x = [p["strength"] for p in found["points"]]
        for j, judge in enumerate(JUDGES):
            for row, key in enumerate(("cosine_distance", "rank1")):
                axes[row, col].plot(x, [p[judge][key] for p in found["points"]], "o-", color=f"C{j}", label=judge)
        axes[0, col].set(title=family, ylim=(0, 2))
        axes[1, col].set(xlabel=found["strength"], ylim=(0, 1))
    axes[0, 0].set_ylabel("cosine distance to the clean template")
    axes[1, 0].set_ylabel("rank-1 (clean gallery)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    atomic.write_figure(path, fig)
    plt.close(fig)


def run(cfg: SensitivityConfig) -> dict:
    """Every family's curve on `cfg.data`: sensitivity.json, sensitivity.png and config.yaml in `cfg.out`."""
    config.check(cfg)
    if not cfg.data or not cfg.out:
        raise ObscuraError("--data and --out are required")
    inhouse = inhouse_file(cfg.inhouse)
    chosen = sweeps(cfg)
    start = time.time()
    out = Path(cfg.out)
    face_set = face_set_of(cfg.data, cfg.min_images, cfg.split, cfg.progress, cfg.max_images)
    cache_root = cache_root_of(cfg.cache_dir)
    config.write_resolved(cfg, out)
    families: dict[str, dict] = {}
    todo = [(family, strength, spec) for family, (_, specs) in chosen.items() for strength, spec in specs]
    for family, strength, spec in tqdm(todo, desc="sensitivity", unit="method", disable=not cfg.progress):
        rec = analyse(
            face_set, get(spec), cache_root, workers=cfg.workers, progress=False, clean_probes=True, inhouse=inhouse
        )
        found = families.setdefault(family, {"strength": chosen[family][0], "points": []})
        found["points"].append({"strength": strength, "method": spec, **{j: point(rec, j) for j in JUDGES}})
    result = {
        "data": str(Path(cfg.data).resolve()),
        "split": cfg.split,
        "n_identities": len(face_set.identities),
        "n_probes": sum(len(v) - 1 for v in face_set.images.values()),
        "inhouse": inhouse,
        "families": families,
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / REPORT, result)
    write_png(result, out / "sensitivity.png")
    return result
