"""Gradients through mask -> PSF -> capture agree with finite differences (float64, small grids)."""

from __future__ import annotations

import torch
from torch.func import functional_call

from optics.camera import Camera
from optics.optic import Optic
from optics.sensor import Sensor
from optics.settings import MaskConfig, OpticConfig, SensorConfig, SpectrumConfig


def _small_camera(kind: str) -> Camera:
    """16-sample pupil, 8 x 8 PSF, one wavelength per channel, ideal converter (quantisation has no derivative)."""
    mask = MaskConfig(kind=kind, num_terms=8, fixed_zero_terms=3, init_rms_height_m=0.05e-6, seed=1)
    optic = Optic(
        OpticConfig(
            pupil_samples=16,
            psf_size=8,
            pixel_pitch_m=4e-6,
            pixel_oversample=2,
            object_distance_m=10.0,
            spectrum=SpectrumConfig(samples_per_channel=1),
            mask=mask,
        )
    )
    return Camera(optic, Sensor(SensorConfig(quantise=False, read_noise_e=3.0)), noise_seed=5).double()


def test_gradcheck_zernike_mask_to_capture() -> None:
    camera = _small_camera("zernike")
    name = "optic.mask.surface.coefficients_um"
    coefficients = camera.get_parameter(name).detach().clone().requires_grad_()
    scene = (
        torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.6 + 0.2
    ).requires_grad_()

    def capture(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return functional_call(camera, {name: c}, (s,))

    # Full Jacobian for the 8 mask coefficients; random projections (fast mode) for the scene.
    assert torch.autograd.gradcheck(
        lambda c: capture(c, scene.detach()), (coefficients,), eps=1e-7, atol=1e-6, rtol=1e-4
    )
    assert torch.autograd.gradcheck(capture, (coefficients, scene), eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradcheck_freeform_mask_to_psf() -> None:
    camera = _small_camera("freeform")
    heights = camera.get_parameter("optic.mask.surface.height_um").detach().clone().requires_grad_()

    def psf(h: torch.Tensor) -> torch.Tensor:
        return functional_call(camera.optic, {"mask.surface.height_um": h}, ())

    assert torch.autograd.gradcheck(psf, (heights,), eps=1e-7, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_quantised_mask_still_trains() -> None:
    """Quantisation has no derivative; the straight-through estimator still gives a useful one."""
    mask = MaskConfig(
        kind="zernike", num_terms=8, init_rms_height_m=0.3e-6, constraint="wrap", max_height_m=1.2e-6, levels=4
    )
    optic = Optic(
        OpticConfig(
            pupil_samples=32, psf_size=8, pixel_pitch_m=4e-6, spectrum=SpectrumConfig(samples_per_channel=1), mask=mask
        )
    ).double()
    assert len(torch.unique(optic.mask.height_m().detach())) == 4
    optic.psf()[:, 4, 4].sum().backward()
    grad = optic.mask.surface.coefficients_um.grad
    assert torch.all(grad[:3] == 0) and torch.count_nonzero(grad[3:]) == 5
