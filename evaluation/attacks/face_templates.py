"""Templates of face images and the faces each recogniser reads, for the template-inversion attack; cached per image.

Recognisers whose templates leak:
- `sface`: OpenCV's SFace on the 112 x 112 crop aligned from YuNet's 5 landmarks (as
  faces.face_models.SFace.embed); that crop is the face to rebuild.
- `inhouse`: the in-house IResNet (a clean-face recogniser of the training identities) on the
  128 x 128 centre crop of a celeba-crops image, the crop it was trained on; the face to rebuild
  is that crop at 112 x 112. celeba-crops are aligned to the ArcFace template scaled into 160 px
  (eyes 40 px apart against 35 in the 112 crop), so this centre crop and SFace's crop frame the
  face alike to about a pixel.
- `capture`: the adaptive recogniser (the in-house one fine-tuned on the learned optic's
  captures) on the optic's capture of that centre crop (sensor noise seeded by the image); the
  face to rebuild is the clean crop.
The judges' templates of the clean source images: SFace, dlib (HOG, 68 points, ResNet on the
whole image, as `evaluate` reads it) and the in-house recogniser. Every template is stored with
the template of the mirrored image, a second training pair for free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from faces.alignment import align, centre_crop
from faces.face_models import DlibHog, DlibResNet, Face, SFace, YuNet
from faces.face_sets import list_images, read_rgb
from faces.result_cache import ResultCache
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from optics.image_io import from_uint8

FRAME_PX = 112  # the rebuilt face: SFace's aligned crop
INHOUSE_CROP = 128  # the centre crop the in-house recogniser (and stage I) reads of a 160 px celeba-crops image
# YuNet's landmark order (eye, eye, nose, mouth, mouth, left to right in the image): a mirror swaps the pairs
MIRRORED_POINTS = [1, 0, 2, 4, 3]


@dataclass
class FaceImages:
    """Images of some identities (sorted by identity, then name), with each image's identity index."""

    paths: list[Path]
    labels: np.ndarray
    identities: list[str]

    def subset(self, keep: np.ndarray) -> FaceImages:
        """The images where `keep` is True (identity indices kept as they are)."""
        return FaceImages([p for p, k in zip(self.paths, keep) if k], self.labels[keep], self.identities)


@dataclass
class Templates:
    """Unit templates of images and of their mirror images; `found` False where the recogniser saw no face."""

    templates: np.ndarray  # N x D
    mirrored: np.ndarray  # N x D
    found: np.ndarray  # N bool
    landmarks: np.ndarray  # N x 5 x 2: YuNet's (sface), else zeros

    def subset(self, keep: np.ndarray) -> Templates:
        """The rows where `keep` is True."""
        return Templates(self.templates[keep], self.mirrored[keep], self.found[keep], self.landmarks[keep])


def face_images(root: Path, identities: list[str]) -> FaceImages:
    """Every image of the named identities under a folder-per-identity set; one line naming a missing identity."""
    listing = list_images(root)
    missing = [name for name in identities if name not in listing]
    if missing:
        raise ObscuraError(f"split names identity '{missing[0]}' which has no images under {root}")
    names = sorted(identities)
    paths = [p for name in names for p in listing[name]]
    labels = np.array([i for i, name in enumerate(names) for _ in listing[name]], dtype=np.int64)
    return FaceImages(paths, labels, names)


