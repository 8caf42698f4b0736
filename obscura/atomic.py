"""Atomic file output: write to a temporary file beside the target, then rename over it.

An interrupted run therefore leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from obscura.errors import ObscuraError


def writable_folder(folder: str | os.PathLike[str]) -> Path:
    """Create `folder` if needed and check it takes files (commands call it before long work)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        # A file where the folder should be, a read-only or virtual file system (/proc): the user's path.
        raise ObscuraError(
            f"output folder {folder} cannot be written ({err.strerror or err}); expected a writable folder"
        ) from None
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` if the block succeeds."""
    target = Path(path)
    writable_folder(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 `text` to `path`."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write `obj` as indented JSON (numpy scalars and paths are converted)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike[str], array: Any) -> Path:
    """Atomically write a numpy array as .npy."""
    import numpy as np  # deferred as matplotlib above: the device side imports this module too

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    return Path(path)


def write_figure(path: str | os.PathLike[str], fig: Any, dpi: int = 100) -> Path:
    """Atomically write a matplotlib figure as PNG, then close it (figures hold memory until closed)."""
    import matplotlib.pyplot as plt  # deferred: obscura runs on the device too, where matplotlib is heavy and optional

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _json_default(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths, which json cannot encode itself."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
