"""Attackers who rebuild the face from a capture before a recogniser looks at it.

A capture that fools recognisers but can be inverted is not private. Every attacker here knows
the method (its forward model: for an optic its PSF and the camera's exact geometry, the zero-
padded linear convolution cropped to the sensor window) and rebuilds the scene:

- `tikhonov:LAMBDA`: regularised least squares, argmin ||A x - y||^2 + LAMBDA ||grad x||^2 in the
  forward model's domain (linear light for optics), by conjugate gradients on the normal
  equations; A^T comes from autograd, so every linear method (optic, blur, low resolution,
  mosaic) is inverted with its own operator. LAMBDA is chosen on training identities
  (`choose_lambda`), never on the faces being judged.
- `learned:FILE`: an inversion trained on captures of the training identities (`learned_inversion`).

`build(spec, method)` makes one from its spec; `rebuild(capture uint8) -> uint8` is all the
evaluation needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from evaluation.attacks.learned_inversion import LearnedInversion
from evaluation.methods import ForwardModel, Method
from obscura import atomic
from obscura.errors import ObscuraError
from optics.image_io import from_uint8, to_uint8
from optics.srgb import linear_to_srgb, srgb_to_linear

LAMBDA_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
CG_ITERATIONS = 150
KINDS = ("tikhonov", "learned")


class Attacker(Protocol):
    """A reconstruction attacker: a name for reports, a cache key, and the rebuild itself."""

    name: str
    cache_key: str

    def rebuild(self, capture: np.ndarray) -> np.ndarray:
        """sRGB uint8 capture H x W x 3 -> the rebuilt sRGB uint8 scene of the same size."""


def grad_norm_sq(x: Tensor) -> Tensor:
    """||grad x||^2 per image: squared forward differences along both image axes, summed."""
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(1) + (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(
        1
    ).sum(1)


def tikhonov(y: Tensor, operator: Callable[[Tensor], Tensor], lam: float, iterations: int = CG_ITERATIONS) -> Tensor:
    """argmin_x ||A x - y||^2 + lam ||grad x||^2 for a linear A (N x C x H x W both sides), by conjugate gradients.

    The normal equations (A^T A + lam D^T D) x = A^T y are solved matrix-free: A^T v and D^T D v are
    vector-Jacobian products of the operator and of the smoothness penalty, so nothing is assumed
    about A beyond linearity. CG stops early when the residual is 1e-6 of the right-hand side.
    """
    zero = torch.zeros_like(y)
    _, adjoint = torch.func.vjp(operator, zero)  # A linear: its vector-Jacobian product is A^T everywhere

    def normal(v: Tensor) -> Tensor:
        smooth = torch.func.grad(lambda u: 0.5 * grad_norm_sq(u).sum())(v)  # D^T D v
        return adjoint(operator(v))[0] + lam * smooth

    b = adjoint(y)[0]
    x, r = zero.clone(), b.clone()
    p, rs = r.clone(), (r * r).sum()
    stop = 1e-12 * rs
    for _ in range(iterations):
        ap = normal(p)
        alpha = rs / (p * ap).sum().clamp_min(1e-30)
        x, r = x + alpha * p, r - alpha * ap
        rs_new = (r * r).sum()
        if rs_new <= stop:
            break
        p, rs = r + (rs_new / rs) * p, rs_new
    return x


def to_domain(images: Tensor, forward: ForwardModel) -> Tensor:
    """sRGB [0, 1] images in the forward model's domain."""
    return srgb_to_linear(images) if forward.domain == "linear" else images


def from_domain(images: Tensor, forward: ForwardModel) -> Tensor:
    """Images of the forward model's domain back to sRGB [0, 1]."""
    return linear_to_srgb(images) if forward.domain == "linear" else images.clamp(0, 1)


