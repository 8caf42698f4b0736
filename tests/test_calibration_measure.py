"""Measured PSF from point-source captures: dark, hot pixels, background, centroid, crop, uncertainty, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.measure import MeasureConfig, measure_psf
from calibration.synthetic import CaptureNoise, synthesise_captures
from obscura.errors import ObscuraError


def _gaussian_psf(size: int = 33, sigma: float = 2.5, centre: tuple[float, float] = (16.3, 15.8)) -> np.ndarray:
    """An off-centre (sub-pixel) Gaussian spot plus a faint halo, 3 channels, each summing to 1."""
    y, x = np.indices((size, size))
    r2 = (y - centre[0]) ** 2 + (x - centre[1]) ** 2
    spot = np.exp(-r2 / (2 * sigma**2)) + 0.01 * np.exp(-r2 / (2 * (3 * sigma) ** 2))
    psf = np.stack([spot, spot, spot])
    return psf / psf.sum(axis=(1, 2), keepdims=True)


def _chi2_against_truth(truth: np.ndarray, noise: CaptureNoise, seed: int) -> tuple[float, dict]:
    """Measure synthetic captures of `truth` (placed at (20, 30) in an 80 x 90 frame) and compare."""
    lights, darks = synthesise_captures(truth, (80, 90), (20, 30), noise, seed=seed)
    m = measure_psf(lights, darks, MeasureConfig(crop_px=33, saturation_dn=noise.max_dn))
    # Centroid of the truth in frame coordinates: top-left + its own centre of mass.
    assert m.centroid_px[0] == pytest.approx(20 + 16.3, abs=0.05)
    assert m.centroid_px[1] == pytest.approx(30 + 15.8, abs=0.05)
    np.testing.assert_allclose(m.psf.sum(axis=(1, 2)), 1.0)
    top, left = m.info["crop_origin_px"]
    expected = np.zeros((3, 80, 90))
    expected[:, 20:53, 30:63] = truth
    expected = expected[:, top : top + 33, left : left + 33]
    expected /= expected.sum(axis=(1, 2), keepdims=True)
    return float((((m.psf - expected) / m.sigma) ** 2).mean()), m.info


def test_measured_psf_matches_truth_within_its_uncertainty():
    noise = CaptureNoise(signal_e=1.5e5, frames=16, dark_frames=16)
    chi2, info = _chi2_against_truth(_gaussian_psf(), noise, seed=2)
    assert 0.5 < chi2 < 2.0, chi2  # residuals are as large as the stated uncertainty says, no larger
    assert info["hot_pixels"] >= 0.8 * noise.hot_pixel_fraction * 3 * 80 * 90


def test_many_hot_pixels_are_found_and_do_not_bias_the_psf():
    noise = CaptureNoise(signal_e=1.5e5, frames=16, dark_frames=16, hot_pixel_fraction=1e-2, hot_pixel_e=3500)
    chi2, info = _chi2_against_truth(_gaussian_psf(), noise, seed=4)
    assert chi2 < 2.0, chi2
    assert info["hot_pixels"] >= 0.8 * noise.hot_pixel_fraction * 3 * 80 * 90


def test_saturated_captures_are_refused():
    noise = CaptureNoise(signal_e=5e6)
    lights, darks = synthesise_captures(_gaussian_psf(), (64, 64), (15, 15), noise, seed=0)
    with pytest.raises(ObscuraError, match="saturated: .* at or above 4095 DN"):
        measure_psf(lights, darks, MeasureConfig(crop_px=33, saturation_dn=noise.max_dn))


def test_empty_captures_are_refused():
    noise = CaptureNoise(signal_e=0.0)
    lights, darks = synthesise_captures(_gaussian_psf(), (64, 64), (15, 15), noise, seed=0)
    with pytest.raises(ObscuraError, match="no point source"):
        measure_psf(lights, darks, MeasureConfig(crop_px=33, saturation_dn=noise.max_dn))


def test_source_at_the_frame_edge_and_mismatched_darks_are_refused():
    noise = CaptureNoise(signal_e=1e5)
    lights, darks = synthesise_captures(_gaussian_psf(), (64, 64), (0, 31), noise, seed=0)
    with pytest.raises(ObscuraError, match="frame edge"):
        measure_psf(lights, darks, MeasureConfig(crop_px=48, saturation_dn=noise.max_dn))
    with pytest.raises(ObscuraError, match="dark frames have shape"):
        measure_psf(lights, darks[:, :, :32], MeasureConfig(crop_px=33, saturation_dn=noise.max_dn))
