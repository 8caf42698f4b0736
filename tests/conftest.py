"""Shared fixtures: the face data folder, skipped with a reason where a machine has none."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from obscura.paths import shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $OBSCURA_DATA); tests that need real faces skip without it."""
    path = shared_data_dir()
    if not (path / "lfw-a").is_dir() or not (path / "celeba-crops").is_dir():
        pytest.skip(f"face data not found at {path} (needs lfw-a/ and celeba-crops/; set OBSCURA_DATA)")
    return path


@pytest.fixture(scope="session")
def lfw_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four LFW-a identities, their first five images each (links, not copies)."""
    root = tmp_path_factory.mktemp("lfw_subset")
    for name in ("Colin_Powell", "Gloria_Macapagal_Arroyo", "Jean_Chretien", "Serena_Williams"):
        (root / name).mkdir()
        for src in sorted((shared_data / "lfw-a" / name).iterdir())[:5]:
            (root / name / src.name).symlink_to(src)
    return root


@pytest.fixture
def one_torch_thread():
    """One torch thread (CI shares 2 cores between jobs); the previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_stage1(shared_data: Path, tmp_path_factory) -> dict:
    """The tiny stage-I overrides on the real celeba-crops set, with one landmark cache for the session."""
    from stage1_helpers import TINY

    cache = tmp_path_factory.mktemp("landmark-cache")
    return {**TINY, "data.root": str(shared_data / "celeba-crops"), "data.cache_dir": str(cache)}


@pytest.fixture(scope="session")
def stage1_run(tiny_stage1: dict, tmp_path_factory) -> Path:
    """A finished 3-step tiny stage-I run (optic.npz, regressor.pt, adversary.pt, splits, checkpoints)."""
    from stage1_helpers import train_cli

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stage1") / "straight"
    assert train_cli(tiny_stage1, out) == 0
    torch.set_num_threads(before)
    return out
