"""A stage-I or stage-II run's files: their names, where a run is, whether it is whole, their digests, and loading them.

A stage-I run folder holds config.yaml, optic.npz, regressor.pt, adversary.pt and splits/*.txt;
the committed weights/ folder holds the same with the config as stage1_config.yaml (and the
stage-II anonymizer.pt beside it). A stage-II run holds generator_ema.pt. The adversary files
(stage I's adversary.pt, the adaptive attacker's attacker.pt) hold an `Adversary` with one class
per training identity it learned, the identities' names in that order, and the size it resizes
faces to (`input_px`, 0: none); one place builds that shape and one reads it back, so stage I,
the adaptive attacker and stage II's identity term cannot disagree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anonymizer import checkpoint
from anonymizer.nets.adversary import Adversary, IResNet
from anonymizer.nets.regressor import HeatmapRegressor, load_regressor
from anonymizer.stage1.stage1_config import AdversaryConfig, Stage1Config
from faces.face_sets import read_split
from obscura import config, paths
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from optics.camera import Camera
from optics.optic_file import OPTIC_FILE
from optics.presets import camera_from_spec
from optics.srgb_capture import capture_srgb, psf_imaging

STAGE1_WEIGHTS = "weights"  # the run spec that means the committed weights/ folder
CONFIG = "config.yaml"  # a run's resolved config; in weights/ it is STAGE1_CONFIG / STAGE2_CONFIG
STAGE1_CONFIG = "stage1_config.yaml"
STAGE2_CONFIG = "stage2_config.yaml"
OPTIC = OPTIC_FILE
REGRESSOR = "regressor.pt"
ADVERSARY = "adversary.pt"
ATTACKER = "attacker.pt"
INHOUSE_RECOGNISER = "inhouse_recogniser_seed0.pt"  # in weights/: a clean-face recogniser of the training identities
INHOUSE_RECOGNISERS = (INHOUSE_RECOGNISER, "inhouse_recogniser_seed1.pt")  # in weights/: the same recipe, two seeds
SPLITS = "splits"
TRAIN_SPLIT = f"{SPLITS}/train.txt"
TEST_SPLIT = f"{SPLITS}/test.txt"
VAL_SPLIT = f"{SPLITS}/val.txt"  # identities in neither train nor test (stage I's landmark NME, ensemble choices)
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
GENERATOR_EMA = "generator_ema.pt"  # a stage-II run's inference networks
ANONYMIZER = "anonymizer.pt"  # the committed stage-II networks in weights/

# the stage-I files a stage-II anonymizer is trained on, recorded with their SHA-256 in what it writes
STAGE2_NEEDS = (OPTIC, REGRESSOR, ADVERSARY, TRAIN_SPLIT)
ADVERSARY_KINDS = ("obscura-stage1-adversary", "obscura-adaptive-attacker")


def stage1_folder(spec: str) -> Path:
    """The folder a stage-I spec names: the committed weights/ for "weights", else the path itself."""
    return paths.WEIGHTS_DIR if spec == STAGE1_WEIGHTS else Path(spec).expanduser()


def stage1_config_file(folder: Path) -> Path:
    """The stage-I resolved config in a run folder (config.yaml) or in weights/ (stage1_config.yaml)."""
    run = folder / CONFIG
    return run if run.is_file() else folder / STAGE1_CONFIG


def require_stage1(spec: str, names: tuple[str, ...], what: str) -> Path:
    """The stage-I folder `spec` names, with each of `names` (CONFIG: its resolved config) checked in order; one-line error for the first missing."""
    folder = stage1_folder(spec)
    for name in names:
        path = stage1_config_file(folder) if name == CONFIG else folder / name
        if not path.is_file():
            raise ObscuraError(
                f"{what}: {path} not found (expected a finished stage-I output folder, or 'weights', "
                f"with {', '.join(names)})"
            )
    return folder


def load_stage1_config(folder: Path) -> Stage1Config:
    """The resolved stage-I configuration of a run folder or of weights/."""
    return config.load(Stage1Config, stage1_config_file(folder))


def digests(folder: Path, names: tuple[str, ...] = STAGE2_NEEDS) -> dict[str, str]:
    """SHA-256 of each named file of a run: what a later stage records, and refuses when it changes."""
    return {name: file_sha256(folder / name) for name in names}


def changed_files(recorded: dict[str, str], folder: Path) -> list[str]:
    """The recorded files whose SHA-256 in `folder` differs (or which are gone)."""
    return [
        name
        for name, digest in recorded.items()
        if not (folder / name).is_file() or file_sha256(folder / name) != digest
    ]


def build_adversary(
    a: AdversaryConfig, num_classes: int, margin: float | None = None, input_px: int | None = None
) -> Adversary:
    """A fresh adversary of the config's shape (its margin and input size unless given)."""
    return Adversary(
        num_classes,
        a.width,
        a.blocks,
        a.embedding_dim,
        a.arcface_scale,
        a.arcface_margin if margin is None else margin,
        a.input_px if input_px is None else input_px,
    )


