"""Simple numbers that describe a PSF: encircled-energy radius, centre-spot energy and centroid."""

from __future__ import annotations

import numpy as np


def encircled_energy_radius_px(psf: np.ndarray, fraction: float = 0.8) -> list[float]:
    """Per channel, the radius (pixels, about pixel (H//2, W//2)) holding `fraction` of the PSF."""
    c, h, w = psf.shape
    y, x = np.indices((h, w))
    r = np.hypot(y - h // 2, x - w // 2).ravel()
    order = np.argsort(r, kind="stable")
    radii = []
    for i in range(c):
        cumulative = np.cumsum(psf[i].ravel()[order])
        idx = min(int(np.searchsorted(cumulative, fraction * cumulative[-1])), len(order) - 1)
        radii.append(float(r[order][idx]))
    return radii


def centre_spot_energy(psf: np.ndarray, radius_px: list[float]) -> list[float]:
    """Per channel, the fraction of the PSF within `radius_px[channel]` of pixel (H//2, W//2)."""
    c, h, w = psf.shape
    y, x = np.indices((h, w))
    r = np.hypot(y - h // 2, x - w // 2)
    return [float(psf[i][r <= radius_px[i]].sum() / psf[i].sum()) for i in range(c)]


def centroid_px(psf: np.ndarray) -> list[tuple[float, float]]:
    """Per channel, the (row, column) centre of mass relative to pixel (H//2, W//2)."""
    c, h, w = psf.shape
    y, x = np.indices((h, w))
    total = psf.sum(axis=(1, 2))
    return [
        (float((psf[i] * (y - h // 2)).sum() / total[i]), float((psf[i] * (x - w // 2)).sum() / total[i]))
        for i in range(c)
    ]
