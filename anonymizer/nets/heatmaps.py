"""Face heatmaps: 68 Gaussian landmark channels plus one face-boundary channel, and their decoding.

Coordinates are pixel positions with integer values at pixel centres (dlib's convention). A map
of stride s samples the image at (q + 0.5) s - 0.5 for map pixel q, so `to_map` / `from_map`
convert between image and map coordinates exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

N_LANDMARKS = 68
N_CHANNELS = N_LANDMARKS + 1  # the boundary channel comes last

# The face outline of the 68-point scheme as polylines (closed ones repeat their first point):
# jaw, brows, nose bridge, nostrils, eyes, outer and inner lips (the boundaries of the reference's FAN).
BOUNDARY_CURVES: tuple[tuple[int, ...], ...] = (
    tuple(range(0, 17)),
    tuple(range(17, 22)),
    tuple(range(22, 27)),
    tuple(range(27, 31)),
    tuple(range(31, 36)),
    (*range(36, 42), 36),
    (*range(42, 48), 42),
    (*range(48, 60), 48),
    (*range(60, 68), 60),
)


def to_map(points: np.ndarray, stride: float) -> np.ndarray:
    """Image pixel coordinates -> heatmap pixel coordinates for a map of the given stride."""
    return (np.asarray(points, dtype=np.float64) + 0.5) / stride - 0.5


def from_map(points: Tensor | np.ndarray, stride: float) -> Tensor | np.ndarray:
    """Heatmap pixel coordinates -> image pixel coordinates (inverse of `to_map`)."""
    return (points + 0.5) * stride - 0.5


def landmark_heatmaps(points: np.ndarray, size: int, sigma_px: float) -> np.ndarray:
    """K x 2 map coordinates -> K x size x size Gaussians of peak 1 and std `sigma_px` (float32)."""
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-((grid[None, :] - points[:, :1]) ** 2) / (2 * sigma_px**2))
    gy = np.exp(-((grid[None, :] - points[:, 1:2]) ** 2) / (2 * sigma_px**2))
    return (gy[:, :, None] * gx[:, None, :]).astype(np.float32)


def boundary_heatmap(points: np.ndarray, size: int, sigma_px: float) -> np.ndarray:
    """size x size map exp(-d^2 / 2 sigma^2) of the distance d to the face outline (68 map coordinates)."""

    shift = 4  # cv2 draws at 1/16 px precision with fixed-point coordinates
    canvas = np.full((size, size), 255, np.uint8)
    for curve in BOUNDARY_CURVES:
        pts = np.round(points[list(curve)] * (1 << shift)).astype(np.int32)
        cv2.polylines(canvas, [pts], False, 0, 1, cv2.LINE_8, shift)
    distance = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.exp(-(distance.astype(np.float64) ** 2) / (2 * sigma_px**2)).astype(np.float32)


def render(points: np.ndarray, size: int, sigma_px: float, boundary_sigma_px: float) -> np.ndarray:
    """The regressor's target: 68 landmark Gaussians + the boundary map, 69 x size x size."""
    points = np.asarray(points, dtype=np.float64).reshape(N_LANDMARKS, 2)
    marks = landmark_heatmaps(points, size, sigma_px)
    return np.concatenate([marks, boundary_heatmap(points, size, boundary_sigma_px)[None]], axis=0)


def decode(heatmaps: Tensor) -> Tensor:
    """N x K x H x W heatmaps -> N x K x 2 (x, y) map coordinates: argmax refined by a log-parabola.

    Near its peak the log of a Gaussian is a parabola, so fitting one through the log values at
    the argmax and its two neighbours (per axis) recovers the sub-pixel centre exactly for a
    Gaussian and closely for a trained network's blob. Peaks on the border are not refined.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.detach().reshape(n, k, h * w).float()
    idx = flat.argmax(dim=-1)
    y, x = idx // w, idx % w
    logs = flat.clamp_min(1e-8).log()

    def at(dy: int, dx: int) -> Tensor:
        yy, xx = (y + dy).clamp(0, h - 1), (x + dx).clamp(0, w - 1)
        return logs.gather(-1, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

    centre = at(0, 0)
    offsets = []
    for lo, hi, pos, limit in ((at(0, -1), at(0, 1), x, w), (at(-1, 0), at(1, 0), y, h)):
        curvature = lo - 2 * centre + hi
        inside = (pos > 0) & (pos < limit - 1) & (curvature < 0)
        step = 0.5 * (lo - hi) / torch.where(inside, curvature, torch.ones_like(curvature))
        offsets.append(torch.where(inside, step.clamp(-0.5, 0.5), torch.zeros_like(step)))
    return torch.stack([x.float() + offsets[0], y.float() + offsets[1]], dim=-1)


def landmarks(heatmaps: Tensor, stride: float) -> Tensor:
    """Image-pixel landmarks (N x 68 x 2) from the regressor's 69-channel output of the given stride."""
    return from_map(decode(heatmaps[:, :N_LANDMARKS]), stride)


def heatmap_loss(pred: Tensor, target: Tensor, foreground_weight: float = 10.0) -> Tensor:
    """Weighted MSE: pixels are weighted 1 + w * target, so the few peak pixels are not drowned by background."""
    weight = 1.0 + foreground_weight * target
    return (weight * (pred - target) ** 2).mean()


def nme(pred: Tensor, ref: Tensor) -> Tensor:
    """Per-face mean landmark error over the inter-ocular distance (outer eye corners 36, 45) of `ref`."""
    inter_ocular = (ref[:, 36] - ref[:, 45]).norm(dim=-1).clamp_min(1e-6)
    return (pred - ref).norm(dim=-1).mean(dim=-1) / inter_ocular