def save_recogniser(path: Path, kind: str, adversary: Adversary, identities: list[str]) -> None:
    """Write an adversary with its identities and input size (atomically, checksummed)."""
    checkpoint.save(
        path,
        {
            "format": kind,
            "identities": identities,
            "input_px": adversary.embedder.input_px,
            "state_dict": adversary.state_dict(),
        },
    )


def read_recogniser(path: Path) -> dict[str, Any]:
    """A saved recogniser's contents; `input_px` is 0 for files written before it was recorded."""
    saved = checkpoint.load(path)
    if "state_dict" not in saved:
        raise ObscuraError(f"{path}: expected an {ADVERSARY} or {ATTACKER} (it has no 'state_dict')")
    saved.setdefault("input_px", 0)
    return saved


def load_weights(adversary: Adversary, path: Path, saved: dict[str, Any], identities: list[str]) -> None:
    """Load `saved` (read from `path`) into `adversary`, refusing other identities or another input size by name."""
    if saved.get("identities") != identities:
        raise ObscuraError(f"{path} was trained on other identities than the run's training split")
    if saved["input_px"] != adversary.embedder.input_px:
        raise ObscuraError(
            f"{path} resizes faces to input_px {saved['input_px']}; this network uses "
            f"{adversary.embedder.input_px}: expected the same (set input_px={saved['input_px']})"
        )
    try:
        adversary.load_state_dict(saved["state_dict"])
    except RuntimeError as err:
        raise ObscuraError(
            f"{path}: weights do not match the stage-I config's adversary ({str(err).splitlines()[0]})"
        ) from None


def load_embedder(path: Path, stage: Stage1Config, train_identities: list[str]) -> IResNet:
    """The IResNet of a stage-I adversary.pt or an attacker.pt, refused if it saw a non-training identity."""
    return load_classifier(path, stage, train_identities).embedder


def load_committed_classifier(path: Path) -> Adversary:
    """A recogniser file read against the committed stage I (weights/: its adversary config and training split)."""
    stage = load_stage1_config(paths.WEIGHTS_DIR)
    return load_classifier(path, stage, read_split(paths.WEIGHTS_DIR / TRAIN_SPLIT))


def load_classifier(path: Path, stage: Stage1Config, train_identities: list[str]) -> Adversary:
    """A stage-I adversary.pt or attacker.pt whole (embedder + identity head), refused if it saw a non-training identity.

    A recogniser that saw a test identity would make the leakage figures unfair.
    """
    saved = read_recogniser(path)
    known = saved.get("identities")
    unseen = sorted(set(known or []) - set(train_identities))
    if known is None or unseen:
        why = "it names none" if known is None else f"it also knows {unseen[:3]}"
        raise ObscuraError(f"{path}: expected a recogniser trained on stage I's training identities only; {why}")
    adversary = build_adversary(stage.adversary, len(known), input_px=saved["input_px"])
    load_weights(adversary, path, saved, known)
    return adversary


@dataclass
class Stage1Parts:
    """The frozen stage-I result: camera (with its PSF computed once), regressor, the adversary's embedder."""

    camera: Camera
    psf: Tensor
    regressor: HeatmapRegressor
    embedder: IResNet
    crop_size: int
    train_identities: list[str]
    root: str
    min_images: int  # the stage-I minimum of readable images per identity
    digest: dict[str, str]  # SHA-256 of each stage-I file: a resumed or loaded stage II refuses changed ones

    def capture(self, clean: Tensor, generator: torch.Generator | None) -> Tensor:
        """sRGB faces in [0, 1] -> the frozen camera's sRGB captures (differentiable; noise from `generator`)."""
        return capture_srgb(psf_imaging(self.psf, self.camera.sensor), clean, generator)


def load_stage1(
    spec: str, device: torch.device, embedder_file: str = "", pupil_samples: int | None = None
) -> Stage1Parts:
    """Load the stage-I files that `spec` names, frozen (eval mode, no gradient to their weights).

    The identity embedder is the stage-I adversary's, or the recogniser in `embedder_file`;
    `pupil_samples` resamples the optic's pupil (None: as it was trained).
    """
    folder = require_stage1(spec, (*STAGE2_NEEDS, CONFIG), f"stage-I result {spec!r}")
    stage = load_stage1_config(folder)
    resampled = {} if pupil_samples is None else {"pupil_samples": pupil_samples}
    camera = camera_from_spec(str(folder / OPTIC), noise_seed=None, **resampled).to(device).eval().requires_grad_(False)
    with torch.no_grad():
        psf = camera.psf().detach()
    regressor, crop_size = load_regressor(folder / REGRESSOR)
    train_identities = read_split(folder / TRAIN_SPLIT)
    embedder = load_embedder(Path(embedder_file) if embedder_file else folder / ADVERSARY, stage, train_identities)
    return Stage1Parts(
        camera=camera,
        psf=psf,
        regressor=regressor.to(device).eval().requires_grad_(False),
        embedder=embedder.to(device).eval().requires_grad_(False),
        crop_size=crop_size,
        train_identities=train_identities,
        root=stage.data.root,
        min_images=stage.data.min_images,
        digest=digests(folder),
    )
