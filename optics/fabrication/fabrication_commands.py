"""`simulate.py export` (fabrication files) and `simulate.py tolerance` (PSF under fabrication errors)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from obscura.command_line import add_config_options, load_config
from optics.fabrication.export import ExportConfig, run_export
from optics.fabrication.tolerance import ToleranceConfig, run_tolerance

PRIVACY_LOST_EXIT = 1  # the report is written; the fabricated optic failed the privacy check


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` and `tolerance` sub-commands."""
    exp = subparsers.add_parser(
        "export",
        help="export an optic for fabrication (GDSII, 16-bit TIFF, STL)",
        description="Wrap, resample, quantise and constrain an optic's height map and write fabrication files.",
    )
    exp.add_argument("--optic", help="saved optic (.npz); default: the committed weights/optic.npz")
    exp.add_argument("--levels", type=int, help="height levels, 2-256 (default 8)")
    exp.add_argument("--format", help="comma-separated subset of gds,tiff,stl (default: gds,tiff; stl is the slowest)")
    exp.add_argument("--pitch", type=float, metavar="M", help="writer pitch (m, default 2e-6)")
    exp.add_argument(
        "--max-height", type=float, metavar="M", help="largest height the process can write (m, default 1e-5)"
    )
    exp.add_argument(
        "--min-feature", type=float, metavar="M", help="smallest feature the process can write (m, default 2e-6)"
    )
    exp.add_argument(
        "--wavelength", type=float, metavar="M", help="design wavelength for the 2 pi wrap (m; default: the lens's)"
    )
    exp.add_argument("--material", help="mask material (default: the optic's); heights are rescaled to keep the phase")
    add_config_options(exp, "YAML/JSON file of optics.fabrication.export.ExportConfig")
    exp.set_defaults(func=run_export_command)

    tol = subparsers.add_parser(
        "tolerance",
        help="PSF correlation of the fabricated optic under fabrication and assembly errors",
        description="Simulate the fabricated optic with height, alignment and distance errors.",
    )
    tol.add_argument("--optic", help="saved optic (.npz); default: the committed weights/optic.npz")
    add_config_options(tol, "YAML/JSON file of optics.fabrication.tolerance.ToleranceConfig")
    tol.set_defaults(func=run_tolerance_command)


def _export_flags(args: argparse.Namespace) -> dict:
    """Command-line options as ExportConfig keys (explicit options win over --set)."""
    table = {
        "optic": "optic",
        "levels": "levels",
        "pitch": "writer_pitch_m",
        "max_height": "max_height_m",
        "min_feature": "min_feature_m",
        "wavelength": "design_wavelength_m",
        "material": "material",
    }
    flags = {key: getattr(args, name) for name, key in table.items()}
    if args.format is not None:
        flags["formats"] = [f.strip() for f in args.format.split(",") if f.strip()]
    return flags


def run_export_command(args: argparse.Namespace) -> int:
    """Export and print one line per constraint that changed the design."""
    cfg = load_config(ExportConfig, args, _export_flags(args))
    out = Path(args.out)
    sidecar = run_export(cfg, out)
    for change in sidecar["changes"]:
        print(f"  {change['step']}: {change['note']}")
    print(
        f"export: {sidecar['grid'][1]} x {sidecar['grid'][0]} px at {sidecar['writer_pitch_m'] * 1e6:g} um, "
        f"{sidecar['levels']} levels of {sidecar['step_m'] * 1e9:.2f} nm -> {', '.join(f['file'] for f in sidecar['files'].values())} in {out}"
    )
    return 0


def run_tolerance_command(args: argparse.Namespace) -> int:
    """Run the tolerance sweep and print its summary."""
    cfg = load_config(ToleranceConfig, args, {"optic": args.optic})
    report = run_tolerance(cfg, Path(args.out))
    for row in report["sweeps"]:
        print(f"  {row['error']}: " + ", ".join(f"{v:g} -> {c:.3f}" for v, c in zip(row["values"], row["correlation"])))
    print(
        f"tolerance: fabricated vs design PSF correlation {report['fabricated_correlation']:.3f}; "
        f"tolerances at correlation {report['min_correlation']:g}: "
        + ", ".join(f"{r['error']} {r['tolerance']:g}" for r in report["sweeps"])
        + f" -> {args.out}/tolerance.json"
    )
    check = report["privacy_check"]
    for failure in check["failures"]:
        print(f"tolerance: FAIL: {failure}", file=sys.stderr)
    if not check["passed"]:
        print(
            "tolerance: FAIL: the fabricated optic does not keep the design's privacy; "
            f"check it with the recognisers: simulate.py evaluate --method psf:{args.out}/psf_fabricated.npy",
            file=sys.stderr,
        )
        return PRIVACY_LOST_EXIT
    print("tolerance: privacy check passed (PSF correlation and centre spot of the fabricated optic)")
    return 0
