"""sRGB transfer curve (IEC 61966-2-1): optics act on linear light, cameras and files hold sRGB."""

from __future__ import annotations

import numpy as np

_DECODE_LUT = None


def srgb_to_linear(image: np.ndarray) -> np.ndarray:
    """Decode sRGB (uint8, or float in [0, 1]) to linear float32 in [0, 1]."""
    global _DECODE_LUT
    if image.dtype == np.uint8:
        if _DECODE_LUT is None:
            _DECODE_LUT = _decode(np.arange(256, dtype=np.float64) / 255.0).astype(np.float32)
        return _DECODE_LUT[image]
    return _decode(np.clip(image.astype(np.float32), 0.0, 1.0)).astype(np.float32)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode linear light in [0, 1] (clipped) to sRGB uint8."""
    x = np.clip(linear, 0.0, 1.0).astype(np.float32)
    encoded = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
    return np.clip(np.rint(encoded * 255.0), 0, 255).astype(np.uint8)


def _decode(v: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve on floats in [0, 1]."""
    return np.where(v <= 0.04045, v / 12.92, np.power((v + 0.055) / 1.055, 2.4))
