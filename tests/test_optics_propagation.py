"""Free-space propagation: power conservation, agreement with torchoptics and between methods."""

from __future__ import annotations

import math

import pytest
import torch

from obscura.errors import ObscuraError
from optics.propagation import (
    SamplingWarning,
    angular_spectrum,
    centred_coordinates,
    fresnel_transfer,
    scaled_fresnel,
)

LAMBDA = 633e-9


def _gaussian(n: int, pitch: float, waist: float, tilt_cycles_per_m: float = 0.0) -> torch.Tensor:
    """A (tilted) Gaussian beam sampled on an n x n grid, complex128."""
    x = centred_coordinates(n, pitch)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    return torch.polar(torch.exp(-r2 / waist**2), 2 * math.pi * tilt_cycles_per_m * x[None, :].expand(n, n))


def _soft_aperture(n: int, pitch: float, radius: float) -> torch.Tensor:
    """A circular aperture with a smooth (raised-cosine) rim and a weak defocus phase."""
    x = centred_coordinates(n, pitch)
    r = torch.hypot(x[:, None], x[None, :])
    rim = 6 * pitch
    amp = torch.clamp((radius - r) / rim + 0.5, 0, 1)
    amp = 0.5 - 0.5 * torch.cos(math.pi * amp)
    return torch.polar(amp, -math.pi * r**2 / (LAMBDA * 0.2))


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method", [angular_spectrum, fresnel_transfer])
def test_power_is_conserved(method) -> None:
    field = _gaussian(256, 2e-6, 40e-6, tilt_cycles_per_m=2e4)
    out = method(field, LAMBDA, 1e-3, 2e-6)
    p_in, p_out = field.abs().pow(2).sum(), out.abs().pow(2).sum()
    assert abs(float(p_out / p_in) - 1) < 1e-6


def test_scaled_fresnel_conserves_power() -> None:
    field = _gaussian(128, 4e-6, 60e-6)[None]
    x = centred_coordinates(128, 4e-6)
    y = centred_coordinates(256, 4e-6)  # a wider output window than the input grid
    out = scaled_fresnel(field, x, x, y, y, torch.tensor([LAMBDA], dtype=torch.float64), 10e-3)
    ratio = float(out.abs().pow(2).sum() / field.abs().pow(2).sum())
    assert abs(ratio - 1) < 1e-6


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_asm_matches_torchoptics(dtype: torch.dtype) -> None:
    torchoptics = pytest.importorskip("torchoptics")
    n, pitch, z = 256, 2e-6, 2e-3
    field = _soft_aperture(n, pitch, 120e-6)
    theirs = (
        torchoptics.Field(field, wavelength=LAMBDA, spacing=(pitch, pitch))
        .propagate_to_z(z, propagation_method="ASM", asm_pad=(n // 2, n // 2))
        .data
    )
    ours = angular_spectrum(field.to(dtype), LAMBDA, z, pitch)
    assert ours.dtype == dtype
    assert _rel_l2(ours.to(torch.complex128), theirs) <= 1e-3


def test_fresnel_matches_torchoptics() -> None:
    torchoptics = pytest.importorskip("torchoptics")
    n, pitch, z = 256, 2e-6, 2e-3
    field = _soft_aperture(n, pitch, 120e-6)
    theirs = (
        torchoptics.Field(field, wavelength=LAMBDA, spacing=(pitch, pitch))
        .propagate_to_z(z, propagation_method="ASM_FRESNEL", asm_pad=(n // 2, n // 2))
        .data
    )
    assert _rel_l2(fresnel_transfer(field, LAMBDA, z, pitch), theirs) <= 1e-3


def test_fresnel_agrees_with_asm_in_fresnel_regime() -> None:
    # Paraxial beam: the dropped term k z (lambda f)^4 / 8 is ~1e-3 rad over its spectrum.
    field = _gaussian(256, 2e-6, 25e-6)
    asm = angular_spectrum(field, LAMBDA, 3e-3, 2e-6)
    fresnel = fresnel_transfer(field, LAMBDA, 3e-3, 2e-6)
    assert _rel_l2(fresnel, asm) < 5e-3
    # ... and they visibly differ for a strongly non-paraxial field, so the check has teeth.
    steep = _gaussian(256, 0.25e-6, 0.5e-6)
    assert (
        _rel_l2(fresnel_transfer(steep, LAMBDA, 10e-6, 0.25e-6), angular_spectrum(steep, LAMBDA, 10e-6, 0.25e-6)) > 0.1
    )


def test_scaled_fresnel_matches_transfer_function() -> None:
    n, pitch, z = 128, 4e-6, 5e-3
    field = _soft_aperture(n, pitch, 150e-6)
    x = centred_coordinates(n, pitch)
    direct = scaled_fresnel(field[None], x, x, x, x, torch.tensor([LAMBDA], dtype=torch.float64), z)[0]
    assert _rel_l2(direct, fresnel_transfer(field, LAMBDA, z, pitch)) < 1e-3


def test_validity_warnings() -> None:
    field = _gaussian(64, 2e-6, 20e-6)
    with pytest.warns(SamplingWarning, match="transfer function aliases"):
        fresnel_transfer(field, LAMBDA, 0.1, 2e-6)
    with pytest.warns(SamplingWarning, match="band limit"):
        angular_spectrum(field, LAMBDA, 0.1, 2e-6)
    x = centred_coordinates(64, 2e-6)
    wide = centred_coordinates(64, 50e-6)
    with pytest.warns(SamplingWarning, match="alias-free period"):
        scaled_fresnel(field[None], x, x, wide, wide, torch.tensor([LAMBDA], dtype=torch.float64), 1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"distance_m": -1e-3}, "distance_m is -0.001"),
        ({"distance_m": 0.0}, "distance_m is 0.0"),
        ({"wavelength_m": 100e-9}, "200 nm - 2 um"),
        ({"wavelength_m": 3e-6}, "200 nm - 2 um"),
        ({"pitch_m": 0}, "pitch_m is 0"),
    ],
)
def test_bad_inputs(kwargs, match) -> None:
    args = {"wavelength_m": LAMBDA, "distance_m": 1e-3, "pitch_m": 2e-6} | kwargs
    with pytest.raises(ObscuraError, match=match):
        angular_spectrum(_gaussian(16, 2e-6, 5e-6), **args)


def test_real_field_refused() -> None:
    with pytest.raises(ObscuraError, match="complex"):
        fresnel_transfer(torch.ones(8, 8), LAMBDA, 1e-3, 2e-6)
