"""`simulate.py psf | capture` and the demo, run in-process; bad input exits with code 2 and one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

import simulate
from faces.face_models import YuNet
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT
from optics.optic_file import save_optic
from optics.presets import camera_from_spec
from workstation.learned_camera_demo import (
    CELEBA_FRAME_POINTS,
    CELEBA_FRAME_SIZE,
    training_frame_crop,
)

pytestmark = pytest.mark.filterwarnings("ignore::optics.propagation.SamplingWarning")

CONTRACT = [
    "psf",
    "--optic",
    "lens",
    "--focal-length",
    "0.05",
    "--aperture",
    "0.004",
    "--wavelength",
    "550e-9",
    "--pixel-pitch",
    "1e-6",
    "--size",
    "256",
]
SMALL = ["--size", "64", "--pupil-samples", "128"]


def _png(path: Path, seed: int = 0, shape=(40, 48, 3)) -> Path:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
    return path


def _no_constants(name: str):
    raise AssertionError(f"psf.json holds the non-standard JSON constant {name}")


def test_psf_contract(tmp_path) -> None:
    assert simulate.main(CONTRACT + ["--out", str(tmp_path)]) == 0
    psf = np.load(tmp_path / "psf.npy")
    assert psf.shape == (1, 256, 256) and psf.dtype == np.float32
    assert np.allclose(psf.sum(axis=(1, 2)), 1.0, atol=1e-5)
    assert np.unravel_index(psf[0].argmax(), psf.shape[1:]) == (128, 128)
    info = json.loads((tmp_path / "psf.json").read_text(), parse_constant=_no_constants)
    assert info["pixel_pitch_m"] == 1e-6
    optic = info["config"]["optic"]
    assert optic["lens"]["focal_length_m"] == 0.05 and optic["lens"]["aperture_diameter_m"] == 0.004
    assert optic["spectrum"]["centres_m"] == [550e-9] and optic["psf_size"] == 256
    assert optic["sensor_distance_m"] == pytest.approx(0.05)  # the ideal lens stays in focus
    assert optic["object_distance_m"] == "inf"
    assert (tmp_path / "psf.png").stat().st_size > 0 and (tmp_path / "config.yaml").exists()


def test_psf_of_other_optics(tmp_path) -> None:
    assert (
        simulate.main(
            [
                "psf",
                "--optic",
                "zernike-random",
                "--seed",
                "2",
                "--depths",
                "0.5",
                "2",
                *SMALL,
                "--out",
                str(tmp_path / "z"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "z" / "psf.npy").shape == (3, 64, 64)
    assert np.load(tmp_path / "z" / "psf_depths.npy").shape == (2, 3, 64, 64)
    assert simulate.main(["psf", "--optic", "defocus", "--dtype", "float64", *SMALL, "--out", str(tmp_path / "d")]) == 0
    assert np.load(tmp_path / "d" / "psf.npy").dtype == np.float64

    saved = save_optic(
        tmp_path / "optic.npz", camera_from_spec("zernike-random", seed=2, psf_size=64, pupil_samples=128)
    )
    assert simulate.main(["psf", "--optic", str(saved), "--out", str(tmp_path / "f")]) == 0
    assert np.allclose(np.load(tmp_path / "f" / "psf.npy"), np.load(tmp_path / "z" / "psf.npy"), atol=1e-7)


def test_capture_files_and_folder(tmp_path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    _png(folder / "a.png", 0)
    _png(folder / "b.png", 1)
    single = _png(tmp_path / "c.png", 2, shape=(30, 30, 3))
    out = tmp_path / "out"
    assert simulate.main(["capture", "--optic", "defocus", *SMALL, str(folder), str(single), "--out", str(out)]) == 0
    for name in ("a", "b", "c"):
        capture = cv2.imread(str(out / f"{name}_capture.png"))
        assert capture is not None
    assert cv2.imread(str(out / "a_capture.png")).shape == (40, 48, 3)
    assert (out / "side_by_side.png").exists() and (out / "config.yaml").exists()
    assert len(json.loads((out / "capture.json").read_text())["captures"]) == 3


def test_psf_and_capture_take_config_and_set(tmp_path, capsys) -> None:
    # defaults < --config < --set < flags; an earlier run's config.yaml reproduces it
    first = tmp_path / "first"
    small = ["--set", "optic.psf_size=48", "--set", "optic.pupil_samples=64"]
    assert simulate.main(["psf", "--optic", "zernike-random", *small, "--out", str(first)]) == 0
    assert np.load(first / "psf.npy").shape == (3, 48, 48)
    again = tmp_path / "again"
    argv = ["psf", "--optic", "zernike-random", "--config", str(first / "config.yaml"), "--out", str(again)]
    assert simulate.main(argv) == 0
    np.testing.assert_array_equal(np.load(again / "psf.npy"), np.load(first / "psf.npy"))
    flag = tmp_path / "flag"
    assert simulate.main(argv[:-2] + ["--set", "optic.psf_size=40", "--size", "36", "--out", str(flag)]) == 0
    assert np.load(flag / "psf.npy").shape == (3, 36, 36)

    scene = _png(tmp_path / "scene.png")
    out = tmp_path / "capture"
    argv = [
        "capture",
        "--optic",
        "defocus",
        *SMALL,
        "--config",
        str(first / "config.yaml"),
        "--set",
        "sensor.bit_depth=8",
    ]
    assert simulate.main(argv + [str(scene), "--out", str(out)]) == 0
    resolved = json.loads((out / "capture.json").read_text())["config"]
    assert resolved["sensor"]["bit_depth"] == 8 and resolved["optic"]["psf_size"] == 64  # the flag beats the file
    assert resolved["optic"]["lens"]["focal_length_m"] == 0.05  # the file's lens replaced the defocus preset's
    assert simulate.main(["psf", "--set", "optic.bogus=1", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown config key 'optic.bogus'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["psf", "--focal-length", "-0.05"], "focal_length_m is -0.05"),
        (["psf", "--sensor-distance", "0"], "sensor_distance_m is 0.0"),
        (["psf", "--wavelength", "100e-9"], "200 nm - 2 um"),
        (["psf", "--wavelength", "5e-6"], "200 nm - 2 um"),
        (["psf", "--aperture", "1e-5", "--pixel-pitch", "1e-6", "--size", "64"], "smaller than the Airy disc"),
        (["psf", "--optic", "fisheye"], "spec is 'fisheye'"),
        (["psf", "--device", "tpu"], "--device 'tpu'"),
    ],
)
def test_bad_psf_input(tmp_path, capsys, argv, message) -> None:
    assert simulate.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("simulate.py: error:")


def test_bad_capture_input(tmp_path, capsys) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert simulate.main(["capture", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert simulate.main(["capture", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    corrupt = tmp_path / "optic.npz"
    corrupt.write_bytes(b"junk")
    assert (
        simulate.main(
            ["capture", "--optic", str(corrupt), str(_png(tmp_path / "ok.png")), "--out", str(tmp_path / "o")]
        )
        == 2
    )
    assert "not a readable Obscura optic" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert simulate.main(["capture", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err


@pytest.mark.filterwarnings("error::optics.propagation.SamplingWarning")
def test_demo(tmp_path, capsys) -> None:
    # At 256 pupil samples the committed optic warns and names 512 (tests/test_optics_psf.py): the demo takes it.
    assert simulate.main(["--out", str(tmp_path), "--pupil-samples", "512"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["optics"]) == {"lens", "defocus", "zernike-random"}
    assert report["anonymizer"]["pupil_samples"] == 512
    assert all(item["config"]["optic"]["pupil_samples"] == 512 for item in report["optics"].values())
    r80 = {k: v["encircled_energy_r80_px"][1] for k, v in report["optics"].items()}
    assert r80["lens"] < r80["zernike-random"] and r80["lens"] < r80["defocus"]
    for name in ("side_by_side.png", "psf_lens.png", "capture_defocus.png", "capture_zernike-random.png"):
        assert (tmp_path / name).stat().st_size > 0
    anon = report["anonymizer"]
    assert 0.0 <= anon["fd"] <= 1.0 and 0.0 <= anon["identity_leakage"] <= 1.0
    outputs = [cv2.imread(str(tmp_path / anon["images"][f"anonymized {k + 1}"])) for k in range(anon["styles"])]
    assert anon["styles"] >= 2 and all(o.shape == outputs[0].shape for o in outputs)
    assert np.abs(outputs[0].astype(int) - outputs[1].astype(int)).mean() > 1.0  # styles differ
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 + len(report["optics"]) + len(anon["images"])
    assert "anonymizer.identity_leakage" in page and "anonymizer.fd" in page
    assert "demo: wrote" in capsys.readouterr().out


def test_demo_puts_the_face_where_the_training_faces_sit() -> None:
    """The astronaut's face, warped into the celeba-crops frame, has YuNet's landmarks on the frame's mean ones."""

    crop = training_frame_crop(data.astronaut(), 128, "astronaut")
    face = YuNet().detect(crop).central(crop.shape)
    frame = CELEBA_FRAME_POINTS - (CELEBA_FRAME_SIZE - 128) / 2
    assert crop.shape == (128, 128, 3)
    # a similarity fit leaves the face's own shape: its centre and scale are what must match
    assert np.linalg.norm(face.landmarks.mean(0) - frame.mean(0)) < 2.5  # YuNet jitter; training faces spread 3-6 px
    eyes = np.linalg.norm(face.landmarks[1] - face.landmarks[0]) / np.linalg.norm(frame[1] - frame[0])
    assert abs(eyes - 1.0) < 0.1


def test_demo_refuses_a_photo_without_a_face(tmp_path) -> None:

    with pytest.raises(ObscuraError, match="wall.png: YuNet finds no face"):
        training_frame_crop(np.full((200, 200, 3), 128, np.uint8), 128, "wall.png")


def test_help_in_a_subprocess() -> None:
    result = subprocess.run(
        [sys.executable, "simulate.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "psf" in result.stdout and "capture" in result.stdout
