"""Writers and readers of the fabrication files: 16-bit TIFF, GDSII (one layer per level), STL.

Geometry conventions shared by all three: pixel (row, col) of the level map covers
x in [col, col + 1) * pitch, y in [H - row - 1, H - row) * pitch (y up, so the map's top row
is at the top); the optical axis is at the centre (W/2, H/2) * pitch.
"""

from __future__ import annotations

import json
from pathlib import Path

import gdstk
import numpy as np
import tifffile
import trimesh

from obscura import atomic
from obscura.errors import ObscuraError
from optics.fabrication.heightmap import LevelMap, corner_contacts, runs
from optics.fabrication.mesh import height_field_mesh

GDS_CELL = "OBSCURA_MASK"
GDS_PRECISION_M = 1e-9
TIFF_MAX_GREY = 65535


def _rect_points_um(rect: tuple[int, int, int, int], height: int, pitch_um: float) -> np.ndarray:
    """Corner coordinates (um) of a pixel rectangle, counter-clockwise, y up."""
    r0, r1, c0, c1 = rect
    x0, x1 = c0 * pitch_um, c1 * pitch_um
    y0, y1 = (height - r1) * pitch_um, (height - r0) * pitch_um
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def write_gds(path: Path, level_map: LevelMap) -> dict:
    """GDSII in micrometre units, one layer per non-zero level (layer L = pixels at level L), merged polygons."""

    pitch_um = _pitch_um(level_map.pitch_m)
    lib = gdstk.Library(name="OBSCURA", unit=1e-6, precision=GDS_PRECISION_M)
    cell = lib.new_cell(GDS_CELL)
    height = level_map.levels.shape[0]
    counts = {}
    for level in range(1, level_map.num_levels):
        mask = level_map.levels == level
        if not mask.any():
            continue
        rects = [gdstk.Polygon(_rect_points_um(r, height, pitch_um)) for r in runs(mask)]
        merged = gdstk.boolean(rects, [], "or", precision=GDS_PRECISION_M * 1e6, layer=level, datatype=0)
        cell.add(*merged)
        counts[str(level)] = len(merged)
    with atomic.atomic_path(path) as tmp:
        lib.write_gds(str(tmp), max_points=8190)
    return {"polygons_per_layer": counts, "unit_m": 1e-6, "precision_m": GDS_PRECISION_M, "cell": GDS_CELL}


def read_gds_levels(path: Path, shape: tuple[int, int], pitch_m: float) -> np.ndarray:
    """Rasterise a GDS written by write_gds back into a level map (pixel centres, even-odd rule)."""

    try:
        lib = gdstk.read_gds(str(path))
    except (OSError, RuntimeError) as err:
        raise ObscuraError(f"GDS file {path} cannot be read: {err}") from None
    cells = [c for c in lib.cells if c.name == GDS_CELL]
    if not cells:
        raise ObscuraError(f"GDS file {path} has no cell {GDS_CELL!r}")
    if abs(lib.unit - 1e-6) > 1e-12:
        raise ObscuraError(f"GDS file {path} has user unit {lib.unit} m; expected 1e-06 (micrometres)")
    pitch_um = _pitch_um(pitch_m)
    levels = np.zeros(shape, dtype=np.int32)
    by_layer: dict[int, list[np.ndarray]] = {}
    for poly in cells[0].polygons:
        by_layer.setdefault(poly.layer, []).append(poly.points)
    for layer, polys in sorted(by_layer.items()):
        inside = _rasterise_rectilinear(polys, shape, pitch_um)
        if (levels[inside] != 0).any():
            raise ObscuraError(f"GDS file {path}: layer {layer} overlaps another level's layer")
        levels[inside] = layer
    return levels


