"""Fit the simulated camera to a measured PSF by gradient descent through the differentiable optics.

Free parameters (optics.fabrication.as_built.Errors): mask-sensor distance error, mask decentre (x, y),
mask rotation, height scale, extra defocus (W020 in waves) and the PSF's position on the sensor.
Each is optimised in units of a typical size (so Adam's step means the same for all), from the
nominal design. The PSF position (and, when fitted, the rotation) starts where the nominal PSF,
computed over four crop widths, best matches the measured crop (normalised cross-correlation over
a coarse rotation grid): a privacy optic's PSF is a wide speckle pattern whose centre of mass can
lie tens of pixels from the optical axis, and the loss decorrelates within a pixel of shift, so
gradient descent only converges from a start within about a pixel. The loss is chi^2 per pixel
with the measurement's uncertainty, plus a small relative floor so the brightest pixels do not
alone decide. A fit whose chi^2 per pixel stays above `max_chi2_per_pixel` did not converge.

Note: the distance error and the extra defocus both add defocus; they are told apart only by
the PSF's scale (lambda z / pupil), so the distance is the loosest parameter of the fit.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from tqdm import tqdm

from obscura.config import bounded
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
SEARCH_CROPS = 4  # the start is searched over a nominal PSF this many crop widths wide


@dataclass
class FitConfig:
    """Which parameters to fit and how."""

    parameters: list[str] = field(default_factory=lambda: list(SCALES))
    steps: int = bounded(300, ge=1)
    learning_rate: float = bounded(0.05, gt=0)
    relative_floor: float = bounded(0.02, ge=0)
    rotation_search_rad: float = bounded(0.06, ge=0, le=3.2)
    max_chi2_per_pixel: float = bounded(3.0, gt=0)


@dataclass
class FitResult:
    """Fitted values, the fit's residuals and the loss history."""

    values: dict[str, float]
    chi2_per_pixel: float
    relative_residual: float
    correlation: float
    model_psf: np.ndarray
    history: list[float]
    start: dict[str, float] = field(default_factory=dict)

    def converged(self, cfg: FitConfig) -> bool:
        """Whether the model explains the measurement to within its noise (chi^2 per pixel at most the limit)."""
        return self.chi2_per_pixel <= cfg.max_chi2_per_pixel


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


def _match_score(wide: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of the measured crop at every offset in `wide`, summed over channels."""
    return sum(
        cv2.matchTemplate(w.astype(np.float32), m.astype(np.float32), cv2.TM_CCOEFF_NORMED)
        for w, m in zip(wide, measured)
    )


def _rotation_grid(cfg: FitConfig) -> np.ndarray:
    """Rotations tried for the start: 0 only unless the rotation is fitted, else steps of a quarter unit."""
    if "rotation_rad" not in cfg.parameters or cfg.rotation_search_rad <= 0:
        return np.zeros(1)
    step = SCALES["rotation_rad"][0] / 4
    k = int(np.ceil(cfg.rotation_search_rad / step))
    return np.arange(-k, k + 1) * step


def initial_guess(optic: Optic, measured: np.ndarray, cfg: FitConfig) -> dict[str, float]:
    """PSF shift (px) and rotation (rad) where the nominal PSF over four crop widths best matches the crop."""
    n = measured.shape[-1]
    # Offsets up to 1.5 crop widths either way: the crop is centred on the measured centroid, which
    # for a wide speckle PSF can lie anywhere in its light, tens of pixels from the axis.
    wide = Optic(dataclasses.replace(optic.config, psf_size=SEARCH_CROPS * n))
    wide.load_state_dict(optic.state_dict())
    best = (-np.inf, 0.0, (0, 0))
    with torch.no_grad():
        for rotation in tqdm(_rotation_grid(cfg), desc="fit start", unit="angle", disable=None, leave=False):
            score = _match_score(as_built_psf(wide, Errors(rotation_rad=float(rotation))).numpy(), measured)
            _, peak, _, (x0, y0) = cv2.minMaxLoc(score)
            if peak > best[0]:
                best = (peak, float(rotation), (x0, y0))
    _, rotation, (x0, y0) = best
    # The crop's pixel (i, j) sits on the wide window's (y0 + i, x0 + j); the axis is the wide window's centre.
    return {
        "rotation_rad": rotation,
        "psf_shift_x_px": float(SEARCH_CROPS * n // 2 - x0 - n // 2),
        "psf_shift_y_px": float(SEARCH_CROPS * n // 2 - y0 - n // 2),
        "match_score": float(best[0]) / len(measured),
    }


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
    start = initial_guess(optic, measured, cfg)
    units = {name: torch.zeros((), dtype=torch.float64, requires_grad=name in cfg.parameters) for name in SCALES}
    with torch.no_grad():
        for name in ("rotation_rad", "psf_shift_x_px", "psf_shift_y_px"):
            if name in cfg.parameters:
                units[name] += start[name] / SCALES[name][0]
    free = [units[name] for name in cfg.parameters]
    optimiser = torch.optim.Adam(free, lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, cfg.steps)

    def values() -> dict[str, torch.Tensor]:
        return {name: base + scale * units[name] for name, (scale, base) in SCALES.items()}

    history = []
    for _ in tqdm(range(cfg.steps), desc="fit", unit="step", mininterval=2.0):
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
    return FitResult(fitted, chi2, relative, corr, model.numpy(), history, start)
