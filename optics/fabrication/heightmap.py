"""The fabricated height map: wrap at a design wavelength, resample to the writer's pitch,
quantise to N levels, clip to the maximum height and remove features below the minimum size.

The smooth (unwrapped) surface is resampled first and wrapped and quantised on the writer's
grid: interpolating an already wrapped or quantised map would invent heights across the
2 pi steps. The result is an integer level map; height = level * step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from obscura.errors import ObscuraError
from optics import checks
from optics.materials import material


@dataclass
class LevelMap:
    """An N-level height map on the writer's grid; pixel (0, 0) is the top-left corner."""

    levels: np.ndarray  # int, H x W, values 0 .. num_levels - 1
    num_levels: int
    step_m: float
    pitch_m: float
    changes: list[dict] = field(default_factory=list)

    @property
    def height_m(self) -> np.ndarray:
        """Heights in metres."""
        return self.levels.astype(np.float64) * self.step_m


def wrap_period_m(material_name: str, design_wavelength_m: float) -> float:
    """Height whose phase delay is 2 pi at the design wavelength: lambda / (n(lambda) - 1)."""
    checks.wavelength("design_wavelength_m", design_wavelength_m)
    n = float(material(material_name).index(design_wavelength_m))
    return design_wavelength_m / (n - 1.0)


