"""CI: resolve `pip install -e .[test]` WITHOUT constraints.txt and refuse OpenCV 5 (it breaks SFace).

A dry run (`pip install --dry-run --ignore-installed --report`) resolves against the package index
from wheel metadata only: it proves what a user's unconstrained install would pick without
downloading torch and the rest into a second environment (a full second install would add many
minutes and gigabytes to every CI run for the same answer).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.version import Version

OPENCV = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}


def main() -> int:
    """Exit 1 naming every OpenCV distribution of major version 5 or later the resolution picks."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--report", str(report)]
            + ["-e", ".[test]"],
            check=True,
        )
        picked = {
            i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]
        }
    opencv = {name: version for name, version in picked.items() if name in OPENCV}
    bad = {name: version for name, version in opencv.items() if Version(version).major >= 5}
    print(f"unconstrained install resolves OpenCV to {opencv or 'nothing'}")
    if bad:
        print(f"error: an install without constraints.txt picks {bad}; expected OpenCV < 5", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
