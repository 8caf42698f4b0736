"""Polychromatic sampling: wavelengths and weights per colour channel from a sensor response."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from obscura.errors import ObscuraError
from optics import checks
from optics.settings import SpectrumConfig


def channel_samples(spec: SpectrumConfig) -> tuple[Tensor, Tensor]:
    """Wavelengths (C, K) and weights (C, K), weights summing to 1 per channel (float64).

    Each channel's response is a Gaussian of the given FWHM around its centre, sampled at K
    evenly spaced wavelengths across +-FWHM/2 (K = 1: the centre alone); an equal-energy
    illuminant is assumed, so the weights are the response values.
    """
    if not spec.centres_m:
        raise ObscuraError("spectrum centres_m is empty; expected one centre wavelength per colour channel")
    for i, c in enumerate(spec.centres_m):
        checks.wavelength(f"spectrum centres_m[{i}]", c)
    k = checks.positive_int("spectrum samples_per_channel", spec.samples_per_channel)
    centres = torch.tensor(spec.centres_m, dtype=torch.float64)
    if k == 1:
        return centres[:, None], torch.ones(len(centres), 1, dtype=torch.float64)
    fwhm = checks.positive("spectrum fwhm_m", spec.fwhm_m)
    offsets = torch.linspace(-fwhm / 2, fwhm / 2, k, dtype=torch.float64)
    wavelengths = centres[:, None] + offsets[None, :]
    for lam in wavelengths.flatten().tolist():
        checks.wavelength("spectrum sample wavelength", lam)
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2).expand_as(wavelengths)
    return wavelengths, weights / weights.sum(dim=1, keepdim=True)
