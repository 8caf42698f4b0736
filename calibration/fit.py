"""Fit the simulated camera to a measured PSF by gradient descent through the differentiable optics.

Free parameters (optics.fabrication.as_built.Errors): mask-sensor distance error, mask decentre (x, y),
mask rotation, height scale, extra defocus (W020 in waves) and the PSF's position on the sensor.
Each is optimised in units of a typical size (so Adam's step means the same for all), from the
nominal design; the PSF position starts where the centroids agree. The loss is chi^2 per pixel
with the measurement's uncertainty, plus a small relative floor so the brightest pixels do not
alone decide.

Note: the distance error and the extra defocus both add defocus; they are told apart only by
the PSF's scale (lambda z / pupil), so the distance is the loosest parameter of the fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from obscura.errors import ObscuraError
from optics.fabrication.as_built import Errors, as_built_psf, psf_correlation
from optics.optic import Optic

# Name -> (typical size, value at the design).
SCALES: dict[str, tuple[float, float]] = {
    "distance_error_m": (1e-3, 0.0),
    "mask_shift_x_m": (20e-6, 0.0),
    "mask_shift_y_m": (20e-6, 0.0),
    "rotation_rad": (0.02, 0.0),
    "height_scale": (0.05, 1.0),
    "defocus_waves": (0.25, 0.0),
    "psf_shift_x_px": (1.0, 0.0),
    "psf_shift_y_px": (1.0, 0.0),
}


@dataclass
class FitConfig:
    """Which parameters to fit and how."""

    parameters: list[str] = field(default_factory=lambda: list(SCALES))
    steps: int = 300
    learning_rate: float = 0.05
    relative_floor: float = 0.02


@dataclass
class FitResult:
    """Fitted values, the fit's residuals and the loss history."""

    values: dict[str, float]
    chi2_per_pixel: float
    relative_residual: float
    correlation: float
    model_psf: np.ndarray
    history: list[float]


def errors_from(values: dict[str, torch.Tensor]) -> Errors:
    """Pack named parameters into an Errors."""
    return Errors(
        distance_error_m=values["distance_error_m"],
        mask_shift_m=torch.stack((values["mask_shift_x_m"], values["mask_shift_y_m"])),
        rotation_rad=values["rotation_rad"],
        height_scale=values["height_scale"],
        defocus_waves=values["defocus_waves"],
        psf_shift_px=torch.stack((values["psf_shift_x_px"], values["psf_shift_y_px"])),
    )


def _centroid(psf: np.ndarray) -> np.ndarray:
    """(x, y) centre of mass of a C x h x w PSF relative to pixel (h//2, w//2)."""
    total = psf.sum(axis=0)
    y, x = np.indices(total.shape)
    return (
        np.array([(total * (x - total.shape[1] // 2)).sum(), (total * (y - total.shape[0] // 2)).sum()]) / total.sum()
    )


def fit_camera(optic: Optic, measured: np.ndarray, sigma: np.ndarray, cfg: FitConfig) -> FitResult:
    """Fit `cfg.parameters` of the as-built `optic` to the measured PSF (C x h x w, with uncertainty)."""
    unknown = [p for p in cfg.parameters if p not in SCALES]
    if unknown:
        raise ObscuraError(f"fit parameters {unknown} are unknown; expected names from {', '.join(SCALES)}")
    if measured.shape != (optic.channels, optic.config.psf_size, optic.config.psf_size):
        raise ObscuraError(
            f"measured PSF has shape {measured.shape}; expected {optic.channels} x {optic.config.psf_size} x "
            f"{optic.config.psf_size} (the optic's channels and psf_size: set psf_size to the crop)"
        )
    target = torch.from_numpy(measured).double()
    weight = 1.0 / (
        torch.from_numpy(sigma).double() ** 2 + (cfg.relative_floor * target.amax(dim=(-2, -1), keepdim=True)) ** 2
    )
    with torch.no_grad():
        nominal = as_built_psf(optic, Errors()).numpy()
    start_shift = _centroid(measured) - _centroid(nominal)
    units = {name: torch.zeros((), dtype=torch.float64, requires_grad=name in cfg.parameters) for name in SCALES}
    with torch.no_grad():
        for axis, name in enumerate(("psf_shift_x_px", "psf_shift_y_px")):
            if name in cfg.parameters:
                units[name] += float(start_shift[axis])
    free = [units[name] for name in cfg.parameters]
    optimiser = torch.optim.Adam(free, lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.steps)

    def values() -> dict[str, torch.Tensor]:
        return {name: base + scale * units[name] for name, (scale, base) in SCALES.items()}

    history = []
    for _ in tqdm(range(cfg.steps), desc="fit", unit="step", disable=None, leave=False):
        optimiser.zero_grad()
        loss = ((as_built_psf(optic, errors_from(values())) - target) ** 2 * weight).mean()
        loss.backward()
        optimiser.step()
        schedule.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        fitted = {name: float(v) for name, v in values().items()}
        model = as_built_psf(optic, errors_from(values()))
        sig = torch.from_numpy(sigma).double()
        chi2 = float((((model - target) / sig) ** 2).mean())
        relative = float((model - target).norm() / target.norm())
        corr = float(psf_correlation(model, target))
    return FitResult(fitted, chi2, relative, corr, model.numpy(), history)
