"""Worker lifecycle: heartbeats, TTL and memory recycling.

One thread per pool ("snakepit-<pool>-lifecycle") wakes every ``min(1 s, heartbeat_interval)``
and, for each worker:

* **TTL**: older than ``worker_ttl`` (with jitter) → graceful recycle, reason ``ttl``;
* **memory**: RSS of the worker's real process, children included (psutil), at or above
  ``memory_threshold_mb`` → graceful recycle, reason ``memory``;
* **heartbeat**: a gRPC ``Ping`` every ``heartbeat_interval`` with that much time to answer;
  after ``heartbeat_max_missed`` misses in a row the worker is declared unhealthy
  (``health_check_failed`` is emitted at each miss), killed, and replaced — its in-flight
  requests fail with :class:`~snakepit.WorkerCrashedError`. The reply carries the worker's
  own figures (``WorkerMetrics``: threads, GC, in-flight, tracemalloc, CPU seconds and its
  process memory, children included, re-measured by the worker at most every
  :data:`MEMORY_MIN_INTERVAL_S`); they are cached on the worker record as a
  :class:`WorkerFigures` (``_Worker.figures``) for :mod:`snakepit.diagnostics`, which reads
  them without any I/O.

``max_requests`` is checked by the pool itself right after each request. A worker that
*exits* is noticed at once by the launcher's reaper, not by this loop.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable, NamedTuple

import grpc

from . import telemetry
from .signals import start_thread
from .protocol import worker_pb2 as pb
# Process memory (/proc, psutil) lives in .procmem; these names stay importable from here.
from .procmem import (  # noqa: F401
    ROLLUP_REUSE_MAX_S, _HAS_ROLLUP, _MIB, _PAGE, _PARALLEL_MIN, _in_threads, _psutil_bytes, _rollup_bytes,
    _statm_rss, _tree_mb, children_map, descendants, has_children, own_memory, process_memory_bytes,
    process_table, worker_memory, workers_memory, workers_rss_mb,
)

# The pool is passed in (duck-typed): this module never imports snakepit.pool.

log = logging.getLogger("snakepit.lifecycle")

#: A worker re-measures its own memory for the heartbeat at most this often (seconds).
MEMORY_MIN_INTERVAL_S = 1.0

__all__ = [
    "LifecycleMonitor", "WorkerFigures", "children_map", "descendants", "has_children", "own_memory",
    "metrics_memory", "process_memory_bytes", "records_memory", "records_rss_mb", "reported_memory", "worker_memory", "worker_rss_mb",
    "workers_memory", "workers_rss_mb",
]



def _rss_mb(pid: int) -> float | None:
    return workers_rss_mb([pid]).get(pid)


class WorkerFigures(NamedTuple):
    """A worker's own figures from its last heartbeat reply, as the manager caches them.

    ``received_at`` is the manager's ``time.time()`` when the reply arrived; ``cpu_percent``
    is over the time since the previous heartbeat reply (the lifetime average at the first).
    """

    received_at: float
    metrics: Any  # pb.WorkerMetrics
    cpu_percent: float | None


def _next_figures(prev: WorkerFigures | None, metrics: Any, received_at: float) -> WorkerFigures:
    cpu, up = metrics.cpu_time_s, metrics.uptime_s
    pct = None
    if prev is not None and up - prev.metrics.uptime_s >= 0.05 and prev.metrics.pid == metrics.pid:
        pct = 100.0 * max(0.0, cpu - prev.metrics.cpu_time_s) / (up - prev.metrics.uptime_s)
    elif up > 0:
        pct = 100.0 * cpu / up
    return WorkerFigures(received_at, metrics, None if pct is None else round(pct, 2))


def _reported_rss_mb(worker: Any) -> float | None:
    """A worker's RSS as it measured it itself (its last heartbeat), for remote workers."""
    metrics = getattr(worker.figures, "metrics", None)
    if metrics is not None and metrics.HasField("rss_bytes"):
        return metrics.rss_bytes / 2**20
    return None


def reported_memory(worker: Any) -> dict[str, float] | None:
    """A worker's memory in MiB (``rss_mb``, ``uss_mb``…) as it measured it on its own host for
    its last heartbeat; None before its first measurement."""
    m = getattr(worker.figures, "metrics", None)
    if m is None or m.pid != worker.pid or not m.HasField("rss_bytes"):
        return None
    return metrics_memory(m)


def metrics_memory(m: Any) -> dict[str, float]:
    """MiB figures (``rss_mb``, ``uss_mb``, …) from a ``WorkerMetrics`` that has ``rss_bytes``."""
    mem = {"rss_mb": m.rss_bytes / 2**20}
    for key in ("uss", "pss", "swap"):
        if m.HasField(f"{key}_bytes"):
            mem[f"{key}_mb"] = getattr(m, f"{key}_bytes") / 2**20
    return mem


