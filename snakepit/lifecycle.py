"""Worker lifecycle: heartbeats, TTL and memory recycling.

One thread per pool ("snakepit-<pool>-lifecycle") wakes every ``min(1 s, heartbeat_interval)``
and, for each worker:

* **TTL**: older than ``worker_ttl`` (with jitter) → graceful recycle, reason ``ttl``;
* **memory**: RSS of the worker's real process, children included (psutil), at or above
  ``memory_threshold_mb`` → graceful recycle, reason ``memory``;
* **heartbeat**: a gRPC ``Ping`` every ``heartbeat_interval`` with that much time to answer;
  after ``heartbeat_max_missed`` misses in a row the worker is declared unhealthy
  (``health_check_failed`` is emitted at each miss), killed, and replaced — its in-flight
  requests fail with :class:`~snakepit.WorkerCrashedError`.

``max_requests`` is checked by the pool itself right after each request. A worker that
*exits* is noticed at once by the launcher's reaper, not by this loop.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Iterable

import grpc

from . import telemetry
from .signals import start_thread
from .protocol import worker_pb2 as pb

if TYPE_CHECKING:
    from .pool import Pool, _Worker

log = logging.getLogger("snakepit.lifecycle")

__all__ = ["LifecycleMonitor", "worker_memory", "workers_memory", "workers_rss_mb"]


def _memory_totals(procs: list) -> dict[str, float]:
    totals = {"rss_mb": 0.0}
    for proc in procs:
        try:
            full = proc.memory_full_info()
        except Exception:
            try:
                full = proc.memory_info()
            except Exception:
                continue
        totals["rss_mb"] += full.rss / 2**20
        for key in ("uss", "pss", "swap"):
            value = getattr(full, key, None)
            if value is not None:
                totals[f"{key}_mb"] = totals.get(f"{key}_mb", 0.0) + value / 2**20
    return totals


def worker_memory(pid: int) -> dict[str, float] | None:
    """RSS/USS/PSS in MiB of a worker process plus its children (USS/PSS where the OS gives them)."""
    try:
        import psutil

        procs = [psutil.Process(pid)]
        procs += procs[0].children(recursive=True)
    except Exception:
        return None
    return _memory_totals(procs)


def _process_trees(pids: Iterable[int]) -> dict[int, list]:
    """Each pid's process and all its descendants, from one scan of the process table."""
    import psutil

    children: dict[int, list[int]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    trees: dict[int, list] = {}
    for pid in pids:
        try:
            procs = [psutil.Process(pid)]
        except Exception:
            continue
        stack = list(children.get(pid, ()))
        while stack:
            child = stack.pop()
            try:
                procs.append(psutil.Process(child))
            except Exception:
                continue
            stack.extend(children.get(child, ()))
        trees[pid] = procs
    return trees


def workers_memory(pids: Iterable[int]) -> dict[int, dict[str, float] | None]:
    """``worker_memory(pid)`` for many workers with one scan of the process table (not one per worker)."""
    pids = list(pids)
    try:
        trees = _process_trees(pids)
    except Exception:
        return {pid: None for pid in pids}
    return {pid: _memory_totals(trees[pid]) if pid in trees else None for pid in pids}


def workers_rss_mb(pids: Iterable[int]) -> dict[int, float]:
    """RSS in MiB of each worker plus its children (cheap: no USS/PSS), one process-table scan."""
    out: dict[int, float] = {}
    try:
        trees = _process_trees(pids)
    except Exception:
        return out
    for pid, procs in trees.items():
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except Exception:
                pass
        out[pid] = total / 2**20
    return out


def _rss_mb(pid: int) -> float | None:
    return workers_rss_mb([pid]).get(pid)


class LifecycleMonitor:
    """Background checks of one pool's workers (see the module docstring)."""

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        cfg = pool.config
        self.interval = min(1.0, cfg.heartbeat_interval or 1.0)
        if cfg.worker_ttl:
            self.interval = min(self.interval, max(0.05, cfg.worker_ttl / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{pool.name}-lifecycle", daemon=True)
        self._last_ping: dict[str, float] = {}

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
        workers = pool._worker_handles()
        pings: list[tuple["_Worker", grpc.Future]] = []
        rss = workers_rss_mb(w.pid for w in workers) if cfg.memory_threshold_mb else {}
        for worker in workers:
            if worker.gone or worker.status not in ("available", "busy"):
                continue
            if worker.recycle_reason is None:
                if worker.ttl and now - worker.started_mono >= worker.ttl:
                    pool.begin_recycle(worker.worker_id, "ttl")
                    continue
                if cfg.memory_threshold_mb:
                    used = rss.get(worker.pid)
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
                        fut = worker.conn.stub.Ping.future(pb.PingRequest(message="heartbeat"),
                                                           timeout=cfg.heartbeat_interval)
                    except Exception:
                        continue
                    pings.append((worker, fut))
        for worker, fut in pings:
            try:
                fut.result()
                worker.last_heartbeat = time.time()
                worker.missed_heartbeats = 0
            except Exception as exc:  # grpc.RpcError / FutureTimeoutError
                if worker.gone or pool.closed:
                    continue
                self._missed(worker, exc)
        pool.expire_sessions()
        live = {w.worker_id for w in workers}
        for wid in list(self._last_ping):
            if wid not in live:
                del self._last_ping[wid]

    def _missed(self, worker: "_Worker", exc: BaseException) -> None:
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
            pool._declare_unhealthy(worker, f"missed {worker.missed_heartbeats} heartbeats ({error})")
