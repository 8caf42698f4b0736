"""`judge-p3mask`: per-user P3-masks judged by recognisers the masks never saw (SFace, dlib).

Each user's images are split (seeded): the first share learns the user's mask, the next one is
the user's clean gallery image, the rest are probes. The white-box ensemble is chosen first by
focal diversity (protect.focal_diversity) among candidate in-house recognisers, from their rank-1
failures on the validation identities (never a test identity). Per recogniser: the protection
rate (the share of masked probes not matched to their user's gallery at the threshold where 1 %
of clean impostor pairs match; a probe in which no face is found counts as protected, and how many
there were is reported), rank-1 against every user's gallery, the same for the mask removed again
(the mask as a key) and after JPEG quality 75, a 0.5x resize and a Gaussian blur of sigma 1 px.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from anonymizer import runs
from evaluation import metrics
from evaluation.attacks.face_templates import inhouse_crop
from evaluation.evaluate import similarity
from faces.face_models import recognitions
from faces.face_sets import load_face_set, read_rgb, read_split
from obscura import atomic, config, paths
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect import focal_diversity, p3_mask
from protect.p3_mask import P3MaskOptions
from protect.protection import ssim_8bit

REPORT = "report.json"
MASKS = "masks"  # <out>/masks/<identity>.npy: each user's learned mask (a resumed run reads them back)
JUDGES = ("sface", "dlib")


def jpeg75(image: np.ndarray) -> np.ndarray:
    """The image through JPEG at quality 75."""
    ok, data = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


def half_size(image: np.ndarray) -> np.ndarray:
    """The image area-resized to half its size and back (bilinear)."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def blur1(image: np.ndarray) -> np.ndarray:
    """Gaussian blur of sigma 1 px."""
    return cv2.GaussianBlur(image, (0, 0), 1.0)


# what the judge does to each masked probe before the recognisers see it
VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "clean": lambda clean, mask: clean,
    "masked": lambda clean, mask: p3_mask.apply_mask(clean, mask),
    "key_removed": lambda clean, mask: p3_mask.remove_mask(p3_mask.apply_mask(clean, mask), mask),
    "jpeg75": lambda clean, mask: jpeg75(p3_mask.apply_mask(clean, mask)),
    "resize0.5": lambda clean, mask: half_size(p3_mask.apply_mask(clean, mask)),
    "blur1": lambda clean, mask: blur1(p3_mask.apply_mask(clean, mask)),
}


def default_candidates() -> list[str]:
    """The committed in-house recognisers and the stage-I adversary (trained on captures and clean faces)."""
    return [str(paths.WEIGHTS_DIR / n) for n in (*runs.INHOUSE_RECOGNISERS, runs.ADVERSARY)]


@dataclass
class P3JudgeConfig:
    """Everything that decides a P3-mask judgement; written resolved next to its report."""

    data: str = ""
    out: str = ""
    split: str | None = None  # the users: a file of identity names (e.g. weights/splits/test.txt)
    users: int | None = bounded(None, ge=2)  # the first K identities of the split; None: all
    min_images: int = bounded(6, ge=3)  # a user needs mask-training images, a gallery image and probes
    mask_share: float = bounded(0.5, gt=0, lt=1)  # each user's share of images that learns the mask
    seed: int = 0
    fmr: float = bounded(0.01, gt=0, lt=1)
    candidates: list[str] = field(default_factory=default_candidates)  # recognisers the ensemble is chosen from
    team_split: str = ""  # identities whose images choose the ensemble; "": weights/splits/val.txt
    mask: P3MaskOptions = field(default_factory=P3MaskOptions)  # recognisers: [] (the focal-diversity team)
    progress: bool = True


@dataclass
class User:
    """One user's images, split into the mask's training set, one gallery image and probes."""

    name: str
    train: list[Path]
    gallery: Path
    probes: list[Path]


