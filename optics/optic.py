"""The optic: thin lens + phase mask in a circular pupil, imaged onto the sensor plane.

A point source at distance s_o on the axis sends a paraxial spherical wave into the pupil; the
lens (focal length f(lambda)) and the sensor distance z leave the quadratic pupil phase
pi r^2 / lambda * (1/s_o - 1/f + 1/z) (zero when in focus). The field on the sensor is the
single-step Fresnel integral of the pupil field, evaluated by matrix Fourier transforms at
`pixel_oversample`^2 points per pixel and summed over each pixel (area integration). The
optical axis falls on the centre of pixel (H // 2, W // 2).
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import Tensor, nn

from obscura.errors import ObscuraError
from optics import checks
from optics.masks import FreeformSurface, PhaseMask, ZernikeSurface
from optics.materials import MATERIALS, material
from optics.propagation import SamplingWarning, scaled_fresnel
from optics.settings import MaskConfig, OpticConfig
from optics.spectrum import channel_samples

MIN_PUPIL_SAMPLES = 16
UNDERSAMPLED_LIGHT = 0.01  # share of the pupil's light that may pass where its phase is undersampled


def validate(config: OpticConfig) -> None:
    """Refuse physically meaningless settings with one line naming the field."""
    checks.positive_int("optic pupil_samples", config.pupil_samples, MIN_PUPIL_SAMPLES)
    checks.positive("lens focal_length_m", config.lens.focal_length_m)
    checks.positive("lens aperture_diameter_m", config.lens.aperture_diameter_m)
    checks.wavelength("lens design_wavelength_m", config.lens.design_wavelength_m)
    if config.lens.material != "ideal":
        material(config.lens.material)
    checks.positive("sensor_distance_m", config.sensor_distance_m)
    checks.positive_or_inf("object_distance_m", config.object_distance_m)
    checks.positive("pixel_pitch_m", config.pixel_pitch_m)
    checks.positive_int("psf_size", config.psf_size, 4)
    checks.positive_int("pixel_oversample", config.pixel_oversample)
    if config.mask.kind not in ("none", "zernike", "freeform"):
        raise ObscuraError(f"mask kind is {config.mask.kind!r}; expected 'none', 'zernike' or 'freeform'")
    wavelengths, _ = channel_samples(config.spectrum)
    _check_memory(config, wavelengths.numel())
    airy_diameter_m = 2.44 * float(wavelengths.max()) * config.sensor_distance_m / config.lens.aperture_diameter_m
    window_m = config.psf_size * config.pixel_pitch_m
    if window_m < airy_diameter_m:
        raise ObscuraError(
            f"psf window psf_size x pixel_pitch_m = {window_m:.3g} m is smaller than the Airy disc diameter "
            f"{airy_diameter_m:.3g} m of a {config.lens.aperture_diameter_m:g} m aperture; expected a larger psf_size or pitch"
        )


def _check_memory(config: OpticConfig, wavelengths: int) -> None:
    """Refuse a window or pupil grid whose complex fields cannot fit in this machine's memory (not an OOM kill)."""
    n_out = config.psf_size * config.pixel_oversample
    n_in = config.pupil_samples
    # Per wavelength: pupil field, the two Fourier matrices and the sensor field (complex128), with
    # a factor 4 for intermediates and their intensities.
    need = 4 * 16 * wavelengths * (n_in**2 + 2 * n_out * n_in + n_out**2)
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have / 2:
        raise ObscuraError(
            f"psf_size {config.psf_size} x pixel_oversample {config.pixel_oversample} with pupil_samples {n_in} "
            f"needs about {need / 2**30:.3g} GiB; expected a grid that fits half of this machine's "
            f"{have / 2**30:.0f} GiB memory"
        )


def build_mask(config: MaskConfig, rho: Tensor, theta: Tensor, rho_max: float) -> PhaseMask | None:
    """The configured phase mask on the pupil grid (seeded random initial heights if asked).

    Zernike terms are evaluated out to `rho_max` (just past 1) so the soft-edged rim samples
    see the surface continued (radially constant) rather than a step to zero.
    """
    if config.kind == "none":
        return None
    if config.kind == "zernike":
        surface: nn.Module = ZernikeSurface(
            rho.numpy(), theta.numpy(), config.num_terms, config.fixed_zero_terms, rho_max
        )
    else:
        surface = FreeformSurface(rho.shape[-1])
    if config.init_rms_height_m:
        _randomise(surface, config.init_rms_height_m, config.seed, rho <= 1.0)
    return PhaseMask(surface, config.material, config.max_height_m, config.constraint, config.levels)  # type: ignore[arg-type]


