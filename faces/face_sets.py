"""Folder-per-identity face sets: deterministic listing, filters, identity-disjoint splits, decoding.

`<root>/<identity>/<image>.{jpg,jpeg,png,pgm}`; identities and images are sorted by name, so the
gallery image of an identity (its first image by name) is the same on every machine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from tqdm import tqdm

from obscura import atomic, paths
from obscura.errors import ObscuraError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm")


@dataclass(frozen=True)
class FaceImage:
    """One image of one identity."""

    identity: str
    path: Path


@dataclass
class FaceSet:
    """Identities (sorted) with their readable images (sorted), plus what was skipped and why."""

    root: Path
    images: dict[str, list[FaceImage]]
    unreadable: list[str] = field(default_factory=list)
    grey_images: int = 0

    @property
    def identities(self) -> list[str]:
        """Identity names in sorted order."""
        return sorted(self.images)

    @property
    def n_images(self) -> int:
        """Number of readable images kept."""
        return sum(len(v) for v in self.images.values())


def list_images(root: str | Path) -> dict[str, list[Path]]:
    """Map identity -> sorted image paths; a missing or empty folder is a one-line error."""
    folder = Path(root)
    if not folder.is_dir():
        raise ObscuraError(f"--data {folder}: not a folder (expected <data>/<identity>/<image>.jpg)")
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            found[sub.name] = files
    if not found:
        raise ObscuraError(f"--data {folder}: no identity folders with images ({', '.join(IMAGE_SUFFIXES)}) found")
    return found


def read_rgb(path: str | Path) -> tuple[np.ndarray, bool]:
    """Decode an image to RGB uint8 HxWx3; greyscale is replicated to 3 channels (returned flag True).

    Raises ObscuraError naming the file when it cannot be decoded.
    """

    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else np.zeros(0, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None or img.size == 0:
        raise ObscuraError(f"{path}: cannot decode image (expected JPEG/PNG/PGM)")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    if img.ndim == 2 or img.shape[2] == 1:
        return np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2), True
    if img.shape[2] == 4:
        img = img[:, :, :3]
    rgb = np.ascontiguousarray(img[:, :, ::-1])
    grey = bool(np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]))
    return rgb, grey


def load_face_set(
    root: str | Path,
    min_images: int = 10,
    identities: list[str] | None = None,
    progress: bool = False,
    max_images: int | None = None,
) -> FaceSet:
    """List, decode-check and filter a face set.

    Unreadable images are skipped and listed; identities with fewer than `min_images` readable
    images are dropped; fewer than two identities left is an error (identification needs a choice).
    `max_images` keeps only each identity's first images by name (a smaller, cheaper set).
    """

    if min_images < 2:
        raise ObscuraError(f"--min-images {min_images}: expected >= 2 (one gallery image plus probes)")
    listing = list_images(root)
    if identities is not None:
        missing = [name for name in identities if name not in listing]
        if missing:
            raise ObscuraError(f"split names identity '{missing[0]}' which has no images under {root}")
        listing = {name: listing[name] for name in sorted(identities)}
    candidates = {k: v[:max_images] for k, v in listing.items() if len(v) >= min_images}
    kept: dict[str, list[FaceImage]] = {}
    unreadable: list[str] = []
    grey = 0
    paths = [(name, p) for name, files in candidates.items() for p in files]
    for name, path in tqdm(paths, desc="checking images", unit="img", disable=not progress):
        try:
            _, is_grey = read_rgb(path)
        except ObscuraError:
            unreadable.append(str(path))
            continue
        grey += int(is_grey)
        kept.setdefault(name, []).append(FaceImage(name, path))
    kept = {k: v for k, v in kept.items() if len(v) >= min_images}
    if len(kept) < 2:
        raise ObscuraError(
            f"--data {root}: {len(kept)} identit{'y' if len(kept) == 1 else 'ies'} with >= {min_images} "
            "readable images; closed-set identification needs at least 2"
        )
    return FaceSet(Path(root), kept, unreadable, grey)


def read_split(path: str | Path) -> list[str]:
    """Identity names from a split file (one per line; blank lines and #-comments ignored)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ObscuraError(f"--split {path}: cannot read ({err.strerror or err})") from None
    names = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise ObscuraError(f"--split {path}: no identity names in the file")
    if len(set(names)) != len(names):
        raise ObscuraError(f"--split {path}: identity names repeat")
    return names


def split_identities(identities: list[str], fractions: dict[str, float], seed: int = 0) -> dict[str, list[str]]:
    """Partition identities (never images) into named disjoint parts of the given fractions."""
    if not fractions or any(f < 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise ObscuraError(f"split fractions {fractions}: expected non-negative values that sum to 1")
    order = sorted(identities)
    random.Random(seed).shuffle(order)
    parts: dict[str, list[str]] = {}
    start = 0
    names = list(fractions)
    for i, name in enumerate(names):
        stop = len(order) if i == len(names) - 1 else start + round(fractions[name] * len(order))
        parts[name] = sorted(order[start:stop])
        start = stop
    return parts


def write_splits(parts: dict[str, list[str]], out_dir: str | Path) -> dict[str, Path]:
    """Write each part as `<name>.txt` (one identity per line) and return the paths."""
    return {
        name: atomic.write_text(Path(out_dir) / f"{name}.txt", "".join(f"{n}\n" for n in names))
        for name, names in parts.items()
    }


T = TypeVar("T")


def round_robin(groups: list[list[T]]) -> list[T]:
    """The first item of every group, then every second one, and so on: a short prefix spans many identities."""
    depth = max((len(g) for g in groups), default=0)
    return [g[j] for j in range(depth) for g in groups if j < len(g)]


def resolve_root(root: str) -> Path:
    """A face-set folder: the path itself if it exists, else a name under the shared data folder."""
    path = Path(root).expanduser()
    if path.is_dir():
        return path
    shared = paths.shared_data_dir() / root
    if shared.is_dir():
        return shared
    raise ObscuraError(
        f"config key 'data.root' is {root!r}: neither a folder nor a set under {paths.shared_data_dir()}"
    )
