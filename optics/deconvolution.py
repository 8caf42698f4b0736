"""Regularised deconvolution: the least-squares scene behind a capture, as an attacker who knows the operator solves it.

argmin_x ||A x - y||^2 + lam ||grad x||^2 for a linear A, by conjugate gradients on the normal
equations (A^T A + lam D^T D) x = A^T y, matrix-free: the caller gives A and its adjoint. With
the adjoint written out (for a PSF, `convolution.correlate`) the solve is differentiable in A, so a
trainer can ask how well its own capture would be inverted.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor

Operator = Callable[[Tensor], Tensor]


def grad_norm_sq(x: Tensor) -> Tensor:
    """||grad x||^2 per image: squared forward differences along both image axes, summed."""
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    return dy.pow(2).flatten(1).sum(1) + dx.pow(2).flatten(1).sum(1)


def smoothness_normal(x: Tensor) -> Tensor:
    """D^T D x for the forward differences of `grad_norm_sq` (the gradient of half of it)."""
    out = x.new_zeros(x.shape)
    dy = x[..., 1:, :] - x[..., :-1, :]
    dx = x[..., :, 1:] - x[..., :, :-1]
    out[..., 1:, :] += dy
    out[..., :-1, :] -= dy
    out[..., :, 1:] += dx
    out[..., :, :-1] -= dx
    return out


def tikhonov(y: Tensor, operator: Operator, adjoint: Operator, lam: float, iterations: int) -> Tensor:
    """argmin_x ||A x - y||^2 + lam ||grad x||^2 by at most `iterations` conjugate-gradient steps from x = 0.

    Stops early once the residual's squared norm is 1e-12 of the right-hand side's.
    """
    b = adjoint(y)
    x, r = b.new_zeros(b.shape), b
    p, rs = r, (r * r).sum()
    stop = 1e-12 * rs.detach()
    for _ in range(iterations):
        ap = adjoint(operator(p)) + lam * smoothness_normal(p)
        alpha = rs / (p * ap).sum().clamp_min(1e-30)
        x, r = x + alpha * p, r - alpha * ap
        rs_new = (r * r).sum()
        if rs_new.detach() <= stop:
            break
        p, rs = r + (rs_new / rs) * p, rs_new
    return x
