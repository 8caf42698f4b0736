"""sRGB transfer curve against IEC 61966-2-1 values."""

from __future__ import annotations

import torch

from optics.srgb import linear_to_srgb, srgb_to_linear


def test_known_values() -> None:
    x = torch.tensor([0.0, 0.04045, 0.5, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4, 1.0], dtype=torch.float64)
    assert torch.allclose(srgb_to_linear(x), expected, atol=1e-12)
    assert abs(float(srgb_to_linear(torch.tensor(0.5, dtype=torch.float64))) - 0.21404) < 1e-5


def test_round_trip_and_gradient() -> None:
    x = torch.linspace(0, 1, 1001, dtype=torch.float64, requires_grad=True)
    back = linear_to_srgb(srgb_to_linear(x))
    assert torch.allclose(back, x, atol=1e-9)
    back.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_clamps_out_of_range() -> None:
    assert torch.equal(srgb_to_linear(torch.tensor([-0.5, 1.5])), torch.tensor([0.0, 1.0]))