def _randomise(surface: nn.Module, rms_m: float, seed: int, inside: Tensor) -> None:
    """Random initial surface with RMS height `rms_m` over the pupil, reproducible from `seed`.

    Zernike coefficients are drawn with standard deviation (n+1)^-3 (low orders dominate, as in
    a smooth random wavefront); free-form heights are white. Both are rescaled to the exact RMS.
    """
    checks.positive("mask init_rms_height_m", rms_m)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if isinstance(surface, ZernikeSurface):
            std = (surface.radial_orders() + 1.0) ** -3.0
            c = torch.randn(len(std), generator=gen, dtype=torch.float64) * std * surface.free.double()
            surface.coefficients_um.copy_(c * rms_m * 1e6 / c.norm())
        else:
            h = torch.randn(surface.height_um.shape, generator=gen, dtype=torch.float64)
            h = h - h[inside].mean()
            surface.height_um.copy_(h * rms_m * 1e6 / h[inside].pow(2).mean().sqrt())


class Optic(nn.Module):
    """Lens + optional phase mask; `psf()` gives the (C, H, W) sensor PSF, each channel summing to 1."""

    def __init__(self, config: OpticConfig) -> None:
        super().__init__()
        validate(config)
        self.config = config
        n = config.pupil_samples
        radius = config.lens.aperture_diameter_m / 2
        self.pupil_pitch_m = config.lens.aperture_diameter_m / n
        # Symmetric samples across exactly the aperture: (j - (n-1)/2) * pitch.
        xi = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * self.pupil_pitch_m
        r = torch.hypot(xi[:, None], xi[None, :])
        theta = torch.atan2(xi[:, None].expand(n, n), xi[None, :].expand(n, n))
        # Soft edge: amplitude = fraction of a sample inside the circle (1-D approximation),
        # which removes most of the staircase error of a hard binary disc.
        amplitude = ((radius - r) / self.pupil_pitch_m + 0.5).clamp(0.0, 1.0)
        self.register_buffer("pupil_m", xi.float())
        self.register_buffer("r2_m2", (r**2).float())
        self.register_buffer("amplitude", amplitude.float())
        self.mask = build_mask(config.mask, r / radius, theta, 1.0 + 0.5 * self.pupil_pitch_m / radius)
        self.wavelengths_m, self.weights = channel_samples(config.spectrum)
        s = config.pixel_oversample
        p = config.pixel_pitch_m
        centres = (torch.arange(config.psf_size, dtype=torch.float64) - config.psf_size // 2) * p
        offsets = (torch.arange(s, dtype=torch.float64) - (s - 1) / 2) * p / s
        self.sensor_m = (centres[:, None] + offsets[None, :]).flatten()

    @property
    def channels(self) -> int:
        """Number of colour channels."""
        return self.wavelengths_m.shape[0]

    def focal_lengths_m(self, wavelengths_m: Tensor) -> Tensor:
        """Focal length at each wavelength (ideal lens: achromatic)."""
        lens = self.config.lens
        if lens.material == "ideal":
            return torch.full_like(wavelengths_m, lens.focal_length_m)
        glass = MATERIALS[lens.material]
        return lens.focal_length_m * (glass.index(lens.design_wavelength_m) - 1.0) / (glass.index(wavelengths_m) - 1.0)

    def defocus_per_m(self, object_distance_m: float) -> Tensor:
        """Pupil curvature 1/s_o - 1/f(lambda) + 1/z per wavelength, shape (C*K,) in 1/m."""
        lam = self.wavelengths_m.flatten()
        inv_so = 0.0 if math.isinf(object_distance_m) else 1.0 / object_distance_m
        return inv_so - 1.0 / self.focal_lengths_m(lam) + 1.0 / self.config.sensor_distance_m

    def geometric_blur_diameter_m(self, object_distance_m: float | None = None) -> Tensor:
        """Geometric-optics blur circle D z |1/s_o - 1/f + 1/z| per channel (centre wavelength of each)."""
        s_o = self.config.object_distance_m if object_distance_m is None else object_distance_m
        c = self.defocus_per_m(s_o).view(self.wavelengths_m.shape)
        k = self.wavelengths_m.shape[1] // 2
        return self.config.lens.aperture_diameter_m * self.config.sensor_distance_m * c[:, k].abs()

    def forward(self) -> Tensor:
        """The PSF at the configured depth (so torch.func.functional_call can swap parameters)."""
        return self.psf()

    def psf(self, object_distance_m: float | None = None) -> Tensor:
        """PSF (C, H, W) of a point at `object_distance_m` (default: the configured one)."""
        return self.psf_and_energy(object_distance_m)[0]

    def psf_stack(self, object_distances_m: list[float]) -> Tensor:
        """PSFs for a list of depths: (D, C, H, W)."""
        return torch.stack([self.psf(d) for d in object_distances_m])

    def psf_and_energy(self, object_distance_m: float | None = None) -> tuple[Tensor, Tensor]:
        """PSF (C, H, W) and the fraction of each channel's light that falls inside the window (C,)."""
        s_o = checks.positive_or_inf(
            "object_distance_m", self.config.object_distance_m if object_distance_m is None else object_distance_m
        )
        real = self.amplitude.dtype
        complex_dtype = torch.complex128 if real == torch.float64 else torch.complex64
        device = self.amplitude.device
        lam64 = self.wavelengths_m.flatten()
        curvature = self.defocus_per_m(s_o)
        self._check_sampling(lam64, curvature)
        lam = lam64.to(device=device, dtype=real)
        phase = (math.pi * curvature.to(device=device, dtype=real) / lam)[:, None, None] * self.r2_m2
        if self.mask is not None:
            phase = phase + self.mask.phase(lam64.to(device))
        field = torch.polar(self.amplitude.expand_as(phase), phase).to(complex_dtype)
        sensor = self.sensor_m.to(device)
        pupil = self.pupil_m.double()
        field_out = scaled_fresnel(
            field, pupil, pupil, sensor, sensor, lam64.to(device), self.config.sensor_distance_m, chirps=False
        )
        intensity = field_out.real**2 + field_out.imag**2
        s = self.config.pixel_oversample
        sub_area = (self.config.pixel_pitch_m / s) ** 2
        pixels = nn.functional.avg_pool2d(intensity[:, None], s, s, divisor_override=1)[:, 0] * sub_area
        weights = self.weights.to(device=device, dtype=real)
        c, k = self.wavelengths_m.shape
        channel_power = (pixels.view(c, k, *pixels.shape[-2:]) * weights[:, :, None, None]).sum(dim=1)
        inside = channel_power.sum(dim=(-2, -1))
        total = (self.amplitude**2).sum() * self.pupil_pitch_m**2
        return channel_power / inside[:, None, None], (inside / total).detach()

    def _check_sampling(self, lam: Tensor, curvature: Tensor) -> None:
        """Warn when more than UNDERSAMPLED_LIGHT of the pupil's light passes where the phase changes by more than pi
        between neighbouring pupil samples, naming the pupil_samples that would be enough.

        The light decides, not the steepest sample: a high-order mask is steepest at the rim of the
        pupil, where little light passes, and a warning on the maximum stayed at every sampling a
        user could afford (the committed optic: 23 rad at 256 samples, still 8 rad at 1024, while its
        PSF at 256 already correlates 0.999 with the one at 2048).
        """
        with torch.no_grad():
            step = self._phase_steps(lam, curvature)
            light = self.amplitude.detach().double().cpu() ** 2
            light = light / light.sum()
        share = float(light[step > math.pi].sum())
        if share <= UNDERSAMPLED_LIGHT:
            return
        # A smooth phase sampled m times more finely changes m times less between samples.
        factor = next(
            (m for m in (2, 4, 8, 16, 32) if float(light[step > m * math.pi].sum()) <= UNDERSAMPLED_LIGHT), 64
        )
        needed = self.config.pupil_samples * factor
        warnings.warn(
            f"{share:.1%} of the pupil's light passes where the phase changes by more than pi between pupil samples "
            f"(up to {float(step.max()):.1f} rad): pupil_samples={self.config.pupil_samples} undersamples the "
            f"defocus/mask phase; set pupil_samples={needed} (psf, capture and the demo: --pupil-samples {needed})",
            SamplingWarning,
            stacklevel=3,
        )

    def _phase_steps(self, lam: Tensor, curvature: Tensor) -> Tensor:
        """Per pupil sample, a bound on the phase change (rad) to its next neighbour in x or y, worst wavelength.

        Pairs with a sample outside the nominal disc (amplitude < 1/2) count zero: no light interferes there.
        """
        inside = self.amplitude.detach().cpu() >= 0.5
        radius = self.r2_m2.double().cpu().sqrt()
        # The defocus phase pi c r^2 / lambda changes by 2 pi |c| r / lambda per metre at radius r.
        step = float((2 * math.pi * curvature.abs() / lam).max()) * radius * self.pupil_pitch_m
        if self.mask is not None:
            h = self.mask.raw_height_m().detach().double().cpu()
            n1 = material(self.mask.material_name).index(lam) - 1.0
            step = step + float((2 * math.pi * n1 / lam).max()) * _neighbour_change(h, inside)
        return step.where(inside, 0.0)


def _neighbour_change(h: Tensor, inside: Tensor) -> Tensor:
    """|h| change from each sample to its next neighbour in x or y (the larger), zero where either lies outside."""
    change = torch.zeros_like(h)
    down = (h[1:, :] - h[:-1, :]).abs().where(inside[1:, :] & inside[:-1, :], 0.0)
    right = (h[:, 1:] - h[:, :-1]).abs().where(inside[:, 1:] & inside[:, :-1], 0.0)
    change[:-1, :] = down
    change[:, :-1] = torch.maximum(change[:, :-1], right)
    return change
