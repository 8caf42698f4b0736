"""Fabrication export of a saved optic: level map -> TIFF / GDSII / STL + JSON sidecar + preview."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from obscura import atomic, config
from obscura.config import bounded
from obscura.digest import file_sha256
from obscura.errors import ObscuraError
from obscura.paths import WEIGHTS_DIR
from optics.fabrication import formats as files
from optics.fabrication.fabrication_plots import save_height_map
from optics.fabrication.heightmap import fabricated_levels, wrap_period_m
from optics.materials import material
from optics.optic_file import OPTIC_FILE, load_optic, strict_json

FORMATS = ("gds", "tiff", "stl")
DEFAULT_FORMATS = ("gds", "tiff")  # STL (3-D printing) on request: it is the slowest and largest file
COMMITTED_OPTIC = WEIGHTS_DIR / OPTIC_FILE
# Seconds and bytes per format for a 1000 x 1000 px grid of the committed optic at 8 levels, measured
# on one core of a 2-core shared machine (about 2.4 x the CPU time; docs/fabrication.md). Time grows as
# about side^1.6 (the level boundaries grow with the side, the runs and the read-back with the area).
SECONDS_AT_1000_PX = {"tiff": 3.6, "gds": 40.0, "stl": 37.0}
TIME_EXPONENT = 1.6
LONG_EXPORT_S = 60.0


@dataclass
class ExportConfig:
    """Everything that fixes the fabricated mask. Empty material / 0 wavelength: the optic's own."""

    optic: str = ""
    levels: int = bounded(8, ge=2, le=256)
    formats: list[str] = field(default_factory=lambda: list(DEFAULT_FORMATS))
    writer_pitch_m: float = bounded(2e-6, gt=0)
    max_height_m: float = 10e-6
    min_feature_m: float = 2e-6
    design_wavelength_m: float = 0.0
    material: str = ""
    stl_base_m: float = 2e-6


def resolve_optic(path: str) -> Path:
    """The optic to export: the given file, else the committed one, else a clear error."""
    if path:
        return Path(path)
    if COMMITTED_OPTIC.exists():
        return COMMITTED_OPTIC
    raise ObscuraError(
        f"no --optic given and no committed optic at {COMMITTED_OPTIC} (stage I has not committed one yet); "
        "expected --optic FILE.npz"
    )


def design_surface(optic) -> np.ndarray:
    """The optic's mask surface before wrapping and quantisation (clamped if it was trained clamped), metres."""

    mask = optic.mask
    if mask is None:
        raise ObscuraError("the optic has no phase mask (mask kind 'none'); expected an optic with a mask to fabricate")
    with torch.no_grad():
        h = mask.raw_height_m().double()
        if mask.constraint == "clamp":
            h = h.clamp(0.0, mask.max_height_m)
    return h.cpu().numpy()


def estimate(side_px: int, formats: list[str]) -> tuple[float, dict[str, float]]:
    """Rough time (s) and file sizes (bytes) of an export on a side_px x side_px writer grid."""
    scale = side_px / 1000
    seconds = sum(SECONDS_AT_1000_PX[f] for f in formats) * scale**TIME_EXPONENT
    sizes = {"tiff": 2.0 * side_px**2, "gds": 3.1e6 * scale, "stl": 65e6 * scale}
    return seconds, {f: sizes[f] for f in formats}


def announce(side_px: int, pitch_m: float, formats: list[str]) -> None:
    """Print the grid, the estimated time and file sizes before the work starts (a long one says so)."""
    seconds, sizes = estimate(side_px, formats)
    files_text = ", ".join(f"{f} ~{size / 1e6:.0f} MB" for f, size in sizes.items())
    print(
        f"export: {side_px} x {side_px} px at {pitch_m * 1e6:g} um; estimated {seconds / 60:.1f} min, {files_text}"
        + (" (long: a coarser --pitch or fewer --format cuts it)" if seconds > LONG_EXPORT_S else ""),
        flush=True,
    )


