"""`recognise-modified`: recognition when the gallery, the probes or both hold modified images.

The protocol of privacy through image modification: a face database that stores only modified
images keeps working when probes are modified the same way (gallery modified x probes modified
high), while a leaked gallery says little about the original faces (gallery modified x probes
clean low). Gallery and probes are `evaluate`'s (first image of each identity; every other image),
so the clean x clean cell is `evaluate --method clean` exactly. Each cell has rank-1 and TAR at
FAR `far` by SFace, dlib and a torch recogniser of the training identities (the committed in-house
one; for a capture method, pass the adaptive attacker trained on its captures). Beside the table:
the Laplace mechanism on the stored clean templates, rank-1 and TAR against its scale b.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from evaluation import metrics
from evaluation.analysis import INHOUSE, RECOGNISERS, inhouse_file
from evaluation.evaluate import Records, analyse, cache_root_of, embeddings, face_set_of, similarity
from evaluation.methods import get
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError
from protect.laplace_templates import dp_epsilon, noisy_templates

REPORT = "report.json"
SIDES = ("clean", "modified")
JUDGES = (*RECOGNISERS, INHOUSE)


@dataclass
class ModifiedDomainConfig:
    """Everything that decides a modified-domain run; written resolved next to its report."""

    data: str = ""
    method: str = "clean"
    out: str = ""
    min_images: int = bounded(2, ge=2)  # one gallery image plus probes
    max_images: int | None = bounded(None, ge=2)
    split: str | None = None  # file of identity names (by identity: e.g. weights/splits/test.txt)
    inhouse: str = ""  # the third recogniser's file; "": weights/inhouse_recogniser_seed0.pt
    cache_dir: str | None = None
    workers: int = bounded(2, ge=1)
    bootstrap: int = bounded(1000, ge=1)
    seed: int = 0  # bootstrap resamples and the Laplace noise
    far: float = bounded(1e-3, gt=0, lt=1)
    laplace_scales: list[float] = field(default_factory=lambda: [0.0, 0.02, 0.05, 0.1, 0.2, 0.5])
    progress: bool = True


def check(cfg: ModifiedDomainConfig) -> str:
    """Validate before any work; returns the in-house recogniser's file."""
    config.check(cfg)
    for key in ("data", "out"):
        if not getattr(cfg, key):
            raise ObscuraError(f"--{key} is required")
    bad = [b for b in cfg.laplace_scales if not b >= 0]
    if bad:
        raise ObscuraError(f"config key 'laplace_scales' has {bad[0]}; expected scales >= 0")
    get(cfg.method)
    return inhouse_file(cfg.inhouse)


