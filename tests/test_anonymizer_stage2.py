"""Stage II: StarGAN-v2 networks, the losses, and tiny real runs (outputs, exact resumption, refused configs)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import obscura.paths
from anonymizer import checkpoint, training_commands
from anonymizer.anonymize import Anonymizer
from anonymizer.nets.heatmaps import N_CHANNELS
from anonymizer.nets.regressor import count_parameters, load_regressor, save_regressor
from anonymizer.nets.stargan import (
    Discriminator,
    Generator,
    MappingNetwork,
    StyleEncoder,
    build_networks,
    heatmap_masks,
    load_anonymizer,
)
from anonymizer.publish import publish, publish_anonymizer
from anonymizer.runs import ANONYMIZER as ANONYMIZER_FILE
from anonymizer.runs import build_adversary, load_stage1, save_recogniser
from anonymizer.stage1.stage1_config import Stage1Config
from anonymizer.stage2 import stage2_losses as losses
from anonymizer.stage2.stage2_config import Stage2Config, validate
from anonymizer.stage2.stage2_data import read_domains
from anonymizer.stage2.stage2_train import RESUMABLE_KEYS, arch, build, ema_beta_at, train
from evaluation.anonymization import AnonymizerEvalConfig, diversity, impostor_pairing, leakage, run
from faces.face_sets import list_images, read_rgb, read_split
from obscura import config, manifest
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT, WEIGHTS_DIR

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {
    "data.max_identities": 3,
    "data.max_images_per_identity": 3,
    "model.img_size": 64,
    "model.dim_in": 8,
    "model.max_conv_dim": 32,
    "model.style_dim": 8,
    "model.latent_dim": 4,
    "model.mapping_dim": 16,
    "train.steps": 3,
    "train.batch_size": 2,
    "train.checkpoint_every": 1,
    "train.log_every": 1,
    "train.sample_every": 2,
    "train.samples": 3,
    "train.ds_decay_steps": 4,
    "train.threads": 1,
    "train.progress": False,
    "train.device": "cpu",
}


def _sets(overrides: dict) -> list[str]:
    """--set arguments for a dict of overrides."""
    pairs = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    return sum((["--set", p] for p in pairs), [])


def _run(command: str, config: Path, out: Path, overrides: dict) -> int:
    """A sub-command of anonymizer.training_commands, through an argparse parser built with training_commands.register."""
    parser = argparse.ArgumentParser()
    training_commands.register(parser.add_subparsers())
    args = parser.parse_args([command, "--config", str(config), "--out", str(out), *_sets(overrides)])
    return args.func(args)


@pytest.fixture(scope="module")
def tiny(stage1_run) -> dict:
    """The tiny stage-II overrides on the shared tiny stage-I run (conftest `stage1_run`: 3 steps, 64 px, 3 identities)."""
    return {**TINY, "stage1": str(stage1_run)}


def _train(overrides: dict, out: Path, **more) -> int:
    """Run the train-anonymizer handler with an empty config file."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text("# tiny test configuration: all keys are set on the command line\n")
    return _run("train-anonymizer", config, out, {**overrides, **more})


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> Path:
    """A 3-step stage-II run in one go."""
    out = tmp_path_factory.mktemp("stage2") / "straight"
    assert _train(tiny, out) == 0
    return out


def _state(out: Path, step: int) -> dict:
    return checkpoint.load(checkpoint.step_path(out / "checkpoints", step))


def _assert_same_state(a: dict, b: dict) -> None:
    for part in ("nets", "ema"):
        for net, tensors in a[part].items():
            for name, tensor in tensors.items():
                assert torch.equal(tensor, b[part][net][name]), f"{part}.{net}.{name} differs"
    for opt in ("opt_generator", "opt_mapping_network", "opt_style_encoder", "opt_discriminator"):
        for index, slots in a[opt]["state"].items():
            for slot, value in slots.items():
                assert torch.equal(value, b[opt]["state"][index][slot]), f"{opt}[{index}].{slot} differs"
    assert a["history"] == b["history"]


