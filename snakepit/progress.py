"""Progress of running maps: a small registry the panel reads, and an optional ``tqdm.auto`` bar.

``pool.map(fn, items, progress=True)`` shows a bar (a widget in Jupyter, text in a terminal) of
items done / total, rate, and failures as postfix. ``progress=None`` (default): a bar only in a
Jupyter kernel, and only once the map has run for ``AUTO_BAR_AFTER_S`` seconds (quick maps stay
quiet). tqdm is imported only when a bar is shown.

Example::

    list(pool.map(abs, range(1000), progress=True))
    snakepit.progress.running_maps("default")   # [MapProgress(id=…, done=…, total=…, …)]
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MapProgress", "running_maps", "track_map"]

_lock = threading.Lock()
_maps: dict[str, dict[int, "MapProgress"]] = {}
_ids = itertools.count(1)

AUTO_BAR_AFTER_S = 2.0
"""With ``progress=None`` in Jupyter, a map that is still running after this long gets a bar."""


@dataclass
class MapProgress:
    """One running map: ``done`` / ``total`` items, ``failures`` (items of failed chunks)."""

    id: int
    total: int
    done: int = 0
    failures: int = 0
    started: float = field(default_factory=time.time)


def running_maps(pool_name: str) -> list[MapProgress]:
    """The maps running on that pool now (copies; read-only view for the panel)."""
    with _lock:
        return [MapProgress(m.id, m.total, m.done, m.failures, m.started)
                for m in _maps.get(pool_name, {}).values()]


def _in_jupyter() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class _Tracker:
    def __init__(self, pool_name: str, futures: list, sizes: list[int], bar: Any,
                 bar_after: float | None = None) -> None:
        self.pool_name = pool_name
        self.entry = MapProgress(next(_ids), sum(sizes))
        self.bar = bar
        self._bar_at = None if bar_after is None else time.monotonic() + bar_after
        self._closed = False
        with _lock:
            _maps.setdefault(pool_name, {})[self.entry.id] = self.entry
        for fut, n in zip(futures, sizes):
            fut.add_done_callback(lambda f, n=n: self._on_done(f, n))

    def _on_done(self, fut: Any, n: int) -> None:
        failed = fut.cancelled() or fut.exception() is not None
        with _lock:
            self.entry.done += n
            if failed:
                self.entry.failures += n
            finished = self.entry.done >= self.entry.total
        if self.bar is not None:
            try:
                self.bar.update(n)
                if failed:
                    self.bar.set_postfix(failures=self.entry.failures)
            except Exception:
                pass
        if finished:
            self.close()

    @property
    def bar_pending(self) -> bool:
        """A bar is due later: the consumer should call :meth:`poll` while it waits."""
        return self._bar_at is not None and self.bar is None and not self._closed

    def poll(self) -> None:
        """Show the deferred bar once its time has come (called from the consuming thread)."""
        if not self.bar_pending or time.monotonic() < self._bar_at:
            return
        with _lock:
            done, failures = self.entry.done, self.entry.failures
        try:
            self.bar = _new_bar(self.pool_name, self.entry.total, done)
        except ImportError:  # no tqdm: the default bar is a nicety, not worth failing a map
            self._bar_at = None
            return
        if failures:
            self.bar.set_postfix(failures=failures)

    def close(self) -> None:
        with _lock:
            if self._closed:
                return
            self._closed = True
            _maps.get(self.pool_name, {}).pop(self.entry.id, None)
        if self.bar is not None:
            try:
                self.bar.close()
            except Exception:
                pass


def track_map(pool_name: str, futures: list, sizes: list[int], progress: bool | None) -> _Tracker:
    """Register a map (its chunk futures and their sizes); show a bar if ``progress``."""
    if progress is None:
        later = AUTO_BAR_AFTER_S if _in_jupyter() else None
        return _Tracker(pool_name, futures, sizes, None, bar_after=later)
    bar = _new_bar(pool_name, sum(sizes)) if progress else None
    return _Tracker(pool_name, futures, sizes, bar)


def _new_bar(pool_name: str, total: int, done: int = 0) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError('map(progress=True) needs tqdm: pip install "snakepit[ecosystem]"') from exc

    return tqdm(total=total, initial=done, desc=f"snakepit map [{pool_name}]", unit="item")
