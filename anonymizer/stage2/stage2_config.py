"""Configuration of a stage-II run (read by obscura.config; unknown keys and wrong types are refused).

`validate` checks everything that does not need face data (value ranges, the stage-I files
being there, the networks being buildable) so that a bad configuration fails before any image is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from obscura import config
from obscura.errors import ObscuraError

STAGE1_WEIGHTS = "weights"  # the value of `stage1` that means the committed weights/ folder
STAGE1_FILES = ("optic.npz", "regressor.pt", "adversary.pt", "splits/train.txt")
CYCLE_TARGETS = ("capture", "clean")


@dataclass
class DataConfig:
    """Which faces: the stage-I run's training identities of a face set, centre-cropped like stage I."""

    root: str = ""  # "" : the stage-I run's data.root (a folder, or a name under the shared data folder)
    max_identities: int = 0  # 0: every training identity (a positive number keeps the first ones, for tests)
    max_images_per_identity: int = 0  # 0: all
    domain_file: str = ""  # "" : one domain; else lines "<identity> <domain index>" covering the training identities


@dataclass
class ModelConfig:
    """StarGAN-v2 sizes (the reference at 256 px: dim_in 64, max_conv_dim 512, mapping_dim 512, style 64, latent 16)."""

    img_size: int = 256  # generator resolution; crops of the stage-I size are resized to it when they differ
    num_domains: int = 1
    style_dim: int = 64
    latent_dim: int = 16
    dim_in: int = 64  # stem width of generator, style encoder and discriminator
    max_conv_dim: int = 512
    mapping_dim: int = 512
    w_hpf: float = 1.0  # high-pass skip weight (> 0: the heatmap-masked skips are the point of stage II)


@dataclass
class LossConfig:
    """Loss weights (StarGAN-v2's CelebA-HQ values for its own terms)."""

    style: float = 1.0
    diversity: float = 1.0  # initial weight; decays linearly to 0 over train.ds_decay_steps
    cycle: float = 1.0
    cycle_target: str = "capture"  # capture (the reference) | clean
    heatmap: float = 10.0
    heatmap_through_camera: bool = True  # image the output through the stage-I camera before the regressor
    identity: float = 1.0
    identity_margin: float = 0.3  # cosine similarity to the source above this is penalised
    # "": the stage-I adversary's embedder (trained mostly on captures); else a clean-face recogniser,
    # the attacker.pt of `simulate.py attack-optic --set clean_fraction=1` on the stage-I training identities
    identity_embedder: str = ""


@dataclass
class TrainConfig:
    """The StarGAN-v2 loop: per step two discriminator updates (latent, reference) and two generator updates."""

    steps: int = 100_000
    batch_size: int = 8
    lr: float = 1e-4  # generator, style encoder, discriminator
    lr_mapping: float = 1e-6
    beta1: float = 0.0
    beta2: float = 0.99
    weight_decay: float = 1e-4
    ema_beta: float = 0.999
    # > 0: the EMA's beta at step t is min(ema_beta, (1 + t) / (ema_warmup + t)), so a short run's
    # average forgets the random initial weights (0.999^1500 still keeps 22 % of them); 0: plain ema_beta
    ema_warmup: float = 0.0
    r1_gamma: float = 1.0
    ds_decay_steps: int = 100_000  # 0: the diversity weight stays constant
    checkpoint_every: int = 1000
    log_every: int = 10
    sample_every: int = 1000
    samples: int = 4  # faces per sample grid
    seed: int = 0
    workers: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True
    # "": random initial networks; else a checkpoint (OUT/checkpoints/ckpt-*.pt) of a run with the
    # same model section whose networks and EMA start this one (fresh optimisers, step 0), e.g. to
    # carry an anonymizer over to a new stage-I optic instead of training it from scratch
    init: str = ""


@dataclass
class Stage2Config:
    """Everything that decides a stage-II run; written resolved next to its outputs."""

    stage1: str = STAGE1_WEIGHTS  # a stage-I output folder, or "weights": the committed weights/ folder
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Stage2Config:
    """Defaults, then the file, then `key.sub=value` overrides, merged key by key."""
    from anonymizer.stage1.stage1_config import _merge

    data = config.to_dict(Stage2Config())
    if path is not None:
        _merge(data, config.read_file(path))
    for dotted, value in (overrides or {}).items():
        config.set_dotted(data, dotted, value)
    return config.from_dict(Stage2Config, data, where=f"{path}: " if path is not None else "")


def stage1_folder(spec: str) -> Path:
    """The folder `stage1` names: the committed weights/ for "weights", else the path itself."""
    from obscura.paths import WEIGHTS_DIR

    return WEIGHTS_DIR if spec == STAGE1_WEIGHTS else Path(spec).expanduser()


def stage1_config_file(folder: Path) -> Path:
    """The stage-I resolved config in a run folder (config.yaml) or in weights/ (stage1_config.yaml)."""
    run = folder / "config.yaml"
    return run if run.is_file() else folder / "stage1_config.yaml"


