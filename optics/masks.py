"""Phase masks: a height map on the pupil grid (Zernike or free-form), an optional max-height
constraint and N-level quantisation with a straight-through gradient.

phase(lambda) = 2 pi (n(lambda) - 1) h / lambda, with n from the mask material's Sellmeier fit.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from obscura.errors import ObscuraError
from optics import checks
from optics.materials import material
from optics.zernike import noll_to_nm, zernike_basis

Constraint = Literal["none", "wrap", "clamp"]


def quantise_ste(height_m: Tensor, max_height_m: float, levels: int, wrap: bool) -> Tensor:
    """Snap heights to `levels` equal steps; the backward pass is the identity (straight-through).

    Wrapped masks use steps of max/levels (0 .. (levels-1) * step, since max == 0 in phase at the
    design wavelength); clamped masks use max/(levels-1) so both ends are reachable.
    """
    step = max_height_m / levels if wrap else max_height_m / (levels - 1)
    index = torch.round(height_m / step)
    index = torch.remainder(index, levels) if wrap else index.clamp(0, levels - 1)
    return height_m + (index * step - height_m).detach()


class ZernikeSurface(nn.Module):
    """Height = sum_j c_j Z_j over the unit pupil; coefficients are trainable, in micrometres."""

    def __init__(
        self, rho: np.ndarray, theta: np.ndarray, num_terms: int, fixed_zero_terms: int = 3, rho_max: float = 1.0
    ) -> None:
        super().__init__()
        checks.positive_int("zernike num_terms", num_terms)
        if not 0 <= fixed_zero_terms < num_terms:
            raise ObscuraError(
                f"zernike fixed_zero_terms is {fixed_zero_terms}; expected 0 <= it < num_terms={num_terms}"
            )
        basis = zernike_basis(num_terms, rho, theta, rho_max)
        self.register_buffer("basis", torch.from_numpy(basis).float())
        free = torch.ones(num_terms)
        free[:fixed_zero_terms] = 0.0
        self.register_buffer("free", free)
        self.coefficients_um = nn.Parameter(torch.zeros(num_terms))

    def radial_orders(self) -> Tensor:
        """Radial order n of each term (for order-dependent initialisation)."""
        return torch.tensor([noll_to_nm(j)[0] for j in range(1, self.basis.shape[0] + 1)], dtype=torch.float64)

    def forward(self) -> Tensor:
        """Unconstrained height map in metres, shape (N, N)."""
        c = self.coefficients_um * self.free * 1e-6
        return torch.tensordot(c, self.basis, dims=1)


class FreeformSurface(nn.Module):
    """One trainable height per pupil sample, in micrometres."""

    def __init__(self, samples: int) -> None:
        super().__init__()
        self.height_um = nn.Parameter(torch.zeros(samples, samples))

    def forward(self) -> Tensor:
        """Unconstrained height map in metres, shape (N, N)."""
        return self.height_um * 1e-6


class PhaseMask(nn.Module):
    """A surface plus material, max-height constraint and optional quantisation."""

    def __init__(
        self,
        surface: nn.Module,
        material_name: str = "fused_silica",
        max_height_m: float = 0.0,
        constraint: Constraint = "none",
        levels: int = 0,
    ) -> None:
        super().__init__()
        self.surface = surface
        self.material_name = material_name
        material(material_name)
        if constraint not in ("none", "wrap", "clamp"):
            raise ObscuraError(f"mask constraint is {constraint!r}; expected 'none', 'wrap' or 'clamp'")
        if constraint != "none":
            checks.positive("mask max_height_m", max_height_m)
        if levels and (constraint == "none" or levels < 2):
            raise ObscuraError(
                f"mask levels is {levels}; expected 0 (off) or >= 2 together with a wrap/clamp max height"
            )
        self.max_height_m = float(max_height_m)
        self.constraint = constraint
        self.levels = int(levels)

    def raw_height_m(self) -> Tensor:
        """The surface before constraint and quantisation (what the sampling check looks at)."""
        return self.surface()

    def height_m(self) -> Tensor:
        """The physical height map in metres after the max-height constraint and quantisation."""
        h = self.surface()
        if self.constraint == "wrap":
            # Phase wrapping: the design-wavelength phase is unchanged modulo 2 pi.
            h = torch.remainder(h, self.max_height_m)
        elif self.constraint == "clamp":
            h = h.clamp(0.0, self.max_height_m)
        if self.levels:
            h = quantise_ste(h, self.max_height_m, self.levels, wrap=self.constraint == "wrap")
        return h

    def phase(self, wavelengths_m: Tensor) -> Tensor:
        """Phase delay 2 pi (n - 1) h / lambda for each wavelength: shape (L, N, N)."""
        h = self.height_m()
        n_minus_1 = (material(self.material_name).index(wavelengths_m.detach().cpu().double()) - 1.0).to(h)
        k = (2.0 * math.pi / wavelengths_m).to(h)
        return (k * n_minus_1)[:, None, None] * h
