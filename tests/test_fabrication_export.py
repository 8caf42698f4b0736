"""Fabrication export: wrap/quantise/constraints, and exact round trips through GDSII, TIFF and STL."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import tifffile
import trimesh

from obscura.errors import ObscuraError
from optics.fabrication import export, fabrication_commands, formats, heightmap
from optics.fabrication.heightmap import (
    LevelMap,
    clip_max_height,
    corner_contacts,
    enforce_min_feature,
    feature_ok,
    quantise,
    remove_corner_contacts,
    wrap_period_m,
)
from optics.optic_file import save_optic
from optics.presets import camera_from_spec


def _ring_map() -> LevelMap:
    """A 4-level map with nested rings (holes in every layer) and an isolated island."""
    y, x = np.indices((40, 48))
    r = np.hypot(y - 19.5, x - 23.5)
    levels = np.floor(r / 4).astype(np.int32) % 4
    levels[2:5, 40:44] = 3
    return LevelMap(levels, 4, 0.3e-6, 2e-6)


def test_wrap_period_is_two_pi_at_design_wavelength():
    # Malitson fused silica: n(550 nm) = 1.45991 -> lambda / (n - 1) = 1195.9 nm.
    assert wrap_period_m("fused_silica", 550e-9) == pytest.approx(550e-9 / 0.45991, rel=2e-5)


def test_quantise_wraps_and_rounds_to_levels():
    period = 1.2e-6
    heights = np.array([[0.0, 0.149e-6, 0.16e-6, 1.19e-6, 1.2e-6 + 0.3e-6, -0.3e-6]])
    levels, step = quantise(heights, np.ones_like(heights, bool), period, 8)
    assert step == pytest.approx(0.15e-6)
    np.testing.assert_array_equal(levels, [[0, 1, 1, 0, 2, 6]])
    for bad in (1, 257, 2.5):
        with pytest.raises(ObscuraError, match="levels"):
            quantise(heights, np.ones_like(heights, bool), period, bad)


def test_max_height_clips_top_levels():
    levels, changed = clip_max_height(np.array([[0, 3, 7, 5]]), 0.1e-6, 0.45e-6)
    np.testing.assert_array_equal(levels, [[0, 3, 4, 4]])
    assert changed == 2


def test_min_feature_removes_thin_lines_and_keeps_wide_features():
    levels = np.zeros((20, 20), np.int32)
    levels[:, 10:] = 2
    levels[5, :10] = 1  # a one-pixel line
    fixed = enforce_min_feature(levels, 3)
    assert not (fixed == 1).any()
    assert feature_ok(fixed, 3).all()
    np.testing.assert_array_equal(fixed[:, 10:], 2)
    np.testing.assert_array_equal(enforce_min_feature(fixed, 3), fixed)


def test_corner_only_contacts_are_filled():
    levels = np.zeros((6, 6), np.int32)
    levels[1:3, 1:3] = 2
    levels[3:5, 3:5] = 2
    assert corner_contacts(levels)
    fixed = remove_corner_contacts(levels)
    assert not corner_contacts(fixed)
    assert (fixed != levels).sum() == 1


def test_gds_reads_back_to_the_exact_level_map(tmp_path):
    level_map = _ring_map()
    info = formats.write_gds(tmp_path / "m.gds", level_map)
    back = formats.read_gds_levels(tmp_path / "m.gds", level_map.levels.shape, level_map.pitch_m)
    np.testing.assert_array_equal(back, level_map.levels)
    polygons = sum(info["polygons_per_layer"].values())
    rectangles = sum(len(heightmap.runs(level_map.levels == k)) for k in range(1, 4))
    assert polygons < rectangles / 3  # merged, not one rectangle per run (let alone per pixel)
    assert set(info["polygons_per_layer"]) == {"1", "2", "3"}


def test_gds_from_another_source_is_refused(tmp_path):
    (tmp_path / "x.gds").write_bytes(b"not a gds file")
    with pytest.raises(ObscuraError, match="x.gds"):
        formats.read_gds_levels(tmp_path / "x.gds", (4, 4), 1e-6)


def test_tiff_is_16_bit_with_pitch_and_nm_per_grey_level(tmp_path):

    level_map = _ring_map()
    formats.write_tiff(tmp_path / "h.tif", level_map, {"material": "fused_silica", "design_wavelength_m": 550e-9})
    image, info = formats.read_tiff(tmp_path / "h.tif")
    assert image.dtype == np.uint16 and image.shape == level_map.levels.shape
    np.testing.assert_allclose(image * info["nm_per_grey_level"], level_map.height_m * 1e9, atol=1e-9)
    assert info["pitch_m"] == 2e-6 and info["material"] == "fused_silica" and info["design_wavelength_m"] == 550e-9
    with tifffile.TiffFile(tmp_path / "h.tif") as tif:
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(1e-2 / 2e-6)  # pixels per centimetre


def test_stl_is_watertight_and_its_volume_is_the_height_integral(tmp_path):

    level_map = _ring_map()
    level_map.levels = remove_corner_contacts(level_map.levels)
    info = formats.write_stl(tmp_path / "m.stl", level_map, base_m=1e-6)
    mesh = trimesh.load(tmp_path / "m.stl")  # merges coincident vertices, as any STL reader must
    area_um2 = level_map.levels.size * 2.0**2
    expected_um3 = level_map.height_m.sum() * 1e6 * 2.0**2 + 1.0 * area_um2
    assert mesh.is_watertight and mesh.is_winding_consistent and info["watertight"]
    assert mesh.volume == pytest.approx(expected_um3, rel=1e-6)
    assert mesh.bounds[1][2] == pytest.approx(1.0 + 3 * 0.3, rel=1e-6)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="simulate.py")
    fabrication_commands.register(parser.add_subparsers())
    return parser


@pytest.fixture(scope="module")
def small_optic(tmp_path_factory):
    """A seeded random Zernike optic on a coarse pupil grid, saved as .npz."""

    path = tmp_path_factory.mktemp("optic") / "optic.npz"
    save_optic(path, camera_from_spec("zernike-random", seed=1, pupil_samples=32, psf_size=32))
    return path


def test_export_command_writes_every_file_and_reports_changes(small_optic, tmp_path, capsys):
    args = _parser().parse_args(
        [
            "export",
            "--optic",
            str(small_optic),
            "--levels",
            "4",
            "--pitch",
            "40e-6",
            "--min-feature",
            "80e-6",
            "--max-height",
            "0.8e-6",
            "--format",
            "gds,tiff,stl",
            "--out",
            str(tmp_path),
        ]
    )
    assert args.func(args) == 0
    for name in (
        "mask.gds",
        "height_map.tif",
        "mask.stl",
        "export.json",
        "config.yaml",
        "height_map.png",
        "levels.npy",
    ):
        assert (tmp_path / name).is_file(), name
    sidecar = json.loads((tmp_path / "export.json").read_text())
    levels = np.load(tmp_path / "levels.npy")
    assert levels.shape == (100, 100) and sidecar["grid"] == [100, 100]
    np.testing.assert_array_equal(formats.read_gds_levels(tmp_path / "mask.gds", levels.shape, 40e-6), levels)
    steps = {c["step"]: c for c in sidecar["changes"]}
    assert steps["max_height"]["pixels_changed"] > 0 and levels.max() == 2  # 0.8 um allows levels 0..2 of 0.3 um
    assert steps["quantise"]["rms_height_error_nm"] == pytest.approx(sidecar["step_m"] * 1e9 / np.sqrt(12), rel=0.15)
    assert sidecar["files"]["stl"]["watertight"] and sidecar["files"]["gds"]["round_trip_exact"]
    assert "max_height" in capsys.readouterr().out


def test_export_without_optic_names_the_missing_committed_file(tmp_path, monkeypatch):

    monkeypatch.setattr(export, "COMMITTED_OPTIC", tmp_path / "weights" / "optic.npz")
    args = _parser().parse_args(["export", "--levels", "4", "--out", str(tmp_path / "o")])
    with pytest.raises(ObscuraError, match="no committed optic at .*optic.npz"):
        args.func(args)


def test_export_refuses_unknown_format(small_optic, tmp_path):
    args = _parser().parse_args(["export", "--optic", str(small_optic), "--format", "gds,dxf", "--out", str(tmp_path)])
    with pytest.raises(ObscuraError, match="dxf"):
        args.func(args)


def test_stl_of_a_random_map_is_closed_once_corner_contacts_are_filled(tmp_path):

    rng = np.random.default_rng(5)
    levels = rng.integers(0, 5, (24, 30)).astype(np.int32)
    saddled = LevelMap(levels, 5, 0.2e-6, 1e-6)
    info = formats.write_stl(tmp_path / "raw.stl", saddled, base_m=0.5e-6)
    assert info["corner_contacts"] > 0 and not info["watertight"]  # reported, not hidden
    fixed = LevelMap(remove_corner_contacts(levels), 5, 0.2e-6, 1e-6)
    info = formats.write_stl(tmp_path / "m.stl", fixed, base_m=0.5e-6)
    mesh = trimesh.load(tmp_path / "m.stl")
    assert info["corner_contacts"] == 0 and mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx((fixed.height_m.sum() * 1e6 + 0.5 * levels.size) * 1.0, rel=1e-6)


def test_export_defaults_run_in_minutes_and_announce_the_estimate(small_optic, tmp_path, capsys):
    # The README's command at 1 um and with STL took 30 min and 5.8 GB on the committed optic.
    cfg = export.ExportConfig()
    assert cfg.writer_pitch_m == 2e-6 and "stl" not in cfg.formats
    seconds, sizes = export.estimate(2000, cfg.formats)
    assert seconds < 5 * 60 and set(sizes) == {"gds", "tiff"}
    slow, slow_sizes = export.estimate(4000, list(export.FORMATS))
    assert slow > 10 * 60 and slow_sizes["stl"] > 200e6  # what the old defaults cost, stated before starting
    args = _parser().parse_args(["export", "--optic", str(small_optic), "--pitch", "40e-6", "--out", str(tmp_path)])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith("export: 100 x 100 px at 40 um; estimated") and "gds ~" in out[0]
    assert "export: 100%" in captured.err  # the progress bar, one step per file
    assert not (tmp_path / "mask.stl").exists() and (tmp_path / "mask.gds").is_file()
