"""SHA-256 content hashes: the keys of result caches, checkpoints' checksums and provenance, the weights and bundle manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes in memory (a payload, an array's buffer, a key made of other digests)."""
    return hashlib.sha256(data).hexdigest()
