"""Sensor model: noise statistics, full well, bit depth, Bayer mosaic, reproducibility, gradients."""

from __future__ import annotations

import pytest
import torch

from obscura.errors import ObscuraError
from optics.sensor import Sensor, demosaic_bilinear, mosaic
from optics.settings import SensorConfig


def test_noise_variance_is_shot_plus_read() -> None:
    cfg = SensorConfig(full_well_e=10000.0, read_noise_e=5.0, bit_depth=16)
    sensor = Sensor(cfg).double()
    level = 0.2
    x = torch.full((1, 3, 256, 256), level, dtype=torch.float64)
    out = sensor(x, generator=torch.Generator().manual_seed(0))
    electrons = out * cfg.full_well_e
    expected_var = level * cfg.full_well_e + cfg.read_noise_e**2
    assert float(electrons.mean()) == pytest.approx(level * cfg.full_well_e, rel=2e-3)
    assert float(electrons.var()) == pytest.approx(expected_var, rel=0.03)


def test_quantisation_levels_and_full_well() -> None:
    sensor = Sensor(SensorConfig(bit_depth=4, noise=False))
    x = torch.linspace(0, 1.5, 1000).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    out = sensor(x)
    values = torch.unique(out)
    assert len(values) == 16
    assert torch.allclose(values * 15, torch.arange(16, dtype=out.dtype), atol=1e-5)
    assert float(out.max()) == 1.0  # saturated at the full well


def test_reproducible_with_generator() -> None:
    sensor = Sensor()
    x = torch.rand(2, 3, 16, 16)
    a = sensor(x, generator=torch.Generator().manual_seed(7))
    b = sensor(x, generator=torch.Generator().manual_seed(7))
    c = sensor(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradients_pass_through_noise_and_quantisation() -> None:
    sensor = Sensor(SensorConfig(bit_depth=8)).double()
    x = (torch.rand(1, 3, 8, 8, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    sensor(x, generator=torch.Generator().manual_seed(0)).sum().backward()
    # d(out)/dx = 1 + d(sqrt(e))/dx * noise: positive and near 1 at these exposures.
    assert torch.all(x.grad > 0.8) and torch.all(x.grad < 1.2)


def test_bayer_mosaic_round_trip() -> None:
    flat = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1).expand(1, 3, 10, 12).contiguous()
    raw = mosaic(flat)
    assert raw.shape == (1, 1, 10, 12)
    assert raw[0, 0, 0, 0] == 0.2 and raw[0, 0, 0, 1] == 0.5 and raw[0, 0, 1, 1] == 0.8
    rgb = demosaic_bilinear(raw)
    assert torch.allclose(rgb[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1], atol=1e-6)
    out = Sensor(SensorConfig(bayer=True, noise=False, bit_depth=12))(flat)
    assert out.shape == flat.shape
    assert torch.allclose(out[..., 1:-1, 1:-1], flat[..., 1:-1, 1:-1], atol=1e-3)


def test_bad_settings() -> None:
    with pytest.raises(ObscuraError, match="full_well_e is -1"):
        Sensor(SensorConfig(full_well_e=-1.0))
    with pytest.raises(ObscuraError, match="bit_depth is 0"):
        Sensor(SensorConfig(bit_depth=0))