# --- networks ---------------------------------------------------------------------------------


def test_reference_sized_networks_have_stargan_v2_parameter_counts() -> None:
    """At 256 px with the reference's widths and two domains: StarGAN-v2's published 43.5 M / 2.4 M / 20.9 M / 20.9 M."""
    nets = build_networks(
        {
            "img_size": 256,
            "num_domains": 2,
            "style_dim": 64,
            "latent_dim": 16,
            "dim_in": 64,
            "max_conv_dim": 512,
            "mapping_dim": 512,
            "w_hpf": 1.0,
        }
    )
    counts = {name: count_parameters(net) for name, net in nets.named().items()}
    unused_shortcuts = (
        512 * 256 + 256 * 128 + 128 * 64
    )  # 1x1 decoder shortcuts the reference builds but never uses with w_hpf > 0
    assert counts == {
        "generator": 43_467_395 - unused_shortcuts,
        "mapping_network": 2_438_272,
        "style_encoder": 20_916_928,
        "discriminator": 20_852_290,
    }


@pytest.mark.parametrize("name", ["stage2_cpu.yaml", "stage2_gpu.yaml"])
def test_committed_configurations_build_networks_of_the_right_shapes(name: str, stage1_run: Path) -> None:

    cfg = config.load(Stage2Config, REPO_ROOT / "configs" / name, {"stage1": str(stage1_run)})
    validate(cfg)
    m = cfg.model
    assert m.img_size == (128 if "cpu" in name else 256)
    nets = build_networks(arch(cfg))
    n, s = 2, m.img_size
    capture, heat = (
        torch.rand(n, 3, s, s),
        torch.rand(n, N_CHANNELS, 128 // 4, 128 // 4),
    )  # heatmaps of a 128 px stage-I crop
    y = torch.tensor([0, m.num_domains - 1])
    with torch.no_grad():
        style = nets.mapping_network(torch.randn(n, m.latent_dim), y)
        assert style.shape == (n, m.style_dim)
        assert nets.style_encoder(capture, y).shape == (n, m.style_dim)
        out = nets.generator(capture, style, heat)
        assert out.shape == (n, 3, s, s)
        assert nets.discriminator(out, y).shape == (n,)
    if "gpu" in name:
        assert (m.dim_in, m.max_conv_dim, m.mapping_dim, m.style_dim, m.latent_dim) == (64, 512, 512, 64, 16)
    else:
        assert count_parameters(nets.generator) < 10_000_000


def test_one_domain_head_per_domain_is_selected() -> None:
    torch.manual_seed(0)
    f, e, d = MappingNetwork(4, 8, 3, 16), StyleEncoder(64, 8, 3, 8, 32), Discriminator(64, 3, 8, 32)
    z, x = torch.randn(1, 4).expand(3, 4), torch.rand(1, 3, 64, 64).expand(3, 3, 64, 64)
    y = torch.tensor([0, 1, 2])
    for out in (f(z, y), e(x, y), d(x, y)):
        assert not torch.allclose(out[0], out[1]) and not torch.allclose(
            out[1], out[2]
        )  # same input, different domain heads


def test_heatmap_masks_keep_the_inner_face_and_drop_the_jaw() -> None:
    heat = torch.zeros(1, N_CHANNELS, 16, 16)
    heat[0, 36, 5, 4] = 0.8  # an eye corner
    heat[0, 36, 10, 10] = 0.05  # regressor noise, under a tenth of the channel's peak
    heat[0, 60, 12, 8] = 0.5  # the inner lip
    heat[0, 0, 8, 0] = 1.0  # the outer jaw
    face, inner = heatmap_masks(heat)
    assert face.shape == inner.shape == (1, 1, 16, 16)
    assert face[0, 0, 5, 4] == pytest.approx(1.0, abs=1e-4) and inner[0, 0, 5, 4] == pytest.approx(
        1.0, abs=1e-4
    )  # peak 1
    assert (
        face[0, 0, 12, 8] == pytest.approx(1.0, abs=1e-4) and inner[0, 0, 12, 8] == 0
    )  # the mouth is in the face mask only
    assert face[0, 0, 8, 0] == 0 and face[0, 0, 10, 10] == 0  # jaw and noise are not
    assert float(face.max()) <= 1.0 and float(face.min()) >= 0.0


def test_generator_skips_carry_the_masked_source_detail() -> None:
    torch.manual_seed(0)
    g = Generator(64, 8, 8, 32, 1.0).eval()
    x, s = torch.rand(1, 3, 64, 64), torch.randn(1, 8)
    heat = torch.zeros(1, N_CHANNELS, 16, 16)
    with torch.no_grad():
        plain = g(x, s, None)
        assert torch.equal(g(x, s, heat), plain)  # empty masks: no skip contributes
        heat[0, 36:48, 6:9, 4:12] = 1.0  # the eyes
        assert not torch.allclose(g(x, s, heat), plain)


# --- losses -----------------------------------------------------------------------------------


def test_r1_is_zero_for_a_constant_discriminator_and_exact_for_a_linear_one() -> None:
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    bias = torch.nn.Parameter(torch.tensor(0.3))
    assert losses.r1_penalty((x * 0).flatten(1).sum(1) + bias, x, 10.0).item() == 0.0
    assert losses.r1_penalty(bias.expand(4), x, 10.0).item() == 0.0  # does not even read its input
    w = torch.randn(3, 8, 8, requires_grad=True)
    penalty = losses.r1_penalty((x * w).flatten(1).sum(1), x, 10.0)
    assert penalty.detach().item() == pytest.approx(5.0 * float(w.detach().pow(2).sum()), rel=1e-5)  # gamma / 2 |w|^2
    penalty.backward()  # create_graph: the penalty trains the discriminator's weights
    assert torch.allclose(w.grad, 10.0 * w.detach(), rtol=1e-5)


def test_adversarial_losses_are_non_saturating() -> None:
    zero = torch.zeros(3)
    real, fake = losses.adversarial_d(zero, zero)
    assert real.item() == pytest.approx(0.6931472) and fake.item() == pytest.approx(0.6931472)  # log 2 at D = 0
    assert (
        losses.adversarial_g(torch.full((3,), 4.0))
        < losses.adversarial_g(zero)
        < losses.adversarial_g(torch.full((3,), -4.0))
    )
    fake_logits = torch.full((3,), -8.0, requires_grad=True)  # a confident discriminator
    losses.adversarial_g(fake_logits).backward()
    assert fake_logits.grad.abs().min() > 0.3  # non-saturating: the generator still gets a gradient


def test_diversity_grows_with_style_distance() -> None:
    torch.manual_seed(0)
    g = Generator(64, 8, 8, 32, 1.0)
    x, s = torch.rand(2, 3, 64, 64), torch.randn(2, 8)
    direction = torch.randn(2, 8)
    with torch.no_grad():
        base = g(x, s, None)
        values = [losses.diversity(g(x, s + t * direction, None), base).item() for t in (0.0, 0.1, 0.5, 2.0)]
    assert values[0] == 0.0 and values == sorted(values) and values[-1] > 3 * values[1]
    a = torch.rand(5, requires_grad=True)
    b = torch.rand(5, requires_grad=True)
    losses.diversity(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad is None  # the second output is only a target, as in the reference


def test_diversity_weight_decays_linearly_to_zero() -> None:
    assert [losses.diversity_weight(s, 2.0, 100) for s in (0, 25, 100, 500)] == [2.0, 1.5, 0.0, 0.0]
    assert losses.diversity_weight(10**6, 2.0, 0) == 2.0


def test_style_and_cycle_losses_are_l1() -> None:
    a, b = torch.zeros(2, 4), torch.full((2, 4), 0.5)
    assert losses.style_reconstruction(a, b).item() == 0.5 and losses.cycle(a, b).item() == 0.5
    assert losses.cycle(b, b).item() == 0.0


def test_heatmap_consistency_gradient_reaches_the_generator(stage1_run: Path) -> None:
    """The thing the reference got wrong: its heatmap L1 is computed under no_grad, so it trains nothing."""

    parts = load_stage1(str(stage1_run), torch.device("cpu"))
    torch.manual_seed(0)
    g = Generator(64, 8, 8, 32, 1.0)
    x, s = torch.rand(2, 3, 64, 64), torch.randn(2, 8)
    with torch.no_grad():
        target = parts.regressor(x)
    for reimage in (None, lambda im: parts.capture(im, torch.Generator().manual_seed(0))):
        g.zero_grad(set_to_none=True)
        loss = losses.heatmap_consistency(parts.regressor, g(x, s, target), target, reimage)
        loss.backward()
        assert loss.item() > 0
        assert all(p.grad is not None for p in g.parameters()) and g.from_rgb.weight.grad.abs().sum() > 0
        assert all(p.grad is None for p in parts.regressor.parameters())  # the regressor stays frozen
    # the reference's way: heatmaps of the output under no_grad, then requires_grad_ on the loss
    g.zero_grad(set_to_none=True)
    out = g(x, s, target)
    with torch.no_grad():
        fake_heat = parts.regressor(out)
    (fake_heat - target).abs().mean().requires_grad_(True).backward()
    assert all(p.grad is None for p in g.parameters())


def test_identity_loss_is_lower_for_a_different_face_than_for_the_same_face(
    stage1_run: Path, shared_data: Path
) -> None:

    parts = load_stage1(str(stage1_run), torch.device("cpu"))
    listing = list_images(shared_data / "celeba-crops")
    names = sorted(listing)[:2]
    faces = torch.stack(
        [
            torch.from_numpy(read_rgb(listing[n][0])[0][48:112, 48:112].copy()).permute(2, 0, 1).float() / 255
            for n in names
        ]
    )
    source = faces[:1]
    same = losses.identity_similarity(parts.embedder, source, source)
    other = losses.identity_similarity(parts.embedder, faces[1:], source)
    assert same.item() == pytest.approx(1.0, abs=1e-5) and other.item() < same.item()
    assert losses.identity_dissimilarity(other, 0.3) < losses.identity_dissimilarity(same, 0.3)
    assert losses.identity_dissimilarity(torch.tensor([0.1, 0.2]), 0.3).item() == 0.0  # far enough: no penalty
    output = faces[1:].clone().requires_grad_(True)
    losses.identity_dissimilarity(losses.identity_similarity(parts.embedder, output, source), -1.0).backward()
    assert output.grad.abs().sum() > 0 and all(p.grad is None for p in parts.embedder.parameters())


# --- tiny real runs ---------------------------------------------------------------------------


def test_three_step_run_writes_every_output(straight: Path, tiny: dict) -> None:

    for name in ("config.yaml", "metrics.json", "generator_ema.pt"):
        assert (straight / name).is_file(), name
    for name in ("loss_curves.png", "samples.png", "samples/step-00000002.png"):
        assert (straight / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert [p.name for p in checkpoint.listed(straight / "checkpoints")] == ["ckpt-00000003.pt", "ckpt-00000002.pt"]
    assert yaml.safe_load((straight / "config.yaml").read_text())["model"]["img_size"] == 64
    metrics = json.loads((straight / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2, 3]
    assert [h["ds_weight"] for h in metrics["history"]] == [1.0, 0.75, 0.5]
    assert metrics["data"]["train_identities"] == 3 and metrics["data"]["crop_size"] == 64
    assert metrics["seconds_per_step"] > 0 and set(metrics["parameters"]) == {
        "generator",
        "mapping_network",
        "style_encoder",
        "discriminator",
    }
    assert all(n > 0 for n in metrics["parameters"].values())  # the discriminator is counted though left frozen
    for key in ("d_r1", "g_heatmap", "g_cycle", "identity_cosine"):
        assert all(h[key] == h[key] for h in metrics["history"]), key  # no NaN
    nets, info = load_anonymizer(straight / "generator_ema.pt")
    assert info["crop_size"] == 64 and info["arch"]["img_size"] == 64 and nets.discriminator is None
    assert set(info["stage1_digest"]) == {"optic.npz", "regressor.pt", "adversary.pt", "splits/train.txt"}
    with torch.no_grad():
        style = nets.mapping_network(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
        assert nets.generator(torch.rand(2, 3, 64, 64), style, torch.rand(2, N_CHANNELS, 16, 16)).shape == (
            2,
            3,
            64,
            64,
        )


def test_training_moves_the_networks_and_their_ema(straight: Path, tiny: dict) -> None:

    fresh, _ = build(config.load(Stage2Config, None, tiny), torch.device("cpu"))
    state = _state(straight, 3)
    for name, net in fresh.named().items():
        start = net.state_dict()
        assert any(not torch.equal(start[k], v) for k, v in state["nets"][name].items()), name
    ema = state["ema"]["generator"]
    trained = state["nets"]["generator"]
    start = fresh.generator.state_dict()
    moved = [k for k in ema if not torch.equal(ema[k], start[k])]
    assert moved and all(
        (ema[k] - start[k]).abs().max() < (trained[k] - start[k]).abs().max() + 1e-12 for k in moved
    )  # beta = 0.999 lags


def test_identities_come_from_the_stage1_training_split(straight: Path, stage1_run: Path) -> None:

    _, info = load_anonymizer(straight / "generator_ema.pt")
    train_ids = set((stage1_run / "splits" / "train.txt").read_text().split())
    test_ids = set((stage1_run / "splits" / "test.txt").read_text().split())
    assert set(info["train_identities"]) <= train_ids and not set(info["train_identities"]) & test_ids


def test_resuming_from_a_checkpoint_repeats_the_same_steps(straight: Path, tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    _train(tiny, out, **{"train.steps": 2})
    _train(tiny, out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000002.pt")
    _assert_same_state(_state(out, 3), _state(straight, 3))


def test_corrupt_checkpoint_is_refused_and_the_previous_one_used(
    straight: Path, tiny: dict, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "corrupt"
    _train(tiny, out, **{"train.steps": 2})
    newest = checkpoint.step_path(out / "checkpoints", 2)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    _train(tiny, out)
    assert "ckpt-00000002.pt is corrupt" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("ckpt-00000001.pt")
    _assert_same_state(_state(out, 3), _state(straight, 3))


def test_resuming_with_a_different_configuration_is_refused(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "changed"
    _train(tiny, out, **{"train.steps": 1})
    with pytest.raises(ObscuraError, match="loss.cycle"):
        _train(tiny, out, **{"loss.cycle": 0.5})
    _train(
        tiny, out, **{"train.steps": 1, "train.sample_every": 5, "train.log_every": 2}
    )  # bookkeeping keys may change


def test_resuming_on_changed_stage1_files_is_refused(stage1_run: Path, tiny: dict, tmp_path: Path) -> None:

    copy = tmp_path / "stage1"
    shutil.copytree(stage1_run, copy)
    out = tmp_path / "run"
    _train(tiny, out, **{"stage1": str(copy), "train.steps": 1})
    model, size = load_regressor(copy / "regressor.pt")
    with torch.no_grad():
        model.head[1].bias += 1.0
    save_regressor(
        copy / "regressor.pt", model, {"base_channels": 8, "depth": 3, "stride": 4, "max_channels": 32}, size
    )
    with pytest.raises(ObscuraError, match="regressor.pt .* has changed"):
        _train(tiny, out, **{"stage1": str(copy), "train.steps": 2})


def test_a_run_can_start_from_another_runs_networks(straight: Path, tiny: dict, tmp_path: Path) -> None:
    init = checkpoint.step_path(straight / "checkpoints", 3)
    out = tmp_path / "carried"
    _train(tiny, out, **{"train.steps": 1, "train.init": str(init), "train.lr": 1e-12, "train.lr_mapping": 1e-12})
    start, carried = _state(straight, 3), _state(out, 1)
    for name, weights in start["nets"].items():
        assert all(torch.allclose(weights[k], carried["nets"][name][k], rtol=0.0, atol=1e-9) for k in weights), name
    with pytest.raises(ObscuraError, match="'train.init': .* has model.dim_in = 8, this config 16"):
        _train(tiny, tmp_path / "wider", **{"train.init": str(init), "model.dim_in": 16})
    with pytest.raises(ObscuraError, match="'train.init' is '/no/such.pt'"):
        _train(tiny, tmp_path / "missing", **{"train.init": "/no/such.pt"})


def _recogniser(stage1_run: Path, path: Path, identities: list[str]) -> "torch.nn.Module":
    """A fresh recogniser of the stage-I adversary's shape, saved as `attack-optic` saves its attacker.pt."""

    torch.manual_seed(7)
    net = build_adversary(config.load(Stage1Config, stage1_run / "config.yaml").adversary, len(identities), input_px=32)
    save_recogniser(path, "obscura-adaptive-attacker", net, identities)
    return net


def test_a_run_continues_against_a_clean_face_recogniser_of_the_training_identities(
    stage1_run: Path, tiny: dict, tmp_path: Path
) -> None:

    train_ids = read_split(stage1_run / "splits" / "train.txt")
    recogniser = _recogniser(stage1_run, tmp_path / "attacker.pt", train_ids)
    parts = load_stage1(str(stage1_run), torch.device("cpu"), str(tmp_path / "attacker.pt"))
    assert torch.equal(parts.embedder.stem[0].weight, recogniser.embedder.stem[0].weight)
    assert not parts.embedder.stem[0].weight.requires_grad and parts.embedder.input_px == 32
    out = tmp_path / "run"
    _train(tiny, out, **{"train.steps": 1})
    _train(
        tiny, out, **{"train.steps": 2, "loss.identity_embedder": str(tmp_path / "attacker.pt"), "loss.identity": 2.0}
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [1, 2] and metrics["resumed_from"]
    assert metrics["identity_embedder"]["sha256"] == file_sha256(tmp_path / "attacker.pt")
    _recogniser(stage1_run, tmp_path / "knows-more.pt", [*train_ids, "a-test-person"])
    with pytest.raises(
        ObscuraError,
        match="knows-more.pt: expected a recogniser trained on stage I's training identities only.*a-test-person",
    ):
        load_stage1(str(stage1_run), torch.device("cpu"), str(tmp_path / "knows-more.pt"))


# --- configuration ----------------------------------------------------------------------------


def test_unknown_key_fails_before_training_naming_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("loss:\n  identiti: 3\n")
    with pytest.raises(ObscuraError, match="'loss.identiti'"):
        _run("train-anonymizer", config, tmp_path / "out", {})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("model.img_size", 100, "model.img_size"),
        ("model.max_conv_dim", 4, "model.max_conv_dim"),
        ("model.w_hpf", 0.0, "model.w_hpf"),
        ("model.num_domains", 2, "data.domain_file"),
        ("train.ema_beta", 1.0, "train.ema_beta"),
        ("train.lr", 0.0, "train.lr"),
        ("train.r1_gamma", -1.0, "train.r1_gamma"),
        ("loss.cycle_target", "reference", "loss.cycle_target"),
        ("loss.identity_margin", 1.5, "loss.identity_margin"),
        ("loss.identity_embedder", "/no/such/attacker.pt", "loss.identity_embedder"),
        ("train.device", "tpu", "train.device"),
        ("stage1", "/no/such/stage1", "stage1"),
    ],
)
def test_impossible_settings_fail_before_training(tiny: dict, tmp_path: Path, key: str, value, named: str) -> None:

    with pytest.raises(ObscuraError, match=named):
        train(config.load(Stage2Config, None, {**tiny, key: value}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stage1_weights_needs_the_adversary(monkeypatch, stage1_run: Path, tmp_path: Path) -> None:

    weights = tmp_path / "weights"
    for name in ("optic.npz", "regressor.pt", "splits/train.txt"):
        (weights / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(stage1_run / name, weights / name)
    shutil.copy(stage1_run / "config.yaml", weights / "stage1_config.yaml")
    monkeypatch.setattr(obscura.paths, "WEIGHTS_DIR", weights)
    cfg = config.load(Stage2Config, None, {**TINY, "stage1": "weights"})
    with pytest.raises(ObscuraError, match=r"'stage1' is 'weights': .*adversary.pt not found"):
        validate(cfg)
    shutil.copy(stage1_run / "adversary.pt", weights / "adversary.pt")
    validate(cfg)


def test_domain_file_assigns_every_training_identity(tmp_path: Path) -> None:

    path = tmp_path / "domains.txt"
    path.write_text("# identity domain\na 0\nb 1  # comment\nc 1\n")
    assert read_domains(str(path), ["a", "c"], 2) == {"a": 0, "c": 1}
    with pytest.raises(ObscuraError, match="'d' has no domain"):
        read_domains(str(path), ["a", "d"], 2)
    path.write_text("a 2\n")
    with pytest.raises(ObscuraError, match="line 1"):
        read_domains(str(path), ["a"], 2)


def test_a_run_leaves_the_stage1_files_unchanged(straight: Path, stage1_run: Path) -> None:
    """Stage II never changes stage-I files (their digests are stored and match the files)."""

    _, info = load_anonymizer(straight / "generator_ema.pt")
    for name, digest in info["stage1_digest"].items():
        assert file_sha256(stage1_run / name) == digest, name


def test_anonymizer_evaluation_reports_leakage_diversity_realism_and_utility(
    straight: Path, shared_data: Path, tmp_path: Path
) -> None:
    """`evaluate-anonymizer` on a few real faces: captures and lowres16 inputs, every figure present and in range."""

    faces = tmp_path / "faces"
    for name in sorted(p.name for p in (shared_data / "celeba-crops").iterdir())[-3:]:
        (faces / name).mkdir(parents=True)
        for src in sorted((shared_data / "celeba-crops" / name).iterdir())[:2]:
            (faces / name / src.name).symlink_to(src)
    for source in ("capture", "lowres16"):
        out = tmp_path / source
        r = run(
            AnonymizerEvalConfig(
                data=str(faces),
                anonymizer=str(straight / "generator_ema.pt"),
                out=str(out),
                source=source,
                styles=2,
                max_sources=4,
                batch_size=4,
                progress=False,
            )
        )
        assert r["n_sources"] == 4 and r["n_outputs"] == 8 and r["source"] == source
        for name in ("sface", "dlib"):
            value = r["identity_leakage"][name]
            assert value != value or 0.0 <= value <= 1.0  # nan only when no source face was found
        for name in ("mtcnn", "dlib"):
            assert 0.0 <= r["utility"][name]["fd"] <= 1.0 or r["utility"][name]["n_source_faces"] == 0
        assert r["realism"]["inception_fid"] is None and "pytorch-fid" in r["realism"]["inception_fid_note"]
        assert (out / "examples.png").read_bytes()[:4] == b"\x89PNG" and (out / "report.md").is_file()


def test_leakage_and_diversity_follow_the_recognisers_thresholds() -> None:

    e = np.eye(4)
    source = {"sface": e[0], "dlib": np.zeros(4)}
    same = {"sface": e[0], "dlib": np.full(4, 0.25)}  # dlib distance 0.5 < 0.6
    other = {"sface": e[1], "dlib": np.full(4, 0.35)}  # cosine 0; dlib distance 0.7
    faceless = {"sface": None, "dlib": None}
    r = leakage([source], [[same, other, faceless, other]])
    assert r["sface"] == 0.25 and r["dlib"] == 0.25 and r["sface_outputs_with_face"] == 3
    assert diversity([[same, same]]) == pytest.approx(0.0) and diversity([[same, other]]) == pytest.approx(1.0)
    assert diversity([[same, faceless]]) != diversity([[same, faceless]])  # one face: no pair, nan


def test_impostor_control_pairs_each_source_with_another_person() -> None:
    """The false-accept control compares each source's outputs with the next source of a different identity."""

    assert impostor_pairing(["a", "a", "b", "c"]) == [2, 2, 3, 0]
    assert impostor_pairing(["a", "a"]) is None
    e = np.eye(4)
    alice, bob = {"sface": e[0], "dlib": np.zeros(4)}, {"sface": e[1], "dlib": np.ones(4)}
    generic = {"sface": e[0], "dlib": np.zeros(4)}  # looks like alice to both recognisers
    r = leakage([alice, bob], [[generic], [generic]], ["alice", "bob"])
    assert r["sface"] == 0.5 and r["sface_impostor"] == 0.5 and r["dlib_impostor"] == 0.5
    assert "sface_impostor" not in leakage([alice], [[generic]])


def test_published_anonymizer_is_half_size_and_renders_the_same_faces(
    straight: Path, stage1_run: Path, tmp_path: Path
) -> None:
    """Publishing beside its stage I: float16 file, both stages in one manifest, outputs within float16 rounding."""

    dest = tmp_path / "weights"
    publish(stage1_run, dest, "python simulate.py train-optics ...", [], [])
    publish_anonymizer(straight, dest, "python simulate.py train-anonymizer ...", [])
    checked = manifest.verify(dest / manifest.NAME)
    assert set(checked["files"]) == {"optic.npz", "regressor.pt", "adversary.pt", ANONYMIZER_FILE}
    assert checked["files"][ANONYMIZER_FILE]["data"]["stored_as"] == "float16"
    assert (dest / ANONYMIZER_FILE).stat().st_size < 0.6 * (straight / "generator_ema.pt").stat().st_size
    faces = torch.rand(
        2, 3, 64, 64, generator=torch.Generator().manual_seed(0)
    )  # not the global RNG: order-independent
    full = Anonymizer.load(straight / "generator_ema.pt").anonymize(faces, 2, seed=3)
    half = Anonymizer.load(dest / ANONYMIZER_FILE).anonymize(faces, 2, seed=3)
    assert torch.equal(full.captures, half.captures)
    assert 0 < (full.outputs - half.outputs).abs().max() < 0.02


def test_publishing_an_anonymizer_beside_another_stage1_is_refused(straight: Path, tmp_path: Path) -> None:

    with pytest.raises(ObscuraError, match=r"trained on another stage I .*\(differs in optic.npz"):
        publish_anonymizer(straight, tmp_path, "cmd", [])
    assert not (tmp_path / "anonymizer.pt").exists() and WEIGHTS_DIR.is_dir()


def test_ema_warmup_forgets_the_initial_weights_of_a_short_run() -> None:
    """With the ramp, a 1,500-step average keeps almost nothing of step 0; plain 0.999 keeps 22 %."""

    assert ema_beta_at(5, 0.999, 0.0) == 0.999
    assert ema_beta_at(0, 0.999, 10.0) == pytest.approx(0.1) and ema_beta_at(10**6, 0.999, 10.0) == 0.999
    kept = {w: float(np.prod([ema_beta_at(t, 0.999, w) for t in range(1500)])) for w in (0.0, 10.0)}
    assert kept[0.0] == pytest.approx(0.999**1500) and kept[0.0] > 0.2
    assert kept[10.0] < 1e-12


def test_ema_warmup_may_change_on_resume_and_bad_values_are_refused(tiny: dict, tmp_path: Path) -> None:

    assert "train.ema_warmup" in RESUMABLE_KEYS and "train.ema_beta" not in RESUMABLE_KEYS
    with pytest.raises(ObscuraError, match="train.ema_warmup"):
        validate(config.load(Stage2Config, None, {**tiny, "train.ema_warmup": 0.5}))
