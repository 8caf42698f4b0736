"""Face Encryption: FGSM and PGD (untargeted, targeted) against an identity classifier, by torchattacks.

The white-box model is an in-house recogniser (embedder + ArcFace head over stage I's training
identities, weights/inhouse_recogniser_seed0.pt by default); SFace and dlib stay unknown to the
protection, so what they make of a protected image is transfer. Epsilon is an L-inf bound in sRGB
pixel units of [0, 1] (8/255 = 0.0314); it holds exactly after the image is rounded to 8 bits.
The classifier reads the image's centre crop (the in-house recogniser's 128 of 160 px); the
perturbation is kept there and the rest of the image is returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from anonymizer import runs
from obscura import paths
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect.protection import Kind, Transform

TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks==3.5.1"
CROP_FRACTION = 0.8  # the in-house recogniser's 128 px centre crop of a 160 px celeba-crops image
CLASSIFIER_PX = 128


@dataclass
class FgsmOptions:
    """One signed-gradient step of size epsilon away from the classifier's answer on the clean image."""

    epsilon: float = bounded(8 / 255, ge=0, le=1)  # L-inf bound, sRGB in [0, 1]
    classifier: str = ""  # a stage-I adversary.pt / attacker.pt; "": weights/inhouse_recogniser_seed0.pt


@dataclass
class PgdOptions(FgsmOptions):
    """Projected gradient descent: `steps` signed steps of `alpha`, projected back into the epsilon ball."""

    steps: int = bounded(10, ge=1)
    alpha: float = bounded(0.0, ge=0, le=1)  # step size; 0: 2.5 epsilon / steps (Madry et al.)
    random_start: bool = True
    seed: int = 0  # the random start, drawn afresh from this seed for every image (repeatable output)


@dataclass
class TargetedOptions(PgdOptions):
    """PGD toward one training identity of the classifier."""

    target: int = bounded(-1, ge=-1)  # the identity index to pass for; -1: the clean image's least likely one


class CentreCropClassifier(nn.Module):
    """Identity logits of a whole image, read from its centre crop as the in-house recogniser reads faces."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @staticmethod
    def crop_box(h: int, w: int) -> tuple[slice, slice]:
        """The rows and columns of an H x W image that the classifier reads."""
        side = round(min(h, w) * CROP_FRACTION)
        y0, x0 = (h - side) // 2, (w - side) // 2
        return slice(y0, y0 + side), slice(x0, x0 + side)

    def forward(self, images: Tensor) -> Tensor:
        """N x 3 x H x W in [0, 1] -> N x K logits (s cos theta over the training identities)."""
        rows, cols = self.crop_box(*images.shape[-2:])
        crop = F.interpolate(images[..., rows, cols], size=(CLASSIFIER_PX,) * 2, mode="bilinear", align_corners=False)
        return self.net(crop)[0]


@cache
def classifier(path: str) -> CentreCropClassifier:
    """The white-box classifier of a recogniser file, frozen (loaded once per file)."""
    file = Path(path) if path else paths.WEIGHTS_DIR / runs.INHOUSE_RECOGNISER
    if not file.is_file():
        raise ObscuraError(f"option 'classifier' is {str(file)!r}: no such file (expected a stage-I adversary.pt)")
    return CentreCropClassifier(runs.load_committed_classifier(file)).eval().requires_grad_(False)


def quantised(clean: np.ndarray, adversarial: Tensor, epsilon: float) -> np.ndarray:
    """The adversarial image in 8 bits, changed only where the classifier reads it, the L-inf bound kept after rounding.

    Outside the crop the gradient is zero, but PGD's random start would leave noise there.
    """
    levels = math.floor(epsilon * 255 + 1e-6)
    change = np.zeros(clean.shape, np.float64)
    rows, cols = CentreCropClassifier.crop_box(*clean.shape[:2])
    change[rows, cols] = np.rint(adversarial[0].movedim(0, -1).numpy()[rows, cols] * 255.0) - clean[rows, cols]
    return (clean + np.clip(change, -levels, levels)).astype(np.uint8)


def torchattacks_module() -> ModuleType:
    """torchattacks; a one-line error where it is missing."""
    try:
        # imported here and installed without its requirements (Makefile): they pull a torchvision built
        # against another torch (whose missing operators then break lensless) and pin requests 2.25
        import torchattacks
    except ImportError:
        raise ObscuraError(
            f"Face Encryption needs torchattacks: {TORCHATTACKS_INSTALL} (make install does it)"
        ) from None
    return torchattacks


def attack_of(options: FgsmOptions, model: nn.Module) -> Any:
    """The torchattacks attack the options describe."""
    torchattacks = torchattacks_module()
    if not isinstance(options, PgdOptions):
        return torchattacks.FGSM(model, eps=options.epsilon)
    alpha = options.alpha or 2.5 * options.epsilon / options.steps
    attack = torchattacks.PGD(
        model, eps=options.epsilon, alpha=alpha, steps=options.steps, random_start=options.random_start
    )
    if isinstance(options, TargetedOptions):
        attack.set_mode_targeted_by_label(quiet=True)
    return attack


def labels_for(options: FgsmOptions, logits: Tensor) -> Tensor:
    """Untargeted: the classifier's answer on the clean image; targeted: the identity to pass for."""
    if not isinstance(options, TargetedOptions):
        return logits.argmax(dim=1)
    if options.target >= logits.shape[1]:
        raise ObscuraError(f"option 'target' is {options.target}: the classifier knows {logits.shape[1]} identities")
    return logits.argmin(dim=1) if options.target < 0 else torch.full_like(logits[:, 0], options.target).long()


def build(options: FgsmOptions) -> Transform:
    """The protection transform: sRGB uint8 H x W x 3 -> the adversarial image, L-inf within epsilon."""
    model = classifier(options.classifier)
    attack = attack_of(options, model)

    def apply(image: np.ndarray) -> np.ndarray:
        x = from_uint8(image)[None]
        with torch.no_grad():
            labels = labels_for(options, model(x))
        # the caller may be inside no_grad (an attacker imaging its training batch): the attack needs gradients
        with torch.random.fork_rng(), torch.enable_grad():
            torch.manual_seed(getattr(options, "seed", 0))
            adversarial = attack(x, labels)
        return quantised(image, adversarial, options.epsilon)

    return apply


KINDS = {
    "fgsm": Kind(FgsmOptions, build, "Face Encryption FGSM against the in-house identity classifier"),
    "pgd": Kind(PgdOptions, build, "Face Encryption PGD (untargeted) against the in-house identity classifier"),
    "pgd-targeted": Kind(TargetedOptions, build, "Face Encryption PGD toward one training identity"),
}
