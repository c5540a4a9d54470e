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
import os
import threading
import time
from typing import Any, Iterable, NamedTuple

import grpc

from . import telemetry
from .signals import start_thread
from .protocol import worker_pb2 as pb

# The pool is passed in (duck-typed): this module never imports snakepit.pool.

log = logging.getLogger("snakepit.lifecycle")

#: A worker re-measures its own memory for the heartbeat at most this often (seconds).
MEMORY_MIN_INTERVAL_S = 1.0

__all__ = [
    "LifecycleMonitor", "WorkerFigures", "children_map", "descendants", "has_children", "own_memory",
    "metrics_memory", "process_memory_bytes", "records_memory", "records_rss_mb", "reported_memory", "worker_memory", "worker_rss_mb",
    "workers_memory", "workers_rss_mb",
]


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HAS_ROLLUP = os.path.exists("/proc/self/smaps_rollup")  # Linux ≥ 4.14
_MIB = float(2**20)
#: Below this many processes a memory read is not split over threads.
_PARALLEL_MIN = 16


def _rollup_bytes(pid: int) -> dict[str, int] | None:
    """RSS/USS/PSS/swap in bytes of one process from ``/proc/<pid>/smaps_rollup`` (one read).

    USS = Private_Clean + Private_Dirty + Private_Hugetlb, as psutil counts it. None when the
    file cannot be read (process gone, or one of the pids for which the kernel refuses it).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    out = {"rss": 0, "uss": 0, "pss": 0, "swap": 0}
    seen = False
    for line in data.split(b"\n"):
        if line.startswith(b"Rss:"):
            out["rss"] = int(line.split()[1]) * 1024
            seen = True
        elif line.startswith(b"Pss:"):
            out["pss"] = int(line.split()[1]) * 1024
        elif line.startswith(b"Private_"):
            out["uss"] += int(line.split()[1]) * 1024
        elif line.startswith(b"Swap:"):
            out["swap"] = int(line.split()[1]) * 1024
    return out if seen else None


def _psutil_bytes(pid: int) -> dict[str, int] | None:
    """The same figures with psutil (other OSes; USS/PSS/swap only where psutil has them)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        try:
            full = proc.memory_full_info()
        except Exception:
            full = proc.memory_info()
    except Exception:
        return None
    out = {"rss": int(full.rss)}
    for key in ("uss", "pss", "swap"):
        value = getattr(full, key, None)
        if value is not None:
            out[key] = int(value)
    return out


def process_memory_bytes(pid: int) -> dict[str, int] | None:
    """Memory of one process (not its children) in bytes: ``rss`` and, where the OS gives them, ``uss``, ``pss``, ``swap``."""
    if _HAS_ROLLUP:
        figures = _rollup_bytes(pid)
        if figures is not None:
            return figures
    return _psutil_bytes(pid)


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids of every process, from one scan of the process table."""
    children: dict[int, list[int]] = {}
    if os.path.isdir("/proc/self/task"):  # Linux: read /proc/<pid>/stat directly (psutil is ~10x slower)
        try:
            entries = os.listdir("/proc")
        except OSError:
            entries = []
        for name in entries:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    data = fh.read()
                ppid = int(data[data.rindex(b")") + 2:].split(None, 2)[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
        if entries:
            return children
    import psutil

    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc.pid)
    return children


def descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """Every descendant of ``pid`` in a :func:`children_map`."""
    out: list[int] = []
    stack = list(children.get(pid, ()))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(children.get(child, ()))
    return out


def has_children() -> bool:
    """Whether this process has child processes (one system call; True when it cannot tell)."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return True
    try:
        # WNOWAIT: look only, reap nothing (subprocess / multiprocessing still see their children).
        waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _tree_mb(pids: list[int]) -> dict[str, float] | None:
    """MiB totals (``rss_mb``, and ``uss_mb``/``pss_mb``/``swap_mb`` when every process has them) of processes."""
    totals: dict[str, float] = {}
    counted = 0
    missing: set[str] = set()
    for i, pid in enumerate(pids):
        figures = process_memory_bytes(pid)
        if figures is None:
            if i == 0:
                return None  # the worker itself is gone
            continue  # a child that just exited
        counted += 1
        for key in ("rss", "uss", "pss", "swap"):
            if key in figures:
                totals[f"{key}_mb"] = totals.get(f"{key}_mb", 0.0) + figures[key] / _MIB
            else:
                missing.add(f"{key}_mb")
    for key in missing:
        totals.pop(key, None)
    return totals if counted else None


def _in_threads(fn: Any, items: list[Any]) -> list[Any]:
    """``[fn(x) for x in items]``, split over a few short-lived threads when there are many items.

    Reading ``smaps_rollup`` is kernel time (a page-table walk, ~1 ms for a 40 MB worker) with
    the GIL released, so it scales with the CPUs.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    n = min(4, cpus, len(items) // (_PARALLEL_MIN // 2))
    if n <= 1:
        return [fn(x) for x in items]
    out: list[Any] = [None] * len(items)

    def run(k: int) -> None:
        for i in range(k, len(items), n):
            out[i] = fn(items[i])

    threads = [threading.Thread(target=run, args=(k,), name="snakepit-memory-read", daemon=True) for k in range(1, n)]
    for t in threads:
        start_thread(t)
    try:
        run(0)
    finally:
        for t in threads:
            t.join()
    return out


def worker_memory(pid: int) -> dict[str, float] | None:
    """RSS/USS/PSS/swap in MiB of a worker process plus its children (USS/PSS where the OS gives them)."""
    return workers_memory([pid]).get(pid)


def workers_memory(pids: Iterable[int]) -> dict[int, dict[str, float] | None]:
    """``worker_memory(pid)`` for many workers: one scan of the process table, then one read per process.

    Measured now (live). On Linux each process costs one ``/proc/<pid>/smaps_rollup`` read,
    spread over up to 4 threads.
    """
    pids = list(pids)
    try:
        children = children_map()
    except Exception:
        children = {}
    trees = [[pid] + descendants(pid, children) for pid in pids]
    return dict(zip(pids, _in_threads(_tree_mb, trees)))


def own_memory(children: bool | None = None) -> tuple[dict[str, int], int] | None:
    """This process's memory plus its children's, bytes (``rss`` and ``uss``/``pss``/``swap`` where
    available), and the number of children counted. What a worker reports about itself.

    The process table is scanned only when this process has children (``children``, or
    :func:`has_children` when None).
    """
    pid = os.getpid()
    if children is None:
        children = has_children()
    kids = descendants(pid, children_map()) if children else []
    totals: dict[str, int] = {}
    missing: set[str] = set()
    counted = 0
    for i, p in enumerate([pid] + kids):
        figures = process_memory_bytes(p)
        if figures is None:
            if i == 0:
                return None
            continue
        counted += 1
        for key in ("rss", "uss", "pss", "swap"):
            if key in figures:
                totals[key] = totals.get(key, 0) + figures[key]
            else:
                missing.add(key)
    for key in missing:
        totals.pop(key, None)
    return totals, counted - 1


def _statm_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except Exception:
        return None


def workers_rss_mb(pids: Iterable[int]) -> dict[int, float]:
    """RSS in MiB of each worker plus its children (cheap: no USS/PSS), one process-table scan."""
    out: dict[int, float] = {}
    pids = list(pids)
    try:
        children = children_map()
    except Exception:
        return out
    for pid in pids:
        own = _statm_rss(pid)
        if own is None:
            continue
        total = own
        for child in descendants(pid, children):
            total += _statm_rss(child) or 0
        out[pid] = total / _MIB
    return out


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
