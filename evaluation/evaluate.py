"""One evaluation run: a method on a face set, judged by oblivious recognisers and utility detectors.

Protocol (see docs/baselines.md): gallery = first readable image by name of each identity, clean;
probes = every other image of that identity after the method; closed-set rank-1 over all gallery
identities; verification over every probe-versus-gallery pair.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
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
from evaluation.attacks import reconstruction
from evaluation.methods import Method, get
from faces import result_cache
from faces.face_sets import FaceSet, load_face_set, read_rgb, read_split
from faces.moved_faces import fixed_motion, move_landmarks
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
    max_images: int | None = bounded(None, ge=2)  # None: all; else each identity's first K images by name
    split: str | None = None
    cache_dir: str | None = None  # None: $OBSCURA_CACHE/evaluation or ~/.cache/obscura/evaluation
    workers: int = bounded(2, ge=1)
    bootstrap: int = bounded(1000, ge=1)  # resamples of the probes for the 95 % intervals
    seed: int = 0
    far: float = bounded(1e-3, gt=0, lt=1)
    examples: int = bounded(6, ge=0)
    progress: bool = True
    # reconstruction attackers who rebuild each probe before the recognisers judge it (evaluation.attacks.
    # reconstruction): "tikhonov" / "admm" (LAMBDA / TAU chosen on `lambda_split`'s identities), "tikhonov:LAMBDA",
    # "admm:TAU", "learned:FILE"
    reconstruction: list[str] = field(default_factory=list)
    lambda_split: str | None = None  # file of training identity names (e.g. a stage-I run's splits/train.txt)
    lambda_faces: int = bounded(24, ge=1)  # their images the attacker rebuilds to choose LAMBDA or TAU
    motion_seed: int = 0  # the fixed motions of the moved test faces (faces.moved_faces; as stage I's data.motion_seed)


@dataclass
class Records:
    """Per-image analysis results of a run, gallery first (one per identity) then probes."""

    face_set: FaceSet
    gallery: list[tuple[dict, dict]]
    probes: list[tuple[dict, dict]]
    probe_labels: np.ndarray
    probe_paths: list[str]


def face_set_of(data: str, min_images: int, split: str | None, progress: bool, max_images: int | None) -> FaceSet:
    """The identities of `split` (a file of names; None: all) in `data` with at least `min_images` readable images."""
    return load_face_set(data, min_images, read_split(split) if split else None, progress, max_images)


def cache_root_of(cache_dir: str | None) -> Path:
    """The per-image result cache: `cache_dir`, else $OBSCURA_CACHE/evaluation or ~/.cache/obscura/evaluation."""
    return Path(cache_dir) if cache_dir else result_cache.default_dir()


def check(cfg: EvaluateConfig) -> Method:
    """Validate a configuration before any work; returns the method."""
    config.check(cfg)
    if not cfg.data:
        raise ObscuraError("--data is required (a folder of <identity>/<image> files)")
    if not cfg.out:
        raise ObscuraError("--out is required (the folder for report.json, report.md and PNGs)")
    if cfg.max_images is not None and cfg.max_images < cfg.min_images:
        raise ObscuraError(f"config key 'max_images' is {cfg.max_images}; expected >= min_images ({cfg.min_images})")
    return get(cfg.method)


def resolve_attackers(cfg: EvaluateConfig, method: Method) -> tuple[tuple[str, ...], dict[str, dict]]:
    """Each reconstruction spec made exact (`tikhonov`, `admm` get the weight their training faces chose), and how it was chosen."""
    specs, chosen = [], {}
    for spec in cfg.reconstruction:
        if spec not in reconstruction.GRIDS:
            reconstruction.build(spec, method)  # refuses a bad spec before any image is judged
            specs.append(spec)
            continue
        if not cfg.lambda_split:
            raise ObscuraError(
                f"config key 'reconstruction' has {spec!r} without its weight: set 'lambda_split' (a file of training "
                f"identities to choose it on) or give {spec}:WEIGHT"
            )
        reconstruction.build(f"{spec}:0", method)  # the attacker fits the method (and its package is here)
        train = load_face_set(cfg.data, 2, read_split(cfg.lambda_split), progress=False)
        faces = [img.path for name in train.identities for img in train.images[name]]
        picked = [read_rgb(faces[i])[0] for i in np.linspace(0, len(faces) - 1, cfg.lambda_faces).round().astype(int)]
        weight, scores = reconstruction.choose(spec, method, picked)
        specs.append(f"{spec}:{weight:g}")
        chosen[spec] = {
            "weight": weight,
            "psnr_db_by_weight": scores,
            "faces": len(picked),
            "split": cfg.lambda_split,
        }
    return tuple(specs), chosen


def analyse(
    face_set: FaceSet,
    method: Method,
    cache_root: Path,
    *,
    workers: int,
    progress: bool,
    motion_seed: int = 0,
    attackers: tuple[str, ...] = (),
    clean_probes: bool = False,
    inhouse: str = "",
) -> Records:
    """Run every image of the face set through the models (in `workers` processes).

    `clean_probes`: embed the clean probes too (the modified-domain protocol compares them);
    `inhouse`: a recogniser file whose templates are added (analysis.InhouseTemplates).
    """

    ids = face_set.identities
    tasks: list[Task] = [Task(str(face_set.images[i][0].path), True) for i in ids]
    labels: list[int] = []
    for col, name in enumerate(ids):
        for img in face_set.images[name][1:]:
            tasks.append(Task(str(img.path), method.is_identity or clean_probes, rebuild=bool(attackers)))
            labels.append(col)
    bar = dict(total=len(tasks), desc=f"evaluate {method.name}", unit="img", disable=not progress)
    init = (method.name, str(cache_root), attackers, motion_seed, inhouse)
    if workers == 1:
        init_worker(*init)
        results = [run_task(t) for t in tqdm(tasks, **bar)]
    else:
        # spawn, not fork: checking the method has already run torch in this process (an optic's PSF),
        # and a child forked while torch's thread pool holds a lock waits on it forever (seen with optic:RUN)
        with mp.get_context("spawn").Pool(workers, init_worker, init) as pool:
            results = list(tqdm(pool.imap(run_task, tasks, chunksize=4), **bar))
    n = len(ids)
    return Records(face_set, results[:n], results[n:], np.array(labels, dtype=np.int64), [t.path for t in tasks[n:]])


def embeddings(records: list[tuple[dict, dict]], side: int, key: str, dim_hint: int = 128) -> np.ndarray:
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


def judged(auto: np.ndarray, oracle: np.ndarray, gallery: np.ndarray, labels: np.ndarray, cfg: EvaluateConfig) -> dict:
    """The protocol's figures for probe embeddings against the clean gallery: aligned on themselves and by the oracle."""
    main = metrics.privacy_metrics(similarity(auto, gallery), labels, cfg.far, cfg.bootstrap, cfg.seed)
    oracle = metrics.privacy_metrics(similarity(oracle, gallery), labels, cfg.far, cfg.bootstrap, cfg.seed)
    return {
        **main,
        "rank1_oracle": oracle["rank1"],
        "rank1_oracle_ci95": oracle["rank1_ci95"],
        "auc_oracle": oracle["auc"],
        "auc_oracle_ci95": oracle["auc_ci95"],
        "tar_at_far_1e-3_oracle": oracle["tar_at_far_1e-3"],
        "chance": 1.0 / len(gallery),
    }


