"""What may leave the device: de-identified frames and the optical capture, never the clean frame of sim://.

Also: the device code runs without torch (it only has exported models).
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
from test_firmware_pipeline import ListSink, wait_until

import firmware
from deploy.standins import build_standin_bundle
from firmware.inference_stages import load_stages
from firmware.pipeline import Pipeline
from firmware.psf import PsfConvolver
from firmware.sinks import FileSink
from firmware.sources import open_source
from obscura.paths import REPO_ROOT


def _checkerboard(size: int = 64, cell: int = 2) -> np.ndarray:
    """A clean frame made only of fine detail, which a blurring optic wipes out."""
    y, x = np.mgrid[:size, :size]
    board = (((y // cell) + (x // cell)) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def _write_clean_scene(tmp_path: Path) -> tuple[np.ndarray, Path, Path]:
    clean = _checkerboard()
    folder = tmp_path / "clean"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), clean)
    psf = np.ones((3, 8, 8), np.float32) / 64  # 8 px wide: exactly two periods of the board, so detail cancels
    np.save(tmp_path / "psf.npy", psf)
    return clean, folder, tmp_path / "psf.npy"


def _detail_in_common(image: np.ndarray, clean: np.ndarray) -> float:
    """How much of the clean frame's fine detail (frame minus local mean) the image holds, away from borders.

    The projection of the image's detail onto the clean detail, relative to the clean detail: 1 when the
    clean frame is there, about 0 when its detail is gone.
    """

    def detail(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32).mean(axis=2)
        return (a - cv2.blur(a, (5, 5)))[8:-8, 8:-8].ravel()

    d1, d2 = detail(image), detail(clean)
    return float(np.dot(d1, d2) / np.dot(d2, d2))


def test_the_clean_sim_frame_never_reaches_any_sink(tmp_path: Path) -> None:
    clean, folder, psf = _write_clean_scene(tmp_path)
    build_standin_bundle(tmp_path / "bundle", 64)
    regressor, anonymizer, _ = load_stages(tmp_path / "bundle")
    assert _detail_in_common(clean, clean) > 0.99  # the measure sees the clean frame when it is there
    uri = f"sim://{folder}?psf={psf}&fps=0"
    outputs, captures = ListSink("output"), ListSink("capture")
    files = FileSink(tmp_path / "written", "output")
    with Pipeline(lambda: open_source(uri), [outputs, captures, files], regressor, anonymizer):
        wait_until(lambda: len(outputs.images) >= 3 and len(captures.images) >= 3 and files.written >= 3)
    written = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((tmp_path / "written").iterdir())]
    expected_capture = PsfConvolver(np.load(psf)).capture(clean)
    assert all(np.array_equal(c, expected_capture) for c in captures.images)
    for image in [*outputs.images, *captures.images, *written]:
        assert abs(_detail_in_common(image, clean)) < 0.05
        assert not np.array_equal(image, clean)


def test_firmware_modules_never_import_torch() -> None:
    modules = sorted(f"firmware.{m.name}" for m in pkgutil.iter_modules(firmware.__path__))
    assert {"firmware.sources", "firmware.pipeline", "firmware.inference_stages", "firmware.http_sink"} <= set(modules)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import onnxruntime, cv2\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_the_device_runtime_works_with_torch_impossible_to_import(tmp_path: Path) -> None:
    _, folder, psf = _write_clean_scene(tmp_path)
    build_standin_bundle(tmp_path / "bundle", 64)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # A sitecustomize that makes `import torch` fail, as on a device without it.
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is not on the device')\n"
        "sys.meta_path.insert(0, _NoTorch())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{tmp_path / 'bundle' / 'code'}", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "frames"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware",
            "run",
            "--bundle",
            str(tmp_path / "bundle"),
            "--source",
            f"sim://{folder}?psf={psf}&fps=20",
            "--sink",
            f"file://{out}",
            "--duration",
            "2",
            "--log-level",
            "error",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"]["emitted"] >= 1 and len(list(out.iterdir())) >= 1
