"""Frechet distances: closed forms, and the Inception-FID path exercised with a small stand-in network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.realism import frechet_distance, inception_features, torch_features
from obscura.errors import ObscuraError


def test_frechet_distance_of_a_shifted_set_is_the_squared_shift() -> None:
    a = np.random.default_rng(0).normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_of_scaled_gaussians_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 3)), 2.0 * rng.normal(size=(20000, 3))
    # N(0, I) vs N(0, 4 I): tr(I + 4 I - 2 * 2 I) = 3 per the formula
    assert frechet_distance(a, b) == pytest.approx(3.0, rel=0.05)


def test_a_stand_in_feature_network_separates_real_from_noise() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    rng = np.random.default_rng(0)
    smooth = np.repeat(np.repeat(rng.integers(0, 255, (40, 4, 4, 3)), 8, axis=1), 8, axis=2).astype(np.uint8)
    noise = rng.integers(0, 255, (40, 32, 32, 3)).astype(np.uint8)
    f_smooth, f_noise = torch_features(net, smooth, batch_size=16), torch_features(net, noise, batch_size=16)
    assert f_smooth.shape == (40, 8)
    assert frechet_distance(f_smooth[:20], f_smooth[20:]) < frechet_distance(f_smooth, f_noise)


def test_inception_fid_needs_the_weights_file(tmp_path) -> None:
    with pytest.raises(ObscuraError, match="file not found"):
        inception_features(tmp_path / "pt_inception.pth")
    with pytest.raises(ObscuraError, match="expected N x D"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
