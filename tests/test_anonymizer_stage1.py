"""Stage I end to end on a tiny real subset: outputs, exact resumption, corrupt checkpoints, bad configs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from stage1_helpers import train_cli

import obscura.paths
from anonymizer import checkpoint, training_commands
from anonymizer.learned_optic import load_learned_optic
from anonymizer.nets.regressor import HeatmapRegressor, count_parameters, load_regressor
from anonymizer.publish import publish
from anonymizer.runs import read_recogniser
from anonymizer.stage1.stage1_config import Stage1Config, validate
from anonymizer.stage1.stage1_data import prepare
from anonymizer.stage1.stage1_train import build_models, train
from evaluation import evaluation_commands, methods
from evaluation.attacks.adaptive_recogniser import AttackConfig, attacker_batch, check, judge
from evaluation.methods import lowres, method_imaging
from obscura import config, manifest
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT, WEIGHTS_DIR
from optics.image_io import from_uint8, to_uint8
from optics.optic import Optic
from optics.optic_file import read_optic

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tiny_stage1: dict) -> dict:
    """The tiny configuration's overrides (see stage1_helpers.TINY)."""
    return tiny_stage1


@pytest.fixture(scope="module")
def straight(stage1_run: Path) -> Path:
    """A 3-step run in one go."""
    return stage1_run


def _state(out, step: int) -> dict:
    return checkpoint.load(checkpoint.step_path(out / "checkpoints", step))


def _assert_same_models(a: dict, b: dict) -> None:
    for part in ("camera", "regressor", "adversary"):
        for name, tensor in a[part].items():
            assert torch.equal(tensor, b[part][name]), f"{part}.{name} differs"
    assert a["history"] == b["history"]


def test_three_step_run_writes_every_output(straight, tiny) -> None:
    for name in (
        "config.yaml",
        "metrics.json",
        "optic.npz",
        "regressor.pt",
        "adversary.pt",
        "splits/train.txt",
        "splits/test.txt",
    ):
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

    initial = dict(
        Optic(config.load(Stage1Config, straight / "config.yaml").camera.optic).named_parameters()
    )  # the seeded start
    saved = read_optic(straight / "optic.npz").params
    assert set(saved) == set(initial)
    for name, value in saved.items():
        assert not np.allclose(value, initial[name].detach().double().numpy()), name


def test_optic_stays_frozen_during_warm_up(tiny, tmp_path) -> None:

    out = tmp_path / "warm"
    train_cli(tiny, out, **{"train.steps": 2, "train.warmup_steps": 5})
    initial = dict(Optic(config.load(Stage1Config, out / "config.yaml").camera.optic).named_parameters())
    for name, value in read_optic(out / "optic.npz").params.items():
        assert np.array_equal(value, initial[name].detach().double().numpy()), name
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["psf_r80_px"] == history[1]["psf_r80_px"]


