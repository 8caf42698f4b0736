"""What may leave the device: de-identified frames and optical captures, never a clean frame unless the operator says so.

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
from deploy.bundle_builder import build_bundle
from deploy.standins import build_standin_bundle, write_standins
from firmware.__main__ import main as firmware_main
from firmware.bundle_reader import BundleConfig, check_bundle
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


def _clean_file_source(tmp_path: Path) -> str:
    """file:// footage of a clean scene: what a camera without the optic (or a copied video) would give."""
    folder = tmp_path / "plain"
    folder.mkdir()
    cv2.imwrite(str(folder / "000.png"), _checkerboard())
    return f"file://{folder}?fps=0"


def test_frames_that_are_not_de_identified_never_leave_without_allow_raw_frames(tmp_path: Path) -> None:
    uri = _clean_file_source(tmp_path)
    build_standin_bundle(tmp_path / "bundle", 64)
    regressor, standin_anonymizer, _ = load_stages(tmp_path / "bundle")
    cases = {  # name: (regressor, anonymizer, stand_in)
        "no bundle": (None, None, False),
        "regressor only": (regressor, None, False),
        "stand-in anonymizer": (regressor, standin_anonymizer, True),
    }
    for name, (reg, anon, stand_in) in cases.items():
        output, capture, allowed = ListSink("output"), ListSink("capture"), ListSink("capture")
        allowed.allow_raw_frames = True
        with Pipeline(lambda: open_source(uri), [output, capture, allowed], reg, anon, stand_in=stand_in) as pipe:
            wait_until(lambda: len(allowed.images) >= 3)
        assert output.images == [] and capture.images == [], name
        frames = pipe.metrics.snapshot()["frames"]
        assert frames["sink_ListSink_withheld"] >= 6, name  # counted for both refused sinks
        assert _detail_in_common(allowed.images[0], _checkerboard()) > 0.99  # the operator's explicit choice


def test_a_trained_anonymizer_output_leaves_but_the_raw_capture_does_not(tmp_path: Path) -> None:
    uri = _clean_file_source(tmp_path)
    redrawn = np.full((16, 16, 3), 90, np.uint8)
    output, capture = ListSink("output"), ListSink("capture")
    with Pipeline(lambda: open_source(uri), [output, capture], None, lambda c, h: redrawn) as pipe:
        wait_until(lambda: len(output.images) >= 3)
    assert all(image is redrawn for image in output.images) and capture.images == []
    assert pipe.metrics.snapshot()["frames"]["sink_ListSink_withheld"] >= 3


def test_run_refuses_raw_frames_in_one_line_and_allows_them_only_when_told(tmp_path: Path, capsys, caplog) -> None:
    uri = _clean_file_source(tmp_path)
    out = tmp_path / "out"
    assert firmware_main(["run", "--source", uri, "--sink", f"file://{out}", "--duration", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without --bundle nothing de-identifies" in err[0] and "allow_raw_frames=true" in err[0]
    assert not out.exists()
    sink = f"file://{out}?allow_raw_frames=true"
    assert firmware_main(["run", "--source", uri, "--sink", sink, "--duration", "0.5", "--log-level", "warning"]) == 0
    assert any("NOT de-identified" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert len(list(out.iterdir())) >= 1
    bad = f"file://{out}?allow_raw_frames=yes"
    assert firmware_main(["run", "--source", uri, "--sink", bad]) == 2
    assert "allow_raw_frames='yes'; expected 'true' or 'false'" in capsys.readouterr().err


def test_verify_says_what_a_bundle_can_and_cannot_de_identify(tmp_path: Path) -> None:
    paths = write_standins(tmp_path / "m", 16)
    build_bundle(tmp_path / "regressor-only", {"regressor": paths["regressor"]}, BundleConfig(input_size=16))
    assert "cannot de-identify: no anonymizer" in check_bundle(tmp_path / "regressor-only")
    build_standin_bundle(tmp_path / "standin", 16)
    assert "cannot de-identify: stand-in models" in check_bundle(tmp_path / "standin")
    cfg = BundleConfig(input_size=16)
    build_bundle(
        tmp_path / "full", {k: paths[k] for k in ("regressor", "anonymizer")}, cfg, constants={"style": paths["style"]}
    )
    summary = check_bundle(tmp_path / "full")
    assert "de-identifies the output stream" in summary and "cannot de-identify stream=capture" in summary
