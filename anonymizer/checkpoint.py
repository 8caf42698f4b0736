"""Integrity-checked model files: a magic line, the SHA-256 of the payload, then a torch.save payload.

A truncated or bit-flipped file fails the hash and is refused with a one-line message naming it;
training then falls back to the previous checkpoint (the last `KEEP` are kept).
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import torch

from obscura import atomic
from obscura.digest import bytes_sha256
from obscura.errors import ObscuraError

MAGIC = b"OBSCURA-TORCH-V1\n"
KEEP = 2
_NAME = re.compile(r"^ckpt-(\d{8})\.pt$")


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (tensors, numbers, strings, lists, dicts) atomically with its checksum."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    return atomic.write_bytes(path, MAGIC + bytes_sha256(payload).encode() + b"\n" + payload)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by `save`; a missing, foreign, truncated or corrupted one raises ObscuraError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ObscuraError(f"checkpoint {path}: cannot read ({err.strerror or err})") from None
    head = len(MAGIC) + 65
    if not data.startswith(MAGIC) or len(data) < head:
        raise ObscuraError(
            f"checkpoint {path} is not an Obscura model file (expected a file written by anonymizer.checkpoint.save)"
        )
    payload = data[head:]
    if bytes_sha256(payload).encode() != data[len(MAGIC) : head - 1]:
        raise ObscuraError(f"checkpoint {path} is corrupt (checksum mismatch: truncated or damaged file)")
    try:
        return torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # the checksum matched, so this is a foreign payload, not damage
        raise ObscuraError(f"checkpoint {path}: unreadable payload ({type(err).__name__})") from None


def step_path(folder: str | Path, step: int) -> Path:
    """The checkpoint file of a step."""
    return Path(folder) / f"ckpt-{step:08d}.pt"


def save_step(folder: str | Path, step: int, state: dict[str, Any]) -> Path:
    """Write the checkpoint of a step (atomic, checksummed) and keep only the newest KEEP."""
    path = save(step_path(folder, step), state)
    prune(folder)
    return path


def listed(folder: str | Path) -> list[Path]:
    """Checkpoint files in a folder, newest (highest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if _NAME.match(p.name)), reverse=True)


def latest(folder: str | Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint; corrupt ones are reported on stderr and skipped; None if there are none.

    Raises ObscuraError when checkpoints exist but none can be read (nothing safe to resume from).
    """
    found = listed(folder)
    problems = []
    for path in found:
        try:
            return path, load(path, map_location)
        except ObscuraError as err:
            problems.append(str(err))
            print(f"warning: {err}; trying the previous checkpoint", file=sys.stderr)
    if found:
        raise ObscuraError(f"no readable checkpoint in {folder}: {problems[0]}")
    return None


def prune(folder: str | Path, keep: int = KEEP) -> None:
    """Delete all but the newest `keep` checkpoints."""
    for path in listed(folder)[keep:]:
        path.unlink(missing_ok=True)