def split_users(cfg: P3JudgeConfig) -> list[User]:
    """Each user's images shuffled by (seed, user index) and split; identities sorted by name."""
    identities = read_split(cfg.split) if cfg.split else None
    face_set = load_face_set(cfg.data, cfg.min_images, identities, cfg.progress)
    names = face_set.identities[: cfg.users] if cfg.users else face_set.identities
    users = []
    for index, name in enumerate(names):
        files = [img.path for img in face_set.images[name]]
        order = np.random.default_rng([cfg.seed, index]).permutation(len(files))
        files = [files[i] for i in order]
        n_train = min(max(1, round(cfg.mask_share * len(files))), len(files) - 2)
        users.append(User(name, files[:n_train], files[n_train], files[n_train + 1 :]))
    if len(users) < 2:
        raise ObscuraError(f"--data {cfg.data}: {len(users)} identities with >= {cfg.min_images} images; expected >= 2")
    return users


@torch.no_grad()
def team_failures(candidates: list[str], team_split: str, data: str) -> np.ndarray:
    """Probes x candidates boolean: each candidate's rank-1 failures on the team split's identities."""
    face_set = load_face_set(data, 2, read_split(team_split), progress=False)
    ids = face_set.identities
    gallery = [face_set.images[n][0].path for n in ids]
    probes = [img.path for n in ids for img in face_set.images[n][1:]]
    labels = np.array([col for col, n in enumerate(ids) for _ in face_set.images[n][1:]])
    crops = torch.stack([from_uint8(inhouse_crop(read_rgb(p)[0], str(p))) for p in gallery + probes])  # read once
    columns = []
    for file in candidates:
        embedder = runs.load_committed_classifier(Path(file)).embedder.eval()
        templates = F.normalize(embedder(crops)).double().numpy()
        scores = templates[len(gallery) :] @ templates[: len(gallery)].T
        columns.append(~metrics.rank1_correct(scores, labels))
    return np.stack(columns, axis=1)


def user_mask(user: User, options: P3MaskOptions, folder: Path) -> tuple[np.ndarray, float | None]:
    """The user's mask, learned from their training images (or read back), and the seconds learning took."""
    file = folder / f"{user.name}.npy"
    if file.is_file():
        return np.load(file), None
    start = time.perf_counter()
    mask = p3_mask.learn_mask([read_rgb(p)[0] for p in user.train], options)
    seconds = time.perf_counter() - start
    atomic.write_npy(file, mask)
    return mask, seconds


def embed_all(models: dict, image: np.ndarray) -> dict[str, np.ndarray | None]:
    """Each judge's unit template of the face nearest the image centre, None where it finds no face."""
    found = {}
    for name in JUDGES:
        face = models[name].detector.detect(image).central(image.shape)
        found[name] = None if face is None else models[name].embed(image, face)
    return found


def stack(templates: list[np.ndarray | None]) -> np.ndarray:
    """Rows of templates, NaN where no face was found."""
    dim = next((t.shape[0] for t in templates if t is not None), 128)
    return np.stack([np.full(dim, np.nan) if t is None else t for t in templates])


def judged(clean: np.ndarray, variant: np.ndarray, gallery: np.ndarray, labels: np.ndarray, fmr: float) -> dict:
    """Protection rate at the clean impostors' FMR threshold and rank-1 of one variant's probes."""
    clean_scores = similarity(clean, gallery)
    impostor = clean_scores[np.arange(gallery.shape[0])[None, :] != labels[:, None]]
    threshold = float(np.quantile(impostor, 1.0 - fmr))
    scores = similarity(variant, gallery)
    genuine = scores[np.arange(len(labels)), labels]
    return {
        "protection_rate": float(np.mean(genuine <= threshold)),
        "rank1": float(metrics.rank1_correct(scores, labels).mean()),
        "threshold": threshold,
        "probes_without_face": int(np.isnan(variant).any(axis=1).sum()),
    }


