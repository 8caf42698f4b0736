"""Configuration of a stage-II run (read by obscura.config: unknown keys, wrong types and out-of-range values are refused).

Ranges and choices are declared on the fields; `validate` checks what spans several fields or needs
files (the stage-I result, the domain file), so a bad configuration fails before any image is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from anonymizer import runs
from anonymizer.training_runtime import LoopConfig
from obscura import config
from obscura.config import bounded
from obscura.errors import ObscuraError


@dataclass
class DataConfig:
    """Which faces: the stage-I run's training identities of a face set, centre-cropped like stage I."""

    root: str = ""  # "" : the stage-I run's data.root (a folder, or a name under the shared data folder)
    max_identities: int = bounded(
        0, ge=0
    )  # 0: every training identity (a positive number keeps the first ones, for tests)
    max_images_per_identity: int = bounded(0, ge=0)  # 0: all
    domain_file: str = ""  # "" : one domain; else lines "<identity> <domain index>" covering the training identities


@dataclass
class ModelConfig:
    """StarGAN-v2 sizes (the reference at 256 px: dim_in 64, max_conv_dim 512, mapping_dim 512, style 64, latent 16)."""

    img_size: int = 256  # generator resolution; crops of the stage-I size are resized to it when they differ
    num_domains: int = bounded(1, ge=1)
    style_dim: int = bounded(64, ge=1)
    latent_dim: int = bounded(16, ge=1)
    dim_in: int = bounded(64, ge=1)  # stem width of generator, style encoder and discriminator
    max_conv_dim: int = 512
    mapping_dim: int = bounded(512, ge=1)
    w_hpf: float = bounded(1.0, gt=0)  # high-pass skip weight (> 0: the heatmap-masked skips are the point of stage II)


@dataclass
class LossConfig:
    """Loss weights (StarGAN-v2's CelebA-HQ values for its own terms)."""

    style: float = bounded(1.0, ge=0)
    diversity: float = bounded(1.0, ge=0)  # initial weight; decays linearly to 0 over train.ds_decay_steps
    cycle: float = bounded(1.0, ge=0)
    cycle_target: Literal["capture", "clean"] = "capture"  # capture: the reference
    heatmap: float = bounded(10.0, ge=0)
    heatmap_through_camera: bool = True  # image the output through the stage-I camera before the regressor
    identity: float = bounded(1.0, ge=0)
    identity_margin: float = bounded(0.3, ge=-1, lt=1)  # cosine similarity to the source above this is penalised
    # "": the stage-I adversary's embedder (trained mostly on captures); else a clean-face recogniser,
    # the attacker.pt of `simulate.py attack-optic --set clean_fraction=1` on the stage-I training identities
    identity_embedder: str = ""


@dataclass
class TrainConfig(LoopConfig):
    """The StarGAN-v2 loop: per step two discriminator updates (latent, reference) and two generator updates."""

    steps: int = bounded(100_000, ge=1)
    batch_size: int = bounded(8, ge=1)
    checkpoint_every: int = bounded(1000, ge=1)
    lr: float = bounded(1e-4, gt=0)  # generator, style encoder, discriminator
    lr_mapping: float = bounded(1e-6, gt=0)
    beta1: float = bounded(0.0, ge=0, lt=1)
    beta2: float = bounded(0.99, ge=0, lt=1)
    weight_decay: float = bounded(1e-4, ge=0)
    ema_beta: float = bounded(0.999, ge=0, lt=1)
    # > 0: the EMA's beta at step t is min(ema_beta, (1 + t) / (ema_warmup + t)), so a short run's
    # average forgets the random initial weights (0.999^1500 still keeps 22 % of them); 0: plain ema_beta
    ema_warmup: float = bounded(0.0, ge=1, also=(0,))
    r1_gamma: float = bounded(1.0, ge=0)
    ds_decay_steps: int = bounded(100_000, ge=0)  # 0: the diversity weight stays constant
    sample_every: int = bounded(1000, ge=1)
    samples: int = bounded(4, ge=1)  # faces per sample grid
    # "": random initial networks; else a checkpoint (OUT/checkpoints/ckpt-*.pt) of a run with the
    # same model section whose networks and EMA start this one (fresh optimisers, step 0), e.g. to
    # carry an anonymizer over to a new stage-I optic instead of training it from scratch
    init: str = ""


@dataclass
class Stage2Config:
    """Everything that decides a stage-II run; written resolved next to its outputs."""

    stage1: str = runs.STAGE1_WEIGHTS  # a stage-I output folder, or "weights": the committed weights/ folder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def validate(cfg: Stage2Config) -> None:
    """Refuse settings that contradict each other or name missing files, naming the key (reads no face data)."""
    config.check(cfg)
    d, m, lo, t = cfg.data, cfg.model, cfg.loss, cfg.train
    s = m.img_size
    if s < 64 or s & (s - 1):
        raise ObscuraError(
            f"config key 'model.img_size' is {s}; expected a power of two >= 64 (128 on a CPU, 256 as the reference)"
        )
    if m.max_conv_dim < m.dim_in:
        raise ObscuraError(
            f"config key 'model.max_conv_dim' is {m.max_conv_dim!r}; expected >= model.dim_in = {m.dim_in}"
        )
    if lo.identity_embedder and not Path(lo.identity_embedder).is_file():
        raise ObscuraError(
            f"config key 'loss.identity_embedder' is {lo.identity_embedder!r}: no such file "
            "(expected an attacker.pt of `simulate.py attack-optic`, or '' for the stage-I adversary)"
        )
    if t.init and not Path(t.init).is_file():
        raise ObscuraError(
            f"config key 'train.init' is {t.init!r}: no such file (expected a stage-II checkpoint, OUT/checkpoints/ckpt-*.pt)"
        )
    if m.num_domains > 1 and not d.domain_file:
        raise ObscuraError(
            f"config key 'data.domain_file' is empty but model.num_domains is {m.num_domains}; "
            "expected a file of '<identity> <domain index>' lines"
        )
    if d.domain_file and not Path(d.domain_file).is_file():
        raise ObscuraError(f"config key 'data.domain_file' is {d.domain_file!r}: no such file")
    runs.require_stage1(cfg.stage1, (*runs.STAGE2_NEEDS, runs.CONFIG), f"config key 'stage1' is {cfg.stage1!r}")
