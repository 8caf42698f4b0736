"""Where the project finds its committed weights and the shared face data."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = REPO_ROOT / "weights"


def shared_data_dir() -> Path:
    """The face data folder: $OBSCURA_DATA, else ../shared/data beside the project root."""
    return Path(os.environ.get("OBSCURA_DATA", REPO_ROOT.parent / "shared" / "data"))