def examples_png(path: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Clean, masked and the mask (x4 on grey) for a few users."""
    matplotlib.use("Agg")
    fig, axes = plt.subplots(3, len(pairs), figsize=(2 * len(pairs), 6.4), squeeze=False)
    for col, (clean, mask) in enumerate(pairs):
        masked = p3_mask.apply_mask(clean, mask)
        shown = np.clip(128 + 4 * (masked.astype(np.int16) - clean), 0, 255).astype(np.uint8)
        for row, (image, label) in enumerate(((clean, "original"), (masked, "P3-masked"), (shown, "mask x4"))):
            axes[row, col].imshow(image)
            axes[row, col].set_axis_off()
            axes[row, col].set_title(label, fontsize=8)
    atomic.write_figure(path, fig)
    plt.close(fig)


def run(cfg: P3JudgeConfig) -> dict:
    """Masks for every user, then the recognisers' verdicts: report.json, report.md, examples.png, masks/."""
    config.check(cfg)
    if not cfg.data or not cfg.out:
        raise ObscuraError("--data and --out are required")
    for file in cfg.candidates:
        if not Path(file).is_file():
            raise ObscuraError(f"config key 'candidates' names {file!r}: no such file (expected a stage-I attacker.pt)")
    start = time.time()
    out = Path(cfg.out)
    users = split_users(cfg)
    config.write_resolved(cfg, out)
    team_split = cfg.team_split or str(paths.WEIGHTS_DIR / runs.VAL_SPLIT)
    failures = team_failures(cfg.candidates, team_split, cfg.data)
    team, team_scores = focal_diversity.best_team(failures)
    options = P3MaskOptions(**{**config.to_dict(cfg.mask), "recognisers": [cfg.candidates[i] for i in team]})
    models = recognitions()
    learned, apply_ms, ssims, pairs = [], [], [], []
    rows: dict[str, list] = {v: [] for v in VARIANTS}
    galleries, labels = [], []
    for index, user in enumerate(tqdm(users, desc="p3mask users", unit="user", disable=not cfg.progress)):
        mask, seconds = user_mask(user, options, atomic.writable_folder(out / MASKS))
        learned += [] if seconds is None else [seconds]
        galleries.append(embed_all(models, read_rgb(user.gallery)[0]))
        for probe in user.probes:
            clean = read_rgb(probe)[0]
            tic = time.perf_counter()
            masked = p3_mask.apply_mask(clean, mask)
            apply_ms.append(1000 * (time.perf_counter() - tic))
            ssims.append(ssim_8bit(clean, masked))
            for name, variant in VARIANTS.items():
                rows[name].append(embed_all(models, variant(clean, mask)))
            labels.append(index)
        if len(pairs) < 6:
            pairs.append((read_rgb(user.probes[0])[0], mask))
    labels_arr = np.array(labels)
    verdicts = {}
    for judge in JUDGES:
        gallery = stack([g[judge] for g in galleries])
        clean = stack([r[judge] for r in rows["clean"]])
        verdicts[judge] = {
            name: judged(clean, stack([r[judge] for r in found]), gallery, labels_arr, cfg.fmr)
            for name, found in rows.items()
        }
    result = {
        "data": str(Path(cfg.data).resolve()),
        "split": cfg.split,
        "users": len(users),
        "probes": len(labels),
        "chance": 1.0 / len(users),
        "fmr": cfg.fmr,
        "ensemble": options.recognisers,
        "focal_diversity": {"team_split": team_split, "candidates": cfg.candidates, "by_team": team_scores},
        "ssim_mean": float(np.mean(ssims)),
        "ssim_min": float(np.min(ssims)),
        "seconds_per_mask": float(np.mean(learned)) if learned else None,
        "masks_learned_this_run": len(learned),
        "apply_ms_per_image": float(np.mean(apply_ms)),
        "judges": verdicts,
        "seconds": round(time.time() - start, 1),
    }
    atomic.write_json(out / REPORT, result)
    write_markdown(result, out / "report.md")
    examples_png(out / "examples.png", pairs)
    return result


def write_markdown(result: dict, path: Path) -> None:
    """report.md: protection rate / rank-1 per judge and variant."""
    lines = ["# judge-p3mask", "", f"{result['users']} users, {result['probes']} probes, FMR {result['fmr']:g}", ""]
    lines += ["| judge | " + " | ".join(VARIANTS) + " |", "|---" * (len(VARIANTS) + 1) + "|"]
    for judge, found in result["judges"].items():
        cells = [f"{found[v]['protection_rate']:.3f} / {found[v]['rank1']:.3f}" for v in VARIANTS]
        lines.append(f"| {judge} | " + " | ".join(cells) + " |")
    lines += ["", "protection rate / rank-1 against the clean gallery", ""]
    atomic.write_text(path, "\n".join(lines))
