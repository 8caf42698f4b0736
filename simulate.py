#!/usr/bin/env python3
"""Obscura workstation entry point: `python simulate.py [--out DIR]` runs the offline demo, sub-commands do the rest.

The same command line as the `obscura` console script (workstation.commands); `--help` lists them.
"""

from __future__ import annotations

import sys

from workstation.commands import main as workstation_main


def main(argv: list[str] | None = None) -> int:
    """Run the workstation command line under the name simulate.py."""
    return workstation_main(argv, prog="simulate.py")


if __name__ == "__main__":
    sys.exit(main())
