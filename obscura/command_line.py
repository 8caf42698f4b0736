"""How every entry point reads its command line: sub-commands with a `func`, the configuration options, user errors.

Each sub-command sets `func(args) -> int`; `dispatch` parses, runs it, and turns a user error
(ObscuraError) into one line on stderr naming it and exit code 2. Commands that take a
configuration get `--config FILE`, repeatable `--set KEY=VALUE` and `--out DIR` from
`add_config_options`, and resolve them with `load_config` (defaults < file < --set < flags).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Mapping, Sequence, TypeVar

from obscura import config
from obscura.errors import ObscuraError

T = TypeVar("T")
USER_ERROR_EXIT = 2


def run_reporting_errors(prog: str, action: Callable[[], int | None]) -> int:
    """Run a command; an ObscuraError becomes `PROG: error: MESSAGE` and exit code 2."""
    try:
        return int(action() or 0)
    except ObscuraError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, name: str | None = None) -> int:
    """Parse `argv` and run the chosen command's `func(args)`; a user error is `NAME: error: ...` (default: the prog) and exit code 2."""
    args = parser.parse_args(argv)
    return run_reporting_errors(name or parser.prog, lambda: args.func(args))


def add_config_options(
    parser: argparse.ArgumentParser,
    config_help: str,
    out_help: str | None = "output folder",
    config_required: bool = False,
    out_required: bool = True,
) -> None:
    """--config FILE, repeatable --set KEY=VALUE and (unless out_help is None) --out DIR.

    `out_required` False leaves --out to the configuration (a config whose `out` key may come from its file).
    """
    parser.add_argument("--config", metavar="FILE", required=config_required, help=config_help)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.steps=10 (repeatable)",
    )
    if out_help is not None:
        parser.add_argument("--out", required=out_required, metavar="DIR", help=out_help)


def load_config(cls: type[T], args: argparse.Namespace, flags: Mapping[str, Any] | None = None) -> T:
    """The configuration a command line asks for: defaults < --config file < --set < the flags given (None: not given)."""
    overrides = config.parse_overrides(args.set)
    overrides.update({key: value for key, value in (flags or {}).items() if value is not None})
    return config.load(cls, args.config, overrides)
