"""python -m calibration: synth -> measure -> fit, intrinsics, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from calibration.__main__ import main
from calibration.intrinsics import synthetic_views
from optics.fabrication.as_built import Errors, as_built_psf
from optics.optic_file import save_optic
from optics.presets import camera_from_spec


@pytest.fixture(scope="module")
def small_optic(tmp_path_factory):
    """A coarse random-Zernike optic (64 pupil samples, one wavelength per channel) saved as .npz."""

    path = tmp_path_factory.mktemp("optic") / "optic.npz"
    save_optic(
        path,
        camera_from_spec(
            "zernike-random",
            seed=3,
            pupil_samples=64,
            psf_size=32,
            optic__spectrum__samples_per_channel=1,
            optic__mask__init_rms_height_m=0.5e-6,
        ),
    )
    return path


def test_synth_measure_fit_chain(small_optic, tmp_path, capsys):
    syn, meas, fit = tmp_path / "syn", tmp_path / "meas", tmp_path / "fit"
    assert (
        main(
            [
                "synth",
                "--out",
                str(syn),
                "--set",
                f"capture.optic={small_optic}",
                "--set",
                "capture.psf_size=48",
                "--set",
                "capture.frame=[96, 96]",
                "--set",
                "capture.top_left=[20, 30]",
                "--set",
                "capture.rotation_rad=0.03",
            ]
        )
        == 0
    )
    assert len(list((syn / "captures").glob("*.npy"))) == 8 and (syn / "config.yaml").is_file()
    assert (
        main(
            [
                "measure",
                "--captures",
                str(syn / "captures"),
                "--darks",
                str(syn / "darks"),
                "--set",
                "crop_px=32",
                "--out",
                str(meas),
            ]
        )
        == 0
    )
    assert (
        np.load(meas / "psf.npy").shape == (3, 32, 32)
        and (meas / "psf.png").is_file()
        and (meas / "config.yaml").is_file()
    )
    assert (
        main(
            [
                "fit",
                "--optic",
                str(small_optic),
                "--measured",
                str(meas),
                "--set",
                "steps=120",
                "--set",
                "learning_rate=0.1",
                "--set",
                "parameters=[rotation_rad, psf_shift_x_px, psf_shift_y_px]",
                "--out",
                str(fit),
            ]
        )
        == 0
    )
    result = json.loads((fit / "fit.json").read_text())
    assert result["values"]["rotation_rad"] == pytest.approx(0.03, abs=0.003)
    assert (fit / "fit.png").is_file() and (fit / "config.yaml").is_file()
    assert "chi2/pixel" in capsys.readouterr().out


def test_a_fit_that_does_not_converge_warns_and_exits_1(small_optic, tmp_path, capsys):
    meas = tmp_path / "meas"
    meas.mkdir()
    with torch.no_grad():
        psf = as_built_psf(camera_from_spec(str(small_optic)).optic, Errors()).numpy()
    np.save(meas / "psf.npy", psf)
    np.save(meas / "psf_sigma.npy", np.full_like(psf, 1e-5))
    # A plain lens cannot explain the random mask's PSF, whatever its errors.
    code = main(["fit", "--optic", "lens", "--measured", str(meas), "--set", "steps=5", "--out", str(tmp_path / "fit")])
    assert code == 1
    err = capsys.readouterr().err
    assert "did not converge" in err and "fit: 100%" in err  # the progress bar was shown
    assert json.loads((tmp_path / "fit" / "fit.json").read_text())["converged"] is False


def test_saturated_captures_fail_with_one_line_and_exit_code_2(small_optic, tmp_path, capsys):
    syn = tmp_path / "syn"
    assert (
        main(
            [
                "synth",
                "--out",
                str(syn),
                "--set",
                f"capture.optic={small_optic}",
                "--set",
                "capture.psf_size=32",
                "--set",
                "capture.frame=[64, 64]",
                "--set",
                "capture.top_left=[16, 16]",
                "--set",
                "noise.signal_e=100000000.0",
            ]
        )
        == 0
    )
    code = main(
        [
            "measure",
            "--captures",
            str(syn / "captures"),
            "--darks",
            str(syn / "darks"),
            "--set",
            "crop_px=32",
            "--out",
            str(tmp_path / "m"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("calibration: error: capture 0 is saturated") and err.count("\n") == 1


def test_intrinsics_command(tmp_path):

    k_true = np.array([[420.0, 0.0, 165.0], [0.0, 425.0, 118.0], [0.0, 0.0, 1.0]])
    for i, image in enumerate(synthetic_views(k_true, (320, 240), (7, 5), 0.02, 12)):
        cv2.imwrite(str(tmp_path / f"view{i:02d}.png"), image)
    assert (
        main(["intrinsics", str(tmp_path), "--corners", "7x5", "--square", "0.02", "--out", str(tmp_path / "out")]) == 0
    )
    k = json.loads((tmp_path / "out" / "intrinsics.json").read_text())["camera_matrix"]
    assert k[0][0] == pytest.approx(420.0, rel=0.01)
    assert (
        main(["intrinsics", str(tmp_path), "--corners", "7by5", "--square", "0.02", "--out", str(tmp_path / "o2")]) == 2
    )
