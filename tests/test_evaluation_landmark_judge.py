"""The fair landmark judge: one architecture and budget for every method, judged on moved faces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from evaluation import evaluation_commands, landmark_judge
from obscura.errors import ObscuraError

TINY_JUDGE = {
    "data.max_identities": 6,
    "data.max_images_per_identity": 3,
    "data.image_size": 64,
    "test_images": 3,
    "train.steps": 2,
    "train.batch_size": 2,
    "train.threads": 1,
    "train.progress": False,
}


def _judge(method: str, out: Path, overrides: dict) -> int:
    parser = argparse.ArgumentParser()
    evaluation_commands.register(parser.add_subparsers())
    sets = sum((["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"] for k, v in overrides.items()), [])
    args = parser.parse_args(["judge-landmarks", "--method", method, "--out", str(out), *sets])
    return args.func(args)


def test_the_architecture_cannot_be_configured(tmp_path: Path) -> None:
    with pytest.raises(ObscuraError, match="regressor"):
        _judge("clean", tmp_path / "o", {"regressor.depth": 2})
    with pytest.raises(ObscuraError, match="data.moved"):
        _judge("clean", tmp_path / "o", {"data.moved": False})


def test_every_method_is_judged_by_the_same_network_on_the_same_moved_faces(
    tiny_stage1: dict, tmp_path: Path, one_torch_thread: None
) -> None:
    overrides = {**TINY_JUDGE, "data.root": tiny_stage1["data.root"], "data.cache_dir": tiny_stage1["data.cache_dir"]}
    reports = {}
    for method in ("clean", "lowres8"):
        assert _judge(method, tmp_path / method, overrides) == 0
        reports[method] = json.loads((tmp_path / method / landmark_judge.REPORT).read_text())
    clean, low = reports["clean"], reports["lowres8"]
    assert clean["architecture"] == low["architecture"] == landmark_judge.arch()
    assert clean["train_images"] == low["train_images"] and clean["n_faces"] == low["n_faces"] == 3
    assert clean["landmark_nme_mean_shape"] == pytest.approx(low["landmark_nme_mean_shape"])  # same moved faces
    motions = [json.loads((tmp_path / m / "motions.json").read_text()) for m in reports]
    assert motions[0] == motions[1] and len(motions[0]["motions"]) == 3
    assert (tmp_path / "clean" / landmark_judge.JUDGE_FILE).is_file()
