"""Configuration of a stage-I run (read by obscura.config; unknown keys and wrong types are refused).

`validate` checks everything that does not need data (value ranges, the optic's physics by
building the camera) so that a bad configuration fails before any image is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from obscura import config
from obscura.errors import ObscuraError
from optics.presets import preset_config
from optics.settings import CameraConfig


def _default_camera() -> CameraConfig:
    """The 'zernike-random' preset (300 Noll terms), with a 128 px PSF window for 128 px scenes and fresh noise."""
    cfg = preset_config("zernike-random", seed=0)
    cfg.optic.psf_size = 128
    return cfg


@dataclass
class DataConfig:
    """Where the faces come from and how they are split by identity (never by image)."""

    root: str = "celeba-crops"  # a folder, or a name under the shared data folder
    split_fractions: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "val": 0.1, "test": 0.3})
    split_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"  # held-out identities for the final landmark NME ("" to skip)
    val_images: int = 64
    min_images: int = 2
    max_identities: int = 0  # 0: every training identity (a positive number keeps the first ones, for tests)
    max_images_per_identity: int = 0  # 0: all
    image_size: int = 128  # centre crop side; cropping (not resizing) keeps the optic's pixel scale
    cache_dir: str = ""  # "" : evaluation's default cache ($OBSCURA_CACHE/evaluation)


@dataclass
class RegressorConfig:
    """HeatmapRegressor shape and its targets."""

    base_channels: int = 32
    depth: int = 4
    stride: int = 4
    max_channels: int = 256
    heatmap_sigma_px: float = 1.5  # in heatmap pixels
    boundary_sigma_px: float = 1.0
    foreground_weight: float = 10.0


@dataclass
class AdversaryConfig:
    """The identity adversary (IResNet + ArcFace) trained on captures of the training identities."""

    width: int = 32
    blocks: int = 1
    embedding_dim: int = 128
    arcface_scale: float = 32.0
    arcface_margin: float = 0.5
    lr: float = 1e-3
    steps_per_step: int = 1  # adversary updates per optic/regressor update
    clean_fraction: float = 0.25  # share of each adversary batch shown clean, so it learns faces, not only blur
    # "": a fresh network; else a recogniser of the same training identities to start from (an
    # attacker.pt of `simulate.py attack-optic`, e.g. a clean-face one): an opponent that already
    # recognises people, so the optic must hide what a competent recogniser reads
    init: str = ""
    input_px: int = 0  # > 0: the adversary resizes every capture to input_px x input_px first (must match init's)


@dataclass
class TrainConfig:
    """The min-max loop."""

    steps: int = 2000
    batch_size: int = 16
    lr_optic: float = 1e-3
    lr_regressor: float = 1e-3
    lambda_priv: float = 1.0
    warmup_steps: int = 200  # optic frozen (no privacy term) while the regressor and adversary learn on the initial optic
    quality_weight: float = 0.0  # optional L1 between the sRGB capture and the clean image
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True


@dataclass
class Stage1Config:
    """Everything that decides a stage-I run; written resolved next to its outputs."""

    data: DataConfig = field(default_factory=DataConfig)
    camera: CameraConfig = field(default_factory=_default_camera)
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Stage1Config:
    """Defaults, then the file, then `key.sub=value` overrides, merged key by key.

    Merging onto the full default tree (rather than building each given section from its
    dataclass defaults) keeps e.g. the default Zernike mask when a file only sets camera.optic.psf_size.
    Unknown keys and wrong types still fail, naming the key.
    """
    data = config.to_dict(Stage1Config())
    if path is not None:
        _merge(data, config.read_file(path))
    for dotted, value in (overrides or {}).items():
        config.set_dotted(data, dotted, value)
    return config.from_dict(Stage1Config, data, where=f"{path}: " if path is not None else "")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Recursively overwrite `base` with `update` (sections merge, anything else replaces).

    `split_fractions` is a mapping-valued setting (one whole partition), so it replaces too.
    """
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key != "split_fractions":
            _merge(base[key], value)
        else:
            base[key] = value


def _at_least(key: str, value: float, minimum: float) -> None:
    """One-line error unless value >= minimum."""
    if value < minimum:
        raise ObscuraError(f"config key '{key}' is {value!r}; expected >= {minimum}")


