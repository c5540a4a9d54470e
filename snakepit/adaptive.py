"""Adaptive sizing: :class:`Adaptive` keeps a pool between ``minimum`` and ``maximum``
workers by its load (``pool.adapt(...)``).

Up fast, down slow, never flapping:

* every ``interval`` the demand is read from the pool (running + queued requests, pipelined
  ones included) and turned into the workers that would carry it at the inspector's HIGH
  utilization level (80 %; the rule of ``snakepit.diagnostics`` recommendations, one source
  of truth). Durations are not needed: a queue that is not yet measured still counts.
* more workers needed → the pool grows at once, by as many as the demand needs;
* fewer needed → only after ``wait_count`` consecutive low intervals, to the largest size
  those intervals needed; never up and down in the same decision;
* never past what this host's available memory holds (``memory_guard`` × available, from the
  workers' own measured memory); the log says when it held back.

A manual ``pool.scale(n)`` ends adaptive sizing (so it never undoes your choice at once:
distributed#3610); a second ``pool.adapt()`` replaces the first.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Iterator

from .errors import ConfigError
from .signals import start_thread

log = logging.getLogger("snakepit.adaptive")

__all__ = ["Adaptive", "AdaptiveLog", "LOG_COLUMNS"]

#: Columns of ``Adaptive.log.to_frame()``.
LOG_COLUMNS = ("time", "from_size", "to_size", "reason", "utilization", "queue_depth")
HIGH_UTILIZATION = 80.0  # the inspector's HIGH level (snakepit.diagnostics.recommendations.Thresholds)


class AdaptiveLog:
    """Every decision an :class:`Adaptive` took (bounded: the last 1,000)."""

    def __init__(self) -> None:
        self._rows: deque[dict[str, Any]] = deque(maxlen=1000)

    def append(self, **row: Any) -> None:
        self._rows.append({k: row.get(k) for k in LOG_COLUMNS})

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._rows))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return list(self._rows)[index]

    def to_dict(self) -> list[dict[str, Any]]:
        """The rows, JSON-ready."""
        return [dict(r) for r in self._rows]

    def to_frame(self) -> Any:
        """A pandas DataFrame: one row per decision, columns :data:`LOG_COLUMNS`."""
        import pandas as pd  # noqa: PLC0415

        frame = pd.DataFrame(self.to_dict(), columns=list(LOG_COLUMNS))
        if not frame.empty:
            frame["time"] = pd.to_datetime(frame["time"], unit="s")
        return frame


def workers_needed(demand: int, per_worker: int, high: float = HIGH_UTILIZATION) -> int:
    """Workers that carry ``demand`` concurrent requests at ``high`` % utilization."""
    if demand <= 0:
        return 0
    return math.ceil(demand / (max(1, per_worker) * high / 100.0))


class Adaptive:
    """Sizes one pool by its load; made by ``pool.adapt(minimum, maximum, ...)``.

    Attributes:
        minimum / maximum / interval / wait_count: its settings.
        log: an :class:`AdaptiveLog` of its decisions (``a.log.to_frame()``).
    """

    def __init__(self, pool: Any, *, minimum: int, maximum: int, interval: float = 1.0, wait_count: int = 3,
                 memory_guard: float = 0.8) -> None:
        for key, value in (("minimum", minimum), ("maximum", maximum), ("wait_count", wait_count)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(key, f"must be a whole number ≥ 1, got {value!r}")
        if minimum > maximum:
            raise ConfigError("minimum", f"minimum={minimum} is above maximum={maximum}")
        if maximum > pool.max_size:
            raise ConfigError("maximum", f"{maximum} is above the pool's hard cap of {pool.max_size} "
                                         "workers (PoolConfig.max_pool_size)")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not 0 < interval < 3600:
            raise ConfigError("interval", f"must be seconds between 0 and 3600, got {interval!r}")
        if not isinstance(memory_guard, (int, float)) or not 0 < memory_guard <= 1:
            raise ConfigError("memory_guard", f"must be a fraction in (0, 1], got {memory_guard!r}")
        self.pool = pool
        self.minimum = minimum
        self.maximum = maximum
        self.interval = float(interval)
        self.wait_count = wait_count
        self.memory_guard = float(memory_guard)
        self.log = AdaptiveLog()
        self._low: list[int] = []  # sizes the consecutive low intervals needed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{pool.name}-adaptive", daemon=True)

    # -- running ------------------------------------------------------------------------
    def start(self) -> None:
        self.step()  # the first decision at once: a pool below minimum grows now
        start_thread(self._thread)

    @property
    def running(self) -> bool:
        return not self._stop.is_set()

    def stop(self) -> None:
        """Stop sizing; the pool keeps its current size."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.pool.closed:
                self._stop.set()
                return
            try:
                self.step()
            except Exception:  # noqa: BLE001 - one failed decision must not end sizing
                log.exception("pool %r: adaptive decision failed", self.pool.name)

    # -- deciding -----------------------------------------------------------------------
    def step(self) -> int | None:
        """Take one decision now; the new target size, or None if it stayed."""
        pool = self.pool
        stats = pool.statistics()
        per_worker = max(1, pool.capacity_per_worker)
        current = pool.target_size
        in_flight, queued = int(stats["in_flight"]), int(stats["queue_depth"])
        total = max(1, stats["capacity_total"])
        utilization = round(100.0 * in_flight / total, 1)
        needed = min(self.maximum, max(self.minimum, workers_needed(in_flight + queued, per_worker)))
        row = {"time": time.time(), "from_size": current, "utilization": utilization, "queue_depth": queued}
        if needed > current:
            self._low.clear()
            allowed = self._memory_allows(current, needed)
            if allowed < needed:
                self.log.append(**row, to_size=allowed, reason="memory_guard")
                log.info("pool %r: adaptive sizing held back at %d workers (wanted %d): host memory",
                         pool.name, allowed, needed)
                if allowed <= current:
                    return None
                needed = allowed
            return self._apply(needed, "adapt_up", row)
        if needed < current:
            self._low.append(needed)
            if len(self._low) >= self.wait_count:
                size = max(self._low)
                self._low.clear()
                return self._apply(size, "adapt_down", row)
            return None
        self._low.clear()
        return None

    def _apply(self, size: int, reason: str, row: dict[str, Any]) -> int | None:
        if self._stop.is_set():
            return None
        if self.pool._scale_to(size, reason):
            self.log.append(**row, to_size=size, reason=reason)
            return size
        return None

    def _memory_allows(self, current: int, wanted: int) -> int:
        """The largest size up to ``wanted`` this host's available memory can hold."""
        import psutil  # noqa: PLC0415

        per_worker = []
        for record in self.pool.worker_records():
            if not getattr(record, "is_local", True):
                return wanted  # a cluster's hosts are not this one: Dask places them
            metrics = getattr(record.figures, "metrics", None)
            if metrics is not None:
                value = metrics.uss_bytes if metrics.HasField("uss_bytes") else metrics.rss_bytes
                if value:
                    per_worker.append(value / 2**20)
        if not per_worker:
            return wanted
        each = sum(per_worker) / len(per_worker)
        budget = psutil.virtual_memory().available / 2**20 * self.memory_guard
        return max(current, min(wanted, current + int(budget // max(each, 1.0))))

    def describe(self) -> dict[str, Any]:
        """Its state for reports: settings and the last decision."""
        last = self.log[-1] if len(self.log) else None
        return {"running": self.running, "minimum": self.minimum, "maximum": self.maximum,
                "interval": self.interval, "wait_count": self.wait_count, "last_decision": last}

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<snakepit.Adaptive pool={self.pool.name!r} {self.minimum}..{self.maximum} {state}>"
