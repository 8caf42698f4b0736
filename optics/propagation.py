"""Free-space propagation of sampled complex fields (pure functions, SI units).

* `angular_spectrum`: band-limited angular spectrum (Matsushima & Shimobaba 2009), zero-padded
  to twice the grid so the FFT's circular wrap never reaches the field.
* `fresnel_transfer`: the Fresnel transfer function on the same padded grid.
* `scaled_fresnel`: single-step Fresnel integral evaluated by a matrix Fourier transform at
  arbitrary output samples (so the sensor's pitch need not equal the input's).

Each warns with `SamplingWarning` when its sampling breaks the method's validity condition.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor

from obscura.errors import ObscuraError
from optics import checks


class SamplingWarning(UserWarning):
    """The sampling of a propagation violates the validity condition of the method used."""


def _padded_frequencies(
    shape: tuple[int, int], pitch_m: float, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Spatial frequencies (cycles/m) of an FFT grid of `shape`, broadcastable as (H, 1) and (1, W)."""
    fy = torch.fft.fftfreq(shape[0], d=pitch_m, device=device, dtype=dtype)[:, None]
    fx = torch.fft.fftfreq(shape[1], d=pitch_m, device=device, dtype=dtype)[None, :]
    return fy, fx


def _apply_transfer(field: Tensor, transfer: Tensor, padded: tuple[int, int]) -> Tensor:
    """Zero-pad `field` (centred) to `padded`, multiply its spectrum by `transfer`, crop back."""
    h, w = field.shape[-2:]
    top, left = (padded[0] - h) // 2, (padded[1] - w) // 2
    pad = torch.nn.functional.pad(field, (left, padded[1] - w - left, top, padded[0] - h - top))
    out = torch.fft.ifft2(torch.fft.fft2(pad) * transfer)
    return out[..., top : top + h, left : left + w]


def _check_field(field: Tensor, wavelength_m: float, distance_m: float, pitch_m: float) -> None:
    """Common argument checks with one-line errors."""
    checks.wavelength("wavelength_m", wavelength_m)
    checks.positive("propagation distance_m", distance_m)
    checks.positive("pitch_m", pitch_m)
    if not field.is_complex() or field.dim() < 2:
        raise ObscuraError(
            f"field has dtype {field.dtype} and shape {tuple(field.shape)}; expected a complex tensor (..., H, W)"
        )


def angular_spectrum(
    field: Tensor, wavelength_m: float, distance_m: float, pitch_m: float, pad_factor: int = 2
) -> Tensor:
    """Propagate `field` (..., H, W) by `distance_m` with the band-limited angular spectrum method."""
    _check_field(field, wavelength_m, distance_m, pitch_m)
    padded = (field.shape[-2] * pad_factor, field.shape[-1] * pad_factor)
    limits = [1.0 / (wavelength_m * math.sqrt((2.0 * distance_m / (n * pitch_m)) ** 2 + 1.0)) for n in padded]
    nyquist = 0.5 / pitch_m
    if min(limits) < 0.5 * nyquist:
        warnings.warn(
            f"angular spectrum: band limit {min(limits):.3g} cycles/m is below half the grid's Nyquist "
            f"{nyquist:.3g}; z={distance_m:g} m is too long for this grid (enlarge the grid or use scaled_fresnel)",
            SamplingWarning,
            stacklevel=2,
        )
    transfer = _transfer("asm", padded, pitch_m, wavelength_m, distance_m, field.dtype, field.device)
    return _apply_transfer(field, transfer, padded)


def fresnel_transfer(
    field: Tensor, wavelength_m: float, distance_m: float, pitch_m: float, pad_factor: int = 2
) -> Tensor:
    """Propagate `field` (..., H, W) by `distance_m` with the Fresnel transfer function."""
    _check_field(field, wavelength_m, distance_m, pitch_m)
    padded = (field.shape[-2] * pad_factor, field.shape[-1] * pad_factor)
    side_m = min(padded) * pitch_m
    # The chirp exp(-i pi lambda z f^2) is sampled without aliasing when pitch >= lambda z / L.
    if pitch_m < wavelength_m * distance_m / side_m:
        warnings.warn(
            f"Fresnel transfer function: pitch {pitch_m:.3g} m < lambda z / L = {wavelength_m * distance_m / side_m:.3g} m; "
            "the transfer function aliases (use a shorter distance, a larger grid or scaled_fresnel)",
            SamplingWarning,
            stacklevel=2,
        )
    transfer = _transfer("fresnel", padded, pitch_m, wavelength_m, distance_m, field.dtype, field.device)
    return _apply_transfer(field, transfer, padded)


