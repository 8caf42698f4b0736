"""The threaded pipeline: drop-oldest queues, ONNX stages from a bundle, faults retried with back-off."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from deploy.bundle_builder import write_manifest
from deploy.standins import build_standin_bundle, expected_output
from firmware import sources
from firmware.inference_stages import load_stages, to_model_input
from firmware.pipeline import Backoff, Pipeline
from firmware.queues import DropOldestQueue
from firmware.stream_metrics import Metrics
from obscura.errors import ObscuraError


def wait_until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll until `predicate()` holds; fail after `timeout_s` (generous: CI shares 2 cores)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout_s} s")


class ListSink:
    """Collects what it receives."""

    def __init__(self, stream: str = "output", delay_s: float = 0.0):
        self.stream = stream
        self.delay_s = delay_s
        self.images: list[np.ndarray] = []
        self.opened = self.closed = False

    def open(self) -> None:
        self.opened = True

    def write(self, image: np.ndarray, index: int) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.images.append(image)

    def close(self) -> None:
        self.closed = True


class ScriptedSource:
    """A camera whose behaviour the test drives: 'frames', 'stall' (read blocks), 'error', 'end'.

    Its frames stand for optical captures (`optical`), so they may leave without an anonymizer.
    """

    optical = True

    def __init__(self, mode: str, frame: np.ndarray, frames_before_fault: int = 3):
        self.uri = f"test://{mode}"
        self.mode = mode
        self.frame = frame
        self.left = frames_before_fault
        self.unblock = threading.Event()
        self.closed_by: threading.Thread | None = None
        self.read_by: threading.Thread | None = None

    def open(self) -> None:
        if self.mode == "error-open":
            raise OSError("camera unplugged")

    def read(self) -> np.ndarray | None:
        self.read_by = threading.current_thread()
        time.sleep(0.005)
        if self.mode == "frames" or self.left > 0:
            self.left -= 1
            return self.frame
        if self.mode == "stall":
            self.unblock.wait(30)
            raise OSError("read interrupted")
        if self.mode == "error":
            raise OSError("sensor timeout")
        return None

    def interrupt(self) -> None:
        self.unblock.set()

    def close(self) -> None:
        self.closed_by = threading.current_thread()
        self.unblock.set()


def test_drop_oldest_queue_never_blocks_and_counts_drops() -> None:
    q = DropOldestQueue[int](2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and len(q) == 2
    assert q.get(0.01) == 3 and q.get(0.01) == 4 and q.get(0.01) is None


def test_bundle_stages_run_end_to_end_and_match_the_closed_form(tmp_path: Path) -> None:
    build_standin_bundle(tmp_path / "bundle", 32)
    regressor, anonymizer, cfg = load_stages(tmp_path / "bundle")
    assert cfg.stand_in and regressor is not None and anonymizer is not None
    capture = np.random.default_rng(4).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    sink = ListSink()
    with Pipeline(lambda: ScriptedSource("frames", capture), [sink], regressor, anonymizer) as pipe:
        wait_until(lambda: len(sink.images) >= 3)
    assert sink.opened and sink.closed
    style = np.load(tmp_path / "bundle" / cfg.constants["style"])
    expected = expected_output(to_model_input(capture, 32, "0..1"), style)[0].transpose(1, 2, 0)
    assert sink.images[0].shape == (32, 32, 3)
    assert np.abs(sink.images[0].astype(float) - np.rint(expected * 255)).max() <= 1
    snap = pipe.metrics.snapshot()
    assert {"capture", "regressor", "anonymizer", "end_to_end"} <= set(snap["latency_ms"])
    assert snap["frames"]["emitted"] >= 3 and snap["source"]["errors"] == 0


def test_anonymizer_needing_heatmaps_without_regressor_is_refused(tmp_path: Path) -> None:

    build_standin_bundle(tmp_path / "b", 16)
    cfg_path = tmp_path / "b" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["regressor"] = None
    cfg_path.write_text(yaml.safe_dump(cfg))

    write_manifest(tmp_path / "b")
    with pytest.raises(ObscuraError, match="takes heatmaps but the config names no regressor"):
        load_stages(tmp_path / "b")


@pytest.mark.parametrize(
    "mode, counter", [("stall", "stalls"), ("error", "errors"), ("end", "ends"), ("error-open", "errors")]
)
def test_source_faults_are_reported_and_retried_with_growing_backoff(mode: str, counter: str) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    sink = ListSink()
    made: list[ScriptedSource] = []

    def factory() -> ScriptedSource:
        made.append(ScriptedSource(mode, frame, frames_before_fault=0 if mode == "error-open" else 2))
        return made[-1]

    delays: list[float] = []

    class RecordingMetrics(Metrics):
        """Keeps every back-off delay the pipeline announces (polling could miss a short one)."""

        def set_source(self, **fields) -> None:
            if fields.get("retry_in_s") is not None:
                delays.append(fields["retry_in_s"])
            super().set_source(**fields)

    pipe = Pipeline(
        factory, [sink], metrics=RecordingMetrics(), stall_timeout_s=0.3, backoff=Backoff(initial_s=0.05, max_s=0.4)
    )
    with pipe:
        wait_until(lambda: pipe.metrics.snapshot()["source"][counter] >= 3)
    source = pipe.metrics.snapshot()["source"]
    assert source["restarts"] >= 2 and len(made) >= 3
    assert source["last_error"].startswith({"stalls": "stalled", "errors": "error", "ends": "ended"}[counter])
    if mode == "error-open":  # never any frame: the delay doubles up to the cap
        assert delays[:3] == [0.05, 0.1, 0.2] and max(delays) <= 0.4
    else:  # frames flowed before each fault, so the delay is reset every time
        assert set(delays) == {0.05} and len(sink.images) >= 2
    if mode == "stall":
        # Stalled cameras were woken and then closed by their own reader thread, not leaked.
        wait_until(lambda: all(s.closed_by is not None and s.closed_by is s.read_by for s in made[:3]))


def test_a_slow_sink_never_slows_the_camera_or_the_other_sinks() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    slow, fast = ListSink(delay_s=0.5), ListSink()
    with Pipeline(lambda: ScriptedSource("frames", frame), [slow, fast]) as pipe:
        wait_until(lambda: len(fast.images) >= 60)
        snap = pipe.metrics.snapshot()
    assert snap["frames"]["captured"] >= 60
    assert len(slow.images) < len(fast.images) / 3  # the slow sink got what it could take ...
    # ... and everything else was dropped at its own queue (which holds 2), not held up upstream.
    assert snap["drops"]["sink0_ListSink"] >= snap["frames"]["emitted"] - len(slow.images) - 3


def test_metrics_report_frame_counters_before_the_first_frame() -> None:

    assert Metrics("test://").snapshot()["frames"] == {"captured": 0, "emitted": 0}


class _ThreadCheckingCapture:
    """A fake cv2.VideoCapture that records which thread reads and which releases, and a release during a read."""

    made: list["_ThreadCheckingCapture"] = []

    def __init__(self, target: object, api: int):
        self.reader: threading.Thread | None = None
        self.releaser: threading.Thread | None = None
        self.reading = False
        self.released_during_read = False
        _ThreadCheckingCapture.made.append(self)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        self.reader, self.reading = threading.current_thread(), True
        time.sleep(0.002)  # inside the decoder for a while, as FFmpeg would be
        self.reading = False
        return True, np.zeros((8, 8, 3), np.uint8)

    def release(self) -> None:
        self.released_during_read = self.released_during_read or self.reading
        self.releaser = threading.current_thread()


def test_start_and_stop_30_times_releases_the_capture_on_its_reader_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded: the capture is faked")
    monkeypatch.setattr(sources.cv2, "VideoCapture", _ThreadCheckingCapture)
    _ThreadCheckingCapture.made.clear()
    for _ in range(30):
        pipe = Pipeline(lambda: sources.open_source(f"file://{video}?fps=0"), [ListSink()])
        pipe.start()
        wait_until(lambda: pipe.metrics.snapshot()["frames"]["captured"] >= 2)
        pipe.stop()
        capture = _ThreadCheckingCapture.made[-1]
        assert capture.releaser is not None  # released before stop() returned
        assert capture.releaser is capture.reader and not capture.released_during_read
    assert len(_ThreadCheckingCapture.made) == 30


def test_a_source_that_keeps_ending_is_logged_once_and_counted_every_time(caplog: pytest.LogCaptureFixture) -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    pipe = Pipeline(
        lambda: ScriptedSource("end", frame, frames_before_fault=1), [ListSink()], backoff=Backoff(0.01, 0.01)
    )
    with caplog.at_level(logging.WARNING, logger="firmware.pipeline"), pipe:
        wait_until(lambda: pipe.metrics.snapshot()["source"]["ends"] >= 5)
    warnings = [r for r in caplog.records if "ended" in r.getMessage()]
    assert len(warnings) == 1 and pipe.metrics.snapshot()["source"]["ends"] >= 5
