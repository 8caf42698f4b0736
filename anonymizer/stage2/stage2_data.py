"""Stage-II data: the clean training faces of the stage-I training identities, and their reference faces.

The identities are the stage-I run's `splits/train.txt`, so stage II never sees a face of the
identities any privacy figure is measured on. Faces are centre-cropped to the stage-I training
size (the optic's PSF is defined in sensor pixels, so this is the scale the optic was learned
at); the capture is made on the fly by the frozen camera with fresh seeded sensor noise, the
heatmaps by the frozen regressor on that capture. When the generator works at another size the
crops and captures are resized to it after imaging, never before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from anonymizer.runs import Stage1Parts
from anonymizer.stage2.stage2_config import Stage2Config
from faces.alignment import centre_crop
from faces.face_sets import load_face_set, read_rgb, resolve_root
from obscura.errors import ObscuraError
from optics.image_io import from_uint8

REFERENCE_TRIES = 32  # random draws for a reference face of another identity before a deterministic scan


def resize(images: Tensor, size: int) -> Tensor:
    """Images to size x size (bilinear, antialiased when shrinking; differentiable); unchanged when already that size.

    Enlarging with the antialiased filter is the plain bilinear one (equal to float rounding), so it
    is asked for only when shrinking: plain bilinear exports to ONNX, the antialiased one does not.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrink = size < images.shape[-1] or size < images.shape[-2]
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)


class CleanFaces(Dataset):
    """(clean sRGB crop 3 x S x S in [0, 1], domain, identity index, dataset index)."""

    def __init__(self, paths: list[str], identities: list[int], domains: list[int], size: int) -> None:
        self.paths, self.identities, self.domains, self.size = paths, identities, domains, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int, int]:
        rgb, _ = read_rgb(self.paths[i])
        crop, _ = centre_crop(rgb, self.size, self.paths[i])
        image = from_uint8(crop)
        return image, self.domains[i], self.identities[i], i


@dataclass
class Stage2Data:
    """The training faces, their identity names, dataset indices per domain, and a summary."""

    train: CleanFaces
    identities: list[str]
    by_domain: list[list[int]]
    summary: dict[str, object]


def read_domains(path: str, identities: list[str], num_domains: int) -> dict[str, int]:
    """Domain index of each training identity from a file of '<identity> <index>' lines (# comments allowed)."""
    found: dict[str, int] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or not 0 <= int(parts[1]) < num_domains:
            raise ObscuraError(
                f"data.domain_file {path}, line {n}: {line!r}; expected '<identity> <domain index 0..{num_domains - 1}>'"
            )
        found[parts[0]] = int(parts[1])
    missing = [name for name in identities if name not in found]
    if missing:
        raise ObscuraError(
            f"data.domain_file {path}: training identity '{missing[0]}' has no domain ({len(missing)} missing)"
        )
    return {name: found[name] for name in identities}


def prepare(cfg: Stage2Config, parts: Stage1Parts, progress: bool = False) -> Stage2Data:
    """The stage-I training identities' readable faces (with the stage-I minimum of images per identity)."""
    d = cfg.data
    root = resolve_root(d.root or parts.root)
    face_set = load_face_set(root, parts.min_images, identities=parts.train_identities, progress=progress)
    names = face_set.identities[: d.max_identities or None]
    if len(names) < 2:
        raise ObscuraError(
            f"data.root {root}: {len(names)} training identities; reference faces must come from another identity (need >= 2)"
        )
    domain_of = read_domains(d.domain_file, names, cfg.model.num_domains) if d.domain_file else {n: 0 for n in names}
    images = [
        (i, img) for i, name in enumerate(names) for img in face_set.images[name][: d.max_images_per_identity or None]
    ]
    train = CleanFaces(
        [str(img.path) for _, img in images],
        [i for i, _ in images],
        [domain_of[img.identity] for _, img in images],
        parts.crop_size,
    )
    by_domain = [[k for k, dom in enumerate(train.domains) if dom == y] for y in range(cfg.model.num_domains)]
    for y, members in enumerate(by_domain):
        if len({train.identities[k] for k in members}) < 2:
            raise ObscuraError(
                f"data.domain_file {d.domain_file}: domain {y} has faces of fewer than 2 training identities; "
                "each domain needs references of another identity"
            )
    summary = {
        "root": str(root),
        "train_identities": len(names),
        "train_images": len(train),
        "unreadable": len(face_set.unreadable),
        "crop_size": parts.crop_size,
        "images_per_domain": [len(m) for m in by_domain],
    }
    return Stage2Data(train, names, by_domain, summary)


def references(
    data: Stage2Data, identities: Tensor, generator: torch.Generator
) -> tuple[list[int], list[int], list[int]]:
    """For each source face: a target domain and two reference faces of that domain, of identities other than the source's.

    Drawn from `generator` (seeded per step), so a resumed run draws the same references.
    """
    num_domains = len(data.by_domain)
    refs, refs2, domains = [], [], []
    for source in identities.tolist():
        y = int(torch.randint(num_domains, (1,), generator=generator)) if num_domains > 1 else 0
        pool = data.by_domain[y]
        picks = []
        for _ in range(2):
            pick = next(
                (
                    k
                    for k in (
                        pool[int(torch.randint(len(pool), (1,), generator=generator))] for _ in range(REFERENCE_TRIES)
                    )
                    if data.train.identities[k] != source
                ),
                None,
            )
            picks.append(pick if pick is not None else next(k for k in pool if data.train.identities[k] != source))
        refs.append(picks[0])
        refs2.append(picks[1])
        domains.append(y)
    return refs, refs2, domains
