"""PE-MIU, the template decoder's training and resumption, RSR thresholds, the differentiable SFace, and attack-templates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from anonymizer.training_runtime import Runtime
from evaluation import metrics
from evaluation.attacks import face_templates as ft
from evaluation.attacks import reversibility
from evaluation.attacks import template_inversion as ti
from evaluation.attacks.template_decoder import TemplateDecoder
from obscura.errors import ObscuraError
from protect import pemiu
from workstation.commands import main

TINY_WIDTHS = [8, 8, 8, 8, 4, 4]


def unit(rng: np.random.Generator, n: int, d: int = 128) -> np.ndarray:
    x = rng.normal(size=(n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hungarian_realignment_restores_the_exact_cosine() -> None:
    rng = np.random.default_rng(0)
    setting = pemiu.parse("pemiu:8:16", 128)
    for reference in unit(rng, 5):
        probe = reference + 0.05 * rng.normal(size=128)
        stored = setting.protect(reference, setting.key(rng))
        presented = setting.protect(probe, setting.key(rng))
        assert not np.allclose(stored, reference)  # every block moved
        np.testing.assert_array_equal(pemiu.realign(stored, reference, 8), reference)
        expected = probe @ reference / (np.linalg.norm(probe) * np.linalg.norm(reference))
        assert pemiu.compare(presented, stored, 8) == pytest.approx(expected, abs=1e-12)
        # without the re-alignment the protected pair is no longer recognised
        assert abs(presented @ stored / np.linalg.norm(presented)) < expected - 0.3


def test_a_key_moves_exactly_the_permuted_blocks() -> None:
    rng = np.random.default_rng(1)
    for spec, moved in (("pemiu:16:0", 0), ("pemiu:16:2", 2), ("pemiu:4:19", 19), ("pemiu:32:4", 4)):
        setting = pemiu.parse(spec, 128)
        order = setting.key(rng)
        assert sorted(order) == list(range(setting.n_blocks))
        assert int((order != np.arange(setting.n_blocks)).sum()) == moved
    assert pemiu.parse("none", 128) is None


@pytest.mark.parametrize(
    "spec, words",
    [
        ("pemiu:7:99", "block 7 does not divide the 128-d template"),
        ("pemiu:16:99", "99 permuted blocks; a 128-d template has 8 blocks of 16"),
        ("pemiu:16:1", "one block alone cannot move"),
        ("pemiu:16", "expected none or pemiu:BLOCK:PERMUTED"),
        ("shuffle", "expected none or pemiu:BLOCK:PERMUTED"),
    ],
)
def test_bad_protections_are_refused_in_one_line(spec: str, words: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(ObscuraError, match=words):
        pemiu.parse(spec, 128)
    assert main(["attack-templates", "--protect", spec, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0] and spec in err[0]
    assert not (tmp_path / "out").exists()


def test_bad_attack_settings_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    cases = [
        (["--recogniser", "arcface"], "--recogniser 'arcface': expected one of sface, inhouse, capture"),
        (["--decoder", str(tmp_path / "missing.pt")], "config key 'decoder'"),
        (["--recogniser", "capture"], "adaptive recogniser's attacker.pt"),
        (["--set", "judges=[sface]"], "config key 'judges' names 'sface'"),
    ]
    for extra, words in cases:
        assert main(["attack-templates", *extra, "--set", "judges=[dlib]", "--out", str(tmp_path / "o"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err


def test_thresholds_come_from_impostor_pairs_and_rsr_counts_what_passes() -> None:
    # a known impostor distribution: 1000 scores 0.000 ... 0.999, FMR 1 % lets exactly the top 10 through
    impostors = np.arange(1000) / 1000.0
    t = metrics.threshold_at_fmr(impostors, 0.01)
    assert t == pytest.approx(0.989)
    assert metrics.acceptance(impostors, t) == pytest.approx(0.01)
    assert metrics.acceptance(impostors, metrics.threshold_at_fmr(impostors, 0.001)) == pytest.approx(0.001)
    # 100 identities x 2 images of random templates: half the rebuilds are their source photo's template (pass at any
    # FMR), half its opposite (cosine -1: never pass)
    rng = np.random.default_rng(2)
    sources = unit(rng, 200, 64)
    labels = np.repeat(np.arange(100), 2)
    rebuilt = sources.copy()
    rebuilt[1::2] *= -1
    r = reversibility.rsr(rebuilt, sources, labels, np.ones(200, bool), np.arange(200))
    assert r["impostor_pairs"] == 200 * 199 // 2 - 100
    imp = metrics.impostor_scores(sources, labels)
    assert r["thresholds"]["0.01"] == metrics.threshold_at_fmr(imp, 0.01)
    assert np.mean(imp > r["thresholds"]["0.01"]) <= 0.01 < np.mean(imp >= r["thresholds"]["0.01"]) + 1e-9
    assert r["same_image"]["0.01"] == 0.5 and r["same_image"]["0.001"] == 0.5
    assert r["other_image_pairs"] == 200
    # a source without a face drops its rebuild; the judge's genuine rate is over the remaining real pairs
    found = np.ones(200, bool)
    found[0] = False
    r = reversibility.rsr(rebuilt, sources, labels, found, np.arange(200))
    assert r["n_rebuilt"] == 199 and r["clean_genuine_pairs"] == 99
    assert len(r["per_image_same"]) == 200 and r["per_image_same"][0] is None and r["per_image_same"][1] == -1.0


class TinyEmbedder(nn.Module):
    """A small fixed network standing in for the recogniser of the identity term."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.Flatten(), nn.LazyLinear(128))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def tiny_training(tmp_path: Path, steps: int, out: Path) -> TemplateDecoder:
    rng = np.random.default_rng(3)
    n = 12
    templates = ft.Templates(
        unit(rng, n).astype(np.float32), unit(rng, n).astype(np.float32), np.ones(n, bool), np.zeros((n, 5, 2))
    )
    faces = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    pairs = ti.DecoderPairs(templates, faces, faces[:, :, ::-1].copy())
    torch.manual_seed(0)
    embedder = TinyEmbedder()
    embedder(torch.zeros(1, 3, 112, 112))
    embedder.requires_grad_(False)
    recogniser = ti.Recogniser("sface", lambda images: templates, lambda x, g: embedder(x), "")
    cfg = ti.TemplateAttackConfig(out=str(out), protect="pemiu:16:8", widths=TINY_WIDTHS)
    cfg.train.steps, cfg.train.batch_size, cfg.train.checkpoint_every = steps, 4, 2
    cfg.train.identity_weight, cfg.train.identity_images, cfg.train.progress = 0.5, 2, False
    cfg.train.halve_every_epochs = 0.5  # the lr halves inside the run, so resumption must restore it
    decoder = ti.new_decoder(cfg)
    history, _ = ti.train_decoder(
        decoder, pairs, recogniser, pemiu.parse(cfg.protect, 128), cfg, out, Runtime(torch.device("cpu"))
    )
    assert len(history) == steps
    return decoder


