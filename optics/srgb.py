"""sRGB transfer curve (IEC 61966-2-1): the optics work in linear light, files are sRGB."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

_LINEAR_KNEE = 0.0031308
_SRGB_KNEE = 0.04045


def srgb_to_linear(x: Tensor) -> Tensor:
    """Decode sRGB values in [0, 1] to linear light in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    low = x / 12.92
    high = ((x.clamp_min(_SRGB_KNEE) + 0.055) / 1.055) ** 2.4
    return torch.where(x <= _SRGB_KNEE, low, high)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Encode linear light in [0, 1] to sRGB values in [0, 1]."""
    x = x.clamp(0.0, 1.0)
    low = x * 12.92
    # clamp_min keeps the unused branch finite so gradients never see 0 ** (1/2.4 - 1).
    high = 1.055 * x.clamp_min(_LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
    return torch.where(x <= _LINEAR_KNEE, low, high)


def through_linear_light(transform: Callable[[Tensor], Tensor], image: np.ndarray) -> np.ndarray:
    """Pass an sRGB uint8 H x W x 3 image through a linear-light transform (1 x 3 x H x W), without gradient."""
    x = torch.from_numpy(np.ascontiguousarray(image).astype(np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        out = linear_to_srgb(transform(srgb_to_linear(x)))
    return (out[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
