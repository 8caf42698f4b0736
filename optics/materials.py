"""Refractive indices from Sellmeier dispersion formulas (wavelengths in metres)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from obscura.errors import ObscuraError


@dataclass(frozen=True)
class Sellmeier:
    """n^2 = 1 + sum B_i L^2 / (L^2 - C_i), L in micrometres, C_i in square micrometres."""

    b: tuple[float, ...]
    c_um2: tuple[float, ...]
    source: str

    def index(self, wavelength_m: Tensor | float) -> Tensor:
        """Refractive index at `wavelength_m` (tensor in, tensor out; differentiable)."""
        lam2 = (torch.as_tensor(wavelength_m, dtype=torch.float64) * 1e6) ** 2
        n2 = torch.ones_like(lam2)
        for b, c in zip(self.b, self.c_um2):
            n2 = n2 + b * lam2 / (lam2 - c)
        return torch.sqrt(n2)


# Malitson (1965), fused silica at 20 C, valid 0.21-3.71 um.
FUSED_SILICA = Sellmeier(
    b=(0.6961663, 0.4079426, 0.8974794),
    c_um2=(0.0684043**2, 0.1162414**2, 9.896161**2),
    source="Malitson 1965, JOSA 55, 1205",
)
# SCHOTT N-BK7 datasheet coefficients, valid 0.3-2.5 um.
BK7 = Sellmeier(
    b=(1.03961212, 0.231792344, 1.01046945),
    c_um2=(0.00600069867, 0.0200179144, 103.560653),
    source="SCHOTT N-BK7 data sheet",
)
# Nanoscribe IP-Dip photoresist (two-photon printable, UV-curable), polymerised; three-term
# Sellmeier fit of Schmidt et al. 2019, table 2.
IP_DIP = Sellmeier(
    b=(1.2899, 6.0569e-2, 1.1844e5),
    c_um2=(1.1283e-2, 7.7762e-2, 2.5802e7),
    source="Schmidt et al. 2019, Opt. Mater. Express 9, 4564, table 2 (IP-Dip, polymerised)",
)


class Air:
    """Standard air (Ciddor 1996 two-term fit, 15 C, 101325 Pa, 450 ppm CO2)."""

    source = "Ciddor 1996, Appl. Opt. 35, 1566"

    def index(self, wavelength_m: Tensor | float) -> Tensor:
        """Refractive index of air at `wavelength_m`."""
        inv2 = (torch.as_tensor(wavelength_m, dtype=torch.float64) * 1e6) ** -2
        return 1.0 + 0.05792105 / (238.0185 - inv2) + 0.00167917 / (57.362 - inv2)


MATERIALS: dict[str, Sellmeier | Air] = {
    "fused_silica": FUSED_SILICA,
    "bk7": BK7,
    "ip_dip": IP_DIP,
    "air": Air(),
}


def material(name: str) -> Sellmeier | Air:
    """Look a material up by name, with a one-line error listing the known ones."""
    try:
        return MATERIALS[name]
    except KeyError:
        raise ObscuraError(f"material is {name!r}; expected one of {sorted(MATERIALS)}") from None


def refractive_index(name: str, wavelength_m: Tensor | float) -> Tensor:
    """Refractive index of material `name` at `wavelength_m` (float64 tensor)."""
    return material(name).index(wavelength_m)
