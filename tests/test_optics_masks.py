"""Phase masks: phase formula, max-height constraint, N-level quantisation with gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from obscura.errors import ObscuraError
from optics.masks import FreeformSurface, PhaseMask, ZernikeSurface
from optics.materials import refractive_index


def _freeform(values_um: torch.Tensor, **kwargs) -> PhaseMask:
    surface = FreeformSurface(values_um.shape[-1])
    with torch.no_grad():
        surface.height_um.copy_(values_um)
    return PhaseMask(surface, **kwargs)


def test_phase_is_2pi_n_minus_1_h_over_lambda() -> None:
    mask = _freeform(torch.full((4, 4), 1.5)).double()
    lam = torch.tensor([450e-9, 633e-9], dtype=torch.float64)
    phase = mask.phase(lam)
    expected = 2 * math.pi * (refractive_index("fused_silica", lam) - 1) * 1.5e-6 / lam
    assert torch.allclose(phase[:, 0, 0], expected, rtol=1e-12)


@pytest.mark.parametrize("levels, constraint", [(4, "wrap"), (8, "clamp"), (16, "wrap")])
def test_quantisation_gives_exactly_n_heights_and_gradients(levels: int, constraint: str) -> None:
    torch.manual_seed(0)
    max_h = 1.2e-6
    raw_um = torch.rand(64, 64) * 3.0 - 0.5
    mask = _freeform(raw_um, max_height_m=max_h, constraint=constraint, levels=levels).double()
    h = mask.height_m()
    values = torch.unique(h.detach())
    assert len(values) == levels
    assert float(values.min()) >= 0 and float(values.max()) <= max_h + 1e-18
    steps = torch.diff(values)
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-9)
    weights = torch.randn(64, 64, dtype=torch.float64)
    (h * weights).sum().backward()
    grad = mask.surface.height_um.grad
    assert grad is not None and grad.abs().sum() > 0
    # Straight-through: wherever the constraint passes gradients, quantisation does too.
    passing = (
        torch.ones_like(raw_um, dtype=torch.bool) if constraint == "wrap" else (raw_um > 0) & (raw_um < max_h * 1e6)
    )
    assert torch.all(grad[passing] != 0)


def test_wrap_keeps_design_phase_modulo_2pi() -> None:
    lam0 = 550e-9
    n0 = float(refractive_index("fused_silica", lam0))
    h2pi = lam0 / (n0 - 1)
    raw = torch.linspace(0, 5, 64).repeat(64, 1)
    free = _freeform(raw).double()
    wrapped = _freeform(raw, max_height_m=h2pi, constraint="wrap").double()
    lam = torch.tensor([lam0], dtype=torch.float64)
    assert float(wrapped.height_m().detach().max()) < h2pi
    diff = torch.remainder(free.phase(lam) - wrapped.phase(lam) + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9


def test_zernike_surface_fixes_first_terms() -> None:
    x = (np.arange(32) - 15.5) / 16
    rho, theta = np.hypot(*np.meshgrid(x, x)), np.arctan2(*np.meshgrid(x, x))
    surface = ZernikeSurface(rho, theta, num_terms=10, fixed_zero_terms=3)
    with torch.no_grad():
        surface.coefficients_um[:3] = 5.0
    assert float(surface().detach().abs().max()) == 0.0
    surface().sum().backward()
    assert torch.all(surface.coefficients_um.grad[:3] == 0)


def test_bad_mask_settings() -> None:
    with pytest.raises(ObscuraError, match="levels"):
        _freeform(torch.zeros(4, 4), levels=8)
    with pytest.raises(ObscuraError, match="max_height_m"):
        _freeform(torch.zeros(4, 4), constraint="clamp", max_height_m=-1.0)
