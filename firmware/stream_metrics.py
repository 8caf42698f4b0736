"""Live pipeline figures for /metrics: frame rate, per-stage latency, drops, and the source's health."""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

WINDOW_S = 5.0
LATENCY_SAMPLES = 100


class Metrics:
    """Thread-safe counters, latency windows and source state; `snapshot()` is what /metrics serves."""

    def __init__(self, source_uri: str = ""):
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._latency: dict[str, collections.deque[float]] = {}
        # Frame counters are reported from the start (at 0), so /metrics has a fixed shape.
        self._counts: collections.Counter[str] = collections.Counter({"captured": 0, "emitted": 0})
        self._emitted: collections.deque[float] = collections.deque()
        self._captured: collections.deque[float] = collections.deque()
        self._queues: dict[str, Any] = {}
        self.source: dict[str, Any] = {
            "uri": source_uri,
            "state": "starting",
            "errors": 0,
            "stalls": 0,
            "ends": 0,
            "restarts": 0,
            "last_error": None,
            "retry_in_s": None,
        }
        self.extra: dict[str, Any] = {}

    def add_queue(self, name: str, queue: Any) -> None:
        """Report this queue's drops under `drops[name]`."""
        with self._lock:
            self._queues[name] = queue

    def latency(self, stage: str, seconds: float) -> None:
        """Record one stage's processing time."""
        with self._lock:
            self._latency.setdefault(stage, collections.deque(maxlen=LATENCY_SAMPLES)).append(seconds)

    def count(self, name: str, n: int = 1) -> None:
        """Increment a counter (frames captured, emitted, stage errors...)."""
        with self._lock:
            self._counts[name] += n
            if name in ("captured", "emitted"):
                stamps = self._captured if name == "captured" else self._emitted
                stamps.append(time.monotonic())

    def set_source(self, **fields: Any) -> None:
        """Update the source's health fields (state, last_error, retry_in_s...)."""
        with self._lock:
            self.source.update(fields)

    def note(self, key: str, value: Any) -> None:
        """Report an extra top-level field (a last error, a client count callable...)."""
        with self._lock:
            self.extra[key] = value

    def bump_source(self, key: str) -> None:
        """Increment one of the source's fault counters."""
        with self._lock:
            self.source[key] += 1

    def snapshot(self) -> dict[str, Any]:
        """Everything /metrics reports, as plain JSON-able data."""
        now = time.monotonic()
        with self._lock:
            for stamps in (self._captured, self._emitted):
                while stamps and now - stamps[0] > WINDOW_S:
                    stamps.popleft()
            return {
                "uptime_s": round(now - self._start, 3),
                "fps": round(_rate(self._emitted, now), 3),
                "capture_fps": round(_rate(self._captured, now), 3),
                "frames": dict(self._counts),
                "latency_ms": {
                    stage: {
                        "mean": round(1000 * sum(v) / len(v), 3),
                        "last": round(1000 * v[-1], 3),
                        "max": round(1000 * max(v), 3),
                    }
                    for stage, v in self._latency.items()
                    if v
                },
                "drops": {name: q.dropped for name, q in self._queues.items()},
                "source": dict(self.source),
                **{k: v() if callable(v) else v for k, v in self.extra.items()},
            }


def _rate(stamps: collections.deque[float], now: float) -> float:
    """Events per second over the window (0 with fewer than two events)."""
    if len(stamps) < 2:
        return 0.0
    span = max(stamps[-1] - stamps[0], 1e-6)
    return (len(stamps) - 1) / span if now - stamps[-1] < WINDOW_S else 0.0
