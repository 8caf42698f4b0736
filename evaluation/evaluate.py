"""One evaluation run: a method on a face set, judged by oblivious recognisers and utility detectors.

Protocol (see docs/baselines.md): gallery = first readable image by name of each identity, clean;
probes = every other image of that identity after the method; closed-set rank-1 over all gallery
identities; verification over every probe-versus-gallery pair.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation import metrics, report
from evaluation.analysis import (
    RECOGNISERS,
    UTILITY_DETECTORS,
    Task,
    face_from,
    init_worker,
    run_task,
)
from evaluation.methods import Method, get
from faces import result_cache
from faces.face_sets import FaceSet, load_face_set, read_split
from obscura import atomic, config
from obscura.config import bounded
from obscura.errors import ObscuraError

DEFAULT_MIN_IMAGES = 10  # the LFW-a protocol: identities with >= 10 images (158 identities, 4,324 images)


@dataclass
class EvaluateConfig:
    """Everything that decides an evaluation run; written resolved next to its report."""

    data: str = ""
    method: str = "clean"
    out: str = ""
    min_images: int = bounded(DEFAULT_MIN_IMAGES, ge=2)  # one gallery image plus probes
    split: str | None = None
    cache_dir: str | None = None  # None: $OBSCURA_CACHE/evaluation or ~/.cache/obscura/evaluation
    workers: int = bounded(2, ge=1)
    bootstrap: int = bounded(1000, ge=1)  # resamples of the probes for the 95 % intervals
    seed: int = 0
    far: float = bounded(1e-3, gt=0, lt=1)
    examples: int = bounded(6, ge=0)
    progress: bool = True


@dataclass
class Records:
    """Per-image analysis results of a run, gallery first (one per identity) then probes."""

    face_set: FaceSet
    gallery: list[tuple[dict, dict]]
    probes: list[tuple[dict, dict]]
    probe_labels: np.ndarray
    probe_paths: list[str]


def check(cfg: EvaluateConfig) -> Method:
    """Validate a configuration before any work; returns the method."""
    config.check(cfg)
    if not cfg.data:
        raise ObscuraError("--data is required (a folder of <identity>/<image> files)")
    if not cfg.out:
        raise ObscuraError("--out is required (the folder for report.json, report.md and PNGs)")
    return get(cfg.method)


def analyse(cfg: EvaluateConfig, face_set: FaceSet, method: Method, cache_root: Path) -> Records:
    """Run every image of the face set through the models (in `cfg.workers` processes)."""

    ids = face_set.identities
    tasks: list[Task] = [Task(str(face_set.images[i][0].path), True) for i in ids]
    labels: list[int] = []
    for col, name in enumerate(ids):
        for img in face_set.images[name][1:]:
            tasks.append(Task(str(img.path), method.is_identity))
            labels.append(col)
    bar = dict(total=len(tasks), desc=f"evaluate {method.name}", unit="img", disable=not cfg.progress)
    if cfg.workers == 1:
        init_worker(method.name, str(cache_root))
        results = [run_task(t) for t in tqdm(tasks, **bar)]
    else:
        # spawn, not fork: checking the method has already run torch in this process (an optic's PSF),
        # and a child forked while torch's thread pool holds a lock waits on it forever (seen with optic:RUN)
        with mp.get_context("spawn").Pool(cfg.workers, init_worker, (method.name, str(cache_root))) as pool:
            results = list(tqdm(pool.imap(run_task, tasks, chunksize=4), **bar))
    n = len(ids)
    return Records(face_set, results[:n], results[n:], np.array(labels, dtype=np.int64), [t.path for t in tasks[n:]])


def _embeddings(records: list[tuple[dict, dict]], side: int, key: str, dim_hint: int = 128) -> np.ndarray:
    """Stack one embedding per record (NaN rows where the face was not found)."""
    vecs = [rec[side].get(key) for rec in records]
    dim = next((v.shape[0] for v in vecs if v is not None), dim_hint)
    return np.stack([np.full(dim, np.nan) if v is None else np.asarray(v, float) for v in vecs])


def similarity(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine similarities of unit embeddings; a missing face on either side scores NO_FACE_SCORE."""
    scores = np.nan_to_num(probes) @ np.nan_to_num(gallery).T
    scores[np.isnan(probes).any(axis=1)] = metrics.NO_FACE_SCORE
    scores[:, np.isnan(gallery).any(axis=1)] = metrics.NO_FACE_SCORE
    return scores


