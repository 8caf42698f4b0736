"""On-disk cache of per-image model results, one .npz per (kind, image hash), written atomically.

Clean-image results (gallery embeddings, landmarks of clean probes) are keyed by the image file's
SHA-256 and the model set, so every method run on the same data reuses them; per-method results are
keyed the same way under the method's cache key, which makes an interrupted run resumable.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from obscura import atomic

# Bump when model files, detector settings or what a record holds change.
CACHE_VERSION = "v2-yunet2023mar-sface2021dec-dlib20-mtcnn"


def default_dir() -> Path:
    """$OBSCURA_CACHE/evaluation, else ~/.cache/obscura/evaluation."""
    base = os.environ.get("OBSCURA_CACHE")
    return Path(base) / "evaluation" if base else Path.home() / ".cache" / "obscura" / "evaluation"


class ResultCache:
    """Dict-of-arrays records under `<root>/<CACHE_VERSION>/<kind>/<hash[:2]>/<hash>.npz`."""

    def __init__(self, root: str | Path, kind: str) -> None:
        self.folder = Path(root) / CACHE_VERSION / kind

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The stored record, or None when absent or unreadable (then it is recomputed)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError):
            return None

    def put(self, key: str, record: dict[str, np.ndarray]) -> None:
        """Store a record atomically."""
        buf = io.BytesIO()
        np.savez(buf, **record)
        atomic.write_bytes(self._path(key), buf.getvalue())
