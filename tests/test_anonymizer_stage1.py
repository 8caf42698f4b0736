"""Stage I end to end on a tiny real subset: outputs, exact resumption, corrupt checkpoints, bad configs."""
from __future__ import annotations

import argparse
from pathlib import Path
import json

import numpy as np
import pytest
import torch
import yaml

from anonymizer import checkpoint, cli
from anonymizer.stage1_config import load_config
from obscura.errors import ObscuraError


pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "data.max_identities": 3,
    "data.max_images_per_identity": 3,
    "data.image_size": 64,
    "data.val_images": 4,
    "camera.optic.pupil_samples": 96,
    "camera.optic.psf_size": 32,
    "camera.optic.mask.num_terms": 36,  # low orders only: a 96-sample pupil resolves them
    "camera.optic.spectrum.samples_per_channel": 1,
    "regressor.base_channels": 8,
    "regressor.depth": 3,
    "regressor.max_channels": 32,
    "adversary.width": 8,
    "train.steps": 3,
    "train.batch_size": 4,
    "train.checkpoint_every": 1,
    "train.log_every": 1,
    "train.warmup_steps": 1,
    "train.threads": 1,
    "train.progress": False,
    "train.device": "cpu",
}


@pytest.fixture(scope="module")
def tiny(shared_data, tmp_path_factory) -> dict:
    """The tiny configuration's overrides on the real celeba-crops set, with a landmark cache shared by the tests."""
    cache = tmp_path_factory.mktemp("landmark-cache")
    return {**TINY, "data.root": str(shared_data / "celeba-crops"), "data.cache_dir": str(cache)}


def _train(overrides: dict, out, **more) -> int:
    """Run the train-optics handler through an argparse parser built with cli.register."""
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in {**overrides, **more}.items()]
    args = parser.parse_args(["train-optics", "--config", str(_empty_config(out)), "--out", str(out), *sum((["--set", s] for s in sets), [])])
    return args.func(args)


def _empty_config(out):
    """A config file holding only a comment (everything comes from --set)."""
    path = out.parent / f"{out.name}.yaml"
    path.write_text("# tiny test configuration: all keys are set on the command line\n")
    return path


def _state(out, step: int) -> dict:
    return checkpoint.load(checkpoint.step_path(out / "checkpoints", step))