def _at_least(key: str, value: float, minimum: float) -> None:
    """One-line error unless value >= minimum."""
    if value < minimum:
        raise ObscuraError(f"config key '{key}' is {value!r}; expected >= {minimum}")


def _share(key: str, value: float) -> None:
    """One-line error unless 0 <= value < 1."""
    if not 0 <= value < 1:
        raise ObscuraError(f"config key '{key}' is {value!r}; expected a value in [0, 1)")


def validate(cfg: Stage2Config) -> None:
    """Refuse impossible settings, naming the key; checks the stage-I files exist (reads no face data)."""
    d, m, lo, t = cfg.data, cfg.model, cfg.loss, cfg.train
    s = m.img_size
    if s < 64 or s & (s - 1):
        raise ObscuraError(f"config key 'model.img_size' is {s}; expected a power of two >= 64 (128 on a CPU, 256 as the reference)")
    for key, value in (("model.num_domains", m.num_domains), ("model.style_dim", m.style_dim), ("model.latent_dim", m.latent_dim),
                       ("model.dim_in", m.dim_in), ("model.mapping_dim", m.mapping_dim), ("train.steps", t.steps),
                       ("train.batch_size", t.batch_size), ("train.checkpoint_every", t.checkpoint_every),
                       ("train.log_every", t.log_every), ("train.sample_every", t.sample_every), ("train.samples", t.samples)):
        _at_least(key, value, 1)
    _at_least("model.max_conv_dim", m.max_conv_dim, m.dim_in)
    for key, value in (("data.max_identities", d.max_identities), ("data.max_images_per_identity", d.max_images_per_identity),
                       ("loss.style", lo.style), ("loss.diversity", lo.diversity), ("loss.cycle", lo.cycle),
                       ("loss.heatmap", lo.heatmap), ("loss.identity", lo.identity), ("train.weight_decay", t.weight_decay),
                       ("train.r1_gamma", t.r1_gamma), ("train.ds_decay_steps", t.ds_decay_steps),
                       ("train.workers", t.workers), ("train.threads", t.threads)):
        _at_least(key, value, 0)
    if t.ema_warmup < 0 or 0 < t.ema_warmup < 1:
        raise ObscuraError(f"config key 'train.ema_warmup' is {t.ema_warmup!r}; expected 0 (off) or >= 1")
    for key, value in (("model.w_hpf", m.w_hpf), ("train.lr", t.lr), ("train.lr_mapping", t.lr_mapping)):
        if not value > 0:
            raise ObscuraError(f"config key '{key}' is {value!r}; expected > 0")
    for key, value in (("train.beta1", t.beta1), ("train.beta2", t.beta2), ("train.ema_beta", t.ema_beta)):
        _share(key, value)
    if not -1 <= lo.identity_margin < 1:
        raise ObscuraError(f"config key 'loss.identity_margin' is {lo.identity_margin!r}; expected a cosine in [-1, 1)")
    if lo.identity_embedder and not Path(lo.identity_embedder).is_file():
        raise ObscuraError(f"config key 'loss.identity_embedder' is {lo.identity_embedder!r}: no such file "
                           "(expected an attacker.pt of `simulate.py attack-optic`, or '' for the stage-I adversary)")
    if t.init and not Path(t.init).is_file():
        raise ObscuraError(f"config key 'train.init' is {t.init!r}: no such file (expected a stage-II checkpoint, OUT/checkpoints/ckpt-*.pt)")
    if lo.cycle_target not in CYCLE_TARGETS:
        raise ObscuraError(f"config key 'loss.cycle_target' is {lo.cycle_target!r}; expected one of {list(CYCLE_TARGETS)}")
    if t.device != "auto" and not (t.device == "cpu" or t.device.startswith("cuda")):
        raise ObscuraError(f"config key 'train.device' is {t.device!r}; expected auto, cpu, cuda or cuda:N")
    if m.num_domains > 1 and not d.domain_file:
        raise ObscuraError(f"config key 'data.domain_file' is empty but model.num_domains is {m.num_domains}; "
                           "expected a file of '<identity> <domain index>' lines")
    if d.domain_file and not Path(d.domain_file).is_file():
        raise ObscuraError(f"config key 'data.domain_file' is {d.domain_file!r}: no such file")
    folder = stage1_folder(cfg.stage1)
    if not folder.is_dir():
        raise ObscuraError(f"config key 'stage1' is {cfg.stage1!r}: {folder} is not a folder (expected a stage-I output folder or 'weights')")
    for name in STAGE1_FILES:
        if not (folder / name).is_file():
            raise ObscuraError(f"config key 'stage1' is {cfg.stage1!r}: {folder / name} not found "
                               f"(a stage-I result needs {', '.join(STAGE1_FILES)})")
    if not stage1_config_file(folder).is_file():
        raise ObscuraError(f"config key 'stage1' is {cfg.stage1!r}: neither config.yaml nor stage1_config.yaml in {folder}")
