"""Tolerance analysis: how much the PSF of the fabricated, assembled optic still looks like the design.

The fabricated mask (exported level map: wrapped, resampled, quantised, constrained) enters the
simulation as its complex transmission averaged over each pupil cell, per wavelength; on top of
it come a correlated random height error, mask decentre and rotation, and a mask-sensor
distance error. Each error is swept alone and compared with the error-free fabricated optic
(what the error itself costs); the tolerance is the largest value whose PSF keeps a correlation
of at least `min_correlation` with it. The correlation of the fabricated optic with the design
(what the export costs: wrapping, quantisation, resampling, constraints) is reported on its own,
and each perturbed PSF's correlation with the design too.

Privacy check of the fabricated optic: its PSF must keep a correlation of at least
`min_fabricated_correlation` with the design, and its centre spot (the Airy disc of each channel
about the optical axis, where an unblurred ghost image would form) may hold at most
`max_centre_spot_gain` more of a channel's light than the design's. The recognisers' verdict on
the fabricated PSF needs face data and the evaluation floor, which this optics-level module does
not import: `simulate.py tolerance --judge-data DIR` (evaluation.fabrication_judge) adds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor
from tqdm import tqdm

from obscura import atomic, config
from obscura.config import bounded
from optics.fabrication.as_built import Errors, as_built_psf, psf_correlation
from optics.fabrication.export import ExportConfig, design_surface, resolve_optic
from optics.fabrication.fabrication_plots import save_psf_pair, save_tolerance_curves
from optics.fabrication.heightmap import LevelMap, fabricated_levels
from optics.materials import material
from optics.optic import Optic
from optics.optic_file import load_optic, strict_json
from optics.psf_metrics import centre_spot_energy

RECOGNISERS_NOT_RUN = (
    "give --judge-data DIR (a face folder, e.g. ../shared/data/celeba-crops) to let SFace and dlib judge the "
    "fabricated PSF against the design (a few minutes), or evaluate OUT/psf_fabricated.npy with `evaluate --method psf:`"
)


@dataclass
class ToleranceConfig:
    """The optic, how it is fabricated, and the error values swept."""

    optic: str = ""
    fabrication: ExportConfig = field(default_factory=ExportConfig)
    height_error_sigma_m: list[float] = field(default_factory=lambda: [5e-9, 10e-9, 20e-9, 40e-9, 80e-9])
    height_error_correlation_m: float = 50e-6
    mask_shift_m: list[float] = field(default_factory=lambda: [2e-6, 5e-6, 10e-6, 20e-6, 50e-6])
    rotation_deg: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0, 2.0])
    distance_error_m: list[float] = field(default_factory=lambda: [5e-6, 10e-6, 20e-6, 50e-6, 100e-6])
    min_correlation: float = bounded(0.9, gt=0, lt=1)
    min_fabricated_correlation: float = bounded(0.9, ge=0, le=1)
    max_centre_spot_gain: float = bounded(0.01, ge=0, le=1)
    seed: int = 0


def pupil_transmission(level_map: LevelMap, optic: Optic, material_name: str) -> Tensor:
    """Complex transmission (C*K, N, N) of a writer-grid level map averaged over each pupil cell.

    Every writer pixel at level l delays the phase by 2 pi (n - 1) l step / lambda; the average
    over the writer pixels inside a pupil cell is what the coarser pupil grid sees.
    """
    n = optic.config.pupil_samples
    m = level_map.levels.shape[0]
    centres = (np.arange(m) - (m - 1) / 2) * level_map.pitch_m
    cell = np.clip(np.floor(centres / optic.pupil_pitch_m + n / 2).astype(np.int64), 0, n - 1)
    index = (cell[:, None] * n + cell[None, :]) * level_map.num_levels + level_map.levels
    counts = np.bincount(index.ravel(), minlength=n * n * level_map.num_levels).reshape(n * n, level_map.num_levels)
    lam = optic.wavelengths_m.flatten().double()
    n1 = material(material_name).index(lam) - 1.0
    phases = (
        2
        * math.pi
        * n1[:, None]
        * (torch.arange(level_map.num_levels, dtype=torch.float64) * level_map.step_m)[None, :]
        / lam[:, None]
    )
    per_level = torch.polar(torch.ones_like(phases), phases)  # (L, levels)
    weights = torch.from_numpy(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)).to(torch.complex128)
    return (per_level @ weights.T).reshape(len(lam), n, n)


def height_error_field(
    shape: tuple[int, int], sigma_m: float, correlation_m: float, pitch_m: float, seed: int
) -> Tensor:
    """A Gaussian random height error with RMS `sigma_m` and Gaussian correlation length `correlation_m`."""

    rng = np.random.default_rng(seed)
    field_ = ndimage.gaussian_filter(rng.standard_normal(shape), correlation_m / pitch_m, mode="wrap")
    return torch.from_numpy(field_ * sigma_m / field_.std())


def with_height_error(transmission: Tensor, optic: Optic, material_name: str, error_m: Tensor) -> Tensor:
    """Multiply the transmission by the phase of a height error on the pupil grid."""
    lam = optic.wavelengths_m.flatten().double()
    n1 = material(material_name).index(lam) - 1.0
    return transmission * torch.polar(torch.ones_like(error_m), 2 * math.pi * (n1 / lam)[:, None, None] * error_m)


def run_tolerance(cfg: ToleranceConfig, out: Path) -> dict:
    """Sweep each error, write tolerance.json, tolerance.png, psf_design_vs_fabricated.png, config.yaml."""
    config.check(cfg)
    optic_path = resolve_optic(cfg.optic)
    optic = load_optic(optic_path)
    fab = cfg.fabrication
    surface = design_surface(optic)
    name = fab.material or optic.mask.material_name
    n_d = float(material(optic.mask.material_name).index(optic.config.lens.design_wavelength_m))
    n_f = float(material(name).index(optic.config.lens.design_wavelength_m))
    level_map = fabricated_levels(
        surface * (n_d - 1) / (n_f - 1),
        optic.pupil_pitch_m,
        optic.config.lens.aperture_diameter_m,
        material_name=name,
        design_wavelength_m=fab.design_wavelength_m or optic.config.lens.design_wavelength_m,
        num_levels=fab.levels,
        writer_pitch_m=fab.writer_pitch_m,
        max_height_m=fab.max_height_m,
        min_feature_m=fab.min_feature_m,
    )
    with torch.no_grad():
        design = optic.psf().double()
        transmission = pupil_transmission(level_map, optic, name)
        fabricated = as_built_psf(optic, Errors(), transmission=transmission)
        sweeps = []
        todo = (
            ("height_error_sigma_m", cfg.height_error_sigma_m),
            ("mask_shift_m", cfg.mask_shift_m),
            ("rotation_deg", cfg.rotation_deg),
            ("distance_error_m", cfg.distance_error_m),
        )
        for error, values in tqdm(todo, desc="tolerance", unit="error", disable=None):
            psfs = [_perturbed(optic, transmission, name, error, v, cfg) for v in values]
            corr = [float(psf_correlation(fabricated, p)) for p in psfs]
            sweeps.append(
                {
                    "error": error,
                    "values": list(values),
                    "correlation": corr,
                    "correlation_with_design": [float(psf_correlation(design, p)) for p in psfs],
                    "tolerance": tolerance(values, corr, cfg.min_correlation),
                }
            )
        at_tolerance = {row["error"]: row["tolerance"] for row in sweeps}
        combined = _combined(optic, transmission, name, at_tolerance, cfg)
    psfs = {"design": design, "fabricated": fabricated, "within_tolerance": combined}
    for label, psf in psfs.items():
        with atomic.atomic_path(out / f"psf_{label}.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, psf.numpy())
    report = {
        "optic": str(optic_path),
        "min_correlation": cfg.min_correlation,
        "privacy_check": privacy_check(optic, design.numpy(), fabricated.numpy(), cfg),
        "fabricated_correlation": float(psf_correlation(design, fabricated)),
        "fabricated_correlation_per_channel": [float(psf_correlation(d, f)) for d, f in zip(design, fabricated)],
        "fabrication_changes": level_map.changes,
        "sweeps": sweeps,
        "within_tolerance": {
            "errors": at_tolerance,
            "correlation_with_fabricated": float(psf_correlation(fabricated, combined)),
            "correlation_with_design": float(psf_correlation(design, combined)),
        },
        "psf_files": {label: f"psf_{label}.npy" for label in psfs},
        "privacy_utility": "evaluate each PSF file: simulate.py evaluate --method psf:OUT/psf_<label>.npy (see docs/fabrication.md)",
        "config": config.to_dict(cfg),
    }
    atomic.write_json(out / "tolerance.json", strict_json(report))
    config.write_resolved(cfg, out)

    save_tolerance_curves(out / "tolerance.png", sweeps, cfg.min_correlation)
    save_psf_pair(out / "psf_design_vs_fabricated.png", design.numpy(), fabricated.numpy(), ("design", "fabricated"))
    return report


def privacy_check(optic: Optic, design: np.ndarray, fabricated: np.ndarray, cfg: ToleranceConfig) -> dict:
    """Whether the fabricated PSF still blurs like the design: correlation and centre-spot energy, with failures."""
    centres = [float(lam[len(lam) // 2]) for lam in optic.wavelengths_m]
    f_number_px = optic.config.sensor_distance_m / optic.config.lens.aperture_diameter_m / optic.config.pixel_pitch_m
    radius_px = [1.22 * lam * f_number_px for lam in centres]  # first dark ring of the in-focus Airy pattern
    spot_design, spot_fabricated = centre_spot_energy(design, radius_px), centre_spot_energy(fabricated, radius_px)
    corr = float(psf_correlation(torch.from_numpy(design), torch.from_numpy(fabricated)))
    failures = []
    if corr < cfg.min_fabricated_correlation:
        failures.append(
            f"fabricated PSF correlates {corr:.3f} with the design; expected >= {cfg.min_fabricated_correlation:g}"
        )
    for channel, (d, f) in enumerate(zip(spot_design, spot_fabricated)):
        if f - d > cfg.max_centre_spot_gain:
            failures.append(
                f"channel {channel}: {f:.1%} of the light in the unblurred centre spot (design {d:.1%}); "
                f"expected at most {cfg.max_centre_spot_gain:.1%} more: a sharp ghost image"
            )
    return {
        "passed": not failures,
        "failures": failures,
        "fabricated_correlation": corr,
        "centre_spot_radius_px": radius_px,
        "centre_spot_energy_design": spot_design,
        "centre_spot_energy_fabricated": spot_fabricated,
        "recognisers": RECOGNISERS_NOT_RUN,
    }


def tolerance(values: list[float], correlation: list[float], minimum: float) -> float:
    """The largest swept value below which every swept value keeps the correlation >= minimum (0 if none)."""
    best = 0.0
    for value, corr in sorted(zip(values, correlation)):
        if corr < minimum:
            break
        best = value
    return best


def _combined(
    optic: Optic, transmission: Tensor, material_name: str, errors: dict[str, float], cfg: ToleranceConfig
) -> Tensor:
    """The fabricated optic's PSF with every error at once, each at its tolerance (the worst accepted part)."""
    field_ = height_error_field(
        tuple(transmission.shape[-2:]),
        errors["height_error_sigma_m"],
        cfg.height_error_correlation_m,
        optic.pupil_pitch_m,
        cfg.seed,
    )
    assembly = Errors(
        distance_error_m=errors["distance_error_m"],
        mask_shift_m=(errors["mask_shift_m"], 0.0),
        rotation_rad=math.radians(errors["rotation_deg"]),
    )
    return as_built_psf(optic, assembly, transmission=with_height_error(transmission, optic, material_name, field_))


def _perturbed(
    optic: Optic, transmission: Tensor, material_name: str, error: str, value: float, cfg: ToleranceConfig
) -> Tensor:
    """The fabricated optic's PSF with one error set to `value`."""
    if error == "height_error_sigma_m":
        field_ = height_error_field(
            tuple(transmission.shape[-2:]), value, cfg.height_error_correlation_m, optic.pupil_pitch_m, cfg.seed
        )
        return as_built_psf(optic, Errors(), transmission=with_height_error(transmission, optic, material_name, field_))
    if error == "mask_shift_m":
        return as_built_psf(optic, Errors(mask_shift_m=(value, 0.0)), transmission=transmission)
    if error == "rotation_deg":
        return as_built_psf(optic, Errors(rotation_rad=math.radians(value)), transmission=transmission)
    return as_built_psf(optic, Errors(distance_error_m=value), transmission=transmission)
