"""Heatmap targets and their decoding: Gaussians decode to their centres within a fraction of a pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anonymizer.nets import heatmaps


def _face_like(rng: np.random.Generator, size: int) -> np.ndarray:
    """68 random sub-pixel points well inside a size x size map."""
    return rng.uniform(3.0, size - 4.0, size=(68, 2))


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.5])
def test_render_decode_round_trip_is_sub_pixel(sigma: float) -> None:
    rng = np.random.default_rng(0)
    points = _face_like(rng, 32)
    maps = heatmaps.render(points, 32, sigma, 1.0)
    assert maps.shape == (69, 32, 32) and maps.dtype == np.float32
    decoded = heatmaps.decode(torch.from_numpy(maps[None, :68]))[0].numpy()
    assert np.abs(decoded - points).max() < 0.01  # plain argmax would be off by up to 0.5 px


def test_image_to_map_coordinates_round_trip_through_the_regressor_stride() -> None:
    rng = np.random.default_rng(1)
    image_points = rng.uniform(10, 118, size=(68, 2))
    maps = heatmaps.render(heatmaps.to_map(image_points, 4), 32, 1.5, 1.0)
    found = heatmaps.landmarks(torch.from_numpy(maps[None]), stride=4)[0].numpy()
    assert np.abs(found - image_points).max() < 0.05  # 0.01 map px = 0.04 image px


def test_decode_does_not_extrapolate_at_the_border() -> None:
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 3, 0] = 1.0  # peak on the left edge, a lopsided neighbour to its right
    maps[0, 0, 3, 1] = 0.5
    maps[0, 0, 2, 0] = maps[0, 0, 4, 0] = 0.25  # symmetric in y
    assert heatmaps.decode(maps)[0, 0].tolist() == pytest.approx([0.0, 3.0])


def test_boundary_channel_peaks_on_the_outline_and_decays_away() -> None:
    points = np.zeros((68, 2))
    points[:17] = np.stack([np.linspace(4, 27, 17), np.full(17, 24.0)], axis=1)  # a straight jaw at y = 24
    points[17:] = [16.0, 10.0]  # everything else collapsed to one point
    boundary = heatmaps.boundary_heatmap(points, 32, 1.0)
    assert boundary[24, 8:24].min() == pytest.approx(1.0)
    assert boundary[21, 16] == pytest.approx(np.exp(-4.5), rel=0.05)  # 3 px away, sigma 1
    assert boundary[2, 2] < 1e-6


def test_nme_is_zero_for_identical_landmarks_and_scales_with_error() -> None:
    ref = torch.from_numpy(np.random.default_rng(2).uniform(20, 100, size=(2, 68, 2))).float()
    assert heatmaps.nme(ref, ref).abs().max() == 0
    iod = (ref[:, 36] - ref[:, 45]).norm(dim=-1)
    shifted = ref + torch.tensor([3.0, 4.0])
    assert torch.allclose(heatmaps.nme(shifted, ref), 5.0 / iod)


def test_heatmap_loss_weights_the_foreground() -> None:
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 1, 1] = 1.0
    miss_peak = heatmaps.heatmap_loss(torch.zeros_like(target), target, foreground_weight=10.0)
    spurious = target.clone()
    spurious[0, 0, 3, 3] = 1.0  # the same unit error on a background pixel
    assert miss_peak == pytest.approx(11 * heatmaps.heatmap_loss(spurious, target, foreground_weight=10.0).item())
