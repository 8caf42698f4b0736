"""Feature-space cloaks against an ensemble of in-house recognisers: LowKey-style and Fawkes-style.

Both move the recognisers' template of the face, not a classifier's answer, so they act on
recognisers of identities they never saw (a face database's). LowKey-style (Cherepanova et al.
2021) pushes the template away from the clean one, on the image and on a Gaussian-smoothed copy of
it (what survives resizing and blur survives smoothing); Fawkes-style (Shan et al. 2020) pulls it
toward the class centre of the training identity least like the face. The perceptual budget is
SSIM to the original, not LPIPS: LPIPS needs ImageNet backbone weights, which cannot be fetched
offline. It is enforced twice: a penalty on 1 - SSIM inside the optimisation, whose weight halves or
doubles as the budget is kept or broken (as Chameleon's P3-mask), and at the end a scale of the
perturbation chosen by bisection so that the 8-bit image's SSIM (as `protect` reports it) holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pytorch_msssim import ssim as torch_ssim
from torch import Tensor
from torch.nn import functional as F

from anonymizer import runs
from anonymizer.nets.adversary import Adversary
from faces.alignment import similarity, template
from faces.differentiable_sface import SFaceNet, sface_net
from faces.face_models import YuNet
from obscura import paths
from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect.face_encryption import CLASSIFIER_PX, CentreCropClassifier
from protect.protection import Kind, Transform, ssim_8bit

LAMBDA_RANGE = (1 / 128, 128.0)  # the SSIM penalty's weight is kept within this range (P3-mask's schedule)
BISECTION_STEPS = 8


@dataclass
class CloakOptions:
    """What both cloaks share: the optimisation and the white-box ensemble."""

    epsilon: float = bounded(0.1, ge=0, le=1)  # an L-inf cap besides the SSIM budget (about 26/255), sRGB in [0, 1]
    steps: int = bounded(60, ge=0)
    step_size: float = bounded(1 / 255, gt=0, le=1)  # each signed-gradient step
    diversity: bool = True  # optimise over random shrunk-and-shifted views (see `diverse`)
    seed: int = 0  # the views, drawn afresh from this seed for every image (repeatable output)
    recognisers: list[str] = field(default_factory=list)  # recogniser files; []: the committed ensemble


@dataclass
class LowkeyOptions(CloakOptions):
    """Untargeted: the templates of the cloaked image and of its smoothed copy pushed away from the clean template."""

    ssim: float = bounded(0.90, ge=0, le=1)  # the cloaked image's SSIM to the original stays >= this (1: unchanged)
    smoothing_sigma_px: float = bounded(2.0, ge=0)  # the smoothed copy the cloak must also survive (0: none)
    # also craft against SFace (differentiable, aligned on YuNet's landmarks of the clean image): then SFace is
    # no longer an unknown model; what this measures is the cloak with a strong model known, judged by dlib
    sface_white_box: bool = False


@dataclass
class FawkesOptions(CloakOptions):
    """Targeted: the template pulled toward the class centre of the training identity least like the face."""

    dssim: float = bounded(0.05, ge=0, le=0.5)  # Fawkes' DSSIM = (1 - SSIM) / 2 stays <= this (0.05: SSIM >= 0.90)


Objective = Callable[[Tensor], Tensor]  # a cloaked crop -> the loss the cloak minimises (a scalar)
Member = Callable[[Tensor], Tensor]  # a white-box recogniser: crops N x 3 x side x side -> N x D unit templates


@cache
def ensemble(files: tuple[str, ...]) -> tuple[Adversary, ...]:
    """The white-box recognisers (embedder + class centres), frozen, loaded once per file set."""
    chosen = files or tuple(str(paths.WEIGHTS_DIR / name) for name in runs.INHOUSE_RECOGNISERS)
    for file in chosen:
        if not Path(file).is_file():
            raise ObscuraError(f"option 'recognisers' names {file!r}: no such file (expected a stage-I attacker.pt)")
    return tuple(runs.load_committed_classifier(Path(f)).eval().requires_grad_(False) for f in chosen)


def gaussian_smooth(images: Tensor, sigma_px: float) -> Tensor:
    """Separable Gaussian blur of N x C x H x W (kernel to +-3 sigma, edges reflected)."""
    radius = max(1, math.ceil(3 * sigma_px))
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma_px) ** 2)
    kernel = (kernel / kernel.sum()).repeat(images.shape[1], 1, 1, 1)
    padded = F.pad(images, (radius,) * 4, mode="reflect")
    rows = F.conv2d(padded, kernel.view(-1, 1, 1, kernel.shape[-1]), groups=images.shape[1])
    return F.conv2d(rows, kernel.view(-1, 1, kernel.shape[-1], 1), groups=images.shape[1])


def templates(model: Adversary, crops: Tensor) -> Tensor:
    """Unit templates of face crops (N x 3 x side x side in [0, 1]) by one recogniser."""
    size = (CLASSIFIER_PX,) * 2
    return F.normalize(model.embedder(F.interpolate(crops, size=size, mode="bilinear", align_corners=False)))


@cache
def yunet_and_sface() -> tuple[YuNet, SFaceNet]:
    """The detector that aligns SFace's crop, and SFace as a torch network (loaded once)."""
    return YuNet(), sface_net()