def run_export(cfg: ExportConfig, out: Path) -> dict:
    """Write the requested files, the sidecar export.json, height_map.png and config.yaml into `out`."""
    config.check(cfg)
    unknown = [f for f in cfg.formats if f not in FORMATS]
    if unknown or not cfg.formats:
        raise ObscuraError(f"formats are {cfg.formats}; expected a non-empty list from {', '.join(FORMATS)}")
    optic_path = resolve_optic(cfg.optic)
    optic = load_optic(optic_path)
    atomic.writable_folder(out)
    announce(round(optic.config.lens.aperture_diameter_m / cfg.writer_pitch_m), cfg.writer_pitch_m, cfg.formats)
    trained_material = optic.mask.material_name if optic.mask is not None else ""
    surface = design_surface(optic)
    fab_material = cfg.material or trained_material
    wavelength = cfg.design_wavelength_m or optic.config.lens.design_wavelength_m
    n_trained = float(material(trained_material).index(wavelength))
    n_fab = float(material(fab_material).index(wavelength))
    # Another material keeps the design-wavelength phase: h_fab = h (n_trained - 1) / (n_fab - 1).
    surface = surface * (n_trained - 1.0) / (n_fab - 1.0)
    level_map = fabricated_levels(
        surface,
        optic.pupil_pitch_m,
        optic.config.lens.aperture_diameter_m,
        material_name=fab_material,
        design_wavelength_m=wavelength,
        num_levels=cfg.levels,
        writer_pitch_m=cfg.writer_pitch_m,
        max_height_m=cfg.max_height_m,
        min_feature_m=cfg.min_feature_m,
    )
    if fab_material != trained_material:
        level_map.changes.insert(
            0,
            {
                "step": "material",
                "from": trained_material,
                "to": fab_material,
                "height_scale": (n_trained - 1.0) / (n_fab - 1.0),
                "note": "heights rescaled to keep the design-wavelength phase",
            },
        )
    period = wrap_period_m(fab_material, wavelength)
    trained_period = optic.mask.max_height_m * (n_trained - 1.0) / (n_fab - 1.0)
    if optic.mask.constraint == "wrap" and abs(trained_period - period) > 1e-3 * period:
        level_map.changes.append(
            {
                "step": "wrap_period",
                "trained_m": trained_period,
                "exported_m": period,
                "note": "the optic was trained wrapping at another period: other wavelengths see a different phase",
            }
        )
    meta = {
        "material": fab_material,
        "design_wavelength_m": wavelength,
        "refractive_index": n_fab,
        "optic": str(optic_path),
        "units": "height = grey * nm_per_grey_level",
    }
    written: dict[str, dict] = {}
    progress = tqdm(total=len(cfg.formats), desc="export", unit="file")
    if "tiff" in cfg.formats:
        progress.set_postfix_str("tiff")
        written["tiff"] = {"file": "height_map.tif", **files.write_tiff(out / "height_map.tif", level_map, meta)}
        progress.update()
    if "gds" in cfg.formats:
        progress.set_postfix_str("gds (write and read back)")
        info = files.write_gds(out / "mask.gds", level_map)
        exact = bool(
            np.array_equal(
                files.read_gds_levels(out / "mask.gds", level_map.levels.shape, level_map.pitch_m), level_map.levels
            )
        )
        if not exact:
            raise ObscuraError(
                f"{out / 'mask.gds'} does not read back to the level map; the GDS is wrong and must not be sent to a fab"
            )
        written["gds"] = {"file": "mask.gds", "layer_n_is_level_n": True, "round_trip_exact": exact, **info}
        progress.update()
    if "stl" in cfg.formats:
        progress.set_postfix_str("stl")
        written["stl"] = {"file": "mask.stl", **files.write_stl(out / "mask.stl", level_map, cfg.stl_base_m)}
        progress.update()
    progress.close()
    with atomic.atomic_path(out / "levels.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, level_map.levels.astype(np.uint8 if cfg.levels <= 256 else np.uint16))
    save_height_map(
        out / "height_map.png",
        level_map.height_m,
        level_map.pitch_m,
        f"{optic_path.name}: {cfg.levels} levels, {cfg.writer_pitch_m * 1e6:g} um pitch, {fab_material}",
    )
    sidecar = {
        "optic": str(optic_path),
        "optic_sha256": file_sha256(optic_path),
        "optic_config": config.to_dict(optic.config),
        "export_config": config.to_dict(cfg),
        "material": fab_material,
        "refractive_index_at_design_wavelength": n_fab,
        "design_wavelength_m": wavelength,
        "wrap_period_m": period,
        "levels": cfg.levels,
        "step_m": level_map.step_m,
        "max_level_height_m": float(level_map.levels.max()) * level_map.step_m,
        "writer_pitch_m": level_map.pitch_m,
        "grid": list(level_map.levels.shape),
        "origin": "lower-left corner at (0, 0); optical axis at the grid centre; y up; pixel (0, 0) of levels.npy is the top-left",
        "aperture_diameter_m": optic.config.lens.aperture_diameter_m,
        "fill_factor": float((level_map.levels > 0).mean()),
        "volume_m3": float(level_map.height_m.sum() * level_map.pitch_m**2),
        "changes": level_map.changes,
        "files": written,
    }
    atomic.write_json(out / "export.json", strict_json(sidecar))
    config.write_resolved(cfg, out)
    return sidecar
