"""Synthetic point-source captures from a known PSF with a realistic sensor: photon shot noise,
dark current (with fixed-pattern non-uniformity and hot pixels), read noise, bias, gain and
ADC quantisation. Used to test the calibration chain end to end and to rehearse it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from obscura.config import bounded
from obscura.errors import ObscuraError


@dataclass
class CaptureNoise:
    """Sensor and exposure of the synthetic captures (electrons unless named otherwise)."""

    signal_e: float = bounded(4e5, gt=0, le=1e15)  # Poisson sampling refuses larger means
    full_well_e: float = bounded(20000.0, gt=0)
    read_noise_e: float = bounded(3.0, ge=0)
    dark_current_e: float = bounded(20.0, ge=0)
    dark_nonuniformity: float = bounded(0.2, ge=0)
    hot_pixel_fraction: float = bounded(1e-3, ge=0, le=1)
    hot_pixel_e: float = bounded(3000.0, ge=0)
    bias_dn: float = bounded(64.0, ge=0)
    bit_depth: int = bounded(12, ge=1, le=32)
    frames: int = bounded(8, ge=1)
    dark_frames: int = bounded(8, ge=1)

    @property
    def max_dn(self) -> float:
        """Largest code of the converter (the saturation level)."""
        return float(2**self.bit_depth - 1)

    @property
    def gain_dn_per_e(self) -> float:
        """Full well maps onto the largest code minus the bias."""
        return (self.max_dn - self.bias_dn) / self.full_well_e


@dataclass
class SynthCapture:
    """A synthetic point-source capture: optic, true errors, frame."""

    optic: str = "zernike-random"
    psf_size: int = 96
    frame: list[int] = field(default_factory=lambda: [160, 160])
    top_left: list[int] = field(default_factory=lambda: [30, 40])
    distance_error_m: float = 0.0
    mask_shift_m: list[float] = field(default_factory=lambda: [0.0, 0.0])
    rotation_rad: float = 0.0
    height_scale: float = 1.0
    defocus_waves: float = 0.0
    psf_shift_px: list[float] = field(default_factory=lambda: [0.0, 0.0])
    seed: int = 0


@dataclass
class SynthConfig:
    """What `python -m calibration synth` simulates."""

    capture: SynthCapture = field(default_factory=SynthCapture)
    noise: CaptureNoise = field(default_factory=CaptureNoise)


def synthesise_captures(
    psf: np.ndarray, frame_shape: tuple[int, int], top_left: tuple[int, int], noise: CaptureNoise, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Light frames (K x C x H x W) with `psf` (C x h x w, sums to 1) placed at `top_left`, and dark frames."""
    c, h, w = psf.shape
    rows, cols = frame_shape
    if top_left[0] < 0 or top_left[1] < 0 or top_left[0] + h > rows or top_left[1] + w > cols:
        raise ObscuraError(f"psf of {h} x {w} at {top_left} does not fit a {rows} x {cols} frame")
    rng = np.random.default_rng(seed)
    dark_map = noise.dark_current_e * np.clip(
        1 + noise.dark_nonuniformity * rng.standard_normal((c, rows, cols)), 0, None
    )
    hot = rng.random((c, rows, cols)) < noise.hot_pixel_fraction
    dark_map[hot] += noise.hot_pixel_e
    signal = np.zeros((c, rows, cols))
    signal[:, top_left[0] : top_left[0] + h, top_left[1] : top_left[1] + w] = psf * noise.signal_e

    def expose(expected_e: np.ndarray) -> np.ndarray:
        electrons = np.minimum(rng.poisson(expected_e).astype(np.float64), noise.full_well_e)
        electrons += noise.read_noise_e * rng.standard_normal(expected_e.shape)
        return np.clip(np.round(electrons * noise.gain_dn_per_e + noise.bias_dn), 0, noise.max_dn)

    lights = np.stack([expose(signal + dark_map) for _ in range(noise.frames)])
    darks = np.stack([expose(dark_map) for _ in range(noise.dark_frames)])
    return lights, darks
