"""capture -> regressor -> anonymizer -> sinks, each in its own thread, joined by drop-oldest queues.

The camera thread never waits for anything downstream: every hand-over is a `put` that evicts the
oldest frame when the next stage is busy. A source that stalls, ends or fails is restarted with
exponential back-off, and its state is reported through `Metrics` (served on /metrics).

What may leave: a sink gets a frame only if it is de-identified (the output of a trained
anonymizer), or an optical capture the firmware made itself (a source with `optical = True`,
i.e. sim://), or if the sink was given `allow_raw_frames=true`. Anything else is withheld and
counted, so a camera without the optic, or a bundle without an anonymizer, never streams a clean face.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from firmware.queues import DropOldestQueue
from firmware.stream_metrics import Metrics

log = logging.getLogger("firmware.pipeline")

Regressor = Callable[[np.ndarray], np.ndarray]
Anonymizer = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
POLL_S = 0.05


@dataclass
class Frame:
    """One frame on its way through the pipeline: what the source gave, and what the stages made of it.

    The capture is the optic's image on a privacy camera, but the firmware cannot see the optic: a
    capture counts as optical only when this firmware imaged it (sim://). `Pipeline.withholds` decides what leaves.
    """

    index: int
    captured_at: float
    capture: np.ndarray
    optical: bool = False  # the capture was imaged through the optic here (sim://), so it holds no clean face
    heatmaps: np.ndarray | None = None
    output: np.ndarray | None = None


class Sink(Protocol):
    """Where frames leave the pipeline. `stream` picks what it receives: 'output' or 'capture'.

    `allow_raw_frames` (the operator's explicit `allow_raw_frames=true`) lets it receive frames
    that are not de-identified.
    """

    stream: str
    allow_raw_frames: bool

    def open(self) -> None:
        """Acquire files, sockets or servers."""

    def write(self, image: np.ndarray, index: int) -> None:
        """Take one H x W x 3 uint8 RGB image."""

    def close(self) -> None:
        """Release everything."""


@dataclass(frozen=True)
class Backoff:
    """Retry delays: `initial_s`, doubled after each fault up to `max_s`, reset once frames flow again."""

    initial_s: float = 0.25
    max_s: float = 8.0


class _SourceSession:
    """One opened source and the daemon thread reading it; abandoned (not joined) if it stalls.

    The source is opened, read and closed on that one thread: OpenCV's and FFmpeg's captures
    crash (abort, segfault) when released from another thread while a read is inside them.
    """

    def __init__(self, source: object, deliver: Callable[[np.ndarray, float, bool], None]):
        self.source = source
        self.optical = bool(getattr(source, "optical", False))
        self._deliver = deliver
        self.cancelled = False
        self.done = threading.Event()
        self.outcome: tuple[str, str] = ("", "")
        self.opened = False
        self.frames = 0
        self.last_progress = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="source-reader", daemon=True)

    def start(self) -> None:
        """Open the source and read it in the background."""
        self._thread.start()

    def _run(self) -> None:
        """Open, then read until the source ends, fails or is cancelled."""
        try:
            self.source.open()
            self.opened = True
            self.last_progress = time.monotonic()
            while not self.cancelled:
                start = time.perf_counter()
                frame = self.source.read()
                if frame is None:
                    self._finish("ended", "source ended")
                    return
                if self.cancelled:
                    break
                self.frames += 1
                self.last_progress = time.monotonic()
                self._deliver(frame, time.perf_counter() - start, self.optical)
            self._finish("stopped", "")
        except Exception as err:  # noqa: BLE001 - any device fault is reported and retried
            self._finish("error", f"{type(err).__name__}: {err}")
        finally:
            self._close()

    def _finish(self, kind: str, message: str) -> None:
        """Record why reading stopped."""
        if not self.done.is_set():
            self.outcome = (kind, message)
            self.done.set()

    def cancel(self) -> None:
        """Stop delivering frames; the reader closes the source itself. A source's `interrupt()` may wake a read."""
        self.cancelled = True
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def join(self, timeout_s: float) -> None:
        """Wait for the reader to close the source (a read stuck in a driver is left behind after `timeout_s`)."""
        self._thread.join(timeout_s)

    def _close(self) -> None:
        """Close the source, ignoring errors from an already broken device."""
        try:
            self.source.close()
        except Exception as err:  # noqa: BLE001
            log.debug("closing %s failed: %s", getattr(self.source, "uri", "source"), err)


class Pipeline:
    """Runs a source, optional regressor and anonymizer, and sinks in threads until `stop()`."""

    def __init__(
        self,
        source_factory: Callable[[], object],
        sinks: Sequence[Sink],
        regressor: Regressor | None = None,
        anonymizer: Anonymizer | None = None,
        metrics: Metrics | None = None,
        queue_size: int = 2,
        stall_timeout_s: float = 3.0,
        open_timeout_s: float = 15.0,
        backoff: Backoff = Backoff(),
        stand_in: bool = False,
    ):
        self._source_factory = source_factory
        self.sinks = list(sinks)
        self.regressor = regressor
        self.anonymizer = anonymizer
        # A stand-in anonymizer's output is a closed form of the capture, not a de-identification.
        self.deidentifies = anonymizer is not None and not stand_in
        self.metrics = metrics or Metrics()
        self.stall_timeout_s = stall_timeout_s
        self.open_timeout_s = open_timeout_s
        self.backoff = backoff
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self._next_index = 0
        self.captured = DropOldestQueue[Frame](queue_size)
        self.located = DropOldestQueue[Frame](queue_size)
        self.sink_queues = [DropOldestQueue[Frame](queue_size) for _ in self.sinks]
        self.metrics.add_queue("regressor_in", self.captured)
        self.metrics.add_queue("anonymizer_in", self.located)
        for i, (sink, q) in enumerate(zip(self.sinks, self.sink_queues)):
            self.metrics.add_queue(f"sink{i}_{type(sink).__name__}", q)

    def withholds(self, sink: Sink, optical: bool) -> bool:
        """Whether `sink` would be refused the frames of a source whose captures are (not) optical."""
        if getattr(sink, "allow_raw_frames", False) or optical:
            return False
        return sink.stream == "capture" or not self.deidentifies

    def start(self) -> "Pipeline":
        """Open the sinks and start every thread."""
        for i, sink in enumerate(self.sinks):
            if getattr(sink, "allow_raw_frames", False):
                log.warning(
                    "sink%d (%s): allow_raw_frames=true: frames that are NOT de-identified may leave this device",
                    i,
                    type(sink).__name__,
                )
            sink.open()
        targets = [
            ("source", self._supervise_source),
            ("regressor", lambda: self._stage("regressor", self.captured, self._locate, [self.located])),
            ("anonymizer", lambda: self._stage("anonymizer", self.located, self._anonymize, self.sink_queues)),
        ]
        targets += [
            (f"sink{i}", lambda s=s, q=q: self._drain(s, q))
            for i, (s, q) in enumerate(zip(self.sinks, self.sink_queues))
        ]
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"pipeline-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Signal every thread, wait for them, and close the sinks."""
        deadline = time.monotonic() + timeout_s
        self._stop_deadline = deadline
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - closing must reach every sink
                log.warning("closing sink %s failed: %s", type(sink).__name__, err)

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _deliver(self, image: np.ndarray, read_s: float, optical: bool) -> None:
        """Hand a captured frame to the regressor's queue (never blocks)."""
        if self.metrics.source["state"] != "running":
            self.metrics.set_source(state="running")
        self.metrics.count("captured")
        self.metrics.latency("capture", read_s)
        self.captured.put(Frame(self._next_index, time.monotonic(), image, optical))
        self._next_index += 1

    def _supervise_source(self) -> None:
        """Keep a source session alive: detect end, error and stall, and retry with exponential back-off."""
        delay = self.backoff.initial_s
        attempt = 0
        last_fault = ("", "")
        while not self._stop.is_set():
            if attempt:
                self.metrics.bump_source("restarts")
            attempt += 1
            self.metrics.set_source(state="opening", retry_in_s=None)
            try:
                session = _SourceSession(self._source_factory(), self._deliver)
            except Exception as err:  # noqa: BLE001 - e.g. a camera module that vanished
                kind, message = "error", f"{type(err).__name__}: {err}"
            else:
                session.start()
                kind, message = self._watch(session)
                if session.frames:
                    delay = self.backoff.initial_s
            if kind == "stopped":
                break
            self.metrics.bump_source({"error": "errors", "stalled": "stalls", "ended": "ends"}[kind])
            self.metrics.set_source(state="retrying", last_error=f"{kind}: {message}", retry_in_s=delay)
            # The same fault again (a looping file ending, a camera still unplugged) is logged once; /metrics counts it.
            level = logging.DEBUG if (kind, message) == last_fault else logging.WARNING
            last_fault = (kind, message)
            log.log(level, "source %s: %s (%s); retrying in %.2f s", self.metrics.source["uri"], kind, message, delay)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.backoff.max_s)
        self.metrics.set_source(state="stopped", retry_in_s=None)

    def _watch(self, session: _SourceSession) -> tuple[str, str]:
        """Wait for the session to end or fail; declare it stalled when no frame arrives in time."""
        while not self._stop.is_set():
            if session.done.wait(POLL_S):
                return session.outcome
            limit = self.stall_timeout_s if session.opened else self.open_timeout_s
            idle = time.monotonic() - session.last_progress
            if idle > limit:
                session.cancel()
                return "stalled", f"no frame for {idle:.1f} s"
        session.cancel()
        session.join(max(0.0, self._stop_deadline - time.monotonic()))
        return "stopped", ""

    def _locate(self, frame: Frame) -> None:
        """Regressor stage: capture -> face heatmaps (skipped when no regressor is loaded)."""
        if self.regressor is not None:
            frame.heatmaps = self.regressor(frame.capture)

    def _anonymize(self, frame: Frame) -> None:
        """Anonymizer stage: capture + heatmaps -> de-identified frame; without a model the capture is the output."""
        frame.output = frame.capture if self.anonymizer is None else self.anonymizer(frame.capture, frame.heatmaps)
        frame.heatmaps = None
        self.metrics.count("emitted")

    def _stage(
        self,
        name: str,
        inbox: DropOldestQueue[Frame],
        work: Callable[[Frame], None],
        outboxes: Sequence[DropOldestQueue[Frame]],
    ) -> None:
        """Take frames from `inbox`, process them, and pass them on; a failing frame is counted and dropped."""
        while not self._stop.is_set():
            frame = inbox.get(POLL_S)
            if frame is None:
                continue
            start = time.perf_counter()
            try:
                work(frame)
            except Exception as err:  # noqa: BLE001 - one bad frame must not stop the camera
                self.metrics.count(f"{name}_errors")
                self.metrics.note(f"{name}_last_error", f"{type(err).__name__}: {err}")
                log.warning("%s failed on frame %d: %s", name, frame.index, err)
                continue
            self.metrics.latency(name, time.perf_counter() - start)
            for outbox in outboxes:
                outbox.put(frame)

    def _drain(self, sink: Sink, inbox: DropOldestQueue[Frame]) -> None:
        """Feed one sink from its own queue, so a slow sink only drops its own frames."""
        name = f"sink_{type(sink).__name__}"
        while not self._stop.is_set():
            frame = inbox.get(POLL_S)
            if frame is None:
                continue
            if self.withholds(sink, frame.optical):
                self.metrics.count(f"{name}_withheld")
                continue
            image = frame.capture if sink.stream == "capture" else frame.output
            start = time.perf_counter()
            try:
                sink.write(image, frame.index)
            except Exception as err:  # noqa: BLE001
                self.metrics.count(f"{name}_errors")
                self.metrics.note(f"{name}_last_error", f"{type(err).__name__}: {err}")
                log.warning("%s failed on frame %d: %s", name, frame.index, err)
                continue
            self.metrics.latency(name, time.perf_counter() - start)
            self.metrics.latency("end_to_end", time.monotonic() - frame.captured_at)
