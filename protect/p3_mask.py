"""Chameleon-style P3-mask (ECCV 2024): one universal mask per user, learned over that user's own images.

Facts from its public code: one additive mask per user (epsilon 16/255) learned cross-image with
signed-gradient steps; loss = - the ensemble's mean angular distance between the clean and the
masked face's templates + lambda * max(DSSIM - 0.03, 0) with DSSIM = (1 - SSIM) / 2 (so SSIM stays
>= 0.94), lambda doubling or halving as DSSIM breaks or keeps its budget, within [1/128, 128];
50 epochs, batch 4. Here the mask covers the centre crop the in-house recognisers read (the face
box of an aligned face set) and the ensemble is in-house recognisers of the training identities
(the judge chooses them by focal diversity, `protect.focal_diversity`). After learning, the whole
mask is scaled down (by bisection) until every one of the user's mask-training images keeps SSIM
>= 1 - 2 DSSIM in 8 bits, so the mask stays one mask. The mask is also a key: subtracting it gives
the image back (up to the pixels that clipped at 0 or 255).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from pytorch_msssim import ssim as torch_ssim
from torch.nn import functional as F

from obscura.config import bounded
from obscura.errors import ObscuraError
from optics.image_io import from_uint8
from protect.face_encryption import CentreCropClassifier
from protect.feature_cloaks import ensemble, largest_scale, penalty_weight, templates
from protect.protection import Kind, PerUser, Transform, ssim_8bit

KEY_FILE = "p3mask.npy"  # a user's mask beside their protected images: H x W x 3 float32, sRGB levels


@dataclass
class P3MaskOptions:
    """One user's mask: its bound, the optimisation, the perceptual budget and the white-box ensemble."""

    epsilon: float = bounded(16 / 255, ge=0, le=1)  # L-inf bound of the mask, sRGB in [0, 1]
    epochs: int = bounded(50, ge=0)
    batch: int = bounded(4, ge=1)
    step_size: float = bounded(1 / 255, gt=0, le=1)
    dssim: float = bounded(0.03, ge=0, le=0.5)  # (1 - SSIM) / 2 stays <= this on every mask-training image
    seed: int = 0  # the mask's random start and the order of the user's images in each epoch
    recognisers: list[str] = field(default_factory=list)  # recogniser files; []: the committed in-house ones


def crops_of(images: list[np.ndarray], side: int) -> torch.Tensor:
    """The recognisers' centre crops of a user's images, resized to side x side: N x 3 x side x side."""
    out = []
    for image in images:
        rows, cols = CentreCropClassifier.crop_box(*image.shape[:2])
        out.append(from_uint8(cv2.resize(image[rows, cols], (side, side), interpolation=cv2.INTER_AREA)))
    return torch.stack(out)


def angular_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean angle between rows of two unit-template matrices, over pi (0: identical, 1: opposite)."""
    return torch.arccos((a * b).sum(dim=1).clamp(-1 + 1e-6, 1 - 1e-6)).mean() / math.pi


def optimised_mask(crops: torch.Tensor, options: P3MaskOptions) -> torch.Tensor:
    """The mask (1 x 3 x side x side) that pushes every crop's templates away from their clean ones."""
    models = ensemble(tuple(options.recognisers))
    with torch.no_grad():
        clean = [templates(m, crops) for m in models]
    generator = torch.Generator().manual_seed(options.seed)
    # a random start: at the clean image the angle's gradient is undefined (arccos at 1), and zero once clamped
    start = (torch.rand(crops[:1].shape, generator=generator) * 2 - 1) * min(options.step_size, options.epsilon)
    mask = start.requires_grad_(True)
    weight = 1.0
    for _ in range(options.epochs):
        for batch in torch.randperm(crops.shape[0], generator=generator).split(options.batch):
            masked = (crops[batch] + mask).clamp(0, 1)
            distance = torch.stack([angular_distance(templates(m, masked), c[batch]) for m, c in zip(models, clean)])
            dssim = (1.0 - torch_ssim(masked, crops[batch], data_range=1.0)) / 2
            loss = -distance.mean() + weight * F.relu(dssim - options.dssim)
            (grad,) = torch.autograd.grad(loss, mask)
            with torch.no_grad():
                mask -= options.step_size * grad.sign()
                mask.clamp_(-options.epsilon, options.epsilon)
            weight = penalty_weight(weight, float(dssim.detach()) > options.dssim)
    return mask.detach()


def levels(mask: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """The mask as whole sRGB levels over a whole image of this shape (zero outside the crop)."""
    rows, cols = CentreCropClassifier.crop_box(*image_shape[:2])
    side = rows.stop - rows.start
    full = np.zeros(image_shape, np.float64)
    resized = mask if mask.shape[0] == side else cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)
    full[rows, cols] = np.rint(resized)
    return full


def apply_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The protected image: the user's mask added inside the crop, in 8 bits."""
    return np.clip(image + levels(mask, image.shape), 0, 255).astype(np.uint8)


def remove_mask(protected: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask as a key: the protected image minus the mask (exact where nothing clipped)."""
    return np.clip(protected - levels(mask, protected.shape), 0, 255).astype(np.uint8)


def scaled_to_budget(mask: np.ndarray, images: list[np.ndarray], min_ssim: float) -> np.ndarray:
    """The largest scale of the mask (bisection) at which every image keeps SSIM >= min_ssim in 8 bits."""
    scale = largest_scale(lambda s: all(ssim_8bit(image, apply_mask(image, s * mask)) >= min_ssim for image in images))
    return mask if scale == 1.0 else scale * mask


def learn_mask(images: list[np.ndarray], options: P3MaskOptions) -> np.ndarray:
    """One user's mask from their images: side x side x 3 float32 in sRGB levels (side: the first image's crop)."""
    if not images:
        raise ObscuraError("p3mask: a user needs at least one image to learn a mask from")
    rows, _ = CentreCropClassifier.crop_box(*images[0].shape[:2])
    side = rows.stop - rows.start
    if options.epsilon == 0 or options.epochs == 0 or options.dssim == 0:
        return np.zeros((side, side, 3), np.float32)
    with torch.enable_grad():
        mask = optimised_mask(crops_of(images, side), options)
    raw = mask[0].movedim(0, -1).numpy().astype(np.float64) * 255.0
    return scaled_to_budget(raw, images, 1.0 - 2.0 * options.dssim).astype(np.float32)


def per_user(options: P3MaskOptions) -> PerUser:
    """The P3-mask as a per-user protection: learn a user's mask, apply it to any of their images."""
    return PerUser(lambda images: learn_mask(images, options), apply_mask, KEY_FILE)


def refused(options: P3MaskOptions) -> Transform:
    """One image alone cannot be P3-masked: the mask is learned from all of a user's images."""

    def apply(image: np.ndarray) -> np.ndarray:
        raise ObscuraError(
            "p3mask learns one mask per user from that user's images: use `protect --method p3mask` on a "
            "folder-per-identity set, or `judge-p3mask`"
        )

    return apply


KINDS = {"p3mask": Kind(P3MaskOptions, refused, "Chameleon-style P3-mask, one per user", per_user)}
