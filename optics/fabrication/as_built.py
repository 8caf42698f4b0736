"""The optic as built: its PSF with fabrication and assembly errors, differentiable in every error.

The pupil, lens, spectrum and sensor sampling are the Optic's; what changes is
* the mask: a height map (pupil grid, metres) scaled by `height_scale`, rotated by
  `rotation_rad` and shifted by `mask_shift_m` (x, y) in the pupil, or a fixed complex
  transmission per wavelength (a fabricated map averaged onto the pupil grid);
* the mask-sensor distance z + `distance_error_m`, which changes both the defocus term 1/z and
  the scale of the PSF (lambda z / pupil);
* extra defocus `defocus_waves`: W020 in waves at the design wavelength at the aperture edge
  (phase 2 pi W020 (lambda_d / lambda) (r / R)^2), e.g. an object-distance or focal-length error;
* `psf_shift_px` (x, y): where the PSF centre falls on the sensor relative to pixel (H//2, W//2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from optics.materials import material
from optics.optic import Optic
from optics.propagation import fourier_matrix


@dataclass
class Errors:
    """Fabrication and assembly errors (floats for analysis; tensors when fitting)."""

    distance_error_m: float | Tensor = 0.0
    mask_shift_m: tuple[float, float] | Tensor = (0.0, 0.0)
    rotation_rad: float | Tensor = 0.0
    height_scale: float | Tensor = 1.0
    defocus_waves: float | Tensor = 0.0
    psf_shift_px: tuple[float, float] | Tensor = (0.0, 0.0)


def transform_map(values: Tensor, shift_m: Tensor, rotation_rad: Tensor, pitch_m: float) -> Tensor:
    """Resample (..., N, N) maps on the pupil grid after rotating them by `rotation_rad` about the
    centre (from +x, the columns, towards +y, the rows) and shifting them by `shift_m` (x, y):
    out(p) = in(R(-theta) (p - shift)). Bilinear,
    differentiable in shift and angle; beyond the grid the edge value continues."""
    n = values.shape[-1]
    half_m = (n - 1) / 2 * pitch_m
    coords = torch.linspace(-1.0, 1.0, n, dtype=values.dtype, device=values.device)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    shift_m, rotation_rad = shift_m.to(values.dtype), rotation_rad.to(values.dtype)
    sx, sy = shift_m[0] / half_m, shift_m[1] / half_m
    cos, sin = torch.cos(rotation_rad), torch.sin(rotation_rad)
    x, y = gx - sx, gy - sy
    grid = torch.stack((cos * x + sin * y, -sin * x + cos * y), dim=-1)
    flat = values.reshape(-1, 1, n, n)
    out = nn.functional.grid_sample(
        flat, grid.expand(flat.shape[0], n, n, 2), mode="bilinear", padding_mode="border", align_corners=True
    )
    return out.reshape(values.shape)


def as_built_psf(
    optic: Optic, errors: Errors, height_m: Tensor | None = None, transmission: Tensor | None = None
) -> Tensor:
    """PSF (C, H, W), each channel summing to 1, of `optic` with `errors`.

    The mask is `height_m` (pupil grid; default the optic's own constrained, quantised map) or a
    complex `transmission` (C*K, N, N) per simulated wavelength, which then replaces it.
    """
    cfg = optic.config
    real = torch.float64
    lam = optic.wavelengths_m.flatten().to(real)
    as_t = lambda v: torch.as_tensor(v, dtype=real)  # noqa: E731
    z = cfg.sensor_distance_m + as_t(errors.distance_error_m)
    inv_so = 0.0 if math.isinf(cfg.object_distance_m) else 1.0 / cfg.object_distance_m
    curvature = inv_so - 1.0 / optic.focal_lengths_m(lam) + 1.0 / z
    r2 = optic.r2_m2.to(real)
    radius = cfg.lens.aperture_diameter_m / 2
    w020 = as_t(errors.defocus_waves) * cfg.lens.design_wavelength_m / lam
    phase = (math.pi * curvature / lam)[:, None, None] * r2 + (2 * math.pi * w020)[:, None, None] * r2 / radius**2
    amplitude = optic.amplitude.to(real)
    shift, angle = as_t(errors.mask_shift_m), as_t(errors.rotation_rad)
    if transmission is not None:
        t = transmission.to(torch.complex128)
        moved = transform_map(torch.stack((t.real, t.imag)), shift, angle, optic.pupil_pitch_m)
        field = torch.polar(amplitude.expand_as(phase), phase) * torch.complex(moved[0], moved[1])
    else:
        if height_m is None:
            if optic.mask is None:
                height_m = torch.zeros_like(r2)
            else:
                with torch.no_grad():
                    height_m = optic.mask.height_m()
        h = transform_map(height_m.to(real), shift, angle, optic.pupil_pitch_m) * as_t(errors.height_scale)
        if optic.mask is not None:
            n1 = material(optic.mask.material_name).index(lam) - 1.0
            phase = phase + (2 * math.pi * n1 / lam)[:, None, None] * h
        field = torch.polar(amplitude.expand_as(phase), phase)
    p = cfg.pixel_pitch_m
    psf_shift = as_t(errors.psf_shift_px)
    sensor = optic.sensor_m.to(real)
    out_x, out_y = sensor - psf_shift[0] * p, sensor - psf_shift[1] * p
    pupil = optic.pupil_m.to(real)
    a_y = fourier_matrix(out_y, pupil, lam, z)
    a_x = fourier_matrix(out_x, pupil, lam, z)
    out = a_y @ field @ a_x.transpose(-1, -2) / (lam * z)[:, None, None]
    intensity = out.real**2 + out.imag**2
    s = cfg.pixel_oversample
    pixels = nn.functional.avg_pool2d(intensity[:, None], s, s, divisor_override=1)[:, 0]
    c, k = optic.wavelengths_m.shape
    channel = (pixels.view(c, k, *pixels.shape[-2:]) * optic.weights.to(real)[:, :, None, None]).sum(dim=1)
    return channel / channel.sum(dim=(-2, -1), keepdim=True)


def psf_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of two PSFs over all channels and pixels (1 = same shape)."""
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return (a @ b) / (a.norm() * b.norm())
