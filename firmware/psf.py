"""The optic on a workstation: a PSF applied to clean frames by linear (zero-padded) FFT convolution.

Convention (DESIGN.md): a PSF is C x H x W, non-negative, sums to 1 per colour channel, and its
optical axis sits at pixel (H // 2, W // 2). The convolution happens in linear light.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import fft as sfft

from firmware.srgb_numpy import linear_to_srgb, srgb_to_linear
from obscura.errors import ObscuraError

SUM_TOLERANCE = 1e-3


def load_psf(path: str | Path) -> np.ndarray:
    """Read and check a PSF .npy file: shape (C, H, W) with C in {1, 3}, >= 0, each channel sums to 1."""
    file = Path(path)
    try:
        psf = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ObscuraError(f"PSF file {file}: cannot read it as a .npy array ({err})") from None
    return check_psf(psf, str(file))


def check_psf(psf: np.ndarray, name: str = "PSF") -> np.ndarray:
    """Validate a PSF array and return it as float32, with a one-line error naming what is wrong."""
    if psf.ndim != 3 or psf.shape[0] not in (1, 3):
        raise ObscuraError(f"{name}: expected shape (C, H, W) with C = 1 or 3, got {psf.shape}")
    if not np.issubdtype(psf.dtype, np.floating) or not np.all(np.isfinite(psf)):
        raise ObscuraError(f"{name}: expected finite floating-point values, got dtype {psf.dtype}")
    if psf.min() < 0:
        raise ObscuraError(f"{name}: a PSF is an intensity and must be >= 0 (min {psf.min():.3g})")
    sums = psf.sum(axis=(1, 2))
    if np.any(np.abs(sums - 1.0) > SUM_TOLERANCE):
        raise ObscuraError(f"{name}: each channel must sum to 1, got sums {np.round(sums, 6).tolist()}")
    return psf.astype(np.float32)


class PsfConvolver:
    """Linear convolution of H x W x 3 linear-light images with a fixed PSF; the PSF spectrum is cached per frame size."""

    def __init__(self, psf: np.ndarray):
        self.psf = check_psf(psf)
        self._shape: tuple[int, int] | None = None
        self._spectrum: np.ndarray | None = None
        self._fft_shape: tuple[int, int] = (0, 0)

    def convolve_linear(self, linear: np.ndarray) -> np.ndarray:
        """Convolve a linear-light H x W x 3 float image; same size out, zeros assumed outside the frame."""
        h, w = linear.shape[:2]
        kh, kw = self.psf.shape[1:]
        if self._shape != (h, w):
            # Full linear convolution needs h + kh - 1 samples: no wrap-around from the opposite edge.
            self._fft_shape = (sfft.next_fast_len(h + kh - 1, real=True), sfft.next_fast_len(w + kw - 1, real=True))
            self._spectrum = sfft.rfft2(self.psf, s=self._fft_shape, axes=(1, 2))
            self._shape = (h, w)
        spectrum = sfft.rfft2(np.moveaxis(linear, -1, 0), s=self._fft_shape, axes=(1, 2)) * self._spectrum
        full = sfft.irfft2(spectrum, s=self._fft_shape, axes=(1, 2))
        # The optical axis at (kh // 2, kw // 2) maps an input pixel onto itself.
        cy, cx = kh // 2, kw // 2
        return np.moveaxis(full[:, cy : cy + h, cx : cx + w], 0, -1).astype(np.float32)

    def capture(self, srgb: np.ndarray) -> np.ndarray:
        """What the sensor records: sRGB uint8 frame -> linear -> PSF -> sRGB uint8."""
        return linear_to_srgb(self.convolve_linear(srgb_to_linear(srgb)))
