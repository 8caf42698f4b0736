"""Stage-II evaluation on test identities: utility, identity leakage, diversity and realism of anonymized faces.

Every source face (centre crop of the stage-I size) goes capture -> heatmaps -> `styles`
anonymized faces. Judged at 256 x 256 (sources and outputs resized), by models nobody here trained:
- utility: FD, BB, LM with MTCNN and dlib between source and each output (evaluation.metrics.utility);
- identity leakage: share of outputs that SFace (cosine >= 0.363, OpenCV zoo's threshold) or dlib
  (raw-descriptor distance < 0.6, dlib's) verifies as the source face itself; an output where the
  recogniser finds no face is not verified; beside it the same share against another test
  person's face (the recogniser's false accepts on these outputs, the level leakage must exceed);
- diversity: mean pairwise SFace embedding distance (1 - cosine) among the outputs of one source;
- realism: Frechet distance between SFace embeddings of outputs and of the real source faces,
  and Inception FID when the pytorch-fid weights file is given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from anonymizer.anonymize import Anonymizer
from evaluation import metrics
from evaluation.realism import frechet_distance, inception_features
from faces.alignment import centre_crop
from faces.face_models import Face, recognitions, utility_detectors
from faces.face_sets import load_face_set, read_rgb, read_split, round_robin
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8, to_uint8

JUDGE_SIZE = 256
SFACE_COSINE_THRESHOLD = 0.363  # OpenCV zoo SFace: same identity at cosine >= 0.363
DLIB_DISTANCE_THRESHOLD = 0.6  # dlib face recognition: same identity at Euclidean distance < 0.6


@dataclass
class AnonymizerEvalConfig:
    """Everything that decides a stage-II evaluation; written resolved next to its report."""

    data: str = ""
    split: str = ""  # identity names to use (the stage-I test split); "" = every identity in --data
    min_images: int = bounded(2, ge=2)  # identities with at least this many readable images
    anonymizer: str = ""  # a stage-II generator_ema.pt
    stage1: str = ""  # "" = the stage-I result recorded in the anonymizer file
    out: str = ""
    source: Literal["capture", "lowres16"] = "capture"
    styles: int = bounded(4, ge=2)  # diversity and the Frechet distance need pairs
    max_sources: int = bounded(200, ge=2)  # taken round-robin over identities, so few sources still span many people
    batch_size: int = bounded(16, ge=1)
    inception_weights: str = ""  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth, for Inception FID
    seed: int = 0
    progress: bool = True


class Judges:
    """SFace (YuNet-aligned), dlib (HOG + 68 points, ResNet), and the utility detectors."""

    def __init__(self) -> None:

        self.rec = recognitions()
        self.utility = utility_detectors(self.rec["dlib"].detector)

    def look(self, rgb: np.ndarray) -> dict[str, Any]:
        """Faces and identity features of one 256 x 256 image."""
        out: dict[str, Any] = {f"util.{name}": det.detect(rgb).central(rgb.shape) for name, det in self.utility.items()}
        sface = self.rec["sface"]
        face = sface.detector.detect(rgb).central(rgb.shape)
        out["sface"] = None if face is None else sface.embed(rgb, face)
        dlib_face: Face | None = out["util.dlib"]
        out["dlib"] = None if dlib_face is None else self.rec["dlib"].recogniser.descriptor(rgb, dlib_face)
        return out


def judge_size(rgb: np.ndarray) -> np.ndarray:
    """An image resized to the judges' 256 x 256 (bilinear), as the reference scales its outputs."""

    return cv2.resize(rgb, (JUDGE_SIZE, JUDGE_SIZE), interpolation=cv2.INTER_LINEAR)


def source_images(cfg: AnonymizerEvalConfig) -> list[Path]:
    """Up to max_sources images, round-robin over the (split's) identities in name order."""

    names = read_split(cfg.split) if cfg.split else None
    face_set = load_face_set(cfg.data, cfg.min_images, names, progress=False)
    ordered = round_robin([face_set.images[n] for n in face_set.identities])
    return [img.path for img in ordered[: cfg.max_sources]]


