"""Image protections by name: `NAME` or `NAME:key=value,key=value`, each family with its own options dataclass.

The one place protection names live. A family (`Kind`) declares its options as a configuration
dataclass (read by `obscura.config`, so options are checked like every other setting) and how to
build the image transform from them; `get` resolves a spec to a `Protection`, an sRGB uint8
H x W x 3 -> H x W x 3 transform that `evaluate` judges like any other method.
"""

from __future__ import annotations

import json

from obscura import config
from obscura.digest import bytes_sha256
from obscura.errors import ObscuraError
from protect import deface_faces, face_encryption, feature_cloaks, p3_mask
from protect.protection import Kind, Protection

# Each family module defines its Kind(s); they are gathered here (the one place names live).
KINDS: dict[str, Kind] = {**face_encryption.KINDS, **feature_cloaks.KINDS, **p3_mask.KINDS, **deface_faces.KINDS}


def names() -> list[str]:
    """The protection family names accepted by --method."""
    return sorted(KINDS)


def split_spec(spec: str) -> tuple[str, list[str]]:
    """`pgd:epsilon=0.0157,steps=10` -> ("pgd", ["epsilon=0.0157", "steps=10"])."""
    name, _, options = spec.partition(":")
    return name, [item for item in options.split(",") if item]


def is_protection(spec: str) -> bool:
    """True when the spec names a protection family."""
    return split_spec(spec)[0] in KINDS


def get(spec: str, overrides: list[str] | None = None) -> Protection:
    """Resolve a spec (plus `key=value` overrides, e.g. from --set) to a Protection; bad options are one line."""
    name, items = split_spec(spec)
    if name not in KINDS:
        raise ObscuraError(f"--method {spec!r}: unknown protection (expected one of: {', '.join(names())})")
    kind = KINDS[name]
    try:
        options = config.load(kind.options, overrides=config.parse_overrides(items + list(overrides or [])))
    except ObscuraError as err:
        raise ObscuraError(f"--method {spec!r}: {err}") from None
    resolved = config.to_dict(options)
    digest = bytes_sha256(json.dumps(resolved, sort_keys=True).encode())[:12]
    text = ", ".join(f"{k}={v}" for k, v in resolved.items())
    per_user = kind.per_user(options) if kind.per_user else None
    return Protection(spec, kind.build(options), options, f"{name}-{digest}", f"{kind.description} ({text})", per_user)