def test_a_decoder_trains_and_resumes_exactly(tmp_path: Path, one_torch_thread: None) -> None:
    straight = tiny_training(tmp_path, 4, tmp_path / "straight")
    tiny_training(tmp_path, 2, tmp_path / "resumed")
    resumed = tiny_training(tmp_path, 4, tmp_path / "resumed")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    # it learned something: the weights moved from the start
    fresh = TemplateDecoder(128, tuple(TINY_WIDTHS))
    assert not torch.equal(fresh.to_rgb.weight, straight.to_rgb.weight)


def test_the_linear_path_starts_the_decoder_at_the_ridge_rebuild(one_torch_thread: None) -> None:
    rng = np.random.default_rng(4)
    templates = torch.from_numpy(unit(rng, 300).astype(np.float32))
    # faces that depend on the template: a smooth pattern whose colour and shading follow three template values
    ramp = torch.linspace(0, 1, 112)
    base = (
        0.5 + 0.4 * torch.tanh(4 * templates[:, :3, None, None]) * ramp[None, None, :, None] * ramp[None, None, None, :]
    )
    faces = (base.clamp(0, 1) * 255).round().to(torch.uint8).movedim(1, -1)
    decoder = TemplateDecoder(128, tuple(TINY_WIDTHS)).eval()
    target = faces.movedim(-1, 1).float() / 255
    with torch.no_grad():
        assert torch.allclose(decoder(templates[:4]), torch.full((4, 3, 112, 112), 0.5))  # untrained: grey
        decoder.fit_linear(templates, faces)
        fitted = ((decoder(templates) - target) ** 2).mean()
    mean_face = ((target.mean(0, keepdim=True) - target) ** 2).mean()
    assert fitted < 0.2 * mean_face