VERIFIERS = {
    "sface": lambda a, b: float(a @ b) >= SFACE_COSINE_THRESHOLD,
    "dlib": lambda a, b: float(np.linalg.norm(a - b)) < DLIB_DISTANCE_THRESHOLD,
}


def verified_share(sources: list[dict], outputs: list[list[dict]], name: str) -> tuple[float, int, int]:
    """(share of outputs recogniser `name` verifies as the paired source, outputs judged, of them with a face)."""
    judged = [(s[name], o[name]) for s, outs in zip(sources, outputs) for o in outs if s[name] is not None]
    verified = [o is not None and VERIFIERS[name](s, o) for s, o in judged]
    share = float(np.mean(verified)) if verified else float("nan")
    return share, len(verified), int(sum(o is not None for _, o in judged))


def impostor_pairing(identities: list[str]) -> list[int] | None:
    """For each source, the next source (cyclically) of another identity; None when all share one identity."""
    n = len(identities)
    pairing = [next((j % n for j in range(i + 1, i + n) if identities[j % n] != identities[i]), -1) for i in range(n)]
    return None if -1 in pairing else pairing


def leakage(
    sources: list[dict], outputs: list[list[dict]], identities: list[str] | None = None
) -> dict[str, float | int]:
    """Share of outputs each recogniser verifies as its own source face (no face: not verified).

    With the sources' identities, also `<name>_impostor`: the same share against the source face of
    another person. It is the recogniser's false-accept rate on these outputs, so leakage is only
    evidence of identity where it exceeds it.
    """
    result: dict[str, float | int] = {}
    pairing = impostor_pairing(identities) if identities else None
    for name in VERIFIERS:
        result[name], result[f"{name}_outputs_judged"], result[f"{name}_outputs_with_face"] = verified_share(
            sources, outputs, name
        )
        if pairing is not None:
            result[f"{name}_impostor"] = verified_share([sources[j] for j in pairing], outputs, name)[0]
    return result


def diversity(outputs: list[list[dict]]) -> float:
    """Mean pairwise SFace distance (1 - cosine) among the outputs of each source, over sources with >= 2 faces."""
    per_source = []
    for outs in outputs:
        e = np.array([o["sface"] for o in outs if o["sface"] is not None])
        if len(e) >= 2:
            cos = e @ e.T
            per_source.append(float(np.mean(1.0 - cos[np.triu_indices(len(e), 1)])))
    return float(np.mean(per_source)) if per_source else float("nan")


def utility(sources: list[dict], outputs: list[list[dict]]) -> dict[str, dict]:
    """FD, BB, LM (and NME) per utility detector, over every (source, output) pair."""
    return {
        name: metrics.utility(
            [s[f"util.{name}"] for s, outs in zip(sources, outputs) for _ in outs],
            [o[f"util.{name}"] for outs in outputs for o in outs],
        )
        for name in ("mtcnn", "dlib")
    }


def realism(
    sources: list[dict], outputs: list[list[dict]], real: np.ndarray, fake: np.ndarray, weights: str
) -> dict[str, Any]:
    """Frechet distance of SFace embeddings (outputs vs real faces), and Inception FID with the given weights."""
    real_e = np.array([s["sface"] for s in sources if s["sface"] is not None])
    fake_e = np.array([o["sface"] for outs in outputs for o in outs if o["sface"] is not None])
    enough = min(len(real_e), len(fake_e)) >= 2
    result: dict[str, Any] = {"sface_frechet": frechet_distance(real_e, fake_e) if enough else float("nan")}
    if weights:
        features = inception_features(weights)
        result["inception_fid"] = frechet_distance(features(real), features(fake))
    else:
        result["inception_fid"] = None
        result["inception_fid_note"] = (
            "not run: pass inception_weights (pytorch-fid's weights file; it cannot be downloaded here)"
        )
    return result


