"""The workstation command line, one parser over every package: `obscura ...` and `python simulate.py ...`.

Without a sub-command it runs the offline demo. Each package registers its own sub-commands
(`register(subparsers)`, each setting `func(args) -> int`); this module only gathers them. The
device side has its own entry, `python -m firmware`, which never imports torch.
"""

from __future__ import annotations

import argparse
import sys

from anonymizer import training_commands
from calibration import calibration_commands
from deploy import deploy_commands
from evaluation import evaluation_commands
from obscura import manifest
from obscura.command_line import dispatch
from optics import optics_commands
from optics.fabrication import fabrication_commands
from protect import protect_commands
from workstation.demo import run_demo

COMMAND_GROUPS = (
    optics_commands,
    fabrication_commands,
    training_commands,
    protect_commands,
    evaluation_commands,
    calibration_commands,
    deploy_commands,
    manifest,
)
DEFAULT_DEMO_DIR = "demo_out"


def build_parser(prog: str = "obscura") -> argparse.ArgumentParser:
    """The top-level parser: the demo's options plus every package's sub-commands."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Obscura: a privacy-preserving camera, simulated, trained, "
        "judged and deployed from one command line. Without a command: the offline demo.",
    )
    parser.add_argument("--out", default=DEFAULT_DEMO_DIR, help="demo output folder (default: %(default)s)")
    parser.add_argument(
        "--pupil-samples",
        type=int,
        metavar="N",
        help="demo: pupil grid samples of every optic (default: each optic's own)",
    )
    parser.set_defaults(func=lambda args: run_demo(args.out, args.pupil_samples))
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None, prog: str = "obscura") -> int:
    """Parse and run; a user error is one line on stderr (`PROG: error: ...`) and exit code 2."""
    return dispatch(build_parser(prog), argv)


def console_main() -> None:
    """The `obscura` console script."""
    sys.exit(main())