def side_embeddings(rec: Records, judge: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per side (clean, modified): (gallery, probe) templates of one judge, NaN rows where it found no face."""
    clean_key, modified_key = f"{judge}.emb", f"{judge}.auto"
    return {
        "clean": (embeddings(rec.gallery, 0, clean_key), embeddings(rec.probes, 0, clean_key)),
        "modified": (embeddings(rec.gallery, 1, modified_key), embeddings(rec.probes, 1, modified_key)),
    }


def cell(scores: np.ndarray, labels: np.ndarray, cfg: ModifiedDomainConfig) -> dict:
    """Rank-1 and verification figures of one probes x gallery score matrix."""
    found = metrics.privacy_metrics(scores, labels, cfg.far, cfg.bootstrap, cfg.seed)
    return {k: found[k] for k in ("rank1", "rank1_ci95", "tar_at_far_1e-3", "tar_at_far_1e-3_ci95", "auc", "eer")}


def table(rec: Records, judge: str, cfg: ModifiedDomainConfig) -> dict:
    """The 2x2 table of one judge (gallery side -> probe side -> figures) and its gap."""
    sides = side_embeddings(rec, judge)
    result: dict = {
        f"gallery_{g}": {
            f"probes_{p}": cell(similarity(sides[p][1], sides[g][0]), rec.probe_labels, cfg) for p in SIDES
        }
        for g in SIDES
    }
    modified = result["gallery_modified"]
    result["gap_rank1"] = modified["probes_modified"]["rank1"] - modified["probes_clean"]["rank1"]
    result["probes_without_face"] = {s: int(np.isnan(sides[s][1]).any(axis=1).sum()) for s in SIDES}
    result["gallery_without_face"] = {s: int(np.isnan(sides[s][0]).any(axis=1).sum()) for s in SIDES}
    return result


def laplace_curve(rec: Records, judge: str, cfg: ModifiedDomainConfig) -> list[dict]:
    """Clean probes against the clean gallery stored with Laplace noise of each scale: rank-1, TAR, epsilon."""
    gallery, probes = side_embeddings(rec, judge)["clean"]
    rng = np.random.default_rng(cfg.seed)
    points = []
    for scale in cfg.laplace_scales:
        stored = noisy_templates(gallery, scale, rng)
        unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
        found = cell(similarity(probes, unit), rec.probe_labels, cfg)
        points.append({"scale": scale, "dp_epsilon": dp_epsilon(gallery.shape[1], scale), **found})
    return points


def write_png(result: dict, path: Path) -> None:
    """The four cells per judge as bars, and rank-1 against the Laplace scale."""
    matplotlib.use("Agg")
    fig, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.2
    for j, judge in enumerate(JUDGES):
        cells = [result["tables"][judge][f"gallery_{g}"][f"probes_{p}"]["rank1"] for g in SIDES for p in SIDES]
        bars.bar(np.arange(4) + (j - 1) * width, cells, width, label=judge)
        points = result["laplace"][judge]
        curve.plot([p["scale"] for p in points], [p["rank1"] for p in points], "o-", label=judge)
    bars.set_xticks(range(4), [f"gallery {g}\nprobes {p}" for g in SIDES for p in SIDES], fontsize=8)
    bars.axhline(result["chance"], color="grey", ls=":", label="chance")
    bars.set(ylabel="rank-1", title=f"{result['method']}: modified-domain recognition", ylim=(0, 1))
    curve.set_xscale("symlog", linthresh=0.01)
    curve.axhline(result["chance"], color="grey", ls=":")
    curve.set(xlabel="Laplace scale b on stored templates", ylabel="rank-1 (clean probes)", ylim=(0, 1))
    bars.legend(fontsize=8)
    curve.legend(fontsize=8)
    fig.tight_layout()
    atomic.write_figure(path, fig)
    plt.close(fig)


def write_markdown(result: dict, path: Path) -> None:
    """report.md: the 2x2 table per judge, rank-1 / TAR."""
    lines = [f"# recognise-modified: {result['method']}", "", result["protocol"], ""]
    lines += ["| judge | gallery | probes clean | probes modified |", "|---|---|---|---|"]
    for judge in JUDGES:
        for g in SIDES:
            row = result["tables"][judge][f"gallery_{g}"]
            text = [f"{row[f'probes_{p}']['rank1']:.3f} / {row[f'probes_{p}']['tar_at_far_1e-3']:.3f}" for p in SIDES]
            lines.append(f"| {judge} | {g} | {text[0]} | {text[1]} |")
    lines += ["", f"rank-1 / TAR at FAR {result['far']:g}; chance {result['chance']:.3f}.", ""]
    atomic.write_text(path, "\n".join(lines))


def run(cfg: ModifiedDomainConfig) -> dict:
    """The 2x2 protocol of `cfg.method` on `cfg.data`: report.json, report.md, modified_domain.png, config."""
    inhouse = check(cfg)
    method = get(cfg.method)
    start = time.time()
    out = Path(cfg.out)
    face_set = face_set_of(cfg.data, cfg.min_images, cfg.split, cfg.progress, cfg.max_images)
    cache_root = cache_root_of(cfg.cache_dir)
    config.write_resolved(cfg, out)
    atomic.write_text(out / "identities.txt", "".join(f"{n}\n" for n in face_set.identities))
    rec = analyse(
        face_set, method, cache_root, workers=cfg.workers, progress=cfg.progress, clean_probes=True, inhouse=inhouse
    )
    result = {
        "method": method.name,
        "method_description": method.description,
        "data": str(Path(cfg.data).resolve()),
        "split": cfg.split,
        "n_identities": len(face_set.identities),
        "n_probes": len(rec.probes),
        "chance": 1.0 / len(face_set.identities),
        "far": cfg.far,
        "inhouse": inhouse,
        "protocol": (
            "gallery = the first image of each identity, probes = every other image; each side clean or "
            "modified by the method; closed-set rank-1 over the gallery identities and TAR at FAR over every "
            "probe-versus-gallery pair; Laplace: clean probes against the clean gallery templates stored "
            "with Laplace(0, b) noise per coordinate"
        ),
        "tables": {judge: table(rec, judge, cfg) for judge in JUDGES},
        "laplace": {judge: laplace_curve(rec, judge, cfg) for judge in JUDGES},
        "bootstrap": cfg.bootstrap,
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / REPORT, result)
    write_markdown(result, out / "report.md")
    write_png(result, out / "modified_domain.png")
    return result
