#!/usr/bin/env python3
"""Obscura workstation entry point.

`python simulate.py [--out DIR]` runs the offline demo; sub-commands simulate PSFs and
captures, evaluate privacy and utility, train and export. Each package registers its own
sub-commands; this file only dispatches and turns user errors into one line and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from obscura.command_line import run_reporting_errors

# Modules that expose `register(subparsers)`; each sub-command sets `func(args) -> int`.
COMMAND_MODULES = ("optics.optics_commands", "evaluation.evaluation_commands", "optics.fabrication.fabrication_commands", "anonymizer.training_commands")
DEFAULT_DEMO_DIR = "demo_out"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: demo options plus every package's sub-commands."""
    parser = argparse.ArgumentParser(prog="simulate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_DEMO_DIR, help="demo output folder (default: %(default)s)")
    parser.set_defaults(func=_run_demo)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    """The offline demo (lazy import: it loads torch and the face models)."""
    from workstation.demo import run_demo

    return run_demo(args.out)


def main(argv: list[str] | None = None) -> int:
    """Parse, dispatch, and report user errors as `simulate.py: error: ...` with exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_reporting_errors(parser.prog, lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
