"""Image formation: linear (not circular) convolution, checked against scipy's direct convolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from obscura.errors import ObscuraError
from optics.convolution import convolve, correlate
from optics.deconvolution import tikhonov


def test_matches_direct_convolution() -> None:
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 20, 17, generator=gen, dtype=torch.float64)
    psf = torch.rand(3, 7, 6, generator=gen, dtype=torch.float64)
    out = convolve(images, psf)
    for n in range(2):
        for c in range(3):
            full = convolve2d(images[n, c].numpy(), psf[c].numpy(), mode="full")
            expected = full[7 // 2 : 7 // 2 + 20, 6 // 2 : 6 // 2 + 17]
            assert np.allclose(out[n, c].numpy(), expected, atol=1e-12)


def test_no_wrap_around() -> None:
    images = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
    images[0, 0, :, 0] = 1.0  # a bright left edge
    psf = torch.ones(1, 9, 9, dtype=torch.float64) / 81
    out = convolve(images, psf)
    assert out[0, 0, :, -4:].abs().max() < 1e-12  # a circular convolution would light the right edge
    assert float(out[0, 0, 16, 0]) == pytest.approx(1 / 9)  # one lit column of the 9 x 9 box


def test_delta_psf_is_identity_and_centred() -> None:
    images = torch.rand(1, 3, 16, 16)
    psf = torch.zeros(3, 8, 8)
    psf[:, 4, 4] = 1
    assert torch.allclose(convolve(images, psf), images, atol=1e-6)


def test_bad_inputs() -> None:
    with pytest.raises(ObscuraError, match="dtype torch.uint8"):
        convolve(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.ones(3, 3, 3))
    with pytest.raises(ObscuraError, match="N x C x H x W"):
        convolve(torch.zeros(3, 8, 8), torch.ones(3, 3, 3))
    with pytest.raises(ObscuraError, match="psf has shape"):
        convolve(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 3))


@pytest.mark.parametrize("size", [(8, 8), (9, 9), (8, 11)])
def test_correlate_is_the_adjoint_of_convolve(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(sum(size))
    psf = torch.rand(3, *size, generator=g, dtype=torch.float64)
    x = torch.rand(2, 3, 20, 17, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, 20, 17, generator=g, dtype=torch.float64)
    assert torch.allclose((convolve(x, psf) * y).sum(), (x * correlate(y, psf)).sum(), rtol=1e-12)


def test_least_squares_deconvolution_is_differentiable_in_the_psf() -> None:
    """A trainer can ask how well its own capture is inverted: the solve's gradient matches finite differences."""
    g = torch.Generator().manual_seed(0)
    psf = torch.rand(3, 9, 9, generator=g, dtype=torch.float64) ** 4
    psf = (psf / psf.sum(dim=(1, 2), keepdim=True)).requires_grad_(True)
    scene = torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64)
    capture = convolve(scene, psf.detach())

    def error(k: torch.Tensor) -> torch.Tensor:
        rebuilt = tikhonov(capture, lambda x: convolve(x, k), lambda v: correlate(v, k), 1e-3, 10)
        return (rebuilt - scene).pow(2).mean()

    error(psf).backward()
    step = torch.randn(psf.shape, generator=g, dtype=torch.float64) * 1e-6
    with torch.no_grad():
        numeric = (error(psf + step) - error(psf - step)) / 2
    assert torch.isclose((psf.grad * step).sum(), numeric, rtol=1e-4)