def _assert_same_models(a: dict, b: dict) -> None:
    for part in ("camera", "regressor", "adversary"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs"
    assert a["history"] == b["history"]


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """A 3-step run in one go."""
    out = tmp_path_factory.mktemp("stage1") / "straight"
    assert _train(tiny, out) == 0
    return out


def test_three_step_run_writes_every_output(straight, tiny) -> None:
    for name in ("config.yaml", "metrics.json", "optic.npz", "regressor.pt", "adversary.pt", "splits/train.txt", "splits/test.txt"):
        assert (straight / name).is_file(), name
    for name in ("loss_curves.png", "psf.png", "captures.png"):
        assert (straight / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert [p.name for p in checkpoint.listed(straight / "checkpoints")] == ["ckpt-00000003.pt", "ckpt-00000002.pt"]
    resolved = yaml.safe_load((straight / "config.yaml").read_text())
    assert resolved["train"]["steps"] == 3 and resolved["camera"]["optic"]["mask"]["kind"] == "zernike"
    metrics = json.loads((straight / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["data"]["train_identities"] == 3 and metrics["parameters"]["optic"] == 36
    assert 0 <= metrics["validation"]["val_nme"] < 10
    train_ids = set((straight / "splits/train.txt").read_text().split())
    assert not train_ids & set((straight / "splits/test.txt").read_text().split())


def test_optic_is_trained(straight, tiny) -> None:
    from optics.optic import Optic
    from optics.optic_file import read_optic

    initial = dict(Optic(load_config(straight / "config.yaml").camera.optic).named_parameters())  # the seeded start
    saved = read_optic(straight / "optic.npz").params
    assert set(saved) == set(initial)
    for name, value in saved.items():
        assert not np.allclose(value, initial[name].detach().double().numpy()), name


def test_optic_stays_frozen_during_warm_up(tiny, tmp_path) -> None:
    from optics.optic import Optic
    from optics.optic_file import read_optic

    out = tmp_path / "warm"
    _train(tiny, out, **{"train.steps": 2, "train.warmup_steps": 5})
    initial = dict(Optic(load_config(out / "config.yaml").camera.optic).named_parameters())
    for name, value in read_optic(out / "optic.npz").params.items():
        assert np.array_equal(value, initial[name].detach().double().numpy()), name
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["psf_r80_px"] == history[1]["psf_r80_px"]


def test_resuming_from_a_checkpoint_repeats_the_same_steps(straight, tiny, tmp_path) -> None:
    out = tmp_path / "resumed"
    _train(tiny, out, **{"train.steps": 2})
    _train(tiny, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000002.pt")
    _assert_same_models(_state(out, 3), _state(straight, 3))


def test_corrupt_checkpoint_is_refused_and_the_previous_one_used(straight, tiny, tmp_path, capsys) -> None:
    out = tmp_path / "corrupt"
    _train(tiny, out, **{"train.steps": 2})
    newest = checkpoint.step_path(out / "checkpoints", 2)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    _train(tiny, out)
    assert "ckpt-00000002.pt is corrupt" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000001.pt")
    _assert_same_models(_state(out, 3), _state(straight, 3))


def test_resuming_with_a_different_configuration_is_refused(straight, tiny, tmp_path) -> None:
    out = tmp_path / "changed"
    _train(tiny, out, **{"train.steps": 1})
    with pytest.raises(ObscuraError, match="train.lambda_priv"):
        _train(tiny, out, **{"train.lambda_priv": 2.0})


def test_unknown_key_fails_before_training_naming_it(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  stepz: 3\n")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["train-optics", "--config", str(config), "--out", str(tmp_path / "out")])
    with pytest.raises(ObscuraError, match="'train.stepz'"):
        args.func(args)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("camera.optic.lens.aperture_diameter_m", -4e-3, "aperture_diameter_m"),
        ("camera.optic.psf_size", 2, "psf_size"),
        ("camera.optic.mask.kind", "none", "camera.optic.mask.kind"),
        ("data.image_size", 100, "data.image_size"),
    ],
)
def test_impossible_settings_fail_before_training(tmp_path, key: str, value, named: str) -> None:
    from anonymizer.stage1 import train

    with pytest.raises(ObscuraError, match=named):
        train(load_config(None, {key: value}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_saved_result_loads_as_a_capture_method_and_landmark_predictor(straight) -> None:
    from anonymizer.learned_optic import load_learned_optic

    learned = load_learned_optic(straight)
    image = (np.random.default_rng(0).uniform(0, 255, (80, 80, 3))).astype(np.uint8)
    capture = learned.capture(image)
    assert capture.shape == image.shape and capture.dtype == np.uint8
    assert np.array_equal(capture, learned.capture(image))  # seeded sensor noise: evaluation reruns agree
    assert not np.array_equal(capture, image)
    marks = learned.landmarks(capture)
    assert marks.shape == (68, 2) and np.all((marks >= 8 - 2) & (marks <= 8 + 64 + 2))  # inside the central 64 px crop
    assert learned.key == load_learned_optic(straight / "optic.npz").key
    with pytest.raises(ObscuraError, match="regressor"):
        load_learned_optic(straight / "optic.npz", regressor=straight / "missing.pt")


def test_partial_sections_merge_onto_the_defaults(tmp_path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("camera:\n  optic:\n    psf_size: 64\ndata:\n  split_fractions: {train: 0.5, test: 0.5}\n")
    cfg = load_config(path)
    assert cfg.camera.optic.psf_size == 64
    assert cfg.camera.optic.mask.kind == "zernike" and cfg.camera.optic.mask.num_terms == 300  # the default optic kept
    assert cfg.data.split_fractions == {"train": 0.5, "test": 0.5}  # a partition replaces, never merges


@pytest.mark.parametrize("name", ["stage1_cpu.yaml", "stage1_gpu.yaml"])
def test_committed_configurations_are_valid(name: str) -> None:
    from anonymizer.regressor import HeatmapRegressor, count_parameters
    from anonymizer.stage1_config import validate
    from obscura.paths import REPO_ROOT

    cfg = load_config(REPO_ROOT / "configs" / name)
    validate(cfg)
    r = cfg.regressor
    assert count_parameters(HeatmapRegressor(r.base_channels, r.depth, r.stride, r.max_channels)) <= 5_000_000
    assert cfg.camera.optic.mask.num_terms == 300 and cfg.camera.sensor.noise


def test_evaluate_a_saved_result_as_method_optic_path(straight, shared_data: Path, tmp_path: Path) -> None:
    """`evaluate --method optic:PATH` images through the learned optic and reports the regressor's landmark NME."""
    from evaluation.evaluate import EvaluateConfig, run

    data = tmp_path / "faces"
    for name in sorted(p.name for p in (shared_data / "celeba-crops").iterdir())[:2]:
        (data / name).mkdir(parents=True)
        for src in sorted((shared_data / "celeba-crops" / name).iterdir())[:3]:
            (data / name / src.name).symlink_to(src)
    report = run(EvaluateConfig(data=str(data), method=f"optic:{straight}", out=str(tmp_path / "eval"), min_images=3,
                                cache_dir=str(tmp_path / "cache"), workers=1, bootstrap=10, progress=False, examples=1))
    assert report["n_probes"] == 4
    assert report["utility"]["landmark_nme_pairs"] >= 1 and report["utility"]["landmark_nme"] > 0
    assert "Regressor landmarks on the captures" in (tmp_path / "eval" / "report.md").read_text()


def test_method_optic_needs_the_committed_weights(monkeypatch, tmp_path: Path) -> None:
    import obscura.paths
    from evaluation import methods

    monkeypatch.setattr(obscura.paths, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ObscuraError, match=r"optic file .*weights/optic.npz not found"):
        methods.get("optic")