def sface_member(image: np.ndarray, origin: tuple[int, int]) -> Member | None:
    """SFace on the 112 px crop aligned as OpenCV aligns it, sampled differentiably from the image.

    The member reads a centre crop (its top-left (x, y) in the image is `origin`) placed back into
    the clean image. None where YuNet finds no face in the clean image.
    """
    detector, net = yunet_and_sface()
    face = detector.detect(image).central(image.shape)
    if face is None:
        return None
    inverse = np.linalg.inv(np.vstack([similarity(face.landmarks, template(112)), [0, 0, 1]]))[:2]
    u, v = np.meshgrid(np.arange(112.0), np.arange(112.0))
    xy = np.einsum("ij,jhw->hwi", inverse, np.stack([u, v, np.ones_like(u)]))  # image pixel of each output pixel
    height, width = image.shape[:2]
    grid = torch.as_tensor((2 * xy + 1) / np.array([width, height]) - 1, dtype=torch.float32)[None]
    outside = from_uint8(image)[None]
    x0, y0 = origin

    def member(crops: Tensor) -> Tensor:
        side = crops.shape[-1]
        hole = torch.ones_like(outside)
        hole[..., y0 : y0 + side, x0 : x0 + side] = 0
        full = outside * hole + F.pad(crops, (x0, width - x0 - side, y0, height - y0 - side))
        aligned = F.grid_sample(full, grid.expand(crops.shape[0], -1, -1, -1), align_corners=False)
        return F.normalize(net(aligned))

    return member


def lowkey_objective(members: list[Member], clean: Tensor, sigma_px: float) -> Objective:
    """Mean cosine similarity to the clean templates, of the cloaked crop and of its smoothed copy."""
    with torch.no_grad():
        targets = [member(clean) for member in members]

    def loss(crop: Tensor) -> Tensor:
        views = [crop] + ([gaussian_smooth(crop, sigma_px)] if sigma_px > 0 else [])
        return torch.stack([(member(v) * t).sum() for member, t in zip(members, targets) for v in views]).mean()

    return loss


def fawkes_objective(models: tuple[Adversary, ...], clean: Tensor) -> Objective:
    """Minus the mean cosine similarity to the centre of the training identity the ensemble finds least like the face."""
    with torch.no_grad():
        centres = [F.normalize(m.head.weight) for m in models]
        likeness = sum(templates(m, clean) @ c.T for m, c in zip(models, centres))
        target = int(likeness.argmin())

    def loss(crop: Tensor) -> Tensor:
        return -torch.stack([(templates(m, crop) * c[target]).sum() for m, c in zip(models, centres)]).mean()

    return loss


def diverse(crops: Tensor, generator: torch.Generator) -> Tensor:
    """A random view of the crops: shrunk to 80-100 % and placed at a random offset on grey (input diversity).

    An attack that holds for every such view overfits the white-box models less and transfers better
    to unknown ones (Xie et al. 2019); measured here it lowers SFace's clean-to-cloaked cosine from
    0.82 to 0.77 (nine test faces, epsilon 0.1).
    """
    side = crops.shape[-1]
    shrunk = int(torch.randint(round(0.8 * side), side + 1, (), generator=generator))
    left, top = (int(v) for v in torch.randint(0, side - shrunk + 1, (2,), generator=generator))
    small = F.interpolate(crops, size=(shrunk, shrunk), mode="bilinear", align_corners=False)
    return F.pad(small, (left, side - shrunk - left, top, side - shrunk - top), value=0.5)


