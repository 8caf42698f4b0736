"""Reconstruction attackers: exact inversion of a known forward model, and the evaluation after rebuilding."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from evaluation import evaluation_commands
from evaluation.attacks.reconstruction import (
    LAMBDA_GRID,
    LENSLESS_INSTALL,
    AdmmAttacker,
    build,
    choose,
    psf_on_sensor,
    psnr,
    tikhonov,
)
from evaluation.evaluate import EvaluateConfig, run
from evaluation.methods import get, psf_forward
from obscura.errors import ObscuraError
from optics.srgb import linear_to_srgb, srgb_to_linear


def _smooth_scene(size: int, seed: int) -> torch.Tensor:
    """A 1 x 3 x size x size scene in [0, 1]: smoothed noise, like natural images mostly low-frequency."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_least_squares_recovers_a_scene_through_a_known_psf_without_noise(one_torch_thread: None) -> None:
    """The cropped, zero-padded convolution is inverted exactly enough to give the scene back (>= 40 dB)."""
    g = torch.Generator().manual_seed(1)
    psf = torch.rand(3, 9, 9, generator=g) ** 4  # a scattered, uneven PSF, like a learned optic's
    psf = psf / psf.sum(dim=(1, 2), keepdim=True)
    forward = psf_forward(lambda: psf)
    scene = _smooth_scene(48, 0)
    capture = forward.apply(scene)
    assert psnr(capture, scene) < 30  # the capture itself is far from the scene
    rebuilt = tikhonov(capture, forward.apply, lam=1e-5, iterations=500)
    assert psnr(rebuilt, scene) >= 40


def test_specs_are_checked_with_one_line_errors() -> None:
    blur = get("blur4")
    assert build("tikhonov:0.001", blur).cache_key == "tikhonov-0.001-150"
    for spec, match in (
        ("tikhonov:abc", "LAMBDA >= 0"),
        ("tikhonov:-1", "LAMBDA >= 0"),
        ("learned:/no/such/inversion.pt", "no such file"),
        ("wiener", "expected one of"),
    ):
        with pytest.raises(ObscuraError, match=match):
            build(spec, blur)
    with pytest.raises(ObscuraError, match="no forward model"):
        build("tikhonov:0.1", get("clean"))


