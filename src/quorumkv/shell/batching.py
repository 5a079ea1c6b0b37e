"""A FIFO drained in batches by one worker thread: the group-commit queue shared by
the SQLite and Redis engines (everything queued while a batch is being written goes
into the next batch)."""

from __future__ import annotations

import threading
from collections import deque


class BatchQueue:
    def __init__(self, batch_max: int) -> None:
        self.batch_max = batch_max
        self._items: deque = deque()
        self._cond = threading.Condition()
        self.closing = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item) -> None:
        with self._cond:
            self._items.append(item)
            if len(self._items) == 1:
                self._cond.notify()

    def take(self) -> list | None:
        """Block until items arrive; return up to ``batch_max`` of them, or None once
        closed and drained (the worker then exits)."""
        with self._cond:
            while not self._items and not self.closing:
                self._cond.wait()
            if not self._items:
                return None
            batch = []
            while self._items and len(batch) < self.batch_max:
                batch.append(self._items.popleft())
            return batch

    def close(self) -> None:
        with self._cond:
            self.closing = True
            self._cond.notify()


def call_in_loop(loop, fn) -> None:
    """Run ``fn`` on the event loop's thread (now, when there is no loop: tests and
    tools drive engines without one). A loop closed during shutdown drops it."""
    if loop is None:
        fn()
        return
    try:
        loop.call_soon_threadsafe(fn)
    except RuntimeError:  # loop closed during shutdown
        pass
