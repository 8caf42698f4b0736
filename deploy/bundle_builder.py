"""Making a versioned deployment bundle: models, config, PSF, device code, a sha256 manifest and its signature.

The bundle is assembled in a temporary folder beside the target and renamed into place, so an
interrupted build never leaves a half bundle under the final name. Given a private key (`deploy
keygen`), manifest.sig holds the Ed25519 signature of manifest.json, which the device checks
with the public key it holds. The device-side reader and verifier is `firmware.bundle_reader`
(the device never imports this module or torch).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import yaml

from firmware.bundle_reader import (
    CONFIG,
    FORMAT,
    MANIFEST,
    SIGNATURE,
    BundleConfig,
    bundle_files,
    read_manifest,
    signature_record,
    verify_bundle,
)
from firmware.psf import load_psf
from obscura import atomic, signing
from obscura import config as config_io
from obscura.digest import bytes_sha256
from obscura.errors import ObscuraError
from obscura.manifest import file_entry
from obscura.paths import REPO_ROOT

DEVICE_PACKAGES = ("firmware", "obscura")


def build_bundle(
    out_dir: str | Path,
    models: Mapping[str, str | Path],
    config: BundleConfig | None = None,
    psf: str | Path | None = None,
    constants: Mapping[str, str | Path] | None = None,
    version: str | None = None,
    include_code: bool = True,
    signing_key: str | Path | None = None,
) -> dict[str, Any]:
    """Write a bundle at `out_dir` (which must not exist), signed with `signing_key` if given, and return its manifest.

    `models` maps 'regressor' / 'anonymizer' to ONNX files; `constants` maps anonymizer input names
    to .npy files. The config's model, PSF and constant paths are filled in to match the bundle.
    """
    target = Path(out_dir)
    if target.exists():
        raise ObscuraError(f"bundle output {target} already exists; choose a new folder (bundles are immutable)")
    key = None if signing_key is None else signing.load_private_key(signing_key)  # a bad key fails before any work
    unknown = set(models) - {"regressor", "anonymizer"}
    if unknown:
        raise ObscuraError(f"bundle model role {sorted(unknown)[0]!r}: expected 'regressor' or 'anonymizer'")
    cfg = config or BundleConfig()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for role, src in models.items():
            _copy_model(Path(src), staging / "models" / f"{role}.onnx")
            setattr(cfg, role, f"models/{role}.onnx")
        cfg.constants = {}
        for name, src in (constants or {}).items():
            rel = f"constants/{name}.npy"
            _copy_array(Path(src), staging / rel)
            cfg.constants[name] = rel
        if psf is not None:
            np.save(staging / "psf.npy", load_psf(psf))
            cfg.psf = "psf.npy"
        (staging / CONFIG).write_text(yaml.safe_dump(config_io.to_dict(cfg), sort_keys=False), encoding="utf-8")
        if include_code:
            for package in DEVICE_PACKAGES:
                shutil.copytree(
                    REPO_ROOT / package,
                    staging / "code" / package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                )
        manifest = write_manifest(staging, version)
        if key is not None:
            _write_signature(staging, key)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    verify_bundle(target)
    return manifest


def write_manifest(root: Path, version: str | None = None) -> dict[str, Any]:
    """Hash every file under `root` into manifest.json; the default version is date + content hash."""
    files = {rel: file_entry(root / rel) for rel in bundle_files(root)}
    content = bytes_sha256(json.dumps(files, sort_keys=True).encode("utf-8"))[:12]
    now = dt.datetime.now(dt.timezone.utc)
    manifest = {
        "format": FORMAT,
        "version": version or f"{now:%Y%m%d-%H%M%S}-{content}",
        "created_utc": now.isoformat(timespec="seconds"),
        "content_sha256": content,
        "files": files,
    }
    _check_version(manifest["version"])
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def sign_bundle(bundle: str | Path, signing_key: str | Path) -> str:
    """Sign an existing bundle (its checksums verified first) with a private key; returns the key id."""
    root = Path(bundle)
    verify_bundle(root)
    key = signing.load_private_key(signing_key)
    _write_signature(root, key)
    return signing.key_id(key.public_key())


def _write_signature(root: Path, key: signing.Ed25519PrivateKey) -> None:
    """manifest.sig for the manifest as it is on disk now."""
    read_manifest(root)
    record = signature_record(key, (root / MANIFEST).read_bytes())
    atomic.write_text(root / SIGNATURE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _check_version(version: str) -> None:
    """Versions name folders on the device: letters, digits, '.', '-', '_' only."""
    if not version or not all(c.isalnum() or c in ".-_" for c in version) or version.startswith("."):
        raise ObscuraError(f"bundle version {version!r}: use letters, digits, '.', '-' and '_' only")


def _copy_model(src: Path, dst: Path) -> None:
    """Copy an ONNX file after checking that onnx can read it."""

    try:
        onnx.checker.check_model(str(src))
    except Exception as err:  # onnx raises several types for unreadable or invalid files
        raise ObscuraError(f"model {src}: not a valid ONNX file ({str(err).splitlines()[0]})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _copy_array(src: Path, dst: Path) -> None:
    """Copy a constant input after checking it is a numeric .npy array."""
    try:
        array = np.load(src, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ObscuraError(f"constant {src}: cannot read it as a .npy array ({err})") from None
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.save(dst, array.astype(np.float32))
