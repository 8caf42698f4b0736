"""The deployment bundle as the device sees it: a folder with a manifest that lists every file's sha256.

Layout: manifest.json, manifest.sig (the Ed25519 signature of manifest.json's bytes), config.yaml,
models/*.onnx, optional psf.npy and constants (*.npy), and the device code under code/ (this
package and `obscura`). A bundle whose files are missing, altered or not listed is refused before
anything is loaded from it. The checksums alone only find corruption (anyone can recompute them);
given the trusted public key, the signature also refuses a bundle changed by anyone but the key's holder.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from obscura import config as config_io
from obscura import signing
from obscura.errors import ObscuraError
from obscura.manifest import mismatch

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CONFIG = "config.yaml"
FORMAT = "obscura-bundle/1"
SIGNATURE_FORMAT = "obscura-bundle-signature/1"


class BundleError(ObscuraError):
    """A bundle that must not be used: missing, partial, tampered or malformed."""


@dataclass
class BundleConfig:
    """What the device runs: models and their conventions, and default source and sinks."""

    name: str = "obscura"
    input_size: int = config_io.bounded(256, ge=4)
    regressor: str | None = None
    anonymizer: str | None = None
    constants: dict[str, str] = field(default_factory=dict)
    value_range: Literal["0..1", "-1..1"] = "0..1"
    psf: str | None = None
    stand_in: bool = False
    source: str = "picam://0"
    # Loopback only: serving the network is the operator's explicit choice (a sink with another host).
    sinks: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8080/?token_file=/etc/obscura/token"])
    providers: list[str] = field(default_factory=list)
    threads: int = config_io.bounded(1, ge=1)


def bundle_files(root: Path) -> list[str]:
    """Every regular file under `root` except the manifest and its signature, as sorted POSIX relative paths."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise BundleError(f"bundle {root}: {rel} is a symbolic link; bundles hold regular files only")
        if path.is_file() and rel not in (MANIFEST, SIGNATURE):
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
        if pure.is_absolute() or ".." in pure.parts or rel in (MANIFEST, SIGNATURE):
            raise BundleError(f"bundle {root}: {MANIFEST} lists an unsafe path {rel!r}")
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("sha256"), str)
            or not isinstance(entry.get("bytes"), int)
        ):
            raise BundleError(f"bundle {root}: {MANIFEST} entry for {rel} needs 'sha256' and 'bytes'")
    return manifest


def signature_record(key: signing.Ed25519PrivateKey, manifest_bytes: bytes) -> dict[str, str]:
    """The contents of manifest.sig: format, the signing key's id and the signature of the manifest's bytes."""
    return {
        "format": SIGNATURE_FORMAT,
        "key_id": signing.key_id(key.public_key()),
        "signature": base64.b64encode(signing.sign(key, manifest_bytes)).decode("ascii"),
    }


def check_signature(root: Path, public_key: str | Path) -> str:
    """Check manifest.sig against the trusted public key; returns the key id or raises BundleError."""
    key = signing.load_public_key(public_key)
    trusted = signing.key_id(key)
    try:
        record = json.loads((root / SIGNATURE).read_text(encoding="utf-8"))
        signature = base64.b64decode(record["signature"], validate=True)
    except FileNotFoundError:
        raise BundleError(
            f"bundle {root}: not signed (no {SIGNATURE}); sign it with `deploy bundle --key` or `deploy sign`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        raise BundleError(f"bundle {root}: {SIGNATURE} is unreadable or malformed") from None
    if not signing.is_valid(key, signature, (root / MANIFEST).read_bytes()):
        raise BundleError(
            f"bundle {root}: the signature does not match trusted key {trusted} (signed by another key, "
            "or the manifest was changed after signing); refused"
        )
    return trusted


def verify_bundle(root: str | Path, public_key: str | Path | None = None) -> dict[str, Any]:
    """Check the signature (given the trusted public key) and every file against the manifest.

    Returns the manifest, or raises BundleError naming the first bad file. Without `public_key`
    only the checksums are checked, which finds corruption, not deliberate changes.
    """
    root = Path(root)
    manifest = read_manifest(root)
    if public_key is not None:
        check_signature(root, public_key)
    listed = manifest["files"]
    for rel, entry in sorted(listed.items()):
        problem = mismatch(root / rel, entry)
        if problem == "missing":
            raise BundleError(f"bundle {root}: missing file {rel} (partial or interrupted copy)")
        if problem == "size":
            raise BundleError(
                f"bundle {root}: file {rel} has {(root / rel).stat().st_size} bytes, manifest says {entry['bytes']} "
                "(truncated or corrupted)"
            )
        if problem == "sha256":
            raise BundleError(f"bundle {root}: file {rel} does not match its sha256 in the manifest (corrupted)")
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


def deidentification(cfg: BundleConfig) -> str:
    """What a bundle's models can and cannot de-identify, in words."""
    unless = "sinks get frames only from sim:// (the optic simulated here) or with allow_raw_frames=true"
    if cfg.anonymizer is None:
        return f"cannot de-identify: no anonymizer (a regressor only locates faces); {unless}"
    if cfg.stand_in:
        return f"cannot de-identify: stand-in models (closed forms of the capture, to test the device path); {unless}"
    return (
        "de-identifies the output stream: the anonymizer redraws the centre square of each capture "
        f"({cfg.input_size} px) with a face of nobody; cannot de-identify stream=capture sinks, whose "
        f"{unless}, nor judge how well its own networks hide a face (that is the evaluation's job)"
    )


def check_bundle(root: str | Path, public_key: str | Path | None = None) -> str:
    """Verify a bundle; the lines `deploy verify` and `firmware check-bundle` print (version, signature, what it hides)."""
    manifest = verify_bundle(root, public_key)
    cfg = load_config(root, manifest)
    kind = "stand-in models" if cfg.stand_in else "trained models"
    if public_key is not None:
        signature = f"signature: valid, by trusted key {signing.key_id(signing.load_public_key(public_key))}"
    else:
        signature = (
            "signature: not checked (no public key given): the checksums find corruption, not deliberate changes"
        )
    return (
        f"bundle {root}: version {manifest['version']}, {len(manifest['files'])} files verified ({kind})\n"
        f"{signature}\n{deidentification(cfg)}"
    )