def validate(cfg: Stage1Config) -> None:
    """Refuse impossible settings, naming the key; builds the camera once to check the optic's physics."""
    from anonymizer.nets.regressor import HeatmapRegressor
    from optics.camera import Camera
    from optics.optic import Optic
    from optics.sensor import Sensor

    d, r, a, t = cfg.data, cfg.regressor, cfg.adversary, cfg.train
    _at_least("data.min_images", d.min_images, 2)
    _at_least("data.max_identities", d.max_identities, 0)
    _at_least("data.val_images", d.val_images, 0)
    if d.val_split and d.val_split not in d.split_fractions:
        raise ObscuraError(f"config key 'data.val_split' is {d.val_split!r}; expected '' or one of {sorted(d.split_fractions)}")
    _at_least("data.max_images_per_identity", d.max_images_per_identity, 0)
    if d.train_split not in d.split_fractions:
        raise ObscuraError(f"config key 'data.train_split' is {d.train_split!r}; expected one of {sorted(d.split_fractions)}")
    if d.image_size < 2**r.depth or d.image_size % 2**r.depth:
        raise ObscuraError(f"config key 'data.image_size' is {d.image_size}; expected a multiple of 2^regressor.depth = {2**r.depth}")
    for key, value in (("regressor.base_channels", r.base_channels), ("regressor.depth", r.depth), ("adversary.width", a.width),
                       ("adversary.blocks", a.blocks), ("adversary.embedding_dim", a.embedding_dim), ("train.steps", t.steps),
                       ("train.batch_size", t.batch_size), ("train.checkpoint_every", t.checkpoint_every),
                       ("train.log_every", t.log_every), ("adversary.steps_per_step", a.steps_per_step)):
        _at_least(key, value, 1)
    for key, value in (("regressor.heatmap_sigma_px", r.heatmap_sigma_px), ("regressor.boundary_sigma_px", r.boundary_sigma_px),
                       ("train.lr_optic", t.lr_optic), ("train.lr_regressor", t.lr_regressor), ("adversary.lr", a.lr),
                       ("adversary.arcface_scale", a.arcface_scale)):
        if not value > 0:
            raise ObscuraError(f"config key '{key}' is {value!r}; expected > 0")
    for key, value in (("train.lambda_priv", t.lambda_priv), ("train.quality_weight", t.quality_weight),
                       ("train.warmup_steps", t.warmup_steps), ("train.workers", t.workers),
                       ("train.threads", t.threads), ("regressor.foreground_weight", r.foreground_weight)):
        _at_least(key, value, 0)
    if not 0 <= a.arcface_margin < 1.5:
        raise ObscuraError(f"config key 'adversary.arcface_margin' is {a.arcface_margin!r}; expected a margin in [0, 1.5) rad")
    if a.init and not Path(a.init).is_file():
        raise ObscuraError(f"config key 'adversary.init' is {a.init!r}; expected '' or an attacker.pt / adversary.pt file")
    if a.input_px != 0 and a.input_px < 16:
        raise ObscuraError(f"config key 'adversary.input_px' is {a.input_px!r}; expected 0 (the capture's size) or >= 16")
    if not 0 <= a.clean_fraction < 1:
        raise ObscuraError(f"config key 'adversary.clean_fraction' is {a.clean_fraction!r}; expected a share in [0, 1)")
    if t.device != "auto" and not (t.device == "cpu" or t.device.startswith("cuda")):
        raise ObscuraError(f"config key 'train.device' is {t.device!r}; expected auto, cpu, cuda or cuda:N")
    try:
        HeatmapRegressor(r.base_channels, r.depth, r.stride, r.max_channels)
    except ValueError as err:
        raise ObscuraError(f"config key 'regressor.stride': {err}") from None
    if cfg.camera.optic.mask.kind == "none":
        raise ObscuraError("config key 'camera.optic.mask.kind' is 'none'; stage I learns a phase mask: expected 'zernike' or 'freeform'")
    try:
        Camera(Optic(cfg.camera.optic), Sensor(cfg.camera.sensor))
    except ObscuraError as err:
        raise ObscuraError(f"config section 'camera': {err}") from None