def resample(
    height_m: np.ndarray, pupil_pitch_m: float, aperture_m: float, writer_pitch_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cubic resampling of a pupil-grid surface onto a writer grid spanning the aperture.

    Returns the resampled surface and the mask of writer pixels whose centre lies inside the
    circular aperture (outside it the fab writes level 0).
    """
    checks.positive("writer_pitch_m", writer_pitch_m)
    n = height_m.shape[0]
    m = int(round(aperture_m / writer_pitch_m))
    if m < 2:
        raise ObscuraError(
            f"writer_pitch_m is {writer_pitch_m!r}; expected a pitch well below the aperture {aperture_m!r} m"
        )
    if m > 20000:
        raise ObscuraError(f"writer_pitch_m {writer_pitch_m!r} gives a {m} x {m} grid; expected at most 20000 x 20000")
    centres_m = (np.arange(m) - (m - 1) / 2) * writer_pitch_m
    # Pupil sample j sits at (j - (n - 1)/2) * pupil pitch.
    index = centres_m / pupil_pitch_m + (n - 1) / 2
    rows, cols = np.meshgrid(index, index, indexing="ij")
    out = ndimage.map_coordinates(height_m, [rows, cols], order=3, mode="nearest")
    inside = np.hypot(centres_m[:, None], centres_m[None, :]) <= aperture_m / 2
    return out, inside


def quantise(height_m: np.ndarray, inside: np.ndarray, period_m: float, num_levels: int) -> tuple[np.ndarray, float]:
    """Wrap heights modulo the period and round to `num_levels` equal steps (level N == level 0)."""
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or not 2 <= num_levels <= 256:
        raise ObscuraError(f"levels is {num_levels!r}; expected an integer from 2 to 256")
    step = period_m / num_levels
    levels = np.remainder(np.round(np.remainder(height_m, period_m) / step), num_levels).astype(np.int32)
    return np.where(inside, levels, 0), step


def clip_max_height(levels: np.ndarray, step_m: float, max_height_m: float) -> tuple[np.ndarray, int]:
    """Clip levels whose height exceeds the writer's maximum; returns the map and the pixels changed."""
    top = int(math.floor(max_height_m / step_m + 1e-9))
    if top < 1:
        raise ObscuraError(
            f"max_height_m {max_height_m!r} is below one level step {step_m:.4g} m; expected at least one step"
        )
    changed = int((levels > top).sum())
    return np.minimum(levels, top), changed


def enforce_min_feature(levels: np.ndarray, min_feature_px: int, max_rounds: int = 5) -> np.ndarray:
    """Reassign pixels of features narrower than `min_feature_px` to the nearest wide-enough feature.

    A pixel is kept when a min_feature_px x min_feature_px square of its own level covers it
    (morphological opening per level); the others take the level of the nearest kept pixel.
    Repeats until nothing changes or `max_rounds` is reached.
    """
    if min_feature_px <= 1:
        return levels
    for _ in range(max_rounds):
        kept = feature_ok(levels, min_feature_px)
        if kept.all():
            break
        if not kept.any():
            raise ObscuraError(
                f"min_feature {min_feature_px} px removes every feature; expected a smaller minimum feature"
            )
        _, (iy, ix) = ndimage.distance_transform_edt(~kept, return_indices=True)
        levels = levels[iy, ix]
    return levels


def corner_contacts(levels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """For each level L, 2 x 2 blocks where the region at level >= L touches itself only at a corner.

    Returns (rows, cols, kind) of each block's top-left pixel; kind 0: top-left and bottom-right
    pixels are in the region, kind 1: top-right and bottom-left are.
    """
    found = []
    for level in range(1, int(levels.max(initial=0)) + 1):
        r = levels >= level
        a, b, c, d = r[:-1, :-1], r[:-1, 1:], r[1:, :-1], r[1:, 1:]
        for kind, saddle in enumerate((a & d & ~b & ~c, b & c & ~a & ~d)):
            rows, cols = np.nonzero(saddle)
            if len(rows):
                found.append((rows, cols, kind))
    return found


def remove_corner_contacts(levels: np.ndarray, max_rounds: int = 20) -> np.ndarray:
    """Fill one pixel of every corner-only contact with its in-region diagonal neighbour's level.

    Such a contact is a zero-width neck (below any minimum feature), and the solid it describes
    meets itself along an edge, which no closed (watertight) surface can represent.
    """
    levels = levels.copy()
    for _ in range(max_rounds):
        found = corner_contacts(levels)
        if not found:
            break
        for rows, cols, kind in found:
            if kind == 0:
                levels[rows, cols + 1] = levels[rows, cols]
            else:
                levels[rows, cols] = levels[rows, cols + 1]
    return levels


def feature_ok(levels: np.ndarray, min_feature_px: int) -> np.ndarray:
    """Pixels covered by a min_feature_px-square of their own level (all True for 1 px)."""
    if min_feature_px <= 1:
        return np.ones(levels.shape, dtype=bool)
    structure = np.ones((min_feature_px, min_feature_px), dtype=bool)
    kept = np.zeros(levels.shape, dtype=bool)
    for value in np.unique(levels):
        region = levels == value
        # Opening; the border counts as the same level for the erosion only (a feature may run off the edge).
        core = ndimage.binary_erosion(region, structure=structure, border_value=1)
        kept |= ndimage.binary_dilation(core, structure=structure) & region
    return kept


def fabricated_levels(
    raw_height_m: np.ndarray,
    pupil_pitch_m: float,
    aperture_m: float,
    *,
    material_name: str,
    design_wavelength_m: float,
    num_levels: int,
    writer_pitch_m: float,
    max_height_m: float,
    min_feature_m: float,
) -> LevelMap:
    """The whole chain, recording which step changed the design and by how much."""
    period = wrap_period_m(material_name, design_wavelength_m)
    surface, inside = resample(raw_height_m, pupil_pitch_m, aperture_m, writer_pitch_m)
    changes: list[dict] = []
    wrapped = int(((surface < 0) | (surface >= period))[inside].sum())
    changes.append(
        {
            "step": "wrap",
            "pixels_changed": wrapped,
            "period_m": period,
            "note": f"heights taken modulo {period * 1e9:.1f} nm (2 pi at {design_wavelength_m * 1e9:.1f} nm); phase there unchanged",
        }
    )
    changes.append(
        {
            "step": "resample",
            "from_pitch_m": pupil_pitch_m,
            "to_pitch_m": writer_pitch_m,
            "grid": list(surface.shape),
            "note": "cubic interpolation of the unwrapped surface",
        }
    )
    levels, step = quantise(surface, inside, period, num_levels)
    error = np.remainder(levels * step - np.remainder(surface, period) + period / 2, period) - period / 2
    rms_nm = float(np.sqrt(np.mean(error[inside] ** 2)) * 1e9)
    changes.append(
        {
            "step": "quantise",
            "levels": num_levels,
            "step_m": step,
            "rms_height_error_nm": rms_nm,
            "note": f"{num_levels} levels of {step * 1e9:.2f} nm; RMS height error {rms_nm:.2f} nm",
        }
    )
    checks.positive("max_height_m", max_height_m)
    levels, clipped = clip_max_height(levels, step, max_height_m)
    changes.append(
        {
            "step": "max_height",
            "max_height_m": max_height_m,
            "pixels_changed": clipped,
            "note": f"{clipped} pixels above {max_height_m * 1e9:.1f} nm clipped"
            if clipped
            else "no pixel above the maximum height",
        }
    )
    if min_feature_m < 0:
        raise ObscuraError(f"min_feature_m is {min_feature_m!r}; expected a length >= 0")
    feature_px = int(math.ceil(min_feature_m / writer_pitch_m - 1e-9))
    before = levels
    levels = np.where(inside, enforce_min_feature(levels, feature_px), 0)
    moved = int((levels != before).sum())
    before = levels
    # A corner-only contact is a zero-width neck: only a real minimum feature rules it out.
    levels = remove_corner_contacts(levels) if feature_px >= 2 else levels
    corners = int((levels != before).sum())
    remaining = int((~feature_ok(levels, feature_px)).sum())
    changes.append(
        {
            "step": "min_feature",
            "min_feature_m": min_feature_m,
            "min_feature_px": feature_px,
            "pixels_changed": moved,
            "pixels_still_violating": remaining,
            "note": f"{moved} pixels of features narrower than {feature_px} px reassigned"
            if moved
            else "no feature below the minimum size",
        }
    )
    changes.append(
        {
            "step": "corner_contacts",
            "pixels_changed": corners,
            "contacts_left": sum(len(r) for r, _, _ in corner_contacts(levels)),
            "note": f"{corners} pixels filled where a level touched itself only at a corner"
            if corners
            else (
                "no corner-only contact"
                if feature_px >= 2
                else "corner-only contacts kept (no minimum feature of 2 px or more)"
            ),
        }
    )
    return LevelMap(levels.astype(np.int32), num_levels, step, writer_pitch_m, changes)


def runs(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Rectangles (row0, row1, col0, col1), half-open, covering a boolean mask exactly.

    Row runs of True pixels, merged downwards while the next row has the same run: far
    fewer rectangles than pixels for the ring-shaped zones of a phase mask.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    open_runs: dict[tuple[int, int], int] = {}
    out: list[tuple[int, int, int, int]] = []
    for row in range(mask.shape[0]):
        starts = np.flatnonzero(edges[row] == 1)
        stops = np.flatnonzero(edges[row] == -1)
        current = set(zip(starts.tolist(), stops.tolist()))
        for key in [k for k in open_runs if k not in current]:
            out.append((open_runs.pop(key), row, key[0], key[1]))
        for key in current:
            open_runs.setdefault(key, row)
    out.extend((start, mask.shape[0], c0, c1) for (c0, c1), start in open_runs.items())
    return out
