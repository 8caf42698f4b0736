"""Ed25519 signing keys and signatures (through `cryptography`): who may make the code and models a device runs.

Keys are PEM files: the private key PKCS#8 (unencrypted, mode 0600; keep it off the device), the
public key SubjectPublicKeyInfo. A key's id is the first 16 hex digits of the SHA-256 of its raw
32 public bytes, so messages can name a key without printing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from obscura import atomic
from obscura.digest import bytes_sha256
from obscura.errors import ObscuraError


def generate_keypair(private_path: str | Path, public_path: str | Path) -> str:
    """Write a new Ed25519 key pair (refusing to replace existing files); returns the key id."""
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise ObscuraError(f"key file {path} already exists; choose another name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with atomic.atomic_path(private_path) as tmp:
        os.chmod(tmp, 0o600)  # before the key is written: never readable by others, not even for a moment
        tmp.write_bytes(private_pem)
    atomic.write_bytes(public_path, public_pem(key.public_key()))
    return key_id(key.public_key())


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw public key."""
    return bytes_sha256(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))[:16]


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file; anything else is a one-line error naming the file."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as err:
        raise ObscuraError(f"signing key {path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ObscuraError(
            f"signing key {path}: not an unencrypted PEM private key (make one with `deploy keygen`)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ObscuraError(f"signing key {path}: a {type(key).__name__}; expected an Ed25519 key (`deploy keygen`)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; anything else is a one-line error naming the file."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as err:
        raise ObscuraError(f"public key {path}: cannot read it ({err.strerror or err})") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ObscuraError(f"public key {path}: not a PEM public key (`deploy keygen` writes one)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ObscuraError(f"public key {path}: a {type(key).__name__}; expected an Ed25519 key")
    return key


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The 64-byte Ed25519 signature of `data`."""
    return key.sign(data)


def is_valid(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """Whether `signature` is `key`'s signature of exactly `data`."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
