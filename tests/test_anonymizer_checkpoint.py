"""Checksummed checkpoints: damage is refused by name, and resumption falls back to the previous one."""

from __future__ import annotations

import pytest
import torch

from anonymizer import checkpoint
from obscura.errors import ObscuraError


def _write(folder, step: int) -> None:
    checkpoint.save(checkpoint.step_path(folder, step), {"step": step, "w": torch.full((3,), float(step))})


def test_round_trip_keeps_tensors_and_numbers(tmp_path) -> None:
    _write(tmp_path, 5)
    state = checkpoint.load(checkpoint.step_path(tmp_path, 5))
    assert state["step"] == 5 and torch.equal(state["w"], torch.full((3,), 5.0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_damaged_file_is_refused_naming_it(tmp_path, damage: str) -> None:
    _write(tmp_path, 1)
    path = checkpoint.step_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = bytearray(b"PK\x03\x04 not ours")
    path.write_bytes(bytes(data))
    with pytest.raises(ObscuraError, match=str(path.name)):
        checkpoint.load(path)


def test_latest_skips_a_corrupt_newest_and_prune_keeps_two(tmp_path, capsys) -> None:
    for step in (1, 2, 3):
        _write(tmp_path, step)
    checkpoint.prune(tmp_path)
    assert [p.name for p in checkpoint.listed(tmp_path)] == ["ckpt-00000003.pt", "ckpt-00000002.pt"]
    checkpoint.step_path(tmp_path, 3).write_bytes(b"garbage")
    path, state = checkpoint.latest(tmp_path)
    assert path.name == "ckpt-00000002.pt" and state["step"] == 2
    assert "ckpt-00000003.pt" in capsys.readouterr().err


def test_latest_refuses_when_every_checkpoint_is_corrupt(tmp_path) -> None:
    _write(tmp_path, 1)
    checkpoint.step_path(tmp_path, 1).write_bytes(b"garbage")
    with pytest.raises(ObscuraError, match="no readable checkpoint"):
        checkpoint.latest(tmp_path)
    assert checkpoint.latest(tmp_path / "empty") is None