def privacy(rec: Records, cfg: EvaluateConfig) -> dict[str, dict]:
    """Per recogniser: main protocol (clean gallery), oracle alignment, and both-transformed protocol."""
    out: dict[str, dict] = {}
    labels = rec.probe_labels
    for name in RECOGNISERS:
        gallery = embeddings(rec.gallery, 0, f"{name}.emb")
        auto = embeddings(rec.probes, 1, f"{name}.auto")
        oracle = embeddings(rec.probes, 1, f"{name}.oracle")
        gallery_t = embeddings(rec.gallery, 1, f"{name}.auto")
        gallery_t_oracle = embeddings(rec.gallery, 1, f"{name}.oracle")
        both = similarity(auto, gallery_t)
        both_oracle = similarity(oracle, gallery_t_oracle)
        ver_both = metrics.verification(metrics.pair_scores(both, labels), cfg.far)
        out[name] = {
            **judged(auto, oracle, gallery, labels, cfg),
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


def privacy_after_reconstruction(rec: Records, cfg: EvaluateConfig, attackers: tuple[str, ...]) -> dict[str, dict]:
    """Per attacker and recogniser: the protocol's figures on the rebuilt probes (clean gallery)."""
    out: dict[str, dict] = {}
    for spec in attackers:
        name = spec.partition(":")[0]
        out[name] = {"attacker": spec}
        for rname in RECOGNISERS:
            auto = embeddings(rec.probes, 1, f"recon.{name}.{rname}.auto")
            oracle = embeddings(rec.probes, 1, f"recon.{name}.{rname}.oracle")
            gallery = embeddings(rec.gallery, 0, f"{rname}.emb")
            out[name][rname] = {
                **judged(auto, oracle, gallery, rec.probe_labels, cfg),
                "probes_without_face": int(np.isnan(auto).any(axis=1).sum()),
            }
    return out


def moved_references(rec: Records, seed: int) -> list[np.ndarray | None]:
    """dlib's 68 landmarks of each clean probe, moved by the probe's fixed motion (as its capture was)."""
    refs = []
    for (clean, _), path in zip(rec.probes, rec.probe_paths):
        lm = clean.get("dlib.lm")
        if lm is None:
            refs.append(None)
            continue
        height, width = read_rgb(path)[0].shape[:2]
        refs.append(move_landmarks(lm, fixed_motion(path, seed), width, height))
    return refs


def landmark_utility(rec: Records, seed: int) -> dict:
    """The regressor's NME on moved probes (and on the aligned ones), each beside the NME of the mean shape."""
    result: dict = {}
    for suffix, key, refs in (
        ("", "regressor.lm_moved", moved_references(rec, seed)),
        ("_aligned", "regressor.lm", [clean.get("dlib.lm") for clean, _ in rec.probes]),
    ):
        nme = metrics.landmark_nme(refs, [out.get(key) for _, out in rec.probes])
        mean = np.mean([r for r in refs if r is not None], axis=0)
        result[f"landmark_nme{suffix}"] = nme["landmark_nme"]
        result[f"landmark_nme_pairs{suffix}"] = nme["n_pairs"]
        result[f"landmark_nme_mean_shape{suffix}"] = metrics.landmark_nme(refs, [mean] * len(refs))["landmark_nme"]
    result["motion_seed"] = seed
    return result


def utility(rec: Records, seed: int = 0) -> dict:
    """FD, BB, LM, NME per utility detector, over all probes (256x256 source versus output).

    For capture methods with a regressor also `landmark_nme`: its landmarks on the capture of the
    face moved by its fixed motion against dlib's 68 landmarks of the clean aligned image moved
    alike, over the inter-ocular distance; beside it `landmark_nme_mean_shape`, the NME of answering
    every probe with the mean of those moved landmarks (a regressor that learned nothing scores about
    that); and both on the aligned faces (`*_aligned`).
    """
    result: dict = {
        name: metrics.utility(
            [face_from(clean, f"util.{name}") for clean, _ in rec.probes],
            [face_from(out, f"util.{name}") for _, out in rec.probes],
        )
        for name in UTILITY_DETECTORS
    }
    if any("regressor.lm" in out for _, out in rec.probes):
        result.update(landmark_utility(rec, seed))
    return result


def run(cfg: EvaluateConfig) -> dict:
    """Evaluate `cfg.method` on `cfg.data` and write report.json, report.md, PNGs, config and identities."""

    method = check(cfg)
    start = time.time()
    out = Path(cfg.out)
    face_set = face_set_of(cfg.data, cfg.min_images, cfg.split, cfg.progress, cfg.max_images)
    cache_root = cache_root_of(cfg.cache_dir)
    attackers, chosen = resolve_attackers(cfg, method)
    config.write_resolved(cfg, out)
    atomic.write_text(out / "identities.txt", "".join(f"{n}\n" for n in face_set.identities))
    rec = analyse(
        face_set,
        method,
        cache_root,
        workers=cfg.workers,
        progress=cfg.progress,
        motion_seed=cfg.motion_seed,
        attackers=attackers,
    )
    result = {
        "method": method.name,
        "method_description": method.description,
        "data": str(Path(cfg.data).resolve()),
        "min_images": cfg.min_images,
        "max_images": cfg.max_images,
        "split": cfg.split,
        "n_identities": len(face_set.identities),
        "n_gallery": len(rec.gallery),
        "n_probes": len(rec.probes),
        "n_images": face_set.n_images,
        "greyscale_images": face_set.grey_images,
        "colour_handling": "greyscale images are replicated to three identical RGB channels before the method and every model",
        "unreadable_images": face_set.unreadable,
        "privacy": privacy(rec, cfg),
        "utility": utility(rec, cfg.motion_seed),
        "protocol": report.PROTOCOL,
        "bootstrap": cfg.bootstrap,
        "seed": cfg.seed,
        "cache_dir": str(cache_root),
        "workers": cfg.workers,
        "seconds": round(time.time() - start, 1),
    }
    if attackers:
        result["privacy"]["reconstruction"] = privacy_after_reconstruction(rec, cfg, attackers)
        result["reconstruction_weights"] = chosen
        examples = [read_rgb(p)[0] for p in rec.probe_paths[: cfg.examples]]
        built = [reconstruction.build(spec, method) for spec in attackers]
        reconstruction.examples_png(out / "reconstruction.png", method, built, examples)
    if method.landmarks is not None:
        motions = {p: fixed_motion(p, cfg.motion_seed).as_dict() for p in rec.probe_paths}
        atomic.write_json(out / "motions.json", {"motion_seed": cfg.motion_seed, "motions": motions})
    report.write(result, rec, method, out, cfg)
    return result
