"""Configuration of a stage-I run (read by obscura.config: unknown keys, wrong types and out-of-range values are refused).

Ranges are declared on the fields; `validate` checks what spans several fields or needs building
(the optic's physics, the regressor's shape), so a bad configuration fails before any image is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anonymizer.nets.regressor import HeatmapRegressor
from anonymizer.training_runtime import LoopConfig
from obscura import config
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.camera import Camera
from optics.optic import Optic
from optics.presets import preset_config
from optics.sensor import Sensor
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
    val_images: int = bounded(64, ge=0)
    min_images: int = bounded(2, ge=2)
    max_identities: int = bounded(
        0, ge=0
    )  # 0: every training identity (a positive number keeps the first ones, for tests)
    max_images_per_identity: int = bounded(0, ge=0)  # 0: all
    image_size: int = 128  # centre crop side; cropping (not resizing) keeps the optic's pixel scale
    # faces that move (faces.moved_faces): each training face under a fresh random similarity
    # transform and mirror, each validation face under its fixed one; False: the aligned crops
    moved: bool = True
    motion_seed: int = 0  # the seed of the held-out faces' fixed motions
    cache_dir: str = ""  # "" : evaluation's default cache ($OBSCURA_CACHE/evaluation)


@dataclass
class RegressorConfig:
    """HeatmapRegressor shape and its targets."""

    base_channels: int = bounded(32, ge=1)
    depth: int = bounded(4, ge=1)
    stride: int = 4
    max_channels: int = 256
    heatmap_sigma_px: float = bounded(1.5, gt=0)  # in heatmap pixels
    boundary_sigma_px: float = bounded(1.0, gt=0)
    foreground_weight: float = bounded(10.0, ge=0)
    # "": a fresh regressor; else a regressor file of this shape and crop size to start from (a judge_regressor.pt
    # of `judge-landmarks` on clean moved faces: a regressor that already finds faces before it reads captures)
    init: str = ""


@dataclass
class AdversaryConfig:
    """The identity adversary (IResNet + ArcFace) trained on captures of the training identities."""

    width: int = bounded(32, ge=1)
    blocks: int = bounded(1, ge=1)
    embedding_dim: int = bounded(128, ge=1)
    arcface_scale: float = bounded(32.0, gt=0)
    arcface_margin: float = bounded(0.5, ge=0, lt=1.5)  # radians
    lr: float = bounded(1e-3, gt=0)
    steps_per_step: int = bounded(1, ge=1)  # adversary updates per optic/regressor update
    # share of each adversary batch shown clean, so it learns faces, not only blur
    clean_fraction: float = bounded(0.25, ge=0, lt=1)
    # "": a fresh network; else a recogniser of the same training identities to start from (an
    # attacker.pt of `simulate.py attack-optic`, e.g. a clean-face one): an opponent that already
    # recognises people, so the optic must hide what a competent recogniser reads
    init: str = ""
    # > 0: the adversary resizes every capture to input_px x input_px first (must match init's); 0: the capture's size
    input_px: int = bounded(0, ge=16, also=(0,))


@dataclass
class RebuildConfig:
    """The reconstruction attacker inside the loop: least squares with the optic's own PSF, judged by the adversary.

    A capture that fools a recogniser but is inverted by least squares is not private. With
    `weight` > 0 each step rebuilds `images` captures of the batch (Tikhonov, the camera's exact
    zero-padded and cropped convolution, `iterations` conjugate-gradient steps differentiated
    through), the privacy term adds `weight` x the identity information of the rebuilt faces, and
    the adversary learns on them too: the optic must make its capture hard to invert, not only
    hard to read.
    """

    weight: float = bounded(0.0, ge=0)  # 0: off
    lam: float = bounded(1e-3, gt=0)  # the smoothness weight (evaluation's choice on training faces: 1e-3)
    iterations: int = bounded(20, ge=1)
    images: int = bounded(4, ge=1)  # rebuilt per batch (at most the batch)


@dataclass
class TrainConfig(LoopConfig):
    """The min-max loop: the shared loop settings plus the players' learning rates and the privacy weight."""

    lr_optic: float = bounded(1e-3, gt=0)
    lr_regressor: float = bounded(1e-3, gt=0)
    lambda_priv: float = bounded(1.0, ge=0)
    # optic frozen (no privacy term) while the regressor and adversary learn on the initial optic
    warmup_steps: int = bounded(200, ge=0)
    quality_weight: float = bounded(0.0, ge=0)  # optional L1 between the sRGB capture and the clean image


@dataclass
class Stage1Config:
    """Everything that decides a stage-I run; written resolved next to its outputs."""

    data: DataConfig = field(default_factory=DataConfig)
    camera: CameraConfig = field(default_factory=_default_camera)
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    rebuild: RebuildConfig = field(default_factory=RebuildConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validate(cfg: Stage1Config) -> None:
    """Refuse settings that contradict each other, naming the key; builds the camera once to check the optic's physics."""
    config.check(cfg)
    d, r, a = cfg.data, cfg.regressor, cfg.adversary
    if d.val_split and d.val_split not in d.split_fractions:
        raise ObscuraError(
            f"config key 'data.val_split' is {d.val_split!r}; expected '' or one of {sorted(d.split_fractions)}"
        )
    if d.train_split not in d.split_fractions:
        raise ObscuraError(
            f"config key 'data.train_split' is {d.train_split!r}; expected one of {sorted(d.split_fractions)}"
        )
    if d.image_size < 2**r.depth or d.image_size % 2**r.depth:
        raise ObscuraError(
            f"config key 'data.image_size' is {d.image_size}; expected a multiple of 2^regressor.depth = {2**r.depth}"
        )
    if a.init and not Path(a.init).is_file():
        raise ObscuraError(
            f"config key 'adversary.init' is {a.init!r}; expected '' or an attacker.pt / adversary.pt file"
        )
    if r.init and not Path(r.init).is_file():
        raise ObscuraError(f"config key 'regressor.init' is {r.init!r}; expected '' or a regressor file")
    try:
        HeatmapRegressor(r.base_channels, r.depth, r.stride, r.max_channels)
    except ValueError as err:
        raise ObscuraError(f"config key 'regressor.stride': {err}") from None
    if cfg.camera.optic.mask.kind == "none":
        raise ObscuraError(
            "config key 'camera.optic.mask.kind' is 'none'; stage I learns a phase mask: expected 'zernike' or 'freeform'"
        )
    try:
        Camera(Optic(cfg.camera.optic), Sensor(cfg.camera.sensor))
    except ObscuraError as err:
        raise ObscuraError(f"config section 'camera': {err}") from None
