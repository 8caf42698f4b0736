"""Named cameras: 'lens', 'defocus', 'zernike-random', or a saved optic file.

Scene pixels map 1:1 onto sensor pixels (3.713 um), so a capture has its scene's size.

* lens: ideal achromatic thin lens, f = 50 mm, D = 4 mm (f/12.5), object at infinity, sensor at
  50 mm: in focus; Airy first-dark-ring radius 1.22 lambda N = 6.7 / 8.4 / 9.8 um
  (1.8 / 2.3 / 2.6 px) at 440 / 550 / 640 nm.
* defocus: the reference geometry: fused-silica thin lens, f = 49.5 mm at 550 nm, sensor at
  50 mm, point source at 0.75 m. Geometric blur-circle diameters D z |1/s_o - 1/f + 1/z| =
  68.6 / 60.9 / 45.8 px (R / G / B centre wavelengths 640 / 550 / 440 nm).
* zernike-random: the 'lens' geometry plus a seeded random Zernike mask (300 Noll terms, the
  first three fixed at 0, 1 um RMS height of fused silica, coefficient spread (n+1)^-3 over the
  radial order n); with seed 0 about 80 % of the light falls within ~18 px of the centre.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from obscura import config
from obscura.errors import ObscuraError
from optics.camera import Camera
from optics.optic import Optic
from optics.optic_file import load_params, read_optic
from optics.sensor import Sensor
from optics.settings import (
    CameraConfig,
    LensConfig,
    MaskConfig,
    OpticConfig,
    SensorConfig,
)

PRESETS = ("lens", "defocus", "zernike-random")


def preset_config(name: str, seed: int = 0) -> CameraConfig:
    """The CameraConfig of a named preset."""
    if name == "lens":
        return CameraConfig()
    if name == "defocus":
        lens = LensConfig(focal_length_m=0.0495, material="fused_silica", design_wavelength_m=550e-9)
        return CameraConfig(optic=OpticConfig(lens=lens, object_distance_m=0.75))
    if name == "zernike-random":
        mask = MaskConfig(kind="zernike", num_terms=300, fixed_zero_terms=3, init_rms_height_m=1e-6, seed=seed)
        return CameraConfig(optic=OpticConfig(mask=mask))
    raise ObscuraError(_unknown_spec(name))


def _unknown_spec(spec: str) -> str:
    """The one-line error for a spec that is neither a preset nor an optic file."""
    return f"optic spec is {spec!r}; expected one of {', '.join(PRESETS)} or a saved optic file (.npz)"


def apply_overrides(cfg: CameraConfig, overrides: dict[str, Any]) -> CameraConfig:
    """Apply overrides given as 'optic.lens.focal_length_m', 'optic__psf_size' or a bare field name."""
    data = config.to_dict(cfg)
    optic_fields = {f.name for f in dataclasses.fields(OpticConfig)}
    sensor_fields = {f.name for f in dataclasses.fields(SensorConfig)}
    for key, value in overrides.items():
        key = key.replace("__", ".")
        if "." not in key and key in optic_fields:
            key = f"optic.{key}"
        elif "." not in key and key in sensor_fields:
            key = f"sensor.{key}"
        config.merge(CameraConfig, data, config.nested(key, value))
    return config.from_dict(CameraConfig, data, where="camera override: ")


def camera_from_spec(spec: str, *, seed: int = 0, **overrides: Any) -> Camera:
    """Build a Camera from a preset name or a saved optic file; `seed` seeds the mask and the noise.

    `noise_seed=None` in overrides gives fresh noise on every call (training); the default
    (the seed) repeats the same noise for the same input (evaluation).
    """
    noise_seed = overrides.pop("noise_seed", seed)
    if spec in PRESETS:
        cfg = apply_overrides(preset_config(spec, seed), overrides)
        params = None
    elif Path(spec).suffix == ".npz" or Path(spec).exists():
        saved = read_optic(spec)
        cfg = apply_overrides(saved.config, overrides)
        params = saved.params
    else:
        raise ObscuraError(_unknown_spec(spec))
    optic = Optic(cfg.optic)
    if params is not None:
        load_params(optic, params, spec)
    return Camera(optic, Sensor(cfg.sensor), noise_seed=noise_seed)


def camera_config(camera: Camera) -> CameraConfig:
    """The full configuration of a camera (for writing next to outputs)."""
    return CameraConfig(optic=camera.optic.config, sensor=camera.sensor.config)


__all__ = ["PRESETS", "apply_overrides", "camera_config", "camera_from_spec", "preset_config"]
