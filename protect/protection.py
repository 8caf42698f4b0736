"""What a protection is: an sRGB image transform built from an options dataclass (the registry names them).

A per-user protection (a P3-mask) is learned from each user's own images instead: a key per user
(the mask) and how it is applied; `protect` learns one per identity folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from skimage.metrics import structural_similarity

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PerUser:
    """A protection learned from each user's own images: the user's key, and how an image is protected with it."""

    learn: Callable[[list[np.ndarray]], np.ndarray]
    apply: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (image, key) -> protected image
    key_file: str  # the key's file name beside the user's protected images


@dataclass(frozen=True)
class Kind:
    """A protection family: its options (a config dataclass), how to build the transform, and what it does.

    A per-user family builds a `PerUser` instead; its image transform is then refused (one line).
    """

    options: type
    build: Callable[[Any], Transform]
    description: str
    per_user: Callable[[Any], PerUser] | None = None


@dataclass(frozen=True)
class Protection:
    """A resolved protection: sRGB uint8 H x W x 3 -> protected image of the same size, with its resolved options."""

    name: str
    apply: Transform
    options: Any
    cache_key: str
    description: str
    per_user: PerUser | None = None


def ssim_8bit(clean: np.ndarray, protected: np.ndarray) -> float:
    """SSIM of two sRGB uint8 H x W x 3 images over colour (skimage's 7 x 7 window): what `protect` reports and bounds."""
    return float(structural_similarity(clean, protected, channel_axis=-1, data_range=255))