def test_lambda_is_the_grid_value_with_the_best_rebuilds(one_torch_thread: None) -> None:
    faces = [(_smooth_scene(40, s)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for s in range(3)]
    lam, scores = choose("tikhonov", get("blur4"), faces)
    assert set(scores) == {f"{v:g}" for v in LAMBDA_GRID}
    assert scores[f"{lam:g}"] == max(scores.values())
    assert len(set(scores.values())) > 1  # the choice is made, not a tie


def test_a_psf_is_placed_on_the_sensor_grid_with_its_centre_kept() -> None:
    psf = torch.zeros(3, 5, 7)
    psf[:, 2, 3] = 1.0  # the centre (h//2, w//2)
    assert torch.equal(psf_on_sensor(psf, 10, 12).nonzero()[:, 1:].unique(dim=0), torch.tensor([[5, 6]]))
    big = torch.zeros(3, 21, 21)
    big[:, 10, 10], big[:, 0, 0] = 1.0, 1.0
    cropped = psf_on_sensor(big, 8, 8)  # a PSF larger than the sensor keeps the part around its centre
    assert cropped.shape == (3, 8, 8) and cropped[:, 4, 4].eq(1).all() and cropped.sum() == 3


def test_lensless_admm_rebuilds_a_scene_through_a_known_psf(one_torch_thread: None) -> None:
    """The outside implementation, given the PSF, undoes the zero-padded, cropped convolution of our camera."""
    pytest.importorskip("lensless", reason=f"LenslessPiCam's package is not installed ({LENSLESS_INSTALL})")
    g = torch.Generator().manual_seed(2)
    psf = torch.rand(3, 9, 9, generator=g) ** 4
    psf = psf / psf.sum(dim=(1, 2), keepdim=True)
    scene = _smooth_scene(48, 3) * 0.8 + 0.1
    scene[..., :6, :] = scene[..., -6:, :] = scene[..., :, :6] = scene[..., :, -6:] = 0  # dark around the window
    capture = linear_to_srgb(psf_forward(lambda: psf).apply(srgb_to_linear(scene)))
    assert psnr(capture, scene) < 20
    rebuilt = AdmmAttacker(psf, tau=1e-7, iterations=300).rebuild_batch(capture)
    assert rebuilt.shape == scene.shape
    assert psnr(rebuilt, scene) >= 40  # 42.6 dB measured; the capture itself 16.9 dB


def test_admm_specs_need_an_optic_and_a_number() -> None:
    assert build("admm:0.0001", get("defocus")).cache_key == "admm-0.0001-100"
    with pytest.raises(ObscuraError, match="not an optic"):
        build("admm:0.0001", get("blur4"))
    with pytest.raises(ObscuraError, match="TAU >= 0"):
        build("admm:x", get("defocus"))


@pytest.mark.slow
def test_a_scrambling_psf_fools_recognisers_until_the_attacker_inverts_it(lfw_subset: Path, tmp_path: Path) -> None:
    """A random scattered PSF hides faces from SFace on raw captures, but least squares with the PSF gives them back."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "scramble.npy", rng.random((3, 21, 21)) ** 8)
    cfg = EvaluateConfig(
        data=str(lfw_subset),
        method=f"psf:{tmp_path / 'scramble.npy'}",
        out=str(tmp_path / "out"),
        min_images=5,
        cache_dir=str(tmp_path / "cache"),
        workers=1,
        bootstrap=50,
        progress=False,
        examples=2,
        reconstruction=["tikhonov:0.001"],
    )
    result = run(cfg)
    raw, rebuilt = result["privacy"]["sface"], result["privacy"]["reconstruction"]["tikhonov"]["sface"]
    assert rebuilt["rank1_oracle"] >= raw["rank1_oracle"] + 0.25
    assert rebuilt["auc"] > raw["auc"]
    out = Path(cfg.out)
    assert (out / "reconstruction.png").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["privacy"]["reconstruction"]["tikhonov"]["attacker"] == "tikhonov:0.001"
    assert "After reconstruction" in (out / "report.md").read_text()
    utility = result["utility"]  # the committed regressor reads the captures: judged on moved faces
    assert utility["landmark_nme_mean_shape"] >= 0.2  # the motions are large enough to mean something
    assert utility["landmark_nme_mean_shape"] > utility["landmark_nme_mean_shape_aligned"]
    motions = json.loads((out / "motions.json").read_text())
    assert len(motions["motions"]) == result["n_probes"] and motions["motion_seed"] == 0


def test_learned_inversion_trains_on_training_identities_and_rebuilds_any_capture(
    shared_data: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    parser = argparse.ArgumentParser()
    evaluation_commands.register(parser.add_subparsers())
    sets = ["max_images=24", "size=32", "unet_steps=2", "batch_size=4", "progress=false", "threads=1"]
    sets += [f"data={shared_data / 'celeba-crops'}"]
    args = parser.parse_args(
        ["attack-reconstruct", "--method", "blur4", "--out", str(tmp_path), *sum((["--set", s] for s in sets), [])]
    )
    assert args.func(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["train_images"] == 24 and report["ridge"]["lambda"] in report_grid(tmp_path)
    attacker = build(f"learned:{tmp_path / 'inversion.pt'}", get("blur4"))
    capture = get("blur4").apply(np.full((50, 70, 3), 128, np.uint8))
    assert attacker.rebuild(capture).shape == (50, 70, 3)
    with pytest.raises(ObscuraError, match="lowres8"):
        build(f"learned:{tmp_path / 'inversion.pt'}", get("lowres8"))  # an inversion of another method


def report_grid(out: Path) -> list[float]:
    """The ridge grid the run was configured with."""
    return yaml.safe_load((out / "config.yaml").read_text())["ridge_grid"]
