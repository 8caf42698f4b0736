"""What every entry point does with a user error: one line on stderr naming it, and exit code 2."""
from __future__ import annotations

import sys
from typing import Callable

from obscura.errors import ObscuraError

USER_ERROR_EXIT = 2


def run_reporting_errors(prog: str, action: Callable[[], int | None]) -> int:
    """Run a command; an ObscuraError becomes `PROG: error: MESSAGE` and exit code 2."""
    try:
        return int(action() or 0)
    except ObscuraError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
