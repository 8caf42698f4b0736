"""Exporting the trained stage-I regressor and a stage-II anonymizer: parity, the bundle on the firmware, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from skimage import data
from test_anonymizer_stage2 import TINY

from anonymizer import checkpoint
from anonymizer.nets.stargan import build_networks, save_anonymizer
from anonymizer.stage2.stage2_data import resize
from deploy.__main__ import main
from deploy.onnx_export import check_parity, export_onnx
from deploy.trained import (
    LatentAnonymizer,
    export_trained,
    known_export_warnings,
    load_trained,
)
from firmware.inference_stages import load_stages, to_model_input
from firmware.psf import PsfConvolver, check_psf, load_psf
from obscura.digest import file_sha256
from obscura.paths import REPO_ROOT, WEIGHTS_DIR
from optics.image_io import to_uint8

# the tiny stage-II widths of test_anonymizer_stage2, at the committed stage I's 128 px crop
ARCH = {
    "img_size": 128,
    "num_domains": 1,
    "w_hpf": 1.0,
    **{key.split(".")[1]: value for key, value in TINY.items() if key.startswith("model.") and key != "model.img_size"},
}
STAGE1_FILES = ("optic.npz", "regressor.pt", "adversary.pt", "splits/train.txt")


def _anonymizer_file(path: Path, arch: dict = ARCH, digest: dict | None = None) -> Path:
    """An untrained tiny stage-II file that names the committed stage I (or the given digests)."""
    torch.manual_seed(0)
    nets = build_networks(arch, discriminator=False)
    digest = digest or {name: file_sha256(WEIGHTS_DIR / name) for name in STAGE1_FILES}
    return save_anonymizer(
        path,
        nets,
        arch,
        {"stage1": "weights", "stage1_digest": digest, "crop_size": 128, "steps": 0, "train_identities": []},
    )


def _astronaut_faces(folder: Path) -> Path:
    """Four 160 px crops around the face of scikit-image's astronaut photograph (a real face shipped with the package)."""

    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    folder.mkdir(parents=True)
    for i, (top, left, side) in enumerate([(0, 100, 280), (20, 130, 240), (10, 90, 320), (30, 150, 200)]):
        cv2.imwrite(
            str(folder / f"astronaut-{i}.png"),
            cv2.resize(image[top : top + side, left : left + side], (160, 160), interpolation=cv2.INTER_AREA),
        )
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """`python -m deploy export-trained` of a tiny anonymizer on the committed stage I, with a bundle."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("export-trained")
    paths = {
        "anonymizer": _anonymizer_file(tmp / "generator_ema.pt"),
        "faces": _astronaut_faces(tmp / "faces"),
        "out": tmp / "export",
        "bundle": tmp / "bundle",
    }
    assert (
        main(
            [
                "export-trained",
                "--stage1",
                "weights",
                "--anonymizer",
                str(paths["anonymizer"]),
                "--out",
                str(paths["out"]),
                "--faces",
                str(paths["faces"]),
                "--parity-faces",
                "4",
                "--bundle",
                str(paths["bundle"]),
            ]
        )
        == 0
    )
    torch.set_num_threads(before)
    return paths


@pytest.fixture(scope="module")
def trained(exported):
    """The PyTorch side: the tiny anonymizer with the committed stage I."""
    return load_trained("weights", exported["anonymizer"])


def test_export_writes_both_models_and_parity_at_batch_1_and_3(exported) -> None:
    out = exported["out"]
    report = json.loads((out / "parity.json").read_text())
    assert report["batch_sizes"] == [1, 3] and report["faces"]["count"] == 4
    assert set(report["max_abs_diff"]) == {"regressor.heatmaps", "anonymizer.output"}
    assert all(0.0 <= diff <= 1e-4 for diff in report["max_abs_diff"].values())
    assert (
        report["input_size"] == 128
        and report["output_size"] == 128
        and report["anonymizer_sha256"] == file_sha256(exported["anonymizer"])
    )
    inputs = {
        name: [
            (i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
            for i in onnx.load(str(out / f"{name}.onnx")).graph.input
        ]
        for name in ("regressor", "anonymizer")
    }
    assert inputs["regressor"] == [("capture", ["batch", 3, 128, 128])]
    assert inputs["anonymizer"] == [
        ("capture", ["batch", 3, 128, 128]),
        ("heatmaps", ["batch", 69, 32, 32]),
        ("latent", ["batch", 4]),
    ]
    latent = np.load(out / "latent.npy")
    assert latent.shape == (1, 4) and np.array_equal(
        latent, torch.randn(1, 4, generator=torch.Generator().manual_seed(0)).numpy()
    )
    assert check_psf(np.load(out / "psf.npy"), "exported PSF").shape == (3, 128, 128)
    assert (out / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_firmware_runs_the_bundle_and_matches_the_torch_path_within_1_lsb(exported, trained) -> None:
    regressor, anonymizer, cfg = load_stages(exported["bundle"])
    assert (cfg.input_size, cfg.value_range, cfg.stand_in, cfg.psf) == (128, "0..1", False, "psf.npy")
    assert cfg.constants == {"latent": "constants/latent.npy"} and anonymizer.needs_heatmaps
    scene = cv2.resize(cv2.imread(str(exported["faces"] / "astronaut-0.png"))[:, :, ::-1], (640, 480))
    frame = PsfConvolver(load_psf(exported["bundle"] / cfg.psf)).capture(
        scene
    )  # what a sim:// source hands the pipeline
    out = anonymizer(frame, regressor(frame))
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8 and out.std() > 0
    x = torch.from_numpy(to_model_input(frame, 128, "0..1"))
    latent = torch.from_numpy(np.load(exported["out"] / "latent.npy"))
    with torch.no_grad():
        expected = to_uint8(
            LatentAnonymizer(trained.nets.generator, trained.nets.mapping_network)(
                x, trained.parts.regressor(x), latent
            )[0]
        )
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_the_exported_module_is_what_anonymize_computes_on_captures(trained, one_torch_thread) -> None:
    faces = torch.rand(2, 3, 128, 128)
    result = trained.anonymize(faces, styles=2, seed=5)
    g = torch.Generator().manual_seed(5)
    module = LatentAnonymizer(trained.nets.generator, trained.nets.mapping_network)
    with torch.no_grad():
        captured = trained.parts.capture(faces, g)
        heatmaps = trained.parts.regressor(captured)
        outputs = [module(captured, heatmaps, torch.randn(2, 4, generator=g)) for _ in range(2)]
    assert torch.equal(captured, result.captures) and torch.equal(torch.stack(outputs, dim=1), result.outputs)


def test_parity_on_real_captures_of_the_stage1_test_split(shared_data: Path, tmp_path: Path, one_torch_thread) -> None:
    report = export_trained("weights", _anonymizer_file(tmp_path / "generator_ema.pt"), tmp_path / "export", faces=5)
    test_ids = set((WEIGHTS_DIR / "splits" / "test.txt").read_text().split())
    assert "test split" in report["faces"]["source"] and report["batch_sizes"] == [1, 3, 1]
    assert {Path(f).parent.name for f in report["faces"]["files"]} <= test_ids
    assert len({Path(f).parent.name for f in report["faces"]["files"]}) == 5  # one face per identity in turn
    assert all(diff <= 1e-4 for diff in report["max_abs_diff"].values())


def test_a_generator_larger_than_the_crop_exports_with_its_resize(tmp_path: Path, one_torch_thread) -> None:
    """A 256 px generator on 128 px captures: the enlarging resize is inside the ONNX model and matches PyTorch."""

    x = torch.rand(2, 3, 128, 128)
    antialiased = torch.nn.functional.interpolate(
        x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True
    )
    assert torch.allclose(resize(x, 256), antialiased, atol=1e-6)  # enlarging: the antialiased filter is plain bilinear
    torch.manual_seed(0)
    nets = build_networks({**ARCH, "img_size": 256}, discriminator=False)
    module = LatentAnonymizer(nets.generator, nets.mapping_network).eval()
    rng = np.random.default_rng(0)
    batches = [
        (
            rng.random((n, 3, 128, 128), np.float32),
            rng.random((n, 69, 32, 32), np.float32),
            rng.standard_normal((n, 4)).astype(np.float32),
        )
        for n in (1, 2)
    ]
    with known_export_warnings():
        path = export_onnx(
            module,
            [torch.from_numpy(a) for a in batches[0]],
            tmp_path / "anonymizer.onnx",
            ["capture", "heatmaps", "latent"],
            ["output"],
        )
    assert check_parity(module, path, batches).worst <= 1e-4


@pytest.mark.parametrize(
    "case", ["missing", "checkpoint", "other_stage1", "small_generator", "no_stage1", "bundle_exists"]
)
def test_bad_inputs_are_refused_with_one_line(case: str, tmp_path: Path, capsys, one_torch_thread) -> None:
    anonymizer, stage1, extra = tmp_path / "generator_ema.pt", "weights", []
    expected = {
        "missing": "no such file",
        "checkpoint": "format is None; expected 'obscura-stage2-anonymizer'",
        "other_stage1": "trained on another stage-I result (differs in regressor.pt)",
        "small_generator": "generator works at 64 px, below the stage-I crop of 128 px",
        "no_stage1": "--stage1 /no/such/stage1: /no/such/stage1/optic.npz not found",
        "bundle_exists": "already exists",
    }[case]
    if case == "checkpoint":
        checkpoint.save(anonymizer, {"step": 100, "ema": {}})  # a stage-II training checkpoint, not an anonymizer file
    elif case == "other_stage1":
        _anonymizer_file(
            anonymizer, digest={**{n: file_sha256(WEIGHTS_DIR / n) for n in STAGE1_FILES}, "regressor.pt": "0" * 64}
        )
    elif case == "small_generator":
        _anonymizer_file(anonymizer, {**ARCH, "img_size": 64})
    elif case != "missing":
        _anonymizer_file(anonymizer)
    if case == "no_stage1":
        stage1 = "/no/such/stage1"
    if case == "bundle_exists":
        extra = ["--bundle", str(tmp_path)]
    assert (
        main(
            [
                "export-trained",
                "--stage1",
                stage1,
                "--anonymizer",
                str(anonymizer),
                "--out",
                str(tmp_path / "out"),
                *extra,
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("deploy: error: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "anonymizer.onnx").exists()


def test_without_face_data_the_export_asks_for_faces(tmp_path: Path, monkeypatch, capsys, one_torch_thread) -> None:
    monkeypatch.setenv("OBSCURA_DATA", str(tmp_path / "no-data"))
    anonymizer = _anonymizer_file(tmp_path / "generator_ema.pt")
    assert (
        main(["export-trained", "--stage1", "weights", "--anonymizer", str(anonymizer), "--out", str(tmp_path / "out")])
        == 2
    )
    err = capsys.readouterr().err
    assert "no real faces for the parity check" in err and "--faces DIR" in err and err.count("\n") == 1


def test_pipeline_bench_runs_a_trained_bundle_through_its_psf(exported, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/pipeline_bench.py",
            "--json",
            str(out),
            "--bundle-128",
            str(exported["bundle"]),
            "--warmup",
            "0.5",
            "--duration",
            "1",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["models_128"] == "trained" and data["models_256"] == "stand-in" and data["fps_128"] > 0
    assert "the bundle's PSF psf.npy (128x128 px)" in data["camera"]["frames"]["128"]
    assert "9x9 box PSF" in data["camera"]["frames"]["256"] and "256 px" in data["note"]
    assert data["goal_met"] in (True, False)  # the 128 px models are not stand-ins, so the goal is judged
