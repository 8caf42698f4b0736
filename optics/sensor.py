"""Sensor model: photon shot noise, read noise, full well, gain and bit-depth quantisation,
with an optional RGGB Bayer mosaic. Differentiable: shot noise uses the Gaussian approximation
of the Poisson law (reparameterised), quantisation a straight-through gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from obscura.errors import ObscuraError
from optics import checks
from optics.settings import SensorConfig

_BILINEAR_GREEN = [[0.0, 0.25, 0.0], [0.25, 1.0, 0.25], [0.0, 0.25, 0.0]]
_BILINEAR_RED_BLUE = [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]


def bayer_masks(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """RGGB sampling masks, shape 3 x H x W (1 where a photosite sees that colour)."""
    masks = torch.zeros(3, height, width, device=device, dtype=dtype)
    masks[0, 0::2, 0::2] = 1
    masks[1, 0::2, 1::2] = 1
    masks[1, 1::2, 0::2] = 1
    masks[2, 1::2, 1::2] = 1
    return masks


def mosaic(images: Tensor) -> Tensor:
    """N x 3 x H x W -> N x 1 x H x W raw RGGB mosaic."""
    return (images * bayer_masks(*images.shape[-2:], images.device, images.dtype)).sum(dim=1, keepdim=True)


def demosaic_bilinear(raw: Tensor) -> Tensor:
    """N x 1 x H x W RGGB mosaic -> N x 3 x H x W by bilinear interpolation of each colour plane."""
    planes = raw * bayer_masks(*raw.shape[-2:], raw.device, raw.dtype)
    kernels = torch.tensor(
        [_BILINEAR_RED_BLUE, _BILINEAR_GREEN, _BILINEAR_RED_BLUE], device=raw.device, dtype=raw.dtype
    )
    return nn.functional.conv2d(planes, kernels[:, None], padding=1, groups=3)


def quantise_ste(x: Tensor) -> Tensor:
    """Round to integers in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class Sensor(nn.Module):
    """Linear irradiance in [0, 1] (N x 3 x H x W) -> digitised capture in [0, 1], same shape."""

    def __init__(self, config: SensorConfig | None = None) -> None:
        super().__init__()
        self.config = config or SensorConfig()
        c = self.config
        checks.positive("sensor full_well_e", c.full_well_e)
        checks.positive("sensor exposure", c.exposure)
        if c.read_noise_e < 0:
            raise ObscuraError(f"sensor read_noise_e is {c.read_noise_e!r}; expected a number >= 0")
        checks.positive_int("sensor bit_depth", c.bit_depth)
        if c.bit_depth > 24:
            raise ObscuraError(f"sensor bit_depth is {c.bit_depth}; expected 1-24")
        self.max_code = float(2**c.bit_depth - 1)
        self.gain = c.gain_dn_per_e if c.gain_dn_per_e > 0 else self.max_code / c.full_well_e

    @property
    def noise(self) -> bool:
        """Whether shot and read noise are added (kept in the config so it is written with it)."""
        return self.config.noise

    @noise.setter
    def noise(self, value: bool) -> None:
        self.config.noise = bool(value)

    def forward(self, irradiance: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Electrons -> noise -> full-well clip -> gain -> quantised code -> back to scene units."""
        c = self.config
        x = mosaic(irradiance) if c.bayer else irradiance
        electrons = x.clamp_min(0.0) * (c.exposure * c.full_well_e)
        if self.noise:
            # Poisson(e) ~ e + sqrt(e) * N(0, 1) for the electron counts of interest (> ~10).
            shot = torch.randn(electrons.shape, generator=generator, device=x.device, dtype=x.dtype)
            read = torch.randn(electrons.shape, generator=generator, device=x.device, dtype=x.dtype)
            electrons = electrons + electrons.clamp_min(1e-3).sqrt() * shot + c.read_noise_e * read
        electrons = electrons.clamp(0.0, c.full_well_e)
        codes = electrons * self.gain
        codes = (quantise_ste(codes) if c.quantise else codes).clamp(0.0, self.max_code)
        out = codes / (self.gain * c.exposure * c.full_well_e)
        if c.bayer:
            out = demosaic_bilinear(out)
        return out.clamp(0.0, 1.0)
