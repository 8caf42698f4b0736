"""The recognisers' verdict on a fabricated optic (`tolerance --judge-data`): its rule, and real faces through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import simulate
from evaluation.fabrication_judge import FabricationJudgeConfig, verdict
from optics.optic_file import save_optic
from optics.presets import camera_from_spec


def _result(rank1: float, rank1_ci: list[float], auc: float, auc_ci: list[float], chance: float = 0.05) -> dict:
    figures = {"rank1_oracle": rank1, "rank1_oracle_ci95": rank1_ci, "chance": chance}
    figures.update(auc_oracle=auc, auc_oracle_ci95=auc_ci)
    return {"privacy": {"sface": figures, "dlib": figures}}


def test_verdict_fails_only_a_loss_beyond_the_gain_and_the_noise():
    design = _result(0.04, [0.0, 0.08], 0.52, [0.49, 0.55])
    cfg = FabricationJudgeConfig()
    assert verdict(design, design, cfg)["passed"]
    # recognised far above the design and chance: lost, for both figures and both recognisers
    lost = verdict(design, _result(0.30, [0.22, 0.38], 0.80, [0.75, 0.85]), cfg)
    assert not lost["passed"] and len(lost["failures"]) == 4
    assert "sface: the fabricated PSF's rank1_oracle is 0.300" in lost["failures"][0]
    # above by more than the gain, but within the subset's noise (interval reaches the design): not a loss
    noisy = verdict(design, _result(0.09, [0.03, 0.15], 0.52, [0.49, 0.55]), cfg)
    assert noisy["passed"] and noisy["figures"]["sface"]["rank1_oracle"]["ci_half_width"] == pytest.approx(0.06)
    # significantly above, but by less than the allowed gain: not a loss
    assert verdict(design, _result(0.055, [0.05, 0.06], 0.54, [0.53, 0.55]), cfg)["passed"]
    # a design worse than chance is compared with chance, not with itself
    low = _result(0.0, [0.0, 0.0], 0.40, [0.38, 0.42])
    assert verdict(low, _result(0.05, [0.045, 0.055], 0.5, [0.49, 0.51]), cfg)["passed"]


@pytest.fixture(scope="module")
def strong_optic(tmp_path_factory) -> Path:
    """A random Zernike optic with a 2 um RMS mask (r80 27 px): blurred LFW faces, near chance for both recognisers."""
    path = tmp_path_factory.mktemp("optic") / "optic.npz"
    spec = dict(
        optic__mask__init_rms_height_m=2e-6,
        optic__spectrum__centres_m=[550e-9] * 3,
        optic__spectrum__samples_per_channel=1,
    )
    save_optic(path, camera_from_spec("zernike-random", seed=2, pupil_samples=64, psf_size=64, **spec))
    return path


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optics.propagation.SamplingWarning")
@pytest.mark.parametrize("wrap_wavelength, code", [(5.5e-7, 0), (2.75e-7, 1)])
def test_tolerance_judge_fails_a_fabricated_optic_the_recognisers_see_through(
    strong_optic, lfw_subset, tmp_path_factory, one_torch_thread, capsys, wrap_wavelength, code
):
    # Wrapped at the imaging wavelength the 16-level part is the design. Wrapped at half of it, each
    # wrap step delays 550 nm light by pi instead of 2 pi: sinc^2(1/2) = 40 % of the light passes as
    # if there were no mask and the in-focus lens images the face sharply. The PSF checks are
    # switched off, so the recognisers alone must find the loss.
    out = tmp_path_factory.mktemp("judged") / "tol"
    cache = tmp_path_factory.getbasetemp() / "judge-cache"  # clean faces analysed once for both cases
    settings = [
        "height_error_sigma_m=[1.0e-8]",
        "mask_shift_m=[5.0e-6]",
        "rotation_deg=[0.1]",
        "distance_error_m=[1.0e-5]",
        "fabrication.writer_pitch_m=2.0e-5",
        "fabrication.min_feature_m=0.0",
        "fabrication.levels=16",
        f"fabrication.design_wavelength_m={wrap_wavelength}",
        "min_fabricated_correlation=0.0",
        "max_centre_spot_gain=1.0",
        "judge.workers=1",
        "judge.images_per_identity=5",
        "judge.progress=false",
        f"judge.cache_dir={cache}",
    ]
    argv = ["tolerance", "--optic", str(strong_optic), "--out", str(out), "--judge-data", str(lfw_subset)]
    assert simulate.main(argv + [a for s in settings for a in ("--set", s)]) == code
    captured = capsys.readouterr()
    check = json.loads((out / "tolerance.json").read_text())["privacy_check"]
    judge = check["recognisers"]
    assert judge == json.loads((out / "judge" / "judge.json").read_text())
    assert judge["n_identities"] == 4 and judge["n_probes"] == 16
    assert (out / "judge" / "identities.txt").read_text().split() == sorted(p.name for p in lfw_subset.iterdir())
    for label in ("design", "fabricated"):
        report = json.loads((out / "judge" / label / "report.json").read_text())
        assert report["method"].endswith(f"psf_{label}.npy") and report["max_images"] == 5
    sface = judge["figures"]["sface"]["rank1_oracle"]
    assert sface["design"] <= 0.5  # the design blurs 4 people to near chance (0.25)
    if code:
        assert sface["lost"] and sface["fabricated"] >= 0.9 and not check["passed"]
        assert "FAIL: sface: the fabricated PSF's rank1_oracle" in captured.err
    else:
        assert check["passed"] and sface["fabricated"] == pytest.approx(sface["design"], abs=0.13)
        assert "privacy check passed (PSF correlation, centre spot and the recognisers)" in captured.out


def test_tolerance_refuses_a_missing_judge_folder_before_the_sweeps(strong_optic, tmp_path, capsys):
    argv = ["tolerance", "--optic", str(strong_optic), "--out", str(tmp_path / "tol")]
    assert simulate.main(argv + ["--judge-data", str(tmp_path / "absent")]) == 2
    assert f"--judge-data {tmp_path / 'absent'}: not a folder" in capsys.readouterr().err
    assert not (tmp_path / "tol" / "tolerance.json").exists()
