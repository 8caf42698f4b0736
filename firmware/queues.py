"""A bounded queue whose `put` never blocks: when full, the oldest item is dropped and counted.

Between pipeline stages this keeps the newest frames flowing, so a slow stage costs frames,
never camera time.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Thread-safe bounded FIFO: `put` evicts the oldest item when full, `get` waits with a timeout."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self._items: collections.deque[T] = collections.deque(maxlen=maxsize)
        self._cond = threading.Condition()
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> None:
        """Append `item`; if the queue is full the oldest item is discarded (never blocks)."""
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float) -> T | None:
        """The oldest item, or None if none arrived within `timeout` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
