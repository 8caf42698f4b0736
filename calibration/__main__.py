"""python -m calibration: the calibration steps, the same commands as `simulate.py calibrate`."""

from __future__ import annotations

import argparse
import sys

from calibration import calibration_commands
from obscura.command_line import dispatch


def main(argv: list[str] | None = None) -> int:
    """Parse and run one calibration step; bad input is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m calibration", description=calibration_commands.__doc__.splitlines()[0]
    )
    calibration_commands.add_subcommands(parser.add_subparsers(dest="step", required=True, metavar="STEP"))
    return dispatch(parser, argv, "calibration")


if __name__ == "__main__":
    sys.exit(main())
