"""Manifests: files listed with their SHA-256 and size, and the one check of a file against its entry.

`file_entry` and `mismatch` serve every manifest (the committed weights here, and the device
bundles of `firmware.bundle_reader`). The weights manifest (weights/manifest.json) says what each
committed trained artifact is and how it was made: each entry holds the file's SHA-256 and size, the exact command that produced it, the data split
it was trained on and the metrics it reached. `verify` re-hashes the files, so a stale or damaged
artifact is refused by name before anything runs on it. `simulate.py manifest [FILE]` verifies
from the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping

from obscura import atomic, paths
from obscura.digest import file_sha256
from obscura.errors import ObscuraError

FORMAT = "obscura-weights-manifest-v1"
NAME = "manifest.json"


def file_entry(path: str | Path) -> dict[str, Any]:
    """What a manifest records of a file that exists now: its SHA-256 and its size in bytes."""
    path = Path(path)
    return {"sha256": file_sha256(path), "bytes": path.stat().st_size}


def mismatch(path: str | Path, recorded: Mapping[str, Any]) -> str | None:
    """How a file differs from its recorded entry: 'missing', 'size' or 'sha256' (first found); None when it matches."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    if "bytes" in recorded and path.stat().st_size != recorded["bytes"]:
        return "size"
    return "sha256" if file_sha256(path) != recorded["sha256"] else None


def entry(path: str | Path, command: str, data: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """One weights-manifest entry for a file that exists now: what `file_entry` records, and how it was made."""
    return {**file_entry(path), "command": command, "data": data, "metrics": metrics}


def write(folder: str | Path, entries: dict[str, dict[str, Any]], notes: dict[str, Any] | None = None) -> Path:
    """Write folder/manifest.json (atomically) for files named relative to the folder, keeping the other files' entries.

    Stage I and stage II are published separately into one folder, so each replaces only its own
    entries (and notes) and leaves the other's in place.
    """
    path = Path(folder) / NAME
    kept = read(path) if path.is_file() else {"files": {}}
    return atomic.write_json(path, {**kept, "format": FORMAT, "files": {**kept["files"], **entries}, **(notes or {})})


def read(path: str | Path) -> dict[str, Any]:
    """A manifest's contents; a missing or foreign file is a one-line error naming it."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ObscuraError(f"manifest {path}: cannot read ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ObscuraError(f"manifest {path}: not an Obscura weights manifest (expected format {FORMAT!r})")
    return manifest


def verify(path: str | Path, names: list[str] | None = None) -> dict[str, Any]:
    """Check the listed files (default: all) against their recorded SHA-256; returns the manifest."""
    path = Path(path)
    manifest = read(path)
    files = manifest["files"]
    for name in names if names is not None else list(files):
        if name not in files:
            raise ObscuraError(f"manifest {path}: no entry for {name}")
        target = path.parent / name
        problem = mismatch(target, files[name])
        if problem == "missing":
            raise ObscuraError(f"{target}: listed in {path} but missing")
        if problem is not None:
            raise ObscuraError(
                f"{target}: SHA-256 differs from {path} (a stale or damaged file; re-publish or restore it)"
            )
    return manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `manifest` sub-command: verify a weights manifest."""
    p = subparsers.add_parser(
        "manifest",
        help="check the committed weights (or another folder's) against their manifest",
        description="Re-hash every file a weights manifest lists and compare with its SHA-256.",
    )
    p.add_argument("file", nargs="?", type=Path, help=f"a {NAME} (default: weights/{NAME})")
    p.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """Verify a manifest and print one line per file."""
    manifest = verify(args.file or paths.WEIGHTS_DIR / NAME)
    for name, e in manifest["files"].items():
        print(f"ok  {name}  {e['bytes']} bytes  sha256 {e['sha256'][:16]}...")
    return 0
