"""The saved-optic file: one .npz with the trainable arrays, the mask's height map and a JSON
string of every parameter (CameraConfig). Written atomically; anything else is refused.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from obscura import atomic, config
from obscura.errors import ObscuraError
from optics.camera import Camera
from optics.optic import Optic
from optics.settings import CameraConfig, SensorConfig

FORMAT = "obscura-optic"
OPTIC_FILE = "optic.npz"  # the optic's name in a stage-I run folder and in weights/
VERSION = 1
_PARAM = "param/"


@dataclass
class OpticFile:
    """The contents of a saved optic: its configuration and its trainable arrays by name."""

    config: CameraConfig
    params: dict[str, np.ndarray]


def save_optic(path: str | Path, camera_or_optic: torch.nn.Module) -> Path:
    """Write a Camera's or an Optic's parameters and configuration to `path` (.npz), atomically."""

    optic = camera_or_optic.optic if isinstance(camera_or_optic, Camera) else camera_or_optic
    sensor_cfg = camera_or_optic.sensor.config if isinstance(camera_or_optic, Camera) else SensorConfig()
    cfg = CameraConfig(optic=optic.config, sensor=sensor_cfg)
    arrays = {f"{_PARAM}{name}": p.detach().cpu().double().numpy() for name, p in optic.named_parameters()}
    if optic.mask is not None:
        with torch.no_grad():
            arrays["height_m"] = optic.mask.height_m().detach().cpu().double().numpy()
    arrays["pupil_pitch_m"] = np.array(optic.pupil_pitch_m)
    meta = {"format": FORMAT, "version": VERSION, "config": strict_json(config.to_dict(cfg))}
    arrays["meta_json"] = np.array(json.dumps(meta))
    path = Path(path)
    if path.suffix != ".npz":
        raise ObscuraError(f"optic file {path} must end in .npz")
    with atomic.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def read_optic(path: str | Path) -> OpticFile:
    """Read and check a saved optic; a missing, corrupt or foreign file raises ObscuraError."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise ObscuraError(
            f"optic file {path} is not an .npz file; expected a saved optic (.npz written by save_optic), "
            "not a PSF or image"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta_json"]))
            params = {k[len(_PARAM) :]: data[k] for k in data.files if k.startswith(_PARAM)}
    except FileNotFoundError:
        raise ObscuraError(f"optic file {path} does not exist") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        raise ObscuraError(
            f"optic file {path} is not a readable Obscura optic file (an .npz archive written by save_optic)"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ObscuraError(
            f"optic file {path}: format is {meta.get('format') if isinstance(meta, dict) else meta!r}; expected {FORMAT!r}"
        )
    if meta.get("version") != VERSION:
        raise ObscuraError(f"optic file {path}: version is {meta.get('version')!r}; expected {VERSION}")
    cfg = config.from_dict(CameraConfig, _restore_inf(meta.get("config")), where=f"{path}: ")
    return OpticFile(cfg, params)


def load_params(optic: torch.nn.Module, params: dict[str, np.ndarray], source: str) -> None:
    """Copy saved arrays into an optic, refusing missing, extra or mis-shaped ones."""
    own = dict(optic.named_parameters())
    if set(own) != set(params):
        raise ObscuraError(
            f"optic file {source}: parameters {sorted(params)} do not match the configured optic's {sorted(own)}"
        )
    with torch.no_grad():
        for name, p in own.items():
            if tuple(params[name].shape) != tuple(p.shape):
                raise ObscuraError(
                    f"optic file {source}: parameter {name} has shape {params[name].shape}; expected {tuple(p.shape)}"
                )
            if not np.all(np.isfinite(params[name])):
                raise ObscuraError(f"optic file {source}: parameter {name} holds NaN or infinite values")
            p.copy_(torch.from_numpy(params[name]).to(p))


def load_optic(path: str | Path):
    """Rebuild the saved Optic (configuration and parameters)."""

    saved = read_optic(path)
    optic = Optic(saved.config.optic)
    load_params(optic, saved.params, str(path))
    return optic


def strict_json(value):
    """Replace infinite floats (an object at infinity) by the string "inf": strict JSON has no Infinity."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _restore_inf(value):
    """Undo strict_json for the configuration (older writers may have stored Infinity)."""
    if isinstance(value, dict):
        return {k: _restore_inf(v) for k, v in value.items()}
    if isinstance(value, str) and value in ("inf", "Infinity"):
        return math.inf
    return value
