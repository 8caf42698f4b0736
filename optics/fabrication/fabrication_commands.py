"""`simulate.py export` (fabrication files); `simulate.py tolerance` is registered on the evaluation floor
(evaluation.evaluation_commands), where the recognisers can judge the fabricated PSF."""

from __future__ import annotations

import argparse
from pathlib import Path

from obscura.command_line import add_config_options, load_config
from optics.fabrication.export import ExportConfig, run_export


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `export` sub-command."""
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
