"""Frame sources by URI; picamera2 and the CSI (GStreamer) camera are faked, files are real."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from firmware import sources
from firmware.psf import PsfConvolver
from obscura.errors import ObscuraError


def _write_images(folder: Path, n: int, shape=(40, 48)) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    frames = []
    for i in range(n):
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        frames.append(rgb)
    return frames


def _read_all(source) -> list[np.ndarray]:
    source.open()
    try:
        out = []
        for _ in range(1000):
            frame = source.read()
            if frame is None:
                return out
            out.append(frame)
        raise AssertionError("source never ended")
    finally:
        source.close()


def test_file_folder_yields_rgb_frames_in_name_order_then_ends(tmp_path: Path) -> None:
    frames = _write_images(tmp_path / "clips", 3)
    got = _read_all(sources.open_source(f"file://{tmp_path / 'clips'}?fps=0"))
    assert len(got) == 3 and all(np.array_equal(a, b) for a, b in zip(got, frames))


def test_file_video_is_read_through_opencv(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(5):
        writer.write(np.full((48, 64, 3), (40 * i, 0, 200), np.uint8))  # BGR: red channel 200
    writer.release()
    got = _read_all(sources.open_source(f"file://{path}?fps=0"))
    assert len(got) == 5 and got[0].shape == (48, 64, 3)
    assert abs(int(got[0][..., 0].mean()) - 200) < 8  # RGB order after the source


def test_sim_source_returns_only_the_optical_capture(tmp_path: Path) -> None:
    frames = _write_images(tmp_path / "clean", 2)
    psf = np.ones((3, 9, 9), np.float32) / 81
    np.save(tmp_path / "psf.npy", psf)
    got = _read_all(sources.open_source(f"sim://{tmp_path / 'clean'}?psf={tmp_path / 'psf.npy'}&fps=0"))
    optic = PsfConvolver(psf)
    assert len(got) == 2
    for clean, capture in zip(frames, got):
        assert np.array_equal(capture, optic.capture(clean))
        assert np.abs(capture.astype(int) - clean).mean() > 40  # a random clean frame is far from its blur


def test_sim_needs_a_psf_and_files_must_exist(tmp_path: Path) -> None:
    _write_images(tmp_path / "clean", 1)
    with pytest.raises(ObscuraError, match=r"needs \?psf="):
        sources.open_source(f"sim://{tmp_path / 'clean'}")
    with pytest.raises(ObscuraError, match="neither a folder"):
        sources.open_source(f"file://{tmp_path / 'nothing'}")
    with pytest.raises(ObscuraError, match="expected one of"):
        sources.open_source("http://camera")
    with pytest.raises(ObscuraError, match="fps='fast' is not a number"):
        sources.open_source(f"file://{tmp_path / 'clean'}?fps=fast")
    with pytest.raises(ObscuraError, match="camera number"):
        sources.open_source("picam://front")


class _FakePicamera2:
    """Records how it was driven; frames come out in picamera2's RGB888 memory order (B, G, R)."""

    instances: list["_FakePicamera2"] = []

    def __init__(self, index: int = 0):
        self.index = index
        self.calls: list[str] = []
        self.config = None
        _FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, controls: dict) -> dict:
        self.calls.append("create_video_configuration")
        return {"main": main, "controls": controls}

    def configure(self, config: dict) -> None:
        self.calls.append("configure")
        self.config = config

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, stream: str) -> np.ndarray:
        assert stream == "main" and "start" in self.calls
        w, h = self.config["main"]["size"]
        bgr = np.zeros((h, w, 3), np.uint8)
        bgr[..., 0] = 10  # blue
        bgr[..., 2] = 250  # red
        return bgr

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


def test_picam_source_drives_picamera2(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("picamera2")
    module.Picamera2 = _FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    source = sources.open_source("picam://1?width=64&height=48&fps=15")
    source.open()
    frame = source.read()
    source.close()
    camera = _FakePicamera2.instances[-1]
    assert camera.index == 1
    assert camera.calls == ["create_video_configuration", "configure", "start", "stop", "close"]
    assert camera.config == {"main": {"size": (64, 48), "format": "RGB888"}, "controls": {"FrameRate": 15.0}}
    assert frame.shape == (48, 64, 3) and frame[0, 0].tolist() == [250, 0, 10]


def test_picam_without_picamera2_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(ObscuraError, match="python3-picamera2"):
        sources.open_source("picam://0").open()


class _FakeCapture:
    """Stands in for cv2.VideoCapture; remembers what it was opened with."""

    opened: list[tuple[object, int]] = []

    def __init__(self, target: object, api: int):
        _FakeCapture.opened.append((target, api))
        self.props: dict[int, float] = {}
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop: int, value: float) -> bool:
        self.props[prop] = value
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[..., 2] = 200  # BGR red
        return True, frame

    def release(self) -> None:
        self.released = True


def test_csi_source_opens_the_nvargus_pipeline_with_gstreamer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCapture)
    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    source = sources.open_source("csi://1?width=640&height=480&fps=30")
    source.open()
    frame = source.read()
    source.close()
    pipeline, api = _FakeCapture.opened[-1]
    assert api == cv2.CAP_GSTREAMER
    assert pipeline.startswith(
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=640,height=480,framerate=30/1"
    )
    assert pipeline.endswith("appsink max-buffers=1 drop=true")
    assert frame[0, 0].tolist() == [200, 0, 0]


def test_csi_without_gstreamer_says_so() -> None:
    if sources.opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the refusal path cannot be shown")
    with pytest.raises(ObscuraError, match="no GStreamer"):
        sources.open_source("csi://0").open()


def test_v4l2_source_uses_the_v4l2_backend_and_requested_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "VideoCapture", _FakeCapture)
    source = sources.open_source("v4l2:///dev/video2?width=320&height=240")
    source.open()
    cap = source._cap
    source.close()
    assert _FakeCapture.opened[-1] == ("/dev/video2", cv2.CAP_V4L2)
    assert cap.props[cv2.CAP_PROP_FRAME_WIDTH] == 320 and cap.props[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert cap.released
    with pytest.raises(ObscuraError, match="device path"):
        sources.open_source("v4l2://video0")
