"""The evaluate command end to end: bad input, images without faces, and a small real-face subset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from evaluation import evaluation_commands
from evaluation.evaluate import EvaluateConfig, run
from evaluation.methods import names
from evaluation.summary import short_name
from faces.alignment import align
from faces.face_models import Mtcnn, recognitions
from faces.face_sets import read_rgb
from obscura.errors import ObscuraError

REQUIRED = ("rank1", "rank1_oracle", "auc", "tar_at_far_1e-3", "chance")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="simulate.py")
    evaluation_commands.register(parser.add_subparsers())
    return parser.parse_args(argv)


def _noise_faces(root: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("ann", "ben"):
        for i in range(3):
            (root / name).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (64, 64), dtype=np.uint8))
    (root / "ben" / "3.jpg").write_bytes(b"\xff\xd8 truncated")


def test_method_help_lists_every_kind_of_method(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        _parse(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in [*names(), "optic (the committed learned optic)", "optic:RUN", "psf:FILE.npy"]:
        assert name in text, name


def test_cli_rejects_bad_input(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = _parse(["evaluate", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    with pytest.raises(ObscuraError, match="no identity folders"):
        args.func(args)
    _noise_faces(tmp_path / "faces")
    args = _parse(["evaluate", "--data", str(tmp_path / "faces"), "--method", "blur3", "--out", str(tmp_path / "o")])
    with pytest.raises(ObscuraError, match="unknown method"):
        args.func(args)
    args = _parse(["evaluate", "--data", str(tmp_path / "faces"), "--min-images", "4", "--out", str(tmp_path / "o")])
    with pytest.raises(ObscuraError, match="0 identities with >= 4"):
        args.func(args)
    args = _parse(["evaluate", "--data", str(tmp_path / "faces"), "--set", "workers=two", "--out", str(tmp_path / "o")])
    with pytest.raises(ObscuraError, match="workers"):
        args.func(args)


def test_images_without_faces_are_counted_not_fatal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _noise_faces(tmp_path / "faces")
    out = tmp_path / "out"
    args = _parse(
        [
            "evaluate",
            "--data",
            str(tmp_path / "faces"),
            "--method",
            "blur2",
            "--min-images",
            "3",
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "cache"),
            "--workers",
            "1",
            "--set",
            "bootstrap=20",
            "--set",
            "progress=false",
        ]
    )
    assert args.func(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_identities"] == 2 and report["n_probes"] == 4
    assert report["unreadable_images"] == [str(tmp_path / "faces" / "ben" / "3.jpg")]
    for name in ("sface", "dlib"):
        p = report["privacy"][name]
        assert set(REQUIRED) <= set(p)
        assert p["probes_without_face"] == 4 and p["rank1"] == 0.0 and p["chance"] == 0.5
    assert report["utility"]["mtcnn"]["n_source_faces"] == 0
    for name in ("report.md", "config.yaml", "identities.txt", "examples.png", "privacy_utility.png"):
        assert (out / name).is_file()
    assert "replicated to three identical RGB channels" in (out / "report.md").read_text()
    assert "ben/3.jpg" in (out / "report.md").read_text()
    assert "blur2 on 2 identities, 4 probes" in capsys.readouterr().out
    args = _parse(
        ["evaluate-summary", str(tmp_path), "--out", str(tmp_path / "table.md"), "--plot", str(tmp_path / "curve.png")]
    )
    assert args.func(args) == 0
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "table.md").read_text().splitlines()
    assert len(table) == 3 and table[2].startswith("| faces >= 3 | `blur2` | 2 | 4 | 0.000 [0.000, 0.000]")


def _run(data: Path, method: str, tmp: Path) -> dict:
    cfg = EvaluateConfig(
        data=str(data),
        method=method,
        out=str(tmp / method),
        min_images=5,
        cache_dir=str(tmp / "cache"),
        workers=1,
        bootstrap=50,
        progress=False,
        examples=2,
    )
    return run(cfg)


@pytest.mark.slow
def test_real_faces_clean_is_recognised_and_lowres8_is_not(lfw_subset: Path, tmp_path: Path) -> None:
    clean = _run(lfw_subset, "clean", tmp_path)
    low = _run(lfw_subset, "lowres8", tmp_path)
    assert clean["n_identities"] == 4 and clean["n_probes"] == 16
    assert clean["greyscale_images"] == 20
    assert clean["privacy"]["sface"]["rank1"] >= 0.9
    assert clean["privacy"]["dlib"]["rank1"] >= 0.75
    assert clean["privacy"]["sface"]["auc"] >= 0.95
    assert clean["utility"]["mtcnn"]["fd"] == 1.0 and clean["utility"]["mtcnn"]["bb"] == 0.0
    for name in ("sface", "dlib"):
        assert low["privacy"][name]["rank1"] <= clean["privacy"][name]["rank1"] - 0.4
        assert low["privacy"][name]["rank1_oracle"] >= low["privacy"][name]["rank1"]
    assert low["utility"]["mtcnn"]["fd"] < 0.5


def test_real_face_models_find_and_embed(shared_data: Path) -> None:

    lfw = shared_data / "lfw-a" / "Colin_Powell"
    a, b = (read_rgb(p)[0] for p in sorted(lfw.iterdir())[:2])
    other = read_rgb(sorted((shared_data / "lfw-a" / "Serena_Williams").iterdir())[0])[0]
    celeba_dir = sorted(p for p in (shared_data / "celeba-crops").iterdir() if p.is_dir())[0]
    colour, grey = read_rgb(sorted(celeba_dir.iterdir())[0])
    assert not grey
    for name, rec in recognitions().items():
        faces = [rec.detector.detect(img).central(img.shape) for img in (a, b, other, colour)]
        assert all(f is not None for f in faces), name
        assert faces[0].landmarks.shape == ((5, 2) if name == "sface" else (68, 2))
        ea, eb, eo = (rec.embed(img, f) for img, f in zip((a, b, other), faces))
        assert np.linalg.norm(ea) == pytest.approx(1.0)
        assert ea @ eb > ea @ eo, name
    mt = Mtcnn().detect(cv2.resize(colour, (256, 256))).central((256, 256))
    assert mt is not None and mt.landmarks.shape == (5, 2)
    five = recognitions()["sface"].detector.detect(a).central(a.shape).landmarks
    assert align(a, five, 112).shape == (112, 112, 3) and align(a, five, 256).shape == (256, 256, 3)


def test_simulate_reports_bad_input_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import simulate

    (tmp_path / "empty").mkdir()
    assert simulate.main(["evaluate", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("simulate.py: error: --data") and "no identity folders" in err[0]


def test_plot_labels_shorten_paths() -> None:

    assert short_name("optic:runs/stage1/l0.1") == "optic:l0.1"
    assert short_name("psf:runs/tol/psf_fabricated.npy") == "psf:psf_fabricated"
    assert short_name("lowres16") == "lowres16"


@pytest.mark.slow
def test_two_worker_processes_give_the_one_process_result_for_an_optical_method(
    lfw_subset: Path, tmp_path: Path
) -> None:
    """Workers are spawned, not forked: checking an optical method runs torch in this process first."""
    one = _run(lfw_subset, "defocus", tmp_path / "one")
    two = run(
        EvaluateConfig(
            data=str(lfw_subset),
            method="defocus",
            out=str(tmp_path / "two"),
            min_images=5,
            cache_dir=str(tmp_path / "cache-two"),
            workers=2,
            bootstrap=50,
            progress=False,
            examples=2,
        )
    )
    for part in ("privacy", "utility"):  # through JSON, where NaN (no face found) equals NaN
        assert json.dumps(two[part], sort_keys=True) == json.dumps(one[part], sort_keys=True), part
