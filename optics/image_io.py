"""Reading scenes and writing captures: 8/16-bit sRGB files <-> N x 3 x H x W linear float tensors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from obscura import atomic
from obscura.errors import ObscuraError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(inputs: list[str]) -> list[Path]:
    """Expand files and folders (their image files, sorted) into a list of image paths."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ObscuraError(
                    f"folder {path} holds no images; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
                )
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise ObscuraError(f"input {path} does not exist; expected an image file or a folder of images")
    return paths


def read_srgb(path: Path, max_side: int | None = None) -> np.ndarray:
    """An image file as H x W x 3 sRGB float32 in [0, 1] (RGB order), optionally shrunk to max_side."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ObscuraError(f"cannot read image {path}; expected a PNG/JPEG/TIFF/BMP/WebP file")
    if image.dtype not in (np.uint8, np.uint16):
        raise ObscuraError(f"image {path} has sample type {image.dtype}; expected 8- or 16-bit")
    scale = 255.0 if image.dtype == np.uint8 else 65535.0
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB).astype(np.float32) / scale
    if max_side and max(rgb.shape[:2]) > max_side:
        f = max_side / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
    return rgb


def batch_of_one(srgb: np.ndarray) -> Tensor:
    """An H x W x 3 float image in [0, 1] as a 1 x 3 x H x W tensor (for `read_srgb`'s 8- or 16-bit scenes)."""
    return torch.from_numpy(np.ascontiguousarray(srgb)).movedim(-1, -3)[None].float()


def from_uint8(images: np.ndarray) -> Tensor:
    """... x H x W x 3 uint8 -> ... x 3 x H x W float in [0, 1] (the inverse of to_uint8)."""
    return torch.from_numpy(np.ascontiguousarray(images)).movedim(-1, -3).float() / 255.0


def to_uint8(images: Tensor) -> np.ndarray:
    """... x 3 x H x W in [0, 1] -> ... x H x W x 3 uint8."""
    return (images.detach().cpu().movedim(-3, -1).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)


def write_png(path: Path, rgb8: np.ndarray) -> Path:
    """Atomically write an RGB uint8 array as PNG."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ObscuraError(f"cannot encode {path} as PNG")
    return atomic.write_bytes(path, data.tobytes())
