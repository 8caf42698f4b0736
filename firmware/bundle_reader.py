"""The deployment bundle as the device sees it: a folder with a manifest that lists every file's sha256.

Layout: manifest.json, config.yaml, models/*.onnx, optional psf.npy and constants (*.npy), and the
device code under code/ (this package and `obscura`). A bundle whose files are missing, altered
or not listed is refused before anything is loaded from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from obscura import config as config_io
from obscura.errors import ObscuraError
from obscura.manifest import mismatch

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
FORMAT = "obscura-bundle/1"


class BundleError(ObscuraError):
    """A bundle that must not be used: missing, partial, tampered or malformed."""


@dataclass
class BundleConfig:
    """What the device runs: models and their conventions, and default source and sinks."""

    name: str = "obscura"
    input_size: int = 256
    regressor: str | None = None
    anonymizer: str | None = None
    constants: dict[str, str] = field(default_factory=dict)
    value_range: Literal["0..1", "-1..1"] = "0..1"
    psf: str | None = None
    stand_in: bool = False
    source: str = "picam://0"
    sinks: list[str] = field(default_factory=lambda: ["http://0.0.0.0:8080/?token_file=/etc/obscura/token"])
    providers: list[str] = field(default_factory=list)
    threads: int = 1


def bundle_files(root: Path) -> list[str]:
    """Every regular file under `root` except the manifest, as sorted POSIX relative paths."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BundleError(f"bundle {root}: {rel} is a symbolic link; bundles hold regular files only")
        if path.is_file() and rel != MANIFEST:
            files.append(rel)
    return files


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and shape-check manifest.json."""
    if not root.is_dir():
        raise BundleError(f"bundle {root}: not a folder")
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle {root}: missing {MANIFEST} (not a bundle, or a partial copy)") from None
    except (OSError, ValueError) as err:
        raise BundleError(f"bundle {root}: {MANIFEST} is unreadable or not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"bundle {root}: {MANIFEST} format is not {FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not isinstance(manifest.get("version"), str):
        raise BundleError(f"bundle {root}: {MANIFEST} needs a 'version' string and a non-empty 'files' mapping")
    for rel, entry in files.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel == MANIFEST:
            raise BundleError(f"bundle {root}: {MANIFEST} lists an unsafe path {rel!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"bundle {root}: {MANIFEST} entry for {rel} needs 'sha256' and 'bytes'")
    return manifest


def verify_bundle(root: str | Path) -> dict[str, Any]:
    """Check every file against the manifest; returns the manifest or raises BundleError naming the first bad file."""
    root = Path(root)
    manifest = read_manifest(root)
    listed = manifest["files"]
    for rel, entry in sorted(listed.items()):
        problem = mismatch(root / rel, entry)
        if problem == "missing":
            raise BundleError(f"bundle {root}: missing file {rel} (partial or interrupted copy)")
        if problem == "size":
            raise BundleError(
                f"bundle {root}: file {rel} has {(root / rel).stat().st_size} bytes, manifest says {entry['bytes']} "
                "(truncated or altered)"
            )
        if problem == "sha256":
            raise BundleError(
                f"bundle {root}: file {rel} does not match its sha256 in the manifest (tampered or corrupt)"
            )
    extra = sorted(set(bundle_files(root)) - set(listed))
    if extra:
        raise BundleError(
            f"bundle {root}: file {extra[0]} is not listed in the manifest (added after the bundle was made)"
        )
    return manifest


def load_config(root: str | Path, manifest: dict[str, Any] | None = None) -> BundleConfig:
    """The bundle's configuration, with every file it names checked to be in the bundle.

    The bundle is verified first unless `manifest` is given, which must come from `verify_bundle`.
    """
    root = Path(root)
    manifest = manifest or verify_bundle(root)
    if CONFIG not in manifest["files"]:
        raise BundleError(f"bundle {root}: missing {CONFIG}")
    cfg = config_io.load(BundleConfig, root / CONFIG)
    named = [cfg.regressor, cfg.anonymizer, cfg.psf, *cfg.constants.values()]
    for rel in (r for r in named if r is not None):
        if rel not in manifest["files"]:
            raise BundleError(f"bundle {root}: {CONFIG} names {rel}, which is not in the bundle")
    return cfg


def check_bundle(root: str | Path) -> str:
    """Verify a bundle's files and configuration; the one-line summary `deploy verify` and `firmware check-bundle` print."""
    manifest = verify_bundle(root)
    cfg = load_config(root, manifest)
    kind = "stand-in models" if cfg.stand_in else "trained models"
    return f"bundle {root}: version {manifest['version']}, {len(manifest['files'])} files verified ({kind})"
