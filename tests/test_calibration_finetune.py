"""Sim-to-real fine-tuning of the stage-I regressor on captures through a measured PSF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from anonymizer import checkpoint
from anonymizer.nets.regressor import load_regressor
from calibration.__main__ import main
from calibration.finetune import (
    FinetuneConfig,
    measured_imaging,
    read_measured_psf,
    run,
    stage1_files,
)
from obscura.errors import ObscuraError
from optics.presets import camera_from_spec
from optics.srgb_capture import frozen_camera_imaging

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _design_psf(run_dir: Path) -> np.ndarray:

    with torch.no_grad():
        return camera_from_spec(str(run_dir / "optic.npz")).psf().double().numpy()


def _measured(folder: Path, psf: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / "psf.npy", psf)
    return folder


def test_a_measured_psf_equal_to_the_design_images_like_the_design_camera(stage1_run: Path, tmp_path: Path) -> None:
    stage, optic_file, _ = stage1_files(str(stage1_run))
    folder = _measured(tmp_path / "m", _design_psf(stage1_run))
    faces = torch.rand(2, 3, 64, 64)
    measured = measured_imaging(read_measured_psf(folder, 3), stage)(faces, torch.Generator().manual_seed(1))
    design = frozen_camera_imaging(str(optic_file))(faces, torch.Generator().manual_seed(1))
    # the same light and the same noise draws: at most a few pixels land one 10-bit code apart (float rounding)
    differ = (measured - design).abs() > 1e-6
    assert differ.float().mean() < 0.01 and (measured - design).abs().max() < 0.02


def test_finetune_reports_nme_before_and_after_and_resumes(stage1_run: Path, tmp_path: Path, capsys) -> None:
    psf = _design_psf(stage1_run)
    shifted = np.roll(psf, (3, -2), axis=(1, 2))  # a prototype whose PSF sits off the design axis
    folder = _measured(tmp_path / "m", shifted)
    sets = [
        "--set",
        "steps=2",
        "--set",
        "batch_size=4",
        "--set",
        "val_images=4",
        "--set",
        "progress=false",
        "--set",
        "checkpoint_every=1",
    ]
    out = tmp_path / "ft"
    assert main(["finetune", "--run", str(stage1_run), "--measured", str(folder), "--out", str(out), *sets]) == 0
    assert "measured PSF before" in capsys.readouterr().out
    result = json.loads((out / "finetune.json").read_text())
    nme = result["landmark_nme"]
    assert set(nme) == {"design_psf", "measured_psf_before", "measured_psf_after"} and all(v > 0 for v in nme.values())
    assert nme["measured_psf_before"] != nme["design_psf"]
    assert (out / "finetune.png").read_bytes()[:4] == b"\x89PNG" and (out / "config.yaml").is_file()

    tuned, _ = load_regressor(out / "regressor.pt")
    original, _ = load_regressor(stage1_run / "regressor.pt")
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), original.state_dict().values()))
    assert (
        main(
            [
                "finetune",
                "--run",
                str(stage1_run),
                "--measured",
                str(folder),
                "--out",
                str(out),
                *sets,
                "--set",
                "steps=3",
            ]
        )
        == 0
    )

    history = checkpoint.load(checkpoint.step_path(out / "checkpoints", 3))["history"]
    assert [h["step"] for h in history] == [1, 2, 3]


def test_mono_psf_serves_every_channel_and_bad_psfs_are_refused(tmp_path: Path) -> None:
    mono = np.zeros((9, 9))
    mono[4, 4] = 5.0
    psf = read_measured_psf(_measured(tmp_path / "mono", mono), 3)
    assert psf.shape == (3, 9, 9) and torch.allclose(psf.sum(dim=(1, 2)), torch.ones(3))
    with pytest.raises(ObscuraError, match="holds no light"):
        read_measured_psf(_measured(tmp_path / "dark", np.zeros((9, 9))), 3)
    with pytest.raises(ObscuraError, match="expected finite"):
        read_measured_psf(_measured(tmp_path / "shape", np.ones((2, 9, 9))), 3)
    with pytest.raises(ObscuraError, match="cannot be read"):
        read_measured_psf(tmp_path / "missing", 3)


def test_finetune_needs_a_stage1_run(tmp_path: Path, capsys) -> None:
    assert main(["finetune", "--run", str(tmp_path), "--measured", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "config.yaml not found" in capsys.readouterr().err
    with pytest.raises(ObscuraError, match="'steps'"):
        run(FinetuneConfig(run=str(tmp_path), measured=str(tmp_path), steps=0), tmp_path / "o")