def records_memory(workers: Iterable[Any]) -> dict[int, dict[str, float] | None]:
    """Memory (MiB figures, by pid) of pool worker records, wherever they run: measured now
    from this host's ``/proc`` for local workers (:func:`workers_memory`), the worker's own
    last report for remote (cluster) ones — their pids mean nothing on this host."""
    workers = list(workers)
    out = workers_memory([w.pid for w in workers if w.is_local and w.pid > 0])
    for w in workers:
        if not w.is_local:
            out[w.pid] = reported_memory(w)
    return out


def records_rss_mb(workers: Iterable[Any]) -> dict[str, float | None]:
    """RSS in MiB by worker id of pool worker records: one process-table scan for the local
    ones, the last self-reported figure for remote ones."""
    workers = list(workers)
    local = workers_rss_mb(w.pid for w in workers if w.is_local)
    return {w.worker_id: local.get(w.pid) if w.is_local else _reported_rss_mb(w) for w in workers}


def worker_rss_mb(worker: Any) -> float | None:
    """A pool worker record's RSS now: read here for a local worker, from its own last
    heartbeat for a remote (cluster) one."""
    return _rss_mb(worker.pid) if worker.is_local else _reported_rss_mb(worker)


class LifecycleMonitor:
    """Background checks of one pool's workers (see the module docstring)."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        cfg = pool.config
        self.interval = min(1.0, cfg.heartbeat_interval or 1.0)
        if cfg.worker_ttl:
            self.interval = min(self.interval, max(0.05, cfg.worker_ttl / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{pool.name}-lifecycle", daemon=True)
        self._last_ping: dict[str, float] = {}
        # Every heartbeat asks for the worker's figures; memory is re-measured at most every
        # MEMORY_MIN_INTERVAL_S (by the worker, off its event loop: see worker/server.py).
        memory_age = max(MEMORY_MIN_INTERVAL_S, 0.5 * (cfg.heartbeat_interval or 0.0))
        self._ping_request = pb.PingRequest(message="heartbeat", want_metrics=True, memory_max_age_s=memory_age)

    def start(self) -> None:
        start_thread(self._thread)

    def stop(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread and self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
            except Exception:
                log.exception("pool %r: lifecycle check failed", self.pool.name)

    def check_once(self) -> None:
        pool = self.pool
        cfg = pool.config
        if pool.closed:
            return
        now = time.monotonic()
        workers = pool.worker_records()
        pings: list[tuple[Any, grpc.Future]] = []
        rss = records_rss_mb(workers) if cfg.memory_threshold_mb else {}
        for worker in workers:
            if worker.gone or worker.status not in ("available", "busy"):
                continue
            if worker.recycle_reason is None:
                if worker.ttl and now - worker.started_mono >= worker.ttl:
                    pool.begin_recycle(worker.worker_id, "ttl")
                    continue
                if cfg.memory_threshold_mb:
                    used = rss.get(worker.worker_id)
                    if used is not None and used >= cfg.memory_threshold_mb:
                        log.info("pool %r: worker %s uses %.0f MiB (threshold %.0f); recycling",
                                 pool.name, worker.worker_id, used, cfg.memory_threshold_mb)
                        pool.begin_recycle(worker.worker_id, "memory")
                        continue
            if cfg.heartbeat_interval and worker.conn is not None:
                last = self._last_ping.get(worker.worker_id, 0.0)
                if now - last >= cfg.heartbeat_interval:
                    self._last_ping[worker.worker_id] = now
                    try:
                        fut = worker.conn.ping_future(self._ping_request, timeout=cfg.heartbeat_interval)
                    except Exception:
                        continue
                    pings.append((worker, fut))
        for worker, fut in pings:
            try:
                reply = fut.result()
                worker.last_heartbeat = received = time.time()
                worker.missed_heartbeats = 0
                if reply.HasField("metrics"):  # cached for diagnostics (get_pool_stats reads it, no I/O)
                    worker.figures = _next_figures(worker.figures, reply.metrics, received)
            except Exception as exc:  # grpc.RpcError / FutureTimeoutError
                if worker.gone or pool.closed:
                    continue
                self._missed(worker, exc)
        pool.expire_sessions()
        live = {w.worker_id for w in workers}
        for wid in list(self._last_ping):
            if wid not in live:
                del self._last_ping[wid]

    def _missed(self, worker: Any, exc: BaseException) -> None:
        pool = self.pool
        worker.missed_heartbeats += 1
        error = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
        telemetry.execute(
            telemetry.WORKER_HEALTH_CHECK_FAILED,
            {"missed": worker.missed_heartbeats},
            {"pool": pool.name, "worker_id": worker.worker_id, "error": error},
        )
        if worker.missed_heartbeats >= pool.config.heartbeat_max_missed:
            log.warning("pool %r: worker %s (pid %s) missed %d heartbeats; replacing it",
                        pool.name, worker.worker_id, worker.pid, worker.missed_heartbeats)
            pool.declare_unhealthy(worker, f"missed {worker.missed_heartbeats} heartbeats ({error})")
