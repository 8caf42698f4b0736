"""The benchmark scripts' shared parts: the JSON they print and write, and the warm evaluation cache."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from faces.result_cache import ResultCache
from obscura.benchmark import emit
from obscura.paths import REPO_ROOT


def test_emit_prints_and_writes_the_same_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    summary = {"benchmark": "x", "seconds": 1.5, "nested": {"n": 3}}
    emit(summary, str(tmp_path / "out" / "bench.json"))
    printed = capsys.readouterr().out
    assert json.loads(printed) == summary
    assert (tmp_path / "out" / "bench.json").read_text() == printed
    emit(summary, None)
    assert json.loads(capsys.readouterr().out) == summary


def test_warm_from_copies_clean_results_and_no_method_results(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("evaluation_bench", REPO_ROOT / "benchmarks" / "evaluation_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    source = tmp_path / "cache"
    ResultCache(source, "clean").put("ab12", {"sface.emb": np.ones(3)})
    ResultCache(source, "method-lowres32").put("ab12", {"sface.auto": np.zeros(3)})
    bench.seed_clean_results(source, tmp_path / "fresh")
    assert ResultCache(tmp_path / "fresh", "clean").get("ab12")["sface.emb"].tolist() == [1.0, 1.0, 1.0]
    assert ResultCache(tmp_path / "fresh", "method-lowres32").get("ab12") is None
    with pytest.raises(SystemExit, match="no clean-image results"):
        bench.seed_clean_results(tmp_path / "empty", tmp_path / "other")
