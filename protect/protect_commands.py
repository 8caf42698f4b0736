"""`protect`: a protection applied to a folder-per-identity face set (see protect_folder)."""

from __future__ import annotations

import argparse
import json

from protect import protect_folder, registry


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the protect floor's sub-command."""
    p = subparsers.add_parser(
        "protect",
        help="apply a software protection to a folder-per-identity face set (same layout out)",
        description="Protect every image of a folder-per-identity face set; writes PNGs in the same layout, "
        "config.yaml, report.json (PSNR, SSIM, time per image) and examples.png.",
    )
    p.add_argument("--method", required=True, help=f"protection: {', '.join(registry.names())} (NAME:key=value,...)")
    p.add_argument("--data", required=True, help="folder of <identity>/<image> files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a stopped run resumes there)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a protection option, e.g. epsilon=0.0157"
    )
    p.set_defaults(func=_protect)


def _protect(args: argparse.Namespace) -> int:
    report = protect_folder.protect_folder(args.method, args.data, args.out, args.set)
    print(json.dumps({k: report[k] for k in ("method", "images", "psnr_db_mean", "ssim_mean", "ms_per_image")}))
    return 0