@functools.lru_cache(maxsize=16)
def _transfer(
    kind: str,
    padded: tuple[int, int],
    pitch_m: float,
    wavelength_m: float,
    distance_m: float,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """Transfer function on the padded FFT grid (cached: training repeats the same propagation).

    The constant phase k z is split off and applied as a float64 scalar, so the per-frequency
    phase stays small enough for float32: k z (sqrt(1 - a) - 1) = -k z a / (1 + sqrt(1 - a)),
    a = (lambda fx)^2 + (lambda fy)^2. ASM is band-limited (Matsushima & Shimobaba 2009): the
    chirp of frequencies beyond 1 / (lambda sqrt((2 df z)^2 + 1)) is undersampled on the padded
    grid, and those (and evanescent) components are dropped.
    """
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    fy, fx = _padded_frequencies(padded, pitch_m, device, real)
    k = 2.0 * math.pi / wavelength_m
    a = (wavelength_m * fx) ** 2 + (wavelength_m * fy) ** 2
    if kind == "asm":
        phase = -k * distance_m * a / (1.0 + torch.sqrt((1.0 - a).clamp_min(0.0)))
        limits = [1.0 / (wavelength_m * math.sqrt((2.0 * distance_m / (n * pitch_m)) ** 2 + 1.0)) for n in padded]
        amplitude = ((a < 1) & (fy.abs() <= limits[0]) & (fx.abs() <= limits[1])).to(real)
    else:
        phase = -math.pi * wavelength_m * distance_m * (fx**2 + fy**2)
        amplitude = torch.ones_like(phase)
    constant = complex(math.cos(k * distance_m % (2 * math.pi)), math.sin(k * distance_m % (2 * math.pi)))
    return torch.polar(amplitude, phase).to(dtype) * constant


def centred_coordinates(
    samples: int, pitch_m: float, device: torch.device | None = None, dtype: torch.dtype = torch.float64
) -> Tensor:
    """Sample positions (i - samples/2) * pitch: the optical axis sits on sample samples // 2."""
    return (torch.arange(samples, device=device, dtype=dtype) - samples // 2) * pitch_m


def fourier_matrix(out_m: Tensor, in_m: Tensor, wavelength_m: Tensor, distance_m: float) -> Tensor:
    """exp(-i 2 pi x xi / (lambda z)) for every wavelength: shape (L, len(out), len(in))."""
    scale = (2.0 * math.pi / (wavelength_m * distance_m))[:, None, None]
    return torch.polar(
        torch.ones((), dtype=out_m.dtype, device=out_m.device), -scale * out_m[None, :, None] * in_m[None, None, :]
    )


def scaled_fresnel(
    field: Tensor,
    in_y_m: Tensor,
    in_x_m: Tensor,
    out_y_m: Tensor,
    out_x_m: Tensor,
    wavelength_m: Tensor,
    distance_m: float,
    chirps: bool = True,
) -> Tensor:
    """Single-step Fresnel propagation (L, Ny, Nx) -> (L, My, Mx) by matrix Fourier transforms.

    U(x) = e^{ikz}/(i lambda z) e^{ik x^2/2z} sum_xi U(xi) e^{ik xi^2/2z} e^{-i 2 pi x xi/(lambda z)} dxi^2.
    With chirps=False the two quadratic phases are left out (the caller folded the input one into
    its field; the output one does not change an intensity). The sum is periodic in x with period
    lambda z / dxi: a warning is raised when the output window is wider than that.
    """
    checks.positive("propagation distance_m", distance_m)
    lam = wavelength_m.to(in_x_m.dtype)
    d_in = float(in_x_m[1] - in_x_m[0]) if len(in_x_m) > 1 else 1.0
    period = float(lam.min()) * distance_m / d_in
    extent = max(float(out_x_m.max() - out_x_m.min()), float(out_y_m.max() - out_y_m.min()))
    if extent > period:
        warnings.warn(
            f"scaled Fresnel: output window {extent:.3g} m exceeds the alias-free period lambda z / dxi = {period:.3g} m "
            "(sample the input more finely)",
            SamplingWarning,
            stacklevel=2,
        )
    k = (2.0 * math.pi / lam)[:, None, None]
    u = field
    if chirps:
        r2_in = in_y_m[:, None] ** 2 + in_x_m[None, :] ** 2
        u = u * torch.polar(torch.ones_like(r2_in), k * r2_in / (2.0 * distance_m)).to(field.dtype)
    a_y = fourier_matrix(out_y_m, in_y_m, lam, distance_m).to(field.dtype)
    a_x = fourier_matrix(out_x_m, in_x_m, lam, distance_m).to(field.dtype)
    d_y = float(in_y_m[1] - in_y_m[0]) if len(in_y_m) > 1 else 1.0
    out = a_y @ u @ a_x.transpose(-1, -2) * (d_in * d_y)
    if chirps:
        r2_out = out_y_m[:, None] ** 2 + out_x_m[None, :] ** 2
        front = torch.polar(
            1.0 / (lam[:, None, None] * distance_m) * torch.ones_like(r2_out),
            k * distance_m + k * r2_out / (2.0 * distance_m) - math.pi / 2,
        )
        out = out * front.to(field.dtype)
    else:
        out = out / (lam[:, None, None] * distance_m).to(out.real.dtype)
    return out