def privacy(rec: Records, cfg: EvaluateConfig) -> dict[str, dict]:
    """Per recogniser: main protocol (clean gallery), oracle alignment, and both-transformed protocol."""
    out: dict[str, dict] = {}
    labels = rec.probe_labels
    n_id = len(rec.gallery)
    for name in RECOGNISERS:
        gallery = _embeddings(rec.gallery, 0, f"{name}.emb")
        auto = _embeddings(rec.probes, 1, f"{name}.auto")
        oracle = _embeddings(rec.probes, 1, f"{name}.oracle")
        gallery_t = _embeddings(rec.gallery, 1, f"{name}.auto")
        gallery_t_oracle = _embeddings(rec.gallery, 1, f"{name}.oracle")
        main = metrics.privacy_metrics(similarity(auto, gallery), labels, cfg.far, cfg.bootstrap, cfg.seed)
        oracle_scores = similarity(oracle, gallery)
        r1_oracle, r1_oracle_ci = metrics.rank1_with_ci(
            metrics.rank1_correct(oracle_scores, labels), cfg.bootstrap, cfg.seed
        )
        ver_oracle = metrics.verification(metrics.pair_scores(oracle_scores, labels), cfg.far)
        both = similarity(auto, gallery_t)
        both_oracle = similarity(oracle, gallery_t_oracle)
        ver_both = metrics.verification(metrics.pair_scores(both, labels), cfg.far)
        out[name] = {
            **main,
            "rank1_oracle": r1_oracle,
            "rank1_oracle_ci95": r1_oracle_ci,
            "auc_oracle": ver_oracle["auc"],
            "tar_at_far_1e-3_oracle": ver_oracle["tar_at_far"],
            "chance": 1.0 / n_id,
            "transformed_gallery": {
                "rank1": float(metrics.rank1_correct(both, labels).mean()),
                "rank1_oracle": float(metrics.rank1_correct(both_oracle, labels).mean()),
                "auc": ver_both["auc"],
                "eer": ver_both["eer"],
                "tar_at_far_1e-3": ver_both["tar_at_far"],
            },
            "probes_without_face": int(np.isnan(auto).any(axis=1).sum()),
            "probes_without_clean_face": int(np.isnan(oracle).any(axis=1).sum()),
            "gallery_without_face": int(np.isnan(gallery).any(axis=1).sum()),
            "transformed_gallery_without_face": int(np.isnan(gallery_t).any(axis=1).sum()),
        }
    return out


def utility(rec: Records) -> dict:
    """FD, BB, LM, NME per utility detector, over all probes (256x256 source versus output).

    For capture methods with a regressor also `landmark_nme`: its landmarks on the capture against
    dlib's 68 landmarks on the clean image, over the inter-ocular distance; and beside it
    `landmark_nme_mean_shape`, the NME of answering every probe with the mean of those clean
    landmarks: on aligned crops a regressor that has learned nothing from the capture scores about that.
    """
    result: dict = {
        name: metrics.utility(
            [face_from(clean, f"util.{name}") for clean, _ in rec.probes],
            [face_from(out, f"util.{name}") for _, out in rec.probes],
        )
        for name in UTILITY_DETECTORS
    }
    if any("regressor.lm" in out for _, out in rec.probes):
        nme = metrics.landmark_nme(
            [clean.get("dlib.lm") for clean, _ in rec.probes], [out.get("regressor.lm") for _, out in rec.probes]
        )
        result["landmark_nme"] = nme["landmark_nme"]
        result["landmark_nme_pairs"] = nme["n_pairs"]
        refs = [clean.get("dlib.lm") for clean, _ in rec.probes]
        mean = np.mean([r for r in refs if r is not None], axis=0)
        result["landmark_nme_mean_shape"] = metrics.landmark_nme(refs, [mean] * len(refs))["landmark_nme"]
    return result


def run(cfg: EvaluateConfig) -> dict:
    """Evaluate `cfg.method` on `cfg.data` and write report.json, report.md, PNGs, config and identities."""

    method = check(cfg)
    start = time.time()
    out = Path(cfg.out)
    identities = read_split(cfg.split) if cfg.split else None
    face_set = load_face_set(cfg.data, cfg.min_images, identities, progress=cfg.progress)
    cache_root = Path(cfg.cache_dir) if cfg.cache_dir else result_cache.default_dir()
    config.write_resolved(cfg, out)
    atomic.write_text(out / "identities.txt", "".join(f"{n}\n" for n in face_set.identities))
    rec = analyse(cfg, face_set, method, cache_root)
    result = {
        "method": method.name,
        "method_description": method.description,
        "data": str(Path(cfg.data).resolve()),
        "min_images": cfg.min_images,
        "split": cfg.split,
        "n_identities": len(face_set.identities),
        "n_gallery": len(rec.gallery),
        "n_probes": len(rec.probes),
        "n_images": face_set.n_images,
        "greyscale_images": face_set.grey_images,
        "colour_handling": "greyscale images are replicated to three identical RGB channels before the method and every model",
        "unreadable_images": face_set.unreadable,
        "privacy": privacy(rec, cfg),
        "utility": utility(rec),
        "protocol": report.PROTOCOL,
        "bootstrap": cfg.bootstrap,
        "seed": cfg.seed,
        "cache_dir": str(cache_root),
        "workers": cfg.workers,
        "seconds": round(time.time() - start, 1),
    }
    report.write(result, rec, method, out, cfg)
    return result
