"""python -m firmware: run with a bundle to file sinks, bad input as one line with exit code 2; the sinks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from deploy.standins import build_standin_bundle
from firmware import sinks, sources
from firmware.__main__ import main
from obscura.errors import ObscuraError
from obscura.paths import REPO_ROOT


def _clean_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "clean"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "psf.npy", np.ones((1, 5, 5), np.float32) / 25)
    return folder, tmp_path / "psf.npy"


def test_run_streams_a_bundle_to_a_video_and_prints_metrics(tmp_path: Path) -> None:
    folder, psf = _clean_folder(tmp_path)
    build_standin_bundle(tmp_path / "bundle", 32, psf=psf)
    video = tmp_path / "out.avi"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "firmware",
            "run",
            "--bundle",
            str(tmp_path / "bundle"),
            "--source",
            f"sim://{folder}?fps=30",
            "--sink",
            f"file://{video}",  # the PSF comes from the bundle
            "--sink",
            f"file://{tmp_path / 'captures'}?stream=capture",
            "--duration",
            "1.5",
            "--log-level",
            "error",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["frames"]["emitted"] >= 1 and summary["source"]["state"] == "stopped"
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (32, 32, 3)  # the anonymizer's output size
    captures = sorted((tmp_path / "captures").iterdir())
    assert captures and cv2.imread(str(captures[0])).shape == (48, 64, 3)  # the capture at sensor size


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--source", "rtsp://cam", "--sink", "file:///tmp/x"], "source URI 'rtsp://cam'"),
        (["run", "--source", "file:///no/such/dir", "--sink", "file:///tmp/x"], "neither a folder"),
        (["run", "--bundle", "/no/such/bundle"], "not a folder"),
        (["check-bundle", "/no/such/bundle"], "not a folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("firmware: error:") and message in err[-1]


def test_check_bundle_refuses_a_tampered_bundle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    build_standin_bundle(tmp_path / "b", 16)
    assert main(["check-bundle", str(tmp_path / "b")]) == 0
    model = tmp_path / "b" / "models" / "anonymizer.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert main(["check-bundle", str(tmp_path / "b")]) == 2
    assert "models/anonymizer.onnx does not match its sha256" in capsys.readouterr().err


def test_rtp_and_rtsp_sinks_need_gstreamer_and_build_the_right_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = sinks.build_sink("rtp://127.0.0.1:5004?fps=25")
    if not sources.opencv_has_gstreamer():
        with pytest.raises(ObscuraError, match="no GStreamer"):
            sink.open()
    opened = []

    class FakeWriter:
        def __init__(self, pipeline, api, fourcc, fps, size):
            opened.append((pipeline, api, fps, size))
            self.frames = 0

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return True

        def write(self, frame) -> None:
            self.frames += 1

        def release(self) -> None:
            pass

    monkeypatch.setattr(sinks, "opencv_has_gstreamer", lambda: True)
    monkeypatch.setattr(cv2, "VideoWriter", FakeWriter)
    for uri, tail in [
        (
            "rtp://127.0.0.1:5004?fps=25",
            "rtph264pay config-interval=1 pt=96 ! udpsink host=127.0.0.1 port=5004 sync=false",
        ),
        ("rtsp://127.0.0.1:8554/obscura", "rtspclientsink location=rtsp://127.0.0.1:8554/obscura"),
    ]:
        sink = sinks.build_sink(uri)
        sink.open()
        sink.write(np.zeros((24, 32, 3), np.uint8), 0)
        sink.close()
        pipeline, api, _, size = opened[-1]
        assert pipeline.startswith("appsrc is-live=true ! videoconvert") and pipeline.endswith(tail)
        assert api == cv2.CAP_GSTREAMER and size == (32, 24)


def test_a_file_sink_never_overwrites_an_earlier_run(tmp_path: Path) -> None:
    frame = np.zeros((16, 16, 3), np.uint8)
    for run in range(2):
        folder, video = sinks.FileSink(tmp_path / "frames"), sinks.FileSink(tmp_path / "out.avi")
        for sink in (folder, video):
            sink.open()
            for index in range(3):  # every run's frame indices start at 0
                sink.write(frame + run, index)
            sink.close()
    pngs = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert pngs == [f"frame_{i:08d}.png" for i in range(6)]
    assert cv2.imread(str(tmp_path / "frames" / pngs[0]))[0, 0, 0] == 0  # the first run's frames are intact
    assert cv2.imread(str(tmp_path / "frames" / pngs[-1]))[0, 0, 0] == 1
    assert sorted(p.name for p in tmp_path.glob("out*.avi")) == ["out-1.avi", "out.avi"]
