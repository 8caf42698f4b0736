"""sRGB transfer curve (IEC 61966-2-1): the optics work in linear light, files are sRGB."""

from __future__ import annotations

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