def test_a_changed_setting_is_refused_on_resumption(tmp_path: Path, one_torch_thread: None) -> None:
    tiny_training(tmp_path, 2, tmp_path / "run")
    cfg = ti.TemplateAttackConfig(out=str(tmp_path / "run"), protect="none", widths=TINY_WIDTHS)
    cfg.train.batch_size, cfg.train.progress = 4, False
    templates = ft.Templates(*(np.zeros((4, 128), np.float32),) * 2, np.ones(4, bool), np.zeros((4, 5, 2)))
    pairs = ti.DecoderPairs(templates, np.zeros((4, 112, 112, 3), np.uint8), np.zeros((4, 112, 112, 3), np.uint8))
    with pytest.raises(ObscuraError, match="protect = 'pemiu:16:8', this config has 'none'"):
        ti.train_decoder(
            ti.new_decoder(cfg),
            pairs,
            ti.Recogniser("sface", None, None, ""),
            None,
            cfg,
            tmp_path / "run",
            Runtime(torch.device("cpu")),
        )


def test_the_differentiable_sface_matches_opencv_on_real_faces(shared_data: Path, one_torch_thread: None) -> None:
    from faces.alignment import align
    from faces.differentiable_sface import sface_net
    from faces.face_models import SFace, YuNet
    from faces.face_sets import read_rgb

    paths = (
        sorted((shared_data / "celeba-crops").glob("*/*.jpg"))[::700]
        + sorted((shared_data / "lfw-a").glob("*/*.jpg"))[::3000]
    )
    yunet, sface, net = YuNet(), SFace(), sface_net()
    crops, reference = [], []
    for path in paths:
        rgb, _ = read_rgb(path)
        face = yunet.detect(rgb).central(rgb.shape)
        if face is not None:
            crops.append(align(rgb, face.landmarks, 112))
            reference.append(sface.embed(rgb, face))
    assert len(crops) >= 8
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255).requires_grad_(True)
    emb = torch.nn.functional.normalize(net(x))
    cosine = (emb.detach().double().numpy() * np.stack(reference)).sum(1)
    assert cosine.min() > 0.99
    emb.sum().backward()  # differentiable down to the pixels
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.slow
def test_attack_templates_trains_judges_and_reuses_its_decoder(
    shared_data: Path, tmp_path: Path, one_torch_thread: None
) -> None:
    splits = Path(__file__).resolve().parents[1] / "weights" / "splits"
    (tmp_path / "train.txt").write_text("".join(splits.joinpath("train.txt").read_text().splitlines(True)[:2]))
    (tmp_path / "test.txt").write_text("".join(splits.joinpath("test.txt").read_text().splitlines(True)[:2]))
    common = [
        "--recogniser", "sface", "--protect", "pemiu:32:4", "--data", str(shared_data / "celeba-crops"),
        "--set", f"train_split={tmp_path / 'train.txt'}", "--set", f"test_split={tmp_path / 'test.txt'}",
        "--set", "judges=[dlib]", "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "test_images=6",
        "--set", f"widths={TINY_WIDTHS}", "--set", "train.progress=false", "--set", "train.batch_size=4",
    ]  # fmt: skip
    assert main(["attack-templates", *common, "--set", "train.steps=2", "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "a"
    for name in (
        "report.json",
        "report.md",
        "examples.png",
        "config.yaml",
        "decoder.pt",
        "splits/train.txt",
        "splits/test.txt",
    ):
        assert (out / name).is_file(), name
    r = json.loads((out / "report.json").read_text())
    assert r["test"]["rebuilt"] == 6 and r["decoder_trained_on"] == "pemiu:32:4"
    assert r["rsr"]["dlib"]["thresholds"]["0.001"] >= r["rsr"]["dlib"]["thresholds"]["0.01"]
    assert r["rsr"]["dlib"]["impostor_pairs"] > 0 and "protected" in r["verification"]
    assert main(["attack-templates", *common, "--decoder", str(out / "decoder.pt"), "--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert again["rsr"]["dlib"]["per_image_same"] == r["rsr"]["dlib"]["per_image_same"]
    assert not (tmp_path / "b" / "decoder.pt").exists() and again["history"] == []


def fake_report(protection: str, trained_on: str, rsr: float, eer: float) -> dict:
    judge = {
        "same_image": {"0.001": rsr / 2, "0.01": rsr},
        "other_images": {"0.001": 0.0, "0.01": rsr / 3},
        "thresholds": {"0.001": 0.5, "0.01": 0.4},
        "mean_face_same_image": {"0.001": 0.0, "0.01": 0.05},
    }
    verification = {"unprotected": {"eer": 0.02}, "n_gallery": 75, "n_probes": 1400}
    if protection != "none":
        verification.update(protected={"eer": eer}, eer_cost_points=100 * (eer - 0.02))
    return {
        "recogniser": "sface", "protection": protection, "decoder_trained_on": trained_on, "rsr": {"dlib": judge},
        "verification": verification, "test": {"rebuilt": 300, "set": "celeba-crops"}, "train": {"images": 10}, "decoder_info": {},
    }  # fmt: skip


def test_the_grid_sets_both_attackers_of_a_cell_beside_its_eer_cost(tmp_path: Path) -> None:
    from evaluation.attacks import template_grid

    reports = {
        "none": fake_report("none", "none", 0.4, 0.02),
        "a": fake_report("pemiu:16:4", "pemiu:16:4", 0.2, 0.025),
        "b": fake_report("pemiu:16:8", "pemiu:16:8", 0.01, 0.03),
        "c": fake_report("pemiu:16:8", "none", 0.0, 0.03),
        "c-small": {**fake_report("pemiu:16:8", "none", 0.5, 0.03), "test": {"rebuilt": 20, "set": "celeba-crops"}},
    }
    for name, report in reports.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "report.json").write_text(json.dumps(report))
    text = template_grid.write([str(tmp_path / "runs")], str(tmp_path / "grid"))
    assert (tmp_path / "grid" / "grid.png").is_file() and (tmp_path / "grid" / "grid.md").read_text() == text
    cells = json.loads((tmp_path / "grid" / "grid.json").read_text())
    assert [(c["block"], c["permuted"], c["full"]) for c in cells] == [(0, 0, True), (16, 4, False), (16, 8, True)]
    none, _, full = cells
    # unprotected templates rebuilt by the unprotected decoder speak for both attackers
    assert none["attackers"]["trained"] == none["attackers"]["unprotected"]
    # of two runs of one cell and attacker, the one that rebuilt more faces is kept
    assert full["attackers"]["unprotected"]["dlib"]["rebuilt"] == 300
    assert full["attackers"]["trained"]["dlib"]["same_image"]["0.01"] == 0.01
    assert (
        "| sface | `pemiu:16:8` | yes | 0.5 / **1.0** / 0.3 % (300) | 0.0 / **0.0** / 0.0 % (300) | 3.00 % | +1.00 |"
        in text
    )
    assert "| sface | `pemiu:16:4` | no | 10.0 / **20.0** / 6.7 % (300) | - | 2.50 % | +0.50 |" in text
    (tmp_path / "runs" / "d").mkdir()
    (tmp_path / "runs" / "d" / "report.json").write_text(json.dumps(fake_report("pemiu:32:4", "pemiu:16:8", 0.1, 0.03)))
    with pytest.raises(
        ObscuraError, match="decoder trained on pemiu:16:8 templates, templates protected by pemiu:32:4"
    ):
        template_grid.write([str(tmp_path / "runs")], str(tmp_path / "g3"))
    with pytest.raises(ObscuraError, match="no attack-templates report.json"):
        template_grid.write([str(tmp_path / "grid")], str(tmp_path / "g2"))


def test_publish_records_the_decoder_in_the_manifest(tmp_path: Path) -> None:
    from obscura import manifest

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text(json.dumps(fake_report("none", "none", 0.4, 0.02)))
    ti.save_decoder(run / "decoder.pt", TemplateDecoder(128, tuple(TINY_WIDTHS)), {"recogniser": "sface"})
    dest = tmp_path / "weights"
    dest.mkdir()
    target = ti.publish(run, "template_decoder_sface.pt", "python simulate.py attack-templates ...", dest)
    entry = manifest.verify(dest / "manifest.json")["files"]["template_decoder_sface.pt"]
    assert (
        entry["command"].startswith("python simulate.py attack-templates") and entry["bytes"] == target.stat().st_size
    )
    assert (
        entry["metrics"]["evaluation"]["rsr_same_image"]["dlib"]["0.01"] == 0.4
        and entry["data"]["trained_protection"] == "none"
    )
    assert ti.load_decoder(target)[1]["recogniser"] == "sface"
    with pytest.raises(ObscuraError, match="report.json not found"):
        ti.publish(tmp_path, "x.pt", "c", dest)
