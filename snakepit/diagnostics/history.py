"""Background sampling of a pool's figures into a bounded ring buffer (no pandas import here)."""
from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pool import Pool


class HistorySampler:
    """Samples ``pool.statistics()`` every ``history_interval`` seconds, off the request path."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.interval = float(pool.config.history_interval or 1.0)
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=pool.config.history_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{pool.name}-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    def sample_once(self) -> dict[str, Any]:
        stats = self.pool.statistics()
        sample = {"time": time.time(), **stats}
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.pool.closed:
                return
            try:
                self.sample_once()
            except Exception:
                pass
