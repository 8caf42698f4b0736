"""Atomic outputs: a failed write leaves the previous file and no temporary behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from obscura import atomic


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"step": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_json_converts_numpy_and_paths(tmp_path: Path) -> None:
    target = atomic.write_json(tmp_path / "sub" / "r.json", {"a": np.float32(0.5), "p": Path("x"), "v": np.arange(2)})
    assert json.loads(target.read_text()) == {"a": 0.5, "p": "x", "v": [0, 1]}