def mirror(rgb: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The mirrored image and its face (landmarks mirrored and re-ordered left to right)."""
    w = rgb.shape[1]
    marks = face.landmarks.copy()
    marks[:, 0] = w - 1 - marks[:, 0]
    box = face.box.copy()
    box[0] = w - box[0] - box[2]
    return np.ascontiguousarray(rgb[:, ::-1]), Face(box, marks[MIRRORED_POINTS], face.score)


def _cached(
    images: FaceImages, cache: ResultCache, compute: Callable[[Path], dict[str, np.ndarray]], desc: str, progress: bool
) -> list[dict[str, np.ndarray]]:
    """Each image's record from the cache, computed (and stored) where missing."""
    records = []
    for path in tqdm(images.paths, desc=desc, unit="img", disable=not progress):
        key = file_sha256(path)
        rec = cache.get(key)
        if rec is None:
            rec = compute(path)
            cache.put(key, rec)
        records.append(rec)
    return records


def _stack(records: list[dict[str, np.ndarray]], dim: int) -> Templates:
    """Records {found, emb, emb_mirror[, lm]} as arrays (zeros where no face)."""
    found = np.array([bool(r["found"]) for r in records])
    zero = np.zeros(dim)
    return Templates(
        np.stack([r["emb"] if f else zero for r, f in zip(records, found)]).astype(np.float32),
        np.stack([r.get("emb_mirror", zero) if f else zero for r, f in zip(records, found)]).astype(np.float32),
        found,
        np.stack([r["lm"] if "lm" in r else np.zeros((5, 2)) for r in records]),
    )


def sface_templates(images: FaceImages, cache_root: Path, progress: bool) -> Templates:
    """SFace templates (YuNet-aligned, as SFace.embed) of every image and of its mirror image."""
    yunet, sface = YuNet(), SFace()

    def compute(path: Path) -> dict[str, np.ndarray]:
        rgb, _ = read_rgb(path)
        face = yunet.detect(rgb).central(rgb.shape)
        if face is None:
            return {"found": np.array(0)}
        flipped, flipped_face = mirror(rgb, face)
        return {
            "found": np.array(1),
            "lm": face.landmarks,
            "emb": sface.embed(rgb, face),
            "emb_mirror": sface.embed(flipped, flipped_face),
        }

    return _stack(
        _cached(images, ResultCache(cache_root, "templates-sface"), compute, "SFace templates", progress), 128
    )


def dlib_templates(images: FaceImages, cache_root: Path, progress: bool) -> Templates:
    """dlib templates of the whole images (HOG face nearest the centre, 68 points, ResNet), as `evaluate` reads them."""
    hog, resnet = DlibHog(), DlibResNet()

    def compute(path: Path) -> dict[str, np.ndarray]:
        rgb, _ = read_rgb(path)
        face = hog.detect(rgb).central(rgb.shape)
        return {"found": np.array(0)} if face is None else {"found": np.array(1), "emb": resnet.embed(rgb, face)}

    return _stack(_cached(images, ResultCache(cache_root, "templates-dlib"), compute, "dlib templates", progress), 128)


def inhouse_crop(rgb: np.ndarray, source: str) -> np.ndarray:
    """The centre crop the in-house recogniser reads."""
    return centre_crop(rgb, INHOUSE_CROP, source)[0]


def network_templates(
    images: FaceImages,
    embedder: nn.Module,
    cache_root: Path,
    kind: str,
    imaging: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None,
    progress: bool,
) -> Templates:
    """Templates by a torch recogniser of each image's centre crop (through `imaging` first, noise seeded by the image) and of its mirror."""

    @torch.no_grad()
    def compute(path: Path) -> dict[str, np.ndarray]:
        crop = from_uint8(inhouse_crop(read_rgb(path)[0], str(path)))[None]
        both = torch.cat([crop, crop.flip(-1)])
        if imaging is not None:
            seed = int(file_sha256(path)[:12], 16)
            both = torch.cat([imaging(both[i : i + 1], torch.Generator().manual_seed(seed + i)) for i in range(2)])
        emb = F.normalize(embedder(both)).double().numpy()
        return {"found": np.array(1), "emb": emb[0], "emb_mirror": emb[1]}

    records = _cached(images, ResultCache(cache_root, kind), compute, f"{kind} templates", progress)
    return _stack(records, int(records[0]["emb"].shape[0]) if records else 0)


def target_faces(images: FaceImages, recogniser: str, landmarks: np.ndarray, progress: bool) -> np.ndarray:
    """The faces to rebuild, uint8 N x 112 x 112 x 3: SFace's aligned crops, or the in-house recogniser's centre crops."""
    out = np.zeros((len(images.paths), FRAME_PX, FRAME_PX, 3), np.uint8)
    for i, path in enumerate(tqdm(images.paths, desc="target faces", unit="img", disable=not progress)):
        rgb, _ = read_rgb(path)
        if recogniser == "sface":
            out[i] = align(rgb, landmarks[i], FRAME_PX)
        else:
            out[i] = cv2.resize(inhouse_crop(rgb, str(path)), (FRAME_PX, FRAME_PX), interpolation=cv2.INTER_AREA)
    return out


def mirrored_sface_targets(images: FaceImages, landmarks: np.ndarray, progress: bool) -> np.ndarray:
    """SFace's aligned crops of the mirror images (the faces of the mirrored templates)."""
    out = np.zeros((len(images.paths), FRAME_PX, FRAME_PX, 3), np.uint8)
    for i, path in enumerate(tqdm(images.paths, desc="mirrored faces", unit="img", disable=not progress)):
        rgb, _ = read_rgb(path)
        flipped, face = mirror(rgb, Face(np.zeros(4), landmarks[i], 1.0))
        out[i] = align(flipped, face.landmarks, FRAME_PX)
    return out
