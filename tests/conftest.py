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


@pytest.fixture
def one_torch_thread():
    """One torch thread (CI shares 2 cores between jobs); the previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
