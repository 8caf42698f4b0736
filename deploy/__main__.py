"""python -m deploy: the deployment steps, the same commands as `simulate.py deploy`."""

from __future__ import annotations

import argparse
import sys

from deploy import deploy_commands
from obscura.command_line import dispatch


def main(argv: list[str] | None = None) -> int:
    """Parse and run one deployment step; bad input is one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="python -m deploy", description=deploy_commands.__doc__.splitlines()[0])
    deploy_commands.add_subcommands(parser.add_subparsers(dest="step", required=True, metavar="STEP"))
    return dispatch(parser, argv, "deploy")


if __name__ == "__main__":
    sys.exit(main())