def _rasterise_rectilinear(polygons: list[np.ndarray], shape: tuple[int, int], pitch_um: float) -> np.ndarray:
    """Pixels whose centre lies inside an odd number of the rectilinear polygons' boundaries.

    Each vertical edge at column boundary c spanning rows [r0, r1) toggles the parity of every
    pixel of those rows right of it; a cumulative XOR along the rows then gives inside/outside.
    Pixel centres never lie on an edge (edges sit on pixel boundaries), so the test is exact.
    """
    height, width = shape
    toggles = np.zeros((height + 1, width + 1), dtype=np.int64)
    starts, ends = [], []
    for points in polygons:
        grid = np.rint(points / pitch_um).astype(np.int64)
        if (
            not np.allclose(grid * pitch_um, points, atol=1e-3 * pitch_um)
            or grid.min() < 0
            or grid[:, 0].max() > width
            or grid[:, 1].max() > height
        ):
            raise ObscuraError("GDS polygon vertices are off the pixel grid; expected a file written by this exporter")
        nxt = np.roll(grid, -1, axis=0)
        vertical = grid[:, 0] == nxt[:, 0]
        starts.append(grid[vertical])
        ends.append(nxt[vertical])
    if starts:
        a, b = np.concatenate(starts), np.concatenate(ends)
        lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
        # y in [lo, hi) is rows H - hi .. H - lo - 1.
        np.add.at(toggles, (height - hi, a[:, 0]), 1)
        np.add.at(toggles, (height - lo, a[:, 0]), -1)
    crossings = np.cumsum(toggles, axis=0)[:height, :width]
    return (np.cumsum(crossings, axis=1) % 2).astype(bool)


def write_tiff(path: Path, level_map: LevelMap, metadata: dict) -> dict:
    """16-bit height map: grey = level * g (g = 65535 // (N - 1)); metadata in the description as JSON."""

    grey_per_level = TIFF_MAX_GREY // (level_map.num_levels - 1)
    nm_per_grey = level_map.step_m * 1e9 / grey_per_level
    info = dict(
        metadata,
        nm_per_grey_level=nm_per_grey,
        grey_per_level=grey_per_level,
        pitch_m=level_map.pitch_m,
        levels=level_map.num_levels,
        step_m=level_map.step_m,
    )
    image = (level_map.levels.astype(np.uint32) * grey_per_level).astype(np.uint16)
    pixels_per_cm = 1e-2 / level_map.pitch_m
    with atomic.atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            image,
            resolution=(pixels_per_cm, pixels_per_cm),
            resolutionunit="CENTIMETER",
            description=json.dumps(info),
            metadata=None,
        )
    return {"grey_per_level": grey_per_level, "nm_per_grey_level": nm_per_grey}


def read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    """The 16-bit image and its JSON metadata."""

    with tifffile.TiffFile(path) as tif:
        image = tif.pages[0].asarray()
        info = json.loads(tif.pages[0].description)
    return image, info


def write_stl(path: Path, level_map: LevelMap, base_m: float) -> dict:
    """A closed solid in micrometres: the pixel columns of the height map on a base slab of `base_m`
    (optics.fabrication.mesh: exact, no T-junctions, every face pointing out; watertight unless a level touches
    itself only at a corner)."""

    if base_m <= 0:
        raise ObscuraError(f"stl base_m is {base_m!r}; expected a base thickness > 0 (a closed solid needs one)")
    pitch_um = _pitch_um(level_map.pitch_m)
    vertices, faces = height_field_mesh(level_map.levels, base_m / level_map.step_m)
    tri = trimesh.Trimesh(
        vertices=vertices * np.array([pitch_um, pitch_um, level_map.step_m * 1e6]), faces=faces, process=False
    )
    with atomic.atomic_path(path) as tmp:
        tri.export(tmp, file_type="stl")
    return {
        "triangles": int(len(tri.faces)),
        "watertight": bool(tri.is_watertight),
        "volume_um3": float(tri.volume),
        "base_m": base_m,
        "units": "micrometre",
        "corner_contacts": sum(len(r) for r, _, _ in corner_contacts(level_map.levels)),
    }


def _pitch_um(pitch_m: float) -> float:
    """The writer pitch in micrometres, on the GDS 1 nm grid."""
    pitch_nm = round(pitch_m * 1e9)
    if pitch_nm < 1 or abs(pitch_nm - pitch_m * 1e9) > 1e-6:
        raise ObscuraError(f"writer_pitch_m is {pitch_m!r}; expected a whole number of nanometres (the GDS grid)")
    return pitch_nm / 1000.0
