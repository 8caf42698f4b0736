"""What a protection is: an sRGB image transform built from an options dataclass (the registry names them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Kind:
    """A protection family: its options (a config dataclass), how to build the transform, and what it does."""

    options: type
    build: Callable[[Any], Transform]
    description: str


@dataclass(frozen=True)
class Protection:
    """A resolved protection: sRGB uint8 H x W x 3 -> protected image of the same size, with its resolved options."""

    name: str
    apply: Transform
    options: Any
    cache_key: str
    description: str
