"""The stage-I adversary's shape from its config, and its files (stage I's adversary.pt, attack-optic's attacker.pt).

Both files hold an `Adversary` with one class per training identity it learned, the identities'
names in that order, and the size it resizes faces to (`input_px`, 0: none). One place builds
that shape and one reads it back, so stage I, the adaptive attacker and stage II's identity term
cannot disagree on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from anonymizer import checkpoint
from anonymizer.nets.adversary import Adversary
from anonymizer.stage1.stage1_config import AdversaryConfig
from obscura.errors import ObscuraError


def build_adversary(a: AdversaryConfig, num_classes: int, margin: float | None = None, input_px: int | None = None) -> Adversary:
    """A fresh adversary of the config's shape (its margin and input size unless given)."""
    return Adversary(num_classes, a.width, a.blocks, a.embedding_dim, a.arcface_scale,
                     a.arcface_margin if margin is None else margin, a.input_px if input_px is None else input_px)


def save_recogniser(path: Path, kind: str, adversary: Adversary, identities: list[str]) -> None:
    """Write an adversary with its identities and input size (atomically, checksummed)."""
    checkpoint.save(path, {"format": kind, "identities": identities, "input_px": adversary.embedder.input_px,
                           "state_dict": adversary.state_dict()})


def read_recogniser(path: Path) -> dict[str, Any]:
    """A saved recogniser's contents; `input_px` is 0 for files written before it was recorded."""
    saved = checkpoint.load(path)
    if "state_dict" not in saved:
        raise ObscuraError(f"{path}: expected an adversary.pt or attacker.pt (it has no 'state_dict')")
    saved.setdefault("input_px", 0)
    return saved


def load_weights(adversary: Adversary, path: Path, saved: dict[str, Any], identities: list[str]) -> None:
    """Load `saved` (read from `path`) into `adversary`, refusing other identities or another input size by name."""
    if saved.get("identities") != identities:
        raise ObscuraError(f"{path} was trained on other identities than the run's training split")
    if saved["input_px"] != adversary.embedder.input_px:
        raise ObscuraError(f"{path} resizes faces to input_px {saved['input_px']}; this network uses "
                           f"{adversary.embedder.input_px}: expected the same (set input_px={saved['input_px']})")
    try:
        adversary.load_state_dict(saved["state_dict"])
    except RuntimeError as err:
        raise ObscuraError(f"{path}: weights do not match the stage-I config's adversary ({str(err).splitlines()[0]})") from None
