"""Sizing: ``pool.scale(n)``, the target size the worker set keeps, and retiring workers
without losing work.

A mixin of :class:`snakepit.pool.Pool`. The pool keeps ``target_size`` workers: crash
replacement and recycling refill up to it (never past it); shrinking retires idle workers
first, then the least loaded, preferring workers without sessions; a retiring worker takes
nothing new and finishes what it runs and what is pipelined to it, then exits (a
``("snakepit","worker","recycled")`` event with reason ``scaled_down``).
"""
from __future__ import annotations

import time
from typing import Any

from .. import telemetry
from ..errors import ConfigError, PoolNotFoundError
from .records import AVAILABLE, BUSY, SCALED_DOWN

#: The largest pool a ``scale`` accepts unless ``PoolConfig.max_pool_size`` says less.
HARD_MAX_POOL_SIZE = 4096


class SizingMixin:
    """``scale``, ``target_size`` and ``adapt``."""

    @property
    def target_size(self) -> int:
        """The number of workers the pool is heading for (``scale`` and ``adapt`` set it)."""
        return self._target

    @property
    def capacity_per_worker(self) -> int:
        """Requests one worker runs at once (1 for a process pool, threads for a thread pool)."""
        return self._capacity

    @property
    def max_size(self) -> int:
        """The hard cap on ``scale``/``adapt`` (``PoolConfig.max_pool_size``, else 4096)."""
        return int(getattr(self.config, "max_pool_size", None) or HARD_MAX_POOL_SIZE)

    def scale(self, n: int, *, wait: bool = True, timeout: float | None = None) -> None:
        """Grow or shrink the pool to ``n`` workers (a thread pool: ``n`` × its threads).

        Shrinking never loses a request: workers chosen to go take nothing new and finish
        what they hold. A manual ``scale`` ends adaptive sizing (``pool.adapt``), so the
        size you ask for stays.

        Args:
            n: the new size, 1 … ``max_size``.
            wait: block until ``n`` workers serve and the retired ones have exited (at
                most ``timeout`` seconds, default ``startup_timeout``; the scaling goes on
                in the background if it takes longer, and ``TimeoutError`` says so).

        Example::

            pool.scale(8)                # grow for a heavy phase
            pool.scale(2, wait=False)    # returns at once; pool.target_size == 2
        """
        adaptive = self.adaptive
        if adaptive is not None:
            adaptive.stop()
        self._scale_to(n, "manual")
        if wait:
            self.wait_for_size(timeout)

    def _check_size(self, n: Any, what: str = "size") -> int:
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(what, f"must be a whole number of workers, got {n!r}")
        if n < 1:
            raise ConfigError(what, f"must be at least 1 worker, got {n}")
        if n > self.max_size:
            raise ConfigError(what, f"{n} is above the pool's hard cap of {self.max_size} workers "
                                    "(PoolConfig.max_pool_size)")
        return n

    def _scale_to(self, n: int, reason: str) -> bool:
        """Set the target and start or retire workers; True if the target changed."""
        n = self._check_size(n)
        with self._lock:
            if self._closed:
                raise PoolNotFoundError(self.name)
            before = self._target
            self._target = n
        if n != before:
            telemetry.execute(telemetry.POOL_SCALED, {"from_size": before, "to_size": n},
                              {"pool": self.name, "reason": reason})
        self._grow_to_target()
        self._trim_to_target()
        return n != before

    def wait_for_size(self, timeout: float | None = None) -> None:
        """Block until the pool has exactly ``target_size`` serving workers and no retiring one."""
        limit = self.config.startup_timeout if timeout is None else timeout
        end = time.monotonic() + limit
        while True:
            with self._lock:
                serving = len(self._serving_workers())
                leaving = sum(1 for w in self._workers.values() if w.recycle_reason == SCALED_DOWN)
                target = self._target
            if serving == target and not leaving:
                return
            if self._closed:
                raise PoolNotFoundError(self.name)
            if time.monotonic() >= end:
                raise TimeoutError(f"pool {self.name!r} has {serving} of {target} workers "
                                   f"({leaving} still finishing their work) after {limit}s; "
                                   "it keeps scaling in the background")
            time.sleep(0.02)

    # -- keeping the target (lock not held) ----------------------------------------------
    def _serving_workers(self) -> list[Any]:
        """(lock held) Workers that serve and are not on their way out."""
        return [w for w in self._workers.values()
                if not w.gone and w.status in (AVAILABLE, BUSY) and w.recycle_reason is None]

    def _effective_size(self) -> int:
        """(lock held) Workers that count towards the target: serving ones, plus those being
        started."""
        return len(self._serving_workers()) + self._replacements_pending

    def _grow_to_target(self) -> None:
        """Start as many workers as the pool is below its target (in parallel)."""
        with self._lock:
            if self._closed:
                return
            missing = max(0, self._target - self._effective_size())
            self._replacements_pending += missing
        for _ in range(missing):
            self._start_replacement(counted=True)

    def _trim_to_target(self) -> None:
        """Retire serving workers above the target: idle before busy, no sessions first."""
        with self._lock:
            if self._closed:
                return
            serving = self._serving_workers()
            # Workers still starting will be trimmed when they arrive: retire only what is
            # above the target among those serving now.
            excess = min(self._effective_size() - self._target, len(serving) - self._target)
            if excess <= 0:
                return
            serving.sort(key=lambda w: (bool(w.sessions), w.load + len(w.waiting), -w.started_mono))
            drained = []
            for worker in serving[:excess]:
                self._mark_recycling(worker, SCALED_DOWN, grace=False)
                if not worker.in_flight:
                    drained.append(worker)
        for worker in drained:
            self._retire(worker)

    # -- adaptive sizing --------------------------------------------------------------
    @property
    def adaptive(self) -> Any:
        """The running :class:`snakepit.Adaptive`, or None."""
        adaptive = self._adaptive
        return adaptive if adaptive is not None and adaptive.running else None

    def adapt(self, minimum: int | None = 1, maximum: int | None = None, *, interval: float = 1.0,
              wait_count: int = 3, memory_guard: float = 0.8) -> Any:
        """Size the pool by its load between ``minimum`` and ``maximum`` workers.

        Scales up within one ``interval`` of a backlog (queued requests, or utilization above
        the inspector's HIGH level, 80 %), by as many workers as the backlog needs; scales
        down only after ``wait_count`` consecutive low intervals, retiring idle workers first.
        Never grows past what this host's available memory can hold (``memory_guard`` of it,
        from the workers' measured memory). Calling it again replaces the running one;
        ``pool.adapt(None)``, ``adaptive.stop()`` or a manual ``pool.scale(n)`` end it.

        Example::

            a = pool.adapt(minimum=1, maximum=16)
            ...
            a.log.to_frame()     # time, from_size, to_size, reason, utilization, queue_depth
            a.stop()

        Returns:
            the :class:`snakepit.Adaptive` (also ``pool.adaptive``), or None for ``adapt(None)``.
        """
        from ..adaptive import Adaptive  # noqa: PLC0415 - only pools that adapt load it

        if self._closed:
            raise PoolNotFoundError(self.name)
        previous = self._adaptive
        if previous is not None:
            previous.stop()
        if minimum is None:
            self._adaptive = None
            return None
        adaptive = Adaptive(self, minimum=minimum, maximum=self.max_size if maximum is None else maximum,
                            interval=interval, wait_count=wait_count, memory_guard=memory_guard)
        self._adaptive = adaptive
        adaptive.start()
        return adaptive
