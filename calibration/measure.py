"""A measured PSF from captures of a point source.

Frames (K x H x W or K x C x H x W, raw digital numbers) and dark frames of the same exposure
-> master dark subtracted, hot pixels (outliers of the master dark) replaced by their
neighbours' median, frames averaged, background (median of the frame border) removed,
centroid (iterated centre of mass), crop centred on the centroid's pixel, normalisation to
sum 1 per channel, and a per-pixel standard uncertainty (frame-to-frame scatter / sqrt(K),
plus the dark's). Saturated or empty captures are refused: neither gives a usable PSF.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from obscura.errors import ObscuraError


@dataclass
class MeasureConfig:
    """How captures become a PSF; saturation_dn is the sensor's largest code (default: 12-bit)."""

    crop_px: int = 64
    saturation_dn: float = 4095.0
    hot_pixel_sigma: float = 8.0
    border_px: int = 8
    min_peak_snr: float = 20.0
    centroid_iterations: int = 5


@dataclass
class MeasuredPSF:
    """The normalised PSF (C x h x w), its standard uncertainty, and how it was obtained."""

    psf: np.ndarray
    sigma: np.ndarray
    centroid_px: tuple[float, float]
    offset_px: tuple[float, float]
    info: dict = field(default_factory=dict)


def _as_stack(frames: np.ndarray, name: str) -> np.ndarray:
    """K x C x H x W float64 from K x H x W or K x C x H x W."""
    a = np.asarray(frames, dtype=np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[0] < 1 or min(a.shape[-2:]) < 8:
        raise ObscuraError(f"{name} have shape {np.shape(frames)}; expected K x H x W or K x C x H x W with H, W >= 8")
    if not np.all(np.isfinite(a)):
        raise ObscuraError(f"{name} hold NaN or infinite values")
    return a


def check_saturation(frames: np.ndarray, saturation_dn: float) -> None:
    """Refuse frames with any pixel at or above the saturation level (the PSF's core would be clipped)."""
    for k, frame in enumerate(frames):
        hits = int((frame >= saturation_dn).sum())
        if hits:
            raise ObscuraError(
                f"capture {k} is saturated: {hits} pixel(s) at or above {saturation_dn:g} DN "
                f"(max {frame.max():g}); expected an exposure whose peak stays below saturation"
            )


def hot_pixels(master_dark: np.ndarray, sigma: float) -> np.ndarray:
    """Pixels of the master dark more than `sigma` robust standard deviations above its median, per channel."""
    median = np.median(master_dark, axis=(-2, -1), keepdims=True)
    mad = np.median(np.abs(master_dark - median), axis=(-2, -1), keepdims=True) * 1.4826
    return master_dark > median + sigma * np.maximum(mad, 1e-9)


def replace_pixels(image: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """Replace flagged pixels of C x H x W `image` by the median of their 3 x 3 neighbours."""
    out = image.copy()
    for c in range(image.shape[0]):
        if bad[c].any():
            out[c][bad[c]] = ndimage.median_filter(image[c], size=3, mode="nearest")[bad[c]]
    return out


def centroid(image: np.ndarray, start: tuple[float, float], radius: float, iterations: int) -> tuple[float, float]:
    """Centre of mass (row, col) of the positive part of `image` in a circular window, re-centred each iteration."""
    y, x = np.indices(image.shape)
    cy, cx = start
    for _ in range(iterations):
        weight = np.where(np.hypot(y - cy, x - cx) <= radius, np.clip(image, 0, None), 0.0)
        total = weight.sum()
        if total <= 0:
            break
        cy, cx = float((weight * y).sum() / total), float((weight * x).sum() / total)
    return cy, cx


def measure_psf(frames: np.ndarray, darks: np.ndarray, cfg: MeasureConfig) -> MeasuredPSF:
    """The measured PSF from point-source frames and dark frames (raw DN)."""
    light = _as_stack(frames, "captures")
    dark = _as_stack(darks, "dark frames")
    if light.shape[1:] != dark.shape[1:]:
        raise ObscuraError(f"dark frames have shape {dark.shape[1:]}; expected the captures' {light.shape[1:]}")
    if cfg.crop_px < 8 or cfg.crop_px > min(light.shape[-2:]):
        raise ObscuraError(f"crop_px is {cfg.crop_px}; expected 8 to {min(light.shape[-2:])} (the frame size)")
    check_saturation(light, cfg.saturation_dn)
    master = dark.mean(axis=0)
    hot = hot_pixels(master, cfg.hot_pixel_sigma)
    signal = np.stack([replace_pixels(f - master, hot) for f in light])
    mean = signal.mean(axis=0)
    k, kd = light.shape[0], dark.shape[0]
    scatter = signal.std(axis=0, ddof=1) if k > 1 else np.sqrt(np.clip(mean, 0, None) + dark.std(axis=0).mean() ** 2)
    dark_scatter = dark.std(axis=0, ddof=1) if kd > 1 else np.zeros_like(master)
    variance = scatter**2 / k + dark_scatter**2 / kd
    b = cfg.border_px
    border = np.ones(mean.shape[-2:], dtype=bool)
    border[b:-b, b:-b] = False
    background = np.median(mean[:, border], axis=-1)
    noise = np.median(np.abs(mean[:, border] - background[:, None]), axis=-1) * 1.4826
    mean = mean - background[:, None, None]
    total = mean.sum(axis=0)
    smooth = ndimage.uniform_filter(total, 3)
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    # Noise of the 3 x 3 mean of the channel sum: per-pixel noise / 3, channels added in quadrature.
    snr = float(smooth[peak] / max(float(np.sqrt((noise**2).sum())) / 3.0, 1e-12))
    if snr < cfg.min_peak_snr:
        raise ObscuraError(
            f"captures hold no point source: the brightest spot is {snr:.1f} noise sigma above the background; "
            f"expected at least {cfg.min_peak_snr:g} (is the source on and in view?)"
        )
    cy, cx = centroid(total, (float(peak[0]), float(peak[1])), cfg.crop_px / 2, cfg.centroid_iterations)
    row, col = int(round(cy)), int(round(cx))
    half = cfg.crop_px // 2
    top, left = row - half, col - half
    if top < 0 or left < 0 or top + cfg.crop_px > mean.shape[-2] or left + cfg.crop_px > mean.shape[-1]:
        raise ObscuraError(
            f"the point source's centroid ({cy:.1f}, {cx:.1f}) is within {half} px of the frame edge; "
            f"expected it at least crop_px/2 = {half} px inside (re-aim the source or use a smaller crop)"
        )
    crop = mean[:, top : top + cfg.crop_px, left : left + cfg.crop_px]
    crop_var = (
        variance[:, top : top + cfg.crop_px, left : left + cfg.crop_px] + (noise**2 / border.sum())[:, None, None]
    )
    sums = crop.sum(axis=(-2, -1), keepdims=True)
    if np.any(sums <= 0):
        raise ObscuraError(
            "a colour channel of the captures holds no light after background subtraction; expected the source in every channel"
        )
    info = {
        "frames": k,
        "dark_frames": kd,
        "hot_pixels": int(hot.sum()),
        "background_dn": background.tolist(),
        "background_noise_dn": noise.tolist(),
        "peak_snr": snr,
        "peak_dn": float(light.max()),
        "crop_origin_px": [top, left],
        "crop_energy_fraction": (sums[:, 0, 0] / mean.sum(axis=(-2, -1))).tolist(),
    }
    return MeasuredPSF(crop / sums, np.sqrt(crop_var) / sums, (cy, cx), (cy - row, cx - col), info)
