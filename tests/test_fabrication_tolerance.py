"""The as-built PSF model (closed-form checks) and the tolerance analysis of a fabricated optic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import simulate
from optics.fabrication.as_built import (
    Errors,
    as_built_psf,
    psf_correlation,
    transform_map,
)
from optics.fabrication.export import design_surface
from optics.fabrication.heightmap import fabricated_levels
from optics.fabrication.tolerance import (
    ToleranceConfig,
    height_error_field,
    pupil_transmission,
    run_tolerance,
    tolerance,
)
from optics.optic_file import save_optic
from optics.presets import camera_from_spec
from optics.psf_metrics import encircled_energy_radius_px

MONO = dict(optic__spectrum__samples_per_channel=1)


def test_no_errors_reproduces_the_optics_psf():
    optic = camera_from_spec(
        "zernike-random", seed=2, pupil_samples=64, psf_size=32, optic__mask__init_rms_height_m=0.5e-6
    ).optic
    with torch.no_grad():
        np.testing.assert_allclose(as_built_psf(optic, Errors()).numpy(), optic.psf().double().numpy(), atol=1e-7)


def test_extra_defocus_equals_a_near_object():
    # W020 = R^2 / (2 lambda_d s_o) waves is exactly the pupil phase of an object at s_o, at every wavelength.
    s_o, radius, lam_d = 2.0, 2e-3, 550e-9
    far = camera_from_spec("lens", pupil_samples=64, psf_size=48).optic
    near = camera_from_spec("lens", pupil_samples=64, psf_size=48, object_distance_m=s_o).optic
    with torch.no_grad():
        np.testing.assert_allclose(
            as_built_psf(far, Errors(defocus_waves=radius**2 / (2 * lam_d * s_o))).numpy(),
            near.psf().double().numpy(),
            atol=1e-7,
        )


def test_distance_error_blurs_like_geometric_optics():
    # Sensor moved by dz behind the focus of f = 50 mm, D = 4 mm: blur circle D dz / f.
    optic = camera_from_spec("lens", pupil_samples=128, psf_size=64, **MONO).optic
    dz = 1.5e-3
    with torch.no_grad():
        psf = as_built_psf(optic, Errors(distance_error_m=dz)).numpy()
    radius_px = 4e-3 * dz / 0.05 / 2 / 3.713e-6
    r80 = encircled_energy_radius_px(psf, 0.8)
    assert r80[1] == pytest.approx(math.sqrt(0.8) * radius_px, rel=0.15)


def test_rotation_leaves_a_lens_unchanged_and_shifts_move_the_psf():
    lens = camera_from_spec("lens", pupil_samples=64, psf_size=32, **MONO).optic
    with torch.no_grad():
        base = as_built_psf(lens, Errors())
        assert float(psf_correlation(base, as_built_psf(lens, Errors(rotation_rad=0.3)))) > 0.99999
        moved = as_built_psf(lens, Errors(psf_shift_px=(2.0, -3.0)))
    # +2 px in x (columns), -3 px in y (rows); the window-normalisation differs, so compare shapes.
    a, b = moved.numpy()[:, 10:26, 18:30], base.numpy()[:, 13:29, 16:28]
    np.testing.assert_allclose(
        a / a.sum(axis=(1, 2), keepdims=True), b / b.sum(axis=(1, 2), keepdims=True), rtol=1e-6, atol=1e-9
    )


def test_transform_map_is_an_exact_roll_and_rotation_on_the_grid():
    values = torch.rand(2, 16, 16, dtype=torch.float64)
    shifted = transform_map(values, torch.tensor([2.0, -1.0]), torch.tensor(0.0), 1.0)
    # out(x, y) = in(x - 2, y + 1): rows move up by one, columns right by two.
    np.testing.assert_allclose(shifted[:, 0:15, 2:16].numpy(), values[:, 1:16, 0:14].numpy(), atol=1e-12)
    quarter = transform_map(values, torch.zeros(2), torch.tensor(math.pi / 2), 1.0)
    # +90 degrees turns +x (columns) into +y (rows): torch.rot90 with k = -1.
    np.testing.assert_allclose(quarter.numpy(), torch.rot90(values, -1, dims=(-2, -1)).numpy(), atol=1e-6)


def test_fabricated_psf_approaches_the_design_with_more_levels():
    optic = camera_from_spec(
        "zernike-random", seed=2, pupil_samples=64, psf_size=32, optic__mask__init_rms_height_m=0.5e-6, **MONO
    ).optic
    surface = design_surface(optic)
    with torch.no_grad():
        design = optic.psf().double()
        green = []
        for levels in (2, 4, 16, 256):
            level_map = fabricated_levels(
                surface,
                optic.pupil_pitch_m,
                4e-3,
                material_name="fused_silica",
                design_wavelength_m=550e-9,
                num_levels=levels,
                writer_pitch_m=15.625e-6,
                max_height_m=1e-5,
                min_feature_m=0.0,
            )
            psf = as_built_psf(optic, Errors(), transmission=pupil_transmission(level_map, optic, "fused_silica"))
            green.append(float(psf_correlation(design[1], psf[1])))  # the 550 nm channel: wrapping is exact there
    assert green == sorted(green) and green[-1] > 0.999 and green[0] < 0.95


def test_height_error_field_has_the_requested_rms():
    field_ = height_error_field((64, 64), 20e-9, 100e-6, 15.6e-6, seed=1)
    assert float(field_.numpy().std()) == pytest.approx(20e-9, rel=1e-6)
    assert float((field_[1:] * field_[:-1]).mean() / field_.var()) > 0.9  # neighbours correlated


def test_tolerance_is_the_last_value_of_the_passing_run():
    assert tolerance([1, 2, 3, 4], [0.99, 0.95, 0.85, 0.95], 0.9) == 2
    assert tolerance([1, 2], [0.5, 0.99], 0.9) == 0.0


def test_tolerance_command_writes_report(tmp_path):

    path = tmp_path / "optic.npz"
    save_optic(
        path,
        camera_from_spec(
            "zernike-random", seed=2, pupil_samples=48, psf_size=24, optic__mask__init_rms_height_m=0.4e-6, **MONO
        ),
    )
    cfg = ToleranceConfig(
        optic=str(path),
        height_error_sigma_m=[10e-9, 200e-9],
        mask_shift_m=[5e-6, 200e-6],
        rotation_deg=[0.1, 10.0],
        distance_error_m=[10e-6, 2e-3],
    )
    cfg.fabrication.writer_pitch_m = 20e-6
    cfg.fabrication.min_feature_m = 0.0
    report = run_tolerance(cfg, tmp_path / "out")
    for sweep in report["sweeps"]:
        assert sweep["correlation"][0] > sweep["correlation"][1], sweep  # a larger error hurts more
    for name in ("tolerance.json", "tolerance.png", "psf_design_vs_fabricated.png", "config.yaml"):
        assert (tmp_path / "out" / name).is_file()
    combined = report["within_tolerance"]
    assert set(combined["errors"]) == {"height_error_sigma_m", "mask_shift_m", "rotation_deg", "distance_error_m"}
    assert 0.5 < combined["correlation_with_fabricated"] < 1.0  # all errors at once: still close, never identical
    for label in ("design", "fabricated", "within_tolerance"):
        psf = np.load(tmp_path / "out" / f"psf_{label}.npy")
        assert psf.shape == (3, 24, 24) and np.allclose(psf.sum(axis=(1, 2)), 1.0, atol=1e-6), label


@pytest.mark.parametrize("levels, code", [(2, 1), (64, 0)])
def test_tolerance_fails_a_fabricated_optic_that_loses_the_design(levels, code, tmp_path, capsys):
    # One wavelength (the wrap wavelength) in every channel: with 64 levels the fabricated mask is
    # the design; 2 levels (binary) turn it into another PSF with more light in the centre spot.
    path = tmp_path / "optic.npz"
    spec = dict(optic__mask__init_rms_height_m=0.4e-6, optic__spectrum__centres_m=[550e-9] * 3, **MONO)
    save_optic(path, camera_from_spec("zernike-random", seed=2, pupil_samples=48, psf_size=24, **spec))
    sweeps = [
        "height_error_sigma_m=[1.0e-8]",
        "mask_shift_m=[5.0e-6]",
        "rotation_deg=[0.1]",
        "distance_error_m=[1.0e-5]",
    ]
    fabrication = ["fabrication.writer_pitch_m=2.0e-5", "fabrication.min_feature_m=0.0", f"fabrication.levels={levels}"]
    argv = ["tolerance", "--optic", str(path), "--out", str(tmp_path / "out")]
    assert simulate.main(argv + [a for s in sweeps + fabrication for a in ("--set", s)]) == code
    check = json.loads((tmp_path / "out" / "tolerance.json").read_text())["privacy_check"]
    err = capsys.readouterr().err
    assert check["passed"] is (code == 0)
    if code:
        assert check["fabricated_correlation"] < 0.9 and "FAIL: fabricated PSF correlates" in err
        assert all(f > d for f, d in zip(check["centre_spot_energy_fabricated"], check["centre_spot_energy_design"]))
    else:
        assert check["fabricated_correlation"] > 0.99 and "FAIL" not in err
