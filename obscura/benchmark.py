"""How every benchmark script under benchmarks/ ends: its JSON summary printed and written."""

from __future__ import annotations

import json
from typing import Any

from obscura import atomic


def emit(summary: dict[str, Any], json_path: str | None) -> None:
    """Print the summary as indented JSON and, given a path, write the same text there atomically."""
    text = json.dumps(summary, indent=2)
    print(text)
    if json_path:
        atomic.write_text(json_path, text + "\n")