def run(cfg: AnonymizerEvalConfig) -> dict[str, Any]:
    """Anonymize the sources, judge them, and write report.json, report.md, examples.png and config.yaml."""

    config.check(cfg)
    for key in ("data", "anonymizer", "out"):
        if not getattr(cfg, key):
            raise ObscuraError(f"--{key} is required")
    start = time.time()
    model = Anonymizer.load(cfg.anonymizer, cfg.stage1 or None)
    paths = source_images(cfg)
    out = Path(cfg.out)
    config.write_resolved(cfg, out)
    judges = Judges()
    sources, outputs, real, fake, examples = [], [], [], [], []
    for i in tqdm(range(0, len(paths), cfg.batch_size), desc=f"anonymize ({cfg.source})", disable=not cfg.progress):
        crops = [centre_crop(read_rgb(p)[0], model.crop_size, str(p))[0] for p in paths[i : i + cfg.batch_size]]
        faces = from_uint8(np.stack(crops))
        result = model.anonymize(faces, cfg.styles, cfg.seed + i, cfg.source)
        outs = to_uint8(result.outputs)
        for crop, k_outs, seen in zip(crops, outs, to_uint8(result.inputs)):
            real.append(judge_size(crop))
            fake.extend(judge_size(o) for o in k_outs)
            sources.append(judges.look(real[-1]))
            outputs.append([judges.look(judge_size(o)) for o in k_outs])
            if len(examples) < 6:
                examples.append((crop, seen, k_outs))
    report = {
        "anonymizer": str(Path(cfg.anonymizer).resolve()),
        "stage1": model.info["stage1"] if not cfg.stage1 else cfg.stage1,
        "source": cfg.source,
        "data": str(Path(cfg.data).resolve()),
        "split": cfg.split,
        "n_sources": len(sources),
        "styles": cfg.styles,
        "n_outputs": len(sources) * cfg.styles,
        "judge_size": JUDGE_SIZE,
        "utility": utility(sources, outputs),
        "identity_leakage": leakage(sources, outputs, [p.parent.name for p in paths]),
        "diversity_sface": diversity(outputs),
        "realism": realism(sources, outputs, np.stack(real), np.stack(fake), cfg.inception_weights),
        "thresholds": {"sface_cosine": SFACE_COSINE_THRESHOLD, "dlib_distance": DLIB_DISTANCE_THRESHOLD},
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / "report.json", report)
    atomic.write_text(out / "report.md", markdown(report))
    examples_png(out / "examples.png", examples, cfg.source)
    return report


def markdown(r: dict[str, Any]) -> str:
    """A short human-readable report."""
    u, leak = r["utility"], r["identity_leakage"]
    lines = [
        f"# Stage-II anonymizer on {r['n_sources']} sources x {r['styles']} styles ({r['source']})",
        "",
        f"- identity leakage: SFace {leak['sface']:.4f}, dlib {leak['dlib']:.4f} (share of outputs verified as their source); "
        f"against another person's face (false accepts): SFace {leak.get('sface_impostor', float('nan')):.4f}, "
        f"dlib {leak.get('dlib_impostor', float('nan')):.4f}",
        f"- diversity (mean pairwise SFace distance among one source's outputs): {r['diversity_sface']:.3f}",
        f"- realism: Frechet distance of SFace embeddings {r['realism']['sface_frechet']:.3f}; Inception FID "
        f"{r['realism']['inception_fid'] if r['realism']['inception_fid'] is not None else 'not run'}",
        *(
            f"- {name}: FD {v['fd']:.3f}, BB {v['bb']:.2f} px, LM {v['lm']:.2f} px at {r['judge_size']} px"
            for name, v in u.items()
        ),
        f"- time: {r['seconds']} s",
        "",
    ]
    return "\n".join(lines)


def examples_png(path: Path, examples: list, source: str) -> Path:
    """Source, generator input and the outputs of a few faces."""

    matplotlib.use("Agg")

    cols = 2 + len(examples[0][2])
    fig, axes = plt.subplots(len(examples), cols, figsize=(1.8 * cols, 1.9 * len(examples)), squeeze=False)
    for row, (crop, seen, outs) in enumerate(examples):
        for col, (img, title) in enumerate(
            [(crop, "source"), (seen, source), *((o, f"style {k + 1}") for k, o in enumerate(outs))]
        ):
            axes[row, col].imshow(img)
            axes[row, col].axis("off")
            if row == 0:
                axes[row, col].set_title(title, fontsize=8)
    fig.tight_layout()
    return atomic.write_figure(path, fig)
