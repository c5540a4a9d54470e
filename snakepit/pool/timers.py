"""One timer thread per pool: queue and request timeouts, retries, cancel escalation.

A cancelled timer forgets its callback at once (so it holds nothing of the call: payload,
future or result) and the heap is compacted when cancelled entries outnumber live ones, so
memory never grows with request rate × timeout. A callback that raises is logged and the
thread goes on; an infinite delay never fires, a huge one is clamped.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from typing import Callable

from ..config import MAX_SECONDS
from ..signals import start_thread

log = logging.getLogger("snakepit.pool")

#: Longest delay a timer waits (about 115 days); longer ones are clamped to it (the same
#: bound as the time settings of PoolConfig).
MAX_DELAY_S = MAX_SECONDS
_COMPACT_MIN = 64  # cancelled entries tolerated before the heap is compacted


def normalize_timeout(value: object, name: str) -> float | None:
    """A timeout argument as seconds: ``None`` or ``inf`` mean no limit, huge values clamp to
    :data:`MAX_DELAY_S`; ``nan``, zero, negatives and non-numbers raise ``ValueError`` naming
    ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")
    if math.isinf(value):
        return None
    return float(min(value, MAX_DELAY_S))


class _TimerHandle:
    __slots__ = ("fn", "_timer")

    def __init__(self, fn: Callable[[], None] | None, timer: "_Timer | None") -> None:
        self.fn = fn
        self._timer = timer

    @property
    def cancelled(self) -> bool:
        return self.fn is None

    def cancel(self) -> None:
        if self.fn is not None:
            self.fn = None
            if self._timer is not None:
                self._timer._cancelled_one()


class _Timer:
    """Runs callbacks at deadlines on one thread, started by the first ``call_later``.

    Creating one starts nothing: a pool interrupted (Ctrl-C) between making its timer and
    the start-up code that would stop it leaves no thread behind."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, _TimerHandle]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._cancelled = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{name}-timer", daemon=True)
        self._started = False

    def call_later(self, delay: float, fn: Callable[[], None]) -> _TimerHandle:
        """Call ``fn()`` in ``delay`` seconds (never, for ``inf``); ``cancel()`` the handle to drop it."""
        if math.isnan(delay):
            raise ValueError("timer delay is nan")
        if math.isinf(delay) and delay > 0:
            return _TimerHandle(None, None)  # never fires, holds nothing
        handle = _TimerHandle(fn, self)
        deadline = time.monotonic() + min(max(0.0, delay), MAX_DELAY_S)
        with self._cond:
            heapq.heappush(self._heap, (deadline, next(self._seq), handle))
            if not self._started and not self._stopped:
                self._started = True  # set first: stop() joins a thread that may have started
                start_thread(self._thread)
            elif self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def pending(self) -> int:
        """Entries in the heap (cancelled ones not yet compacted included)."""
        return len(self._heap)

    def _cancelled_one(self) -> None:
        with self._cond:
            self._cancelled += 1
            if self._cancelled > _COMPACT_MIN and self._cancelled * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2].fn is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][2].fn is None:  # cancelled: drop
                        heapq.heappop(self._heap)
                        self._cancelled = max(0, self._cancelled - 1)
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    wait = min(self._heap[0][0] - now, 3600.0) if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
                _, _, handle = heapq.heappop(self._heap)
                fn, handle.fn = handle.fn, None
            if fn is None:
                continue
            try:
                fn()
            except BaseException:  # noqa: BLE001 - one failing callback must not stop every timeout
                log.exception("timer callback failed")
            del fn

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._started and threading.current_thread() is not self._thread:
            try:
                self._thread.join(timeout=2.0)
            except RuntimeError:  # its start was interrupted before the thread ran
                pass