def penalty_weight(weight: float, broke: bool) -> float:
    """The perceptual penalty's next weight: doubled after a step that broke the budget, else halved, within LAMBDA_RANGE."""
    return min(max(weight * (2.0 if broke else 0.5), LAMBDA_RANGE[0]), LAMBDA_RANGE[1])


def largest_scale(holds: Callable[[float], bool]) -> float:
    """The largest scale in [0, 1] at which `holds` (monotone: true at 0) is true, by bisection (1 if it holds there)."""
    if holds(1.0):
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        low, high = (mid, high) if holds(mid) else (low, mid)
    return low


def optimised_change(clean: Tensor, objective: Objective, options: CloakOptions, min_ssim: float) -> Tensor:
    """The perturbation of a crop: signed-gradient descent on the objective of random views plus the SSIM penalty.

    The penalty is weight x max(1 - SSIM - (1 - min_ssim), 0); its weight doubles after a step that
    broke the budget and halves after one that kept it.
    """
    change = torch.zeros_like(clean, requires_grad=True)
    generator = torch.Generator().manual_seed(options.seed)
    weight, allowed = 1.0, 1.0 - min_ssim
    for _ in range(options.steps):
        cloaked = (clean + change).clamp(0, 1)
        dissimilarity = 1.0 - torch_ssim(cloaked, clean, data_range=1.0)
        view = diverse(cloaked, generator) if options.diversity else cloaked
        loss = objective(view) + weight * F.relu(dissimilarity - allowed)
        (grad,) = torch.autograd.grad(loss, change)
        with torch.no_grad():
            change -= options.step_size * grad.sign()
            change.clamp_(-options.epsilon, options.epsilon)
        weight = penalty_weight(weight, float(dissimilarity.detach()) > allowed)
    return change.detach()


def within_budget(image: np.ndarray, change: np.ndarray, min_ssim: float) -> np.ndarray:
    """The largest scale of the 8-bit change (by bisection) whose image keeps SSIM >= min_ssim."""

    def scaled(s: float) -> np.ndarray:
        return np.clip(np.rint(image + s * change), 0, 255).astype(np.uint8)

    return scaled(largest_scale(lambda s: ssim_8bit(image, scaled(s)) >= min_ssim))


def cloak(
    image: np.ndarray,
    make_objective: Callable[[Tensor, tuple[int, int]], Objective],
    options: CloakOptions,
    min_ssim: float,
) -> np.ndarray:
    """The cloaked image: the crop the recognisers read optimised, the rest of the image unchanged."""
    if options.epsilon == 0 or options.steps == 0 or min_ssim >= 1.0:
        return image.copy()
    rows, cols = CentreCropClassifier.crop_box(*image.shape[:2])
    crop = from_uint8(image[rows, cols])[None]
    # the caller may be inside no_grad (an attacker imaging its training batch): the cloak needs gradients
    with torch.enable_grad():
        change = optimised_change(crop, make_objective(crop, (cols.start, rows.start)), options, min_ssim)
    full = np.zeros(image.shape, np.float64)
    full[rows, cols] = np.rint(change[0].movedim(0, -1).numpy() * 255.0)
    return within_budget(image, full, min_ssim)


def build_lowkey(options: LowkeyOptions) -> Transform:
    """The LowKey-style transform: sRGB uint8 H x W x 3 -> cloaked image, SSIM >= options.ssim."""
    models = ensemble(tuple(options.recognisers))
    members: list[Member] = [lambda crops, m=m: templates(m, crops) for m in models]

    def apply(image: np.ndarray) -> np.ndarray:
        def objective(crop: Tensor, origin: tuple[int, int]) -> Objective:
            sface = sface_member(image, origin) if options.sface_white_box else None
            return lowkey_objective(members + ([sface] if sface else []), crop, options.smoothing_sigma_px)

        return cloak(image, objective, options, options.ssim)

    return apply


def build_fawkes(options: FawkesOptions) -> Transform:
    """The Fawkes-style transform: sRGB uint8 H x W x 3 -> cloaked image, DSSIM <= options.dssim."""
    models = ensemble(tuple(options.recognisers))
    return lambda image: cloak(
        image, lambda crop, _: fawkes_objective(models, crop), options, 1.0 - 2.0 * options.dssim
    )


KINDS = {
    "lowkey": Kind(
        LowkeyOptions, build_lowkey, "LowKey-style untargeted feature cloak (in-house ensemble, smoothed copy)"
    ),
    "fawkes": Kind(FawkesOptions, build_fawkes, "Fawkes-style cloak toward the least similar training identity"),
}
