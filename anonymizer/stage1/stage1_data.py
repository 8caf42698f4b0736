"""Stage-I data: identity splits, clean faces centre-cropped to the training size, heatmap targets.

Faces are cropped, not resized: the optic's PSF is defined in sensor pixels, so training on
crops keeps the scale at which the evaluation later images the same (uncropped) files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from anonymizer import runs
from anonymizer.nets.heatmaps import render, to_map
from anonymizer.stage1.stage1_config import DataConfig, RegressorConfig
from faces.alignment import centre_crop
from faces.face_sets import (
    FaceImage,
    list_images,
    load_face_set,
    read_rgb,
    resolve_root,
    round_robin,
    split_identities,
    write_splits,
)
from faces.landmark_targets import clean_landmarks
from faces.moved_faces import Motion, fixed_motion, move_image, move_landmarks, random_motion
from obscura.errors import ObscuraError
from optics.image_io import from_uint8

MotionKind = Literal["none", "random", "fixed"]


class FaceCrops(Dataset):
    """(sRGB crop 3 x S x S in [0, 1], 69-channel target, identity label, 68 x 2 landmarks in crop pixels).

    `motion` moves each face before the crop (faces.moved_faces): "random" draws a motion, mirror
    included, from (motion_seed, epoch, index), so every epoch moves each face anew and a resumed
    run draws the same (the trainers call `set_epoch` as they do on the sampler); "fixed" uses each
    image's own fixed motion of `motion_seed` (held-out faces); "none" keeps the aligned face.
    `seen_as` (an evaluation method's image function, sRGB uint8 -> uint8) replaces the moved frame
    by what that method makes of it before the crop, as evaluation applies methods to whole images.
    With `targets` False the target is an empty tensor: rendering it (about 2 ms a face) is wasted
    on a reader that only needs faces and labels, such as the adaptive attacker.
    """

    def __init__(
        self,
        paths: list[str],
        landmarks: list[np.ndarray],
        labels: list[int],
        size: int,
        regressor: RegressorConfig,
        motion: MotionKind = "none",
        motion_seed: int = 0,
        targets: bool = True,
        seen_as: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.paths, self.landmarks, self.labels = paths, landmarks, labels
        self.size, self.reg, self.targets = size, regressor, targets
        self.motion, self.motion_seed = motion, motion_seed
        self.seen_as = seen_as
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose random motions `__getitem__` draws."""
        self.epoch = epoch

    def without_targets(self, motion: MotionKind | None = None) -> FaceCrops:
        """The same faces, labels and landmarks, without rendering heatmap targets (and with another motion kind if given)."""
        return self._with(targets=False, motion=motion or self.motion)

    def seen_through(self, seen_as: Callable[[np.ndarray], np.ndarray]) -> FaceCrops:
        """The same faces and motions, each moved frame replaced by what `seen_as` makes of it before the crop."""
        return self._with(seen_as=seen_as)

    def _with(self, **changes: Any) -> FaceCrops:
        """A new set over the same faces with some settings changed (at epoch 0, as a freshly built one)."""
        other = copy.copy(self)
        vars(other).update(changes, epoch=0)
        return other

    def __len__(self) -> int:
        return len(self.paths)

    def motion_of(self, i: int) -> Motion:
        """The motion of face i: its fixed one, one drawn for this epoch, or none."""
        if self.motion == "fixed":
            return fixed_motion(self.paths[i], self.motion_seed)
        if self.motion == "random":
            return random_motion(np.random.default_rng([self.motion_seed, self.epoch, i]), mirror=True)
        return Motion()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        rgb, _ = read_rgb(self.paths[i])
        motion = self.motion_of(i)
        h, w = rgb.shape[:2]
        frame = move_image(rgb, motion)
        if self.seen_as is not None:
            frame = self.seen_as(frame)
        crop, offset = centre_crop(frame, self.size, self.paths[i])
        marks = move_landmarks(self.landmarks[i], motion, w, h) - offset
        target = (
            torch.from_numpy(
                render(
                    to_map(marks, self.reg.stride),
                    self.size // self.reg.stride,
                    self.reg.heatmap_sigma_px,
                    self.reg.boundary_sigma_px,
                )
            )
            if self.targets
            else torch.zeros(0)
        )
        return from_uint8(crop), target, self.labels[i], torch.from_numpy(marks).float()


@dataclass
class Stage1Data:
    """The training set, the held-out landmark set (or None), training identity names and a summary."""

    train: FaceCrops
    val: FaceCrops | None
    identities: list[str]
    summary: dict[str, object]
    listing: dict[str, list[Path]]  # every identity's images in the face set
    parts: dict[str, list[str]]  # the identity split


def _crops(
    images: list,
    cfg: DataConfig,
    reg: RegressorConfig,
    progress: bool,
    motion: MotionKind,
    names: list[str] | None = None,
) -> tuple[FaceCrops, list[str], int]:
    """FaceCrops of the images with a dlib face; labels index `names` (default: the kept identities)."""
    targets = clean_landmarks(images, cfg.cache_dir or None, progress)
    names = names or sorted({img.identity for img in targets.images})
    index = {n: i for i, n in enumerate(names)}
    labels = [index.get(img.identity, -1) for img in targets.images]
    paths = [str(img.path) for img in targets.images]
    crops = FaceCrops(paths, targets.landmarks, labels, cfg.image_size, reg, motion, cfg.motion_seed)
    return crops, names, len(targets.skipped)


def held_out(
    cfg: DataConfig,
    reg: RegressorConfig,
    listing: dict[str, list[Path]],
    identities: list[str],
    count: int,
    progress: bool,
    names: list[str] | None = None,
) -> FaceCrops:
    """Up to `count` faces of held-out identities, taken round-robin so a few still span many people, at their fixed motions."""
    images = round_robin([[FaceImage(name, path) for path in listing[name]] for name in identities])
    crops, _, _ = _crops(images[:count], cfg, reg, progress, "fixed" if cfg.moved else "none", names)
    return crops


def prepare(
    cfg: DataConfig, reg: RegressorConfig, out_dir: Path, progress: bool = False, write: bool = True
) -> Stage1Data:
    """Split identities (written to out/splits), load the training identities' faces and their dlib targets."""
    root = resolve_root(cfg.root)
    listing = list_images(root)
    parts = split_identities(sorted(listing), cfg.split_fractions, cfg.split_seed)
    if write:
        write_splits(parts, out_dir / runs.SPLITS)
    train_ids = parts[cfg.train_split][: cfg.max_identities or None]
    face_set = load_face_set(root, cfg.min_images, identities=train_ids, progress=progress)
    images = [
        img for name in face_set.identities for img in face_set.images[name][: cfg.max_images_per_identity or None]
    ]
    train, names, skipped = _crops(images, cfg, reg, progress, "random" if cfg.moved else "none")
    if len(names) < 2:
        raise ObscuraError(
            f"data.root {root}: {len(names)} training identities with a dlib-detectable face; the adversary needs at least 2"
        )
    val = None
    if cfg.val_split and cfg.val_images and parts[cfg.val_split]:
        val = held_out(cfg, reg, listing, parts[cfg.val_split], cfg.val_images, progress, names)
    summary = {
        "root": str(root),
        "train_identities": len(names),
        "train_images": len(train),
        "skipped_no_face": skipped,
        "unreadable": len(face_set.unreadable),
        "val_images": len(val) if val is not None else 0,
    }
    return Stage1Data(train, val, names, summary, listing, parts)
