"""The simulated optic of sim://: linear zero-padded convolution in linear light, checked against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import convolve2d

from firmware.psf import PsfConvolver, check_psf, load_psf
from firmware.srgb_numpy import linear_to_srgb, srgb_to_linear
from obscura.errors import ObscuraError


def _delta(shape: tuple[int, int], dy: int = 0, dx: int = 0, channels: int = 3) -> np.ndarray:
    psf = np.zeros((channels, *shape), np.float32)
    psf[:, shape[0] // 2 + dy, shape[1] // 2 + dx] = 1.0
    return psf


def test_centred_delta_is_identity_and_shifted_delta_shifts_without_wraparound() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((20, 30, 3)).astype(np.float32)
    assert np.allclose(PsfConvolver(_delta((16, 16))).convolve_linear(image), image, atol=1e-5)
    shifted = PsfConvolver(_delta((16, 16), dy=3, dx=-2)).convolve_linear(image)
    expected = np.zeros_like(image)
    expected[3:, :-2] = image[:-3, 2:]  # zero padding: nothing wraps in from the far edge
    assert np.allclose(shifted, expected, atol=1e-5)


@pytest.mark.parametrize("kernel_shape", [(7, 7), (8, 6), (40, 40)])
def test_matches_direct_convolution_per_channel(kernel_shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(2)
    image = rng.random((24, 33, 3)).astype(np.float32)
    psf = rng.random((3, *kernel_shape)).astype(np.float32)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    out = PsfConvolver(psf).convolve_linear(image)
    cy, cx = kernel_shape[0] // 2, kernel_shape[1] // 2
    for c in range(3):
        full = convolve2d(image[..., c], psf[c], mode="full")
        assert np.allclose(out[..., c], full[cy : cy + 24, cx : cx + 33], atol=1e-5)


def test_single_channel_psf_applies_to_every_channel_and_conserves_energy_inside() -> None:
    psf = np.ones((1, 5, 5), np.float32) / 25
    flat = np.full((30, 30, 3), 0.4, np.float32)
    out = PsfConvolver(psf).convolve_linear(flat)
    assert np.allclose(out[2:-2, 2:-2], 0.4, atol=1e-5)  # interior: a normalised PSF keeps a flat field
    assert out[0, 0, 0] < 0.4 * 0.5  # corner: light from outside the frame is zero, not wrapped


def test_capture_works_in_linear_light() -> None:
    # A half-black, half-white edge blurred by a 2-tap PSF gives 50 % linear light, i.e. sRGB 188, not 128.
    srgb = np.zeros((4, 4, 3), np.uint8)
    srgb[:, 2:] = 255
    psf = np.zeros((3, 3, 3), np.float32)
    psf[:, 1, 1] = psf[:, 1, 2] = 0.5
    out = PsfConvolver(psf).capture(srgb)
    assert out.dtype == np.uint8
    assert int(out[1, 2, 0]) == 188  # out[x] = (in[x] + in[x - 1]) / 2 in linear light
    assert int(out[1, 1, 0]) == 0 and int(out[1, 3, 0]) == 255


def test_srgb_round_trip_and_known_values() -> None:
    values = np.arange(256, dtype=np.uint8)
    assert np.array_equal(linear_to_srgb(srgb_to_linear(values)), values)
    assert srgb_to_linear(np.array([255], np.uint8))[0] == pytest.approx(1.0)
    assert srgb_to_linear(np.array([0.5], np.float32))[0] == pytest.approx(0.21404, abs=1e-4)


def test_bad_psfs_are_refused_with_one_line(tmp_path) -> None:
    with pytest.raises(ObscuraError, match="sum to 1"):
        check_psf(np.ones((3, 4, 4), np.float32))
    with pytest.raises(ObscuraError, match=r"shape \(C, H, W\)"):
        check_psf(np.ones((4, 4), np.float32) / 16)
    with pytest.raises(ObscuraError, match=">= 0"):
        check_psf(np.array([[[2.0, -1.0]]], np.float32))
    bad = tmp_path / "psf.npy"
    bad.write_text("not numpy")
    with pytest.raises(ObscuraError, match=str(bad)):
        load_psf(bad)