def test_resuming_from_a_checkpoint_repeats_the_same_steps(straight, tiny, tmp_path) -> None:
    out = tmp_path / "resumed"
    train_cli(tiny, out, **{"train.steps": 2})
    train_cli(tiny, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000002.pt")
    _assert_same_models(_state(out, 3), _state(straight, 3))


def test_corrupt_checkpoint_is_refused_and_the_previous_one_used(straight, tiny, tmp_path, capsys) -> None:
    out = tmp_path / "corrupt"
    train_cli(tiny, out, **{"train.steps": 2})
    newest = checkpoint.step_path(out / "checkpoints", 2)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    train_cli(tiny, out)
    assert "ckpt-00000002.pt is corrupt" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000001.pt")
    _assert_same_models(_state(out, 3), _state(straight, 3))


def test_resuming_with_a_different_configuration_is_refused(straight, tiny, tmp_path) -> None:
    out = tmp_path / "changed"
    train_cli(tiny, out, **{"train.steps": 1})
    with pytest.raises(ObscuraError, match="train.lambda_priv"):
        train_cli(tiny, out, **{"train.lambda_priv": 2.0})


def test_unknown_key_fails_before_training_naming_it(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  stepz: 3\n")
    parser = argparse.ArgumentParser()
    training_commands.register(parser.add_subparsers())
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

    with pytest.raises(ObscuraError, match=named):
        train(config.load(Stage1Config, None, {key: value}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_saved_result_loads_as_a_capture_method_and_landmark_predictor(straight) -> None:

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
    cfg = config.load(Stage1Config, path)
    assert cfg.camera.optic.psf_size == 64
    assert cfg.camera.optic.mask.kind == "zernike" and cfg.camera.optic.mask.num_terms == 300  # the default optic kept
    assert cfg.data.split_fractions == {"train": 0.5, "test": 0.5}  # a partition replaces, never merges


@pytest.mark.parametrize("name", ["stage1_cpu.yaml", "stage1_gpu.yaml"])
def test_committed_configurations_are_valid(name: str) -> None:

    cfg = config.load(Stage1Config, REPO_ROOT / "configs" / name)
    validate(cfg)
    r = cfg.regressor
    assert count_parameters(HeatmapRegressor(r.base_channels, r.depth, r.stride, r.max_channels)) <= 5_000_000
    assert cfg.camera.optic.mask.num_terms == 300 and cfg.camera.sensor.noise


def test_evaluate_a_saved_result_as_method_optic_path(straight, shared_data: Path, tmp_path: Path, capsys) -> None:
    """`evaluate --method optic:PATH` images through the learned optic and reports the regressor's landmark NME."""

    data = tmp_path / "faces"
    for name in sorted(p.name for p in (shared_data / "celeba-crops").iterdir())[:2]:
        (data / name).mkdir(parents=True)
        for src in sorted((shared_data / "celeba-crops" / name).iterdir())[:3]:
            (data / name / src.name).symlink_to(src)
    parser = argparse.ArgumentParser()
    evaluation_commands.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "evaluate",
            "--data",
            str(data),
            "--method",
            f"optic:{straight}",
            "--out",
            str(tmp_path / "eval"),
            "--min-images",
            "3",
            "--cache",
            str(tmp_path / "cache"),
            "--workers",
            "1",
            "--set",
            "bootstrap=10",
            "--set",
            "progress=false",
            "--set",
            "examples=1",
        ]
    )
    assert args.func(args) == 0
    assert "regressor landmarks on captures: NME" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n_probes"] == 4
    assert report["utility"]["landmark_nme_pairs"] >= 1 and report["utility"]["landmark_nme"] > 0
    assert 0 < report["utility"]["landmark_nme_mean_shape"] < 1  # the trivial predictor's NME, for comparison
    assert "Regressor landmarks on the captures" in (tmp_path / "eval" / "report.md").read_text()


def test_method_optic_needs_the_committed_weights(monkeypatch, tmp_path: Path) -> None:

    monkeypatch.setattr(obscura.paths, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(ObscuraError, match=r"optic file .*weights/optic.npz not found"):
        methods.get("optic")


def _faces(shared_data: Path, folder: Path, identities: int, images: int, skip: int = 0) -> Path:
    """A folder of symlinks to a few celeba-crops identities (the last ones by name: test-split-like)."""
    names = sorted(p.name for p in (shared_data / "celeba-crops").iterdir())
    for name in names[len(names) - skip - identities : len(names) - skip]:
        (folder / name).mkdir(parents=True)
        for src in sorted((shared_data / "celeba-crops" / name).iterdir())[:images]:
            (folder / name / src.name).symlink_to(src)
    return folder


def _attack(run: Path, out: Path, test_data: Path, **sets) -> int:
    parser = argparse.ArgumentParser()
    evaluation_commands.register(parser.add_subparsers())
    pairs = {
        "steps": 2,
        "batch_size": 4,
        "checkpoint_every": 1,
        "bootstrap": 10,
        "progress": False,
        "threads": 1,
        **sets,
    }
    args = parser.parse_args(
        [
            "attack-optic",
            "--run",
            str(run),
            "--out",
            str(out),
            "--test-data",
            str(test_data),
            *sum((["--set", f"{k}={v}"] for k, v in pairs.items()), []),
        ]
    )
    return args.func(args)


def test_adaptive_attacker_fine_tunes_the_run_adversary_and_judges_unseen_faces(
    straight, shared_data: Path, tmp_path: Path
) -> None:
    faces = _faces(shared_data, tmp_path / "faces", identities=3, images=3)
    assert _attack(straight, tmp_path / "attack", faces) == 0
    report = json.loads((tmp_path / "attack" / "report.json").read_text())
    assert report["n_identities"] == 3 and report["n_probes"] == 6 and report["chance"] == pytest.approx(1 / 3)
    assert report["train_identities"] == 3 and report["init"] == "adversary"
    for protocol in ("captured_gallery", "clean_gallery", "clean_only"):
        assert 0 <= report[protocol]["rank1"] <= 1 and 0 <= report[protocol]["auc"] <= 1
    assert (tmp_path / "attack" / "attacker_training.png").read_bytes()[:4] == b"\x89PNG"
    tuned = checkpoint.load(tmp_path / "attack" / "attacker.pt")["state_dict"]
    start = checkpoint.load(straight / "adversary.pt")["state_dict"]
    assert tuned.keys() == start.keys()  # fine-tuned from the run's adversary, same shape
    assert any(not torch.equal(tuned[k], start[k]) for k in start if tuned[k].is_floating_point())
    # resumption: two more steps continue from the step-2 checkpoint
    assert _attack(straight, tmp_path / "attack", faces, steps=4) == 0
    assert [p.name for p in checkpoint.listed(tmp_path / "attack" / "checkpoints")] == [
        "ckpt-00000004.pt",
        "ckpt-00000003.pt",
    ]
    assert [
        h["step"] for h in checkpoint.load(tmp_path / "attack" / "checkpoints" / "ckpt-00000004.pt")["history"]
    ] == [1, 2, 3, 4]


def test_attacker_judge_scores_a_perfect_and_a_blind_recogniser() -> None:

    groups = [[Path(f"id{i}/{j}.jpg") for j in range(4)] for i in range(5)]
    perfect = torch.nn.functional.one_hot(torch.arange(5).repeat_interleave(4), 8).float()
    blind = torch.nn.functional.normalize(torch.ones(20, 8))
    cfg = AttackConfig(bootstrap=10)
    seen = judge({"clean": perfect, "captured": perfect}, groups, cfg)
    assert seen["n_probes"] == 15 and seen["captured_gallery"]["rank1"] == 1.0 and seen["clean_gallery"]["auc"] == 1.0
    unseen = judge({"clean": perfect, "captured": blind}, groups, cfg)
    assert unseen["captured_gallery"]["rank1"] == 0.0  # all scores tie: never a strict winner
    assert unseen["captured_gallery"]["auc"] == pytest.approx(0.5) and unseen["clean_only"]["rank1"] == 1.0


def test_a_clean_share_of_one_never_images_through_the_camera() -> None:

    def camera(*args, **kwargs):
        raise AssertionError("the camera was used for a clean-face recogniser")

    images = torch.rand(6, 3, 8, 8)
    seen = attacker_batch(camera, images, 3, AttackConfig(clean_fraction=1.0))
    assert all(torch.equal(s, i) or torch.equal(s, i.flip(-1)) for s, i in zip(seen, images))


def _same_weights(start: dict, later: dict, atol: float = 0.0) -> bool:
    """Equal learned weights (BatchNorm's running statistics aside, which any forward pass in training mode moves)."""
    weights = [k for k in start if "running" not in k and "num_batches" not in k]
    return all(torch.allclose(start[k], later[k], rtol=0.0, atol=atol) for k in weights)


@pytest.fixture(scope="module")
def clean_recogniser(straight, shared_data: Path, tmp_path_factory) -> Path:
    """A 2-step clean-face recogniser of the tiny run's training identities, resizing faces to 32 px."""
    folder = tmp_path_factory.mktemp("clean-recogniser")
    faces = _faces(shared_data, folder / "faces", identities=3, images=3)
    assert _attack(straight, folder / "run", faces, clean_fraction=1.0, init="scratch", input_px=32) == 0
    return folder / "run" / "attacker.pt"


def test_an_attacker_starts_from_an_earlier_recogniser_of_the_same_identities(
    straight, clean_recogniser: Path, shared_data: Path, tmp_path: Path
) -> None:
    faces = _faces(shared_data, tmp_path / "faces", identities=3, images=3)
    first = clean_recogniser
    assert _attack(straight, tmp_path / "tuned", faces, init=str(first), lr=0.0) == 0  # input_px: the file's (32)
    tuned = checkpoint.load(tmp_path / "tuned" / "attacker.pt")
    assert tuned["input_px"] == 32 and _same_weights(checkpoint.load(first)["state_dict"], tuned["state_dict"])
    with pytest.raises(ObscuraError, match="resizes faces to input_px 32; this network uses 0"):
        _attack(straight, tmp_path / "refused", faces, init=str(first), input_px=0)
    stranger = checkpoint.load(first)
    stranger["identities"] = stranger["identities"][:-1] + ["someone-else"]
    checkpoint.save(tmp_path / "stranger.pt", stranger)
    with pytest.raises(ObscuraError, match="stranger.pt was trained on other identities"):
        _attack(straight, tmp_path / "refused", faces, init=str(tmp_path / "stranger.pt"))
    with pytest.raises(ObscuraError, match="'init' is '/no/such.pt'"):
        _attack(straight, tmp_path / "refused", faces, init="/no/such.pt")


def test_face_crops_without_targets_skip_only_the_heatmaps(tiny, tmp_path: Path) -> None:

    cfg = config.load(Stage1Config, None, tiny)
    crops = prepare(cfg.data, cfg.regressor, tmp_path, write=False).train
    full, bare = crops[0], crops.without_targets()[0]
    assert full[1].shape == (69, 16, 16) and bare[1].numel() == 0
    assert torch.equal(full[0], bare[0]) and full[2] == bare[2] and torch.equal(full[3], bare[3])


def test_the_attacker_can_be_measured_on_a_baseline_method_instead_of_the_optic(
    straight, shared_data: Path, tmp_path: Path
) -> None:

    images = torch.rand(2, 3, 32, 32)
    seen = method_imaging("lowres8")(images, torch.Generator())
    assert torch.equal(seen, from_uint8(np.stack([lowres(x, 8) for x in to_uint8(images)])))
    faces = _faces(shared_data, tmp_path / "faces", identities=3, images=3)
    assert _attack(straight, tmp_path / "attack", faces, method="lowres8") == 0
    assert json.loads((tmp_path / "attack" / "report.json").read_text())["imaging"] == "method lowres8"
    with pytest.raises(ObscuraError, match="config key 'method': --method 'lowres5': unknown method"):
        _attack(straight, tmp_path / "refused", faces, method="lowres5")


def test_stage1_can_start_its_adversary_from_a_recogniser_of_the_training_identities(
    tiny, clean_recogniser: Path, tmp_path: Path
) -> None:

    start = {"adversary.init": str(clean_recogniser), "adversary.input_px": 32, "adversary.lr": 1e-12, "train.steps": 1}
    train_cli(tiny, tmp_path / "run", **start)
    trained = read_recogniser(tmp_path / "run" / "adversary.pt")
    assert trained["input_px"] == 32  # recorded, so attack-optic and stage II rebuild it at its size
    assert _same_weights(checkpoint.load(clean_recogniser)["state_dict"], trained["state_dict"], atol=1e-9)
    published = manifest.verify(
        publish(tmp_path / "run", tmp_path / "weights", "python simulate.py train-optics ...", [], [])
    )
    assert published["files"]["optic.npz"]["metrics"]["training"]["adversary_init"] == {
        "file": str(clean_recogniser),
        "sha256": file_sha256(clean_recogniser),
    }
    with pytest.raises(ObscuraError, match="resizes faces to input_px 32; this network uses 0"):
        train_cli(tiny, tmp_path / "other-size", **{**start, "adversary.input_px": 0})
    with pytest.raises(ObscuraError, match="'adversary.init' is '/no/such.pt'"):
        train_cli(tiny, tmp_path / "missing", **{**start, "adversary.init": "/no/such.pt"})
    assert not (tmp_path / "missing").exists()


def test_the_reconstruction_attacker_in_the_loop_judges_rebuilds_and_resumes_exactly(tiny, tmp_path: Path) -> None:
    """With rebuild.weight the adversary also sees least-squares rebuilds of the captures, and the run stays exact."""
    inverting = {"rebuild.weight": 1.0, "rebuild.images": 2, "rebuild.iterations": 3}
    train_cli(tiny, tmp_path / "straight", **inverting)
    history = json.loads((tmp_path / "straight" / "metrics.json").read_text())["history"]
    for key in ("rebuild_identity_information", "rebuild_adversary_accuracy", "rebuild_psnr_db"):
        assert all(np.isfinite(h[key]) for h in history), key
    assert history[-1]["rebuild_psnr_db"] > 5  # a rebuild of the face, not noise
    train_cli(tiny, tmp_path / "resumed", **{**inverting, "train.steps": 2})
    train_cli(tiny, tmp_path / "resumed", **inverting)
    _assert_same_models(_state(tmp_path / "straight", 3), _state(tmp_path / "resumed", 3))


def test_stage1_can_start_its_regressor_from_a_saved_one_of_the_same_shape(straight, tiny, tmp_path: Path) -> None:
    start = {**tiny, "regressor.init": str(straight / "regressor.pt")}
    started = build_models(config.load(Stage1Config, None, start), ["a", "b", "c"], torch.device("cpu")).regressor
    saved, _ = load_regressor(straight / "regressor.pt")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in started.state_dict().items())
    wider = config.load(Stage1Config, None, {**start, "regressor.base_channels": 16})
    with pytest.raises(ObscuraError, match="'regressor.init'.*another architecture or crop size"):
        build_models(wider, ["a", "b", "c"], torch.device("cpu"))
    with pytest.raises(ObscuraError, match="'regressor.init' is '/no/such.pt'"):
        train_cli(tiny, tmp_path / "missing", **{"regressor.init": "/no/such.pt"})


def test_adaptive_attacker_accepts_the_committed_stage1_as_weights(tmp_path: Path) -> None:

    stage = check(AttackConfig(run="weights", out=str(tmp_path)))
    assert stage == config.load(Stage1Config, WEIGHTS_DIR / "stage1_config.yaml")


def test_adaptive_attacker_refuses_an_unfinished_run(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("train: {steps: 3}\n")
    with pytest.raises(ObscuraError, match="optic.npz not found"):
        _attack(tmp_path / "run", tmp_path / "attack", tmp_path)


def test_publish_writes_weights_with_a_manifest_that_catches_tampering(straight, tmp_path: Path) -> None:

    path = publish(straight, tmp_path / "weights", "python simulate.py train-optics ...", [], [])
    checked = manifest.verify(path)
    assert set(checked["files"]) == {"optic.npz", "regressor.pt", "adversary.pt"}
    e = checked["files"]["optic.npz"]
    assert (
        e["command"].startswith("python simulate.py train-optics")
        and e["data"]["trained_on_split"] == "splits/train.txt"
    )
    assert (tmp_path / "weights" / "splits" / "train.txt").read_text() == (
        straight / "splits" / "train.txt"
    ).read_text()
    assert e["metrics"]["training"]["steps"] == 3 and e["metrics"]["training"]["adversary_init"] is None
    with open(tmp_path / "weights" / "regressor.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ObscuraError, match="regressor.pt: SHA-256 differs"):
        manifest.verify(path)


def test_committed_weights_match_their_manifest() -> None:

    checked = manifest.verify(WEIGHTS_DIR / manifest.NAME)
    for name, e in checked["files"].items():
        assert (WEIGHTS_DIR / name).stat().st_size <= 20 * 2**20, name
        assert e["command"] and e["data"]["split_files"] and e["metrics"]["evaluation"], name