@dataclass
class TikhonovAttacker:
    """Regularised least squares with the method's own forward model (see the module's docstring)."""

    forward: ForwardModel
    lam: float
    iterations: int = CG_ITERATIONS
    name: str = "tikhonov"

    @property
    def cache_key(self) -> str:
        """The attacker's settings, for the evaluation's result cache."""
        return f"tikhonov-{self.lam:g}-{self.iterations}"

    def rebuild_batch(self, captures: Tensor) -> Tensor:
        """sRGB [0, 1] captures N x 3 x H x W -> rebuilt sRGB [0, 1] scenes."""
        with torch.no_grad():
            y = to_domain(captures, self.forward)
        x = tikhonov(y, self.forward.apply, self.lam, self.iterations)
        return from_domain(x.detach(), self.forward)

    def rebuild(self, capture: np.ndarray) -> np.ndarray:
        """sRGB uint8 capture -> rebuilt sRGB uint8 scene."""
        return to_uint8(self.rebuild_batch(from_uint8(capture)[None])[0])


def psnr(a: Tensor, b: Tensor) -> float:
    """Mean PSNR (dB) of two sRGB [0, 1] batches, image by image."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


def choose_lambda(
    method: Method, faces: list[np.ndarray], grid: tuple[float, ...] = LAMBDA_GRID
) -> tuple[float, dict[str, float]]:
    """The grid's LAMBDA whose rebuilds of `faces` (training identities' images) have the best PSNR, and every PSNR."""
    if method.forward is None:
        raise ObscuraError(f"--method {method.name}: it has no forward model, so there is nothing to invert")
    clean = from_uint8(np.stack(faces))
    captures = from_uint8(np.stack([method.apply(f) for f in faces]))
    scores = {f"{lam:g}": psnr(TikhonovAttacker(method.forward, lam).rebuild_batch(captures), clean) for lam in grid}
    best = max(grid, key=lambda lam: scores[f"{lam:g}"])
    return best, scores


def build(spec: str, method: Method) -> Attacker:
    """The attacker a spec names: `tikhonov:LAMBDA` or `learned:FILE` (one-line errors for anything else)."""
    kind, _, arg = spec.partition(":")
    if kind == "tikhonov":
        if method.forward is None:
            raise ObscuraError(f"reconstruction {spec!r}: method {method.name} has no forward model to invert")
        try:
            lam = float(arg)
        except ValueError:
            raise ObscuraError(f"reconstruction {spec!r}: expected tikhonov:LAMBDA with a number LAMBDA >= 0") from None
        if not lam >= 0:
            raise ObscuraError(f"reconstruction {spec!r}: expected tikhonov:LAMBDA with a number LAMBDA >= 0")
        return TikhonovAttacker(method.forward, lam)
    if kind == "learned":
        if not Path(arg).is_file():
            raise ObscuraError(
                f"reconstruction {spec!r}: no such file (expected learned:FILE, an inversion.pt of attack-reconstruct)"
            )
        return LearnedInversion.load(arg, method.name)
    raise ObscuraError(f"reconstruction {spec!r}: expected one of tikhonov, tikhonov:LAMBDA, learned:FILE")


def examples_png(path: Path, method: Method, attackers: list[Attacker], images: list[np.ndarray]) -> Path | None:
    """One column per test face: clean, the method's output, then each attacker's rebuild of it."""
    if not images:
        return None
    matplotlib.use("Agg")
    rows = 2 + len(attackers)
    fig, axes = plt.subplots(rows, len(images), figsize=(1.8 * len(images), 1.9 * rows), squeeze=False)
    for col, image in enumerate(images):
        output = method.apply(image)
        shown = [(image, "clean"), (output, method.name)] + [(a.rebuild(output), a.cache_key) for a in attackers]
        for row, (img, title) in enumerate(shown):
            axes[row, col].imshow(img)
            axes[row, col].axis("off")
            if col == 0:
                axes[row, col].set_title(title, fontsize=8, loc="left")
    fig.suptitle(f"what an attacker who knows `{method.name}` rebuilds from its output (test faces)", fontsize=9)
    fig.tight_layout()
    return atomic.write_figure(path, fig)
