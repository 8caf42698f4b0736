"""Attackers who rebuild the face from a capture before a recogniser looks at it.

A capture that fools recognisers but can be inverted is not private. Every attacker here knows
the method (its forward model: for an optic its PSF and the camera's exact geometry, the zero-
padded linear convolution cropped to the sensor window) and rebuilds the scene:

- `tikhonov:LAMBDA`: regularised least squares, argmin ||A x - y||^2 + LAMBDA ||grad x||^2 in the
  forward model's domain (linear light for optics), by conjugate gradients on the normal
  equations; A^T comes from autograd, so every linear method (optic, blur, low resolution,
  mosaic) is inverted with its own operator. LAMBDA is chosen on training identities
  (`choose`), never on the faces being judged.
- `admm:TAU`: an outside implementation nobody here wrote, LenslessPiCam's ADMM (the `lensless`
  package: total-variation prior of weight TAU, non-negativity, and the DiffuserCam model of a
  sensor window cropped from a larger scene) with the method's own PSF; optics only. TAU is chosen
  on training identities like LAMBDA.
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
TAU_GRID = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4)  # ADMM's TV weight, for a PSF of unit norm and a capture of peak 1
ADMM_ITERATIONS = 100  # lensless' default
KINDS = ("tikhonov", "admm", "learned")
# kinds whose regularisation weight `choose` picks on training identities when the spec names none
GRIDS = {"tikhonov": LAMBDA_GRID, "admm": TAU_GRID}
LENSLESS_INSTALL = "pip install --no-deps lensless==1.0.8"


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


def psf_on_sensor(psf: Tensor, height: int, width: int) -> Tensor:
    """A C x h x w PSF (centre at (h//2, w//2)) on an H x W grid centred at (H//2, W//2): zero-padded or cropped."""
    out = psf.new_zeros(psf.shape[0], height, width)
    h, w = psf.shape[-2:]
    dy, dx = height // 2 - h // 2, width // 2 - w // 2  # where the PSF's top-left lands on the sensor grid
    sy, sx = max(0, -dy), max(0, -dx)
    ty, tx = max(0, dy), max(0, dx)
    ny, nx = min(h - sy, height - ty), min(w - sx, width - tx)
    out[:, ty : ty + ny, tx : tx + nx] = psf[:, sy : sy + ny, sx : sx + nx]
    return out


def lensless_admm() -> type:
    """LenslessPiCam's ADMM class; a one-line error where the package is missing."""
    try:
        # optional and imported here: its own requirements pin numpy 1.26 and pull hydra, paramiko and rawpy,
        # so it is installed without them (Makefile) and only this attacker needs it
        from lensless import ADMM
    except ImportError:
        raise ObscuraError(
            f"reconstruction 'admm' needs LenslessPiCam's package: {LENSLESS_INSTALL} (make install does it)"
        ) from None
    return ADMM


@dataclass
class AdmmAttacker:
    """LenslessPiCam's ADMM with the method's PSF (see the module's docstring); one image at a time, as lensless runs."""

    psf: Tensor  # C x h x w, unit sum per channel
    tau: float
    iterations: int = ADMM_ITERATIONS
    name: str = "admm"

    @property
    def cache_key(self) -> str:
        """The attacker's settings, for the evaluation's result cache."""
        return f"admm-{self.tau:g}-{self.iterations}"

    def rebuild_batch(self, captures: Tensor) -> Tensor:
        """sRGB [0, 1] captures N x 3 x H x W -> rebuilt sRGB [0, 1] scenes.

        lensless wants a PSF of the measurement's size and unit norm and data of peak 1 (its examples'
        normalisation, to which its step sizes are tuned); the estimate is scaled back so that it
        explains the capture through the PSF of unit sum.
        """
        admm_class = lensless_admm()
        height, width = captures.shape[-2:]
        kernel = psf_on_sensor(self.psf.float(), height, width)
        norm = torch.linalg.norm(kernel)
        psf = (kernel / norm).permute(1, 2, 0)[None].contiguous()  # depth x H x W x C, lensless' layout
        out = []
        for capture in captures:
            y = srgb_to_linear(capture).permute(1, 2, 0)[None].contiguous()
            peak = y.max().clamp_min(1e-8)
            admm = admm_class(psf, tau=self.tau, pad=False)
            admm.set_data(y / peak)
            estimate = admm.apply(n_iter=self.iterations, disp_iter=None, plot=False)
            scene = estimate.reshape(-1, height, width, 3)[0].permute(2, 0, 1) * peak / norm
            out.append(linear_to_srgb(scene.clamp(0, 1)))
        return torch.stack(out)

    def rebuild(self, capture: np.ndarray) -> np.ndarray:
        """sRGB uint8 capture -> rebuilt sRGB uint8 scene."""
        return to_uint8(self.rebuild_batch(from_uint8(capture)[None])[0])


def regularised(kind: str, method: Method, weight: float) -> TikhonovAttacker | AdmmAttacker:
    """The `kind` attacker of a method with regularisation weight `weight` (LAMBDA or TAU)."""
    if method.forward is None:
        raise ObscuraError(f"reconstruction {kind!r}: method {method.name} has no forward model to invert")
    if kind == "tikhonov":
        return TikhonovAttacker(method.forward, weight)
    if method.forward.psf is None:
        raise ObscuraError(f"reconstruction 'admm': method {method.name} is not an optic (ADMM needs its PSF)")
    return AdmmAttacker(method.forward.psf(), weight)


def choose(kind: str, method: Method, faces: list[np.ndarray]) -> tuple[float, dict[str, float]]:
    """The grid's weight (GRIDS[kind]) whose rebuilds of `faces` (training identities' images) have the best PSNR, and every PSNR."""
    grid = GRIDS[kind]
    if method.forward is None:
        raise ObscuraError(f"--method {method.name}: it has no forward model, so there is nothing to invert")
    clean = from_uint8(np.stack(faces))
    captures = from_uint8(np.stack([method.apply(f) for f in faces]))
    scores = {f"{w:g}": psnr(regularised(kind, method, w).rebuild_batch(captures), clean) for w in grid}
    best = max(grid, key=lambda w: scores[f"{w:g}"])
    return best, scores


def build(spec: str, method: Method) -> Attacker:
    """The attacker a spec names: `tikhonov:LAMBDA`, `admm:TAU` or `learned:FILE` (one-line errors for anything else)."""
    kind, _, arg = spec.partition(":")
    if kind in GRIDS:
        weight = {"tikhonov": "LAMBDA", "admm": "TAU"}[kind]
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        if not value >= 0:
            raise ObscuraError(f"reconstruction {spec!r}: expected {kind}:{weight} with a number {weight} >= 0")
        attacker = regularised(kind, method, value)
        if kind == "admm":
            lensless_admm()  # refuses a missing package before any image is judged
        return attacker
    if kind == "learned":
        if not Path(arg).is_file():
            raise ObscuraError(
                f"reconstruction {spec!r}: no such file (expected learned:FILE, an inversion.pt of attack-reconstruct)"
            )
        return LearnedInversion.load(arg, method.name)
    raise ObscuraError(
        f"reconstruction {spec!r}: expected one of tikhonov, tikhonov:LAMBDA, admm, admm:TAU, learned:FILE"
    )


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
