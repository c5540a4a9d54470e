"""Background sampling of a pool's figures into a bounded ring buffer.

The pool imports this module at start-up, so it stays light: no pandas, and psutil is
imported inside the sampling call only.

Data flow::

    snakepit-<pool>-history thread, every history_interval s
        pool.statistics()            (pool lock, a few µs)
        pool.worker_records()       (pool lock, a few µs)
        pool.recent_latencies_us     (deque.copy(): atomic, no lock)
        workers_memory(pids)         (one process-table scan + a smaps_rollup walk of each worker
                                      that changed, no lock; skipped on some ticks if it is costly)
        psutil cpu_times(pid)        (no lock)
        /proc/<pid>/task/*/schedstat (run-queue wait: GIL and I/O-idle rules; Linux only)
            │
            ▼
        samples: deque(maxlen=history_size) of compact dicts
            │
            ▼
        get_history(pool) → History (.to_frame / .workers_frame) ; recommendations' measured rules

Memory bound: about ``(1 KiB + 90 B × workers) × history_size`` per pool (per-worker figures
are kept in one ``array('d')`` a sample, worker ids in a tuple shared between samples while
the set of workers does not change).
"""
from __future__ import annotations

import array
import collections
import math
import os
import threading
import time
from typing import Any, Iterator

from ..signals import start_thread

# The pool is passed in (duck-typed): this module never imports snakepit.pool.

__all__ = ["HistorySampler", "WORKER_FIELDS", "iter_workers", "percentile", "run_queue_wait"]

#: Per-worker figures of a sample, in the order stored in ``sample["worker_data"]``.
WORKER_FIELDS = ("pid", "load", "capacity", "requests_served", "rss_mb", "uss_mb", "pss_mb", "swap_mb",
                 "cpu_time_s", "run_wait_s")
_NW = len(WORKER_FIELDS)
NAN = float("nan")

#: Share of the sampling interval that measuring memory may take; above it, memory is measured
#: on every n-th tick only (so a pool of hundreds of workers does not keep a core busy).
MEMORY_BUDGET = 0.05


def percentile(values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0–100) of a non-empty list.

    Example::

        >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4], 99)
        (2, 4)
    """
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def run_queue_wait(pid: int) -> float:
    """Seconds the threads of process ``pid`` spent runnable but waiting for a CPU (Linux schedstat).

    With the CPU time, it tells how many threads *wanted* to run: a GIL-bound worker has about
    one (the others sleep waiting for the GIL), a GIL-releasing one has as many as are busy,
    whatever the machine's load. NaN where ``/proc/<pid>/task/*/schedstat`` does not exist.
    """
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return NAN
    total = 0
    seen = False
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat", "rb") as fh:
                fields = fh.read().split()
            total += int(fields[1])
            seen = True
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9 if seen else NAN


def iter_workers(sample: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The per-worker figures of one sample, as dicts ``{"worker_id", "pid", "load", …}``."""
    data = sample.get("worker_data", ())
    for i, wid in enumerate(sample.get("worker_ids", ())):
        row: dict[str, Any] = {"worker_id": wid}
        base = i * _NW
        for j, name in enumerate(WORKER_FIELDS):
            row[name] = data[base + j]
        yield row


class HistorySampler:
    """Samples a pool every ``config.history_interval`` seconds, off the request path.

    Each sample is a dict with ``time`` (epoch s), ``interval_s``, ``workers``,
    ``capacity_total``, ``capacity_used``, ``utilization_percent``, ``queue_depth``,
    ``in_flight``, ``throughput_rps`` and ``latency_p50_ms``/``latency_p99_ms`` (over the
    requests completed since the previous sample; None when there were none),
    the cumulative counters ``completed``, ``failed``, ``saturated``, ``queue_timeouts``,
    ``crashes``, ``recycled``, ``memory_total_mb``/``uss_total_mb`` (None on ticks where
    memory was not measured), and per-worker figures (:func:`iter_workers`).

    Example::

        pool = snakepit.start_pool("p", pool_size=2, history_interval=0.5)
        pool.history.sample_once()["utilization_percent"]
        snakepit.diagnostics.get_history(pool).to_frame()
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.interval = float(pool.config.history_interval or 1.0)
        self.samples: collections.deque[dict[str, Any]] = collections.deque(maxlen=pool.config.history_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{pool.name}-history", daemon=True)
        # (monotonic, completed) at the previous sample: the first sample covers the time since now.
        self._prev: tuple[float, int] | None = (time.monotonic(), int(pool.counters.get("completed", 0)))
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process (cached: creation reads /proc)
        self._ids: tuple[str, ...] = ()
        self._tick = 0
        self._memory_every = 1

    def start(self) -> None:
        start_thread(self._thread)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)

    # ------------------------------------------------------------------ sampling
    def sample_once(self) -> dict[str, Any]:
        """Take one sample now, append it to :attr:`samples` and return it."""
        with self._lock:  # one sample at a time (the background thread, or a caller)
            sample = self._collect()
            self.samples.append(sample)
            return sample

    def _collect(self) -> dict[str, Any]:
        from ..lifecycle import records_memory  # noqa: PLC0415 - lifecycle is already loaded by the pool

        pool = self.pool
        now = time.time()
        mono = time.monotonic()
        stats = pool.statistics()
        handles = pool.worker_records()
        completed = int(stats.get("completed", 0))
        throughput = p50 = p99 = None
        if self._prev is not None:
            dt = mono - self._prev[0]
            done = completed - self._prev[1]
            if dt > 0:
                throughput = round(max(0, done) / dt, 3)
            if done > 0:
                latencies = list(pool.recent_latencies_us.copy())[-done:]
                if latencies:
                    p50 = round(percentile(latencies, 50) / 1000.0, 3)
                    p99 = round(percentile(latencies, 99) / 1000.0, 3)
        self._prev = (mono, completed)

        measure_memory = self._tick % self._memory_every == 0
        self._tick += 1
        ids = tuple(h.worker_id for h in handles)
        if ids != self._ids:
            self._ids = ids  # share the tuple between samples while the workers stay the same
        data = array.array("d", bytes(8 * _NW * len(handles)))
        mem_total = uss_total = 0.0
        have_uss = True
        t_mem = time.perf_counter()
        # one scan of the process table for all workers (not one per worker)
        memory = records_memory(h for h in handles if h.pid > 0) if measure_memory else {}
        live_pids = set()
        for i, h in enumerate(handles):
            pid = h.pid
            live_pids.add(pid)
            rss = uss = pss = swap = NAN
            if measure_memory and pid > 0:
                mem = memory.get(pid)
                if mem:
                    rss = mem.get("rss_mb", NAN)
                    uss = mem.get("uss_mb", NAN)
                    pss = mem.get("pss_mb", NAN)
                    swap = mem.get("swap_mb", NAN)
            if rss == rss:
                mem_total += rss
            if uss == uss:
                uss_total += uss
            else:
                have_uss = False
            base = i * _NW
            data[base:base + _NW] = array.array("d", (
                pid, h.load, h.capacity, h.requests_served, rss, uss, pss, swap, self._cpu_time(h),
                run_queue_wait(pid) if pid > 0 and h.is_local else NAN,
            ))
        if measure_memory and handles:
            cost = time.perf_counter() - t_mem
            self._memory_every = max(1, math.ceil(cost / (MEMORY_BUDGET * self.interval)))
        for pid in list(self._procs):
            if pid not in live_pids:
                del self._procs[pid]

        cap = int(stats.get("capacity_total", 0))
        used = int(stats.get("capacity_used", 0))
        return {
            "time": now,
            "interval_s": self.interval,
            "workers": int(stats.get("workers", 0)),
            "capacity_total": cap,
            "capacity_used": used,
            "utilization_percent": round(100.0 * used / cap, 2) if cap else 0.0,
            "queue_depth": int(stats.get("queue_depth", 0)),
            "in_flight": int(stats.get("in_flight", 0)),
            "throughput_rps": throughput,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "completed": completed,
            "failed": int(stats.get("failed", 0)),
            "saturated": int(stats.get("saturated", 0)),
            "queue_timeouts": int(stats.get("queue_timeouts", 0)),
            "crashes": int(stats.get("crashes", 0)),
            "recycled": int(stats.get("recycled", 0)),
            "memory_total_mb": round(mem_total, 3) if measure_memory and handles else None,
            "uss_total_mb": round(uss_total, 3) if measure_memory and handles and have_uss else None,
            "worker_ids": self._ids,
            "worker_data": data,
        }

    def _cpu_time(self, worker: Any) -> float:
        """User + system CPU seconds of a worker process (NaN if it is gone); a remote worker's
        as it last reported it."""
        pid = worker.pid
        if pid <= 0:
            return NAN
        if not worker.is_local:
            f = worker.figures
            return f.metrics.cpu_time_s if f is not None and f.metrics.pid == pid else NAN
        try:
            proc = self._procs.get(pid)
            if proc is None:
                import psutil  # noqa: PLC0415

                proc = self._procs[pid] = psutil.Process(pid)
            times = proc.cpu_times()
            return times.user + times.system
        except Exception:
            self._procs.pop(pid, None)
            return NAN

    def latest_memory(self) -> dict[str, Any] | None:
        """The newest sample in which memory was measured (None if there is none)."""
        for sample in reversed(self.samples.copy()):  # deque.copy() is atomic: no lock, no waiting
            if sample.get("memory_total_mb") is not None:
                return sample
        return None

    def window(self, seconds: float | None = None) -> list[dict[str, Any]]:
        """The samples of the last ``seconds`` (all of them when None), oldest first."""
        samples = list(self.samples.copy())  # readers never wait for a sample being taken
        if seconds is None or not samples:
            return samples
        cutoff = time.time() - seconds
        return [s for s in samples if s["time"] >= cutoff]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.pool.closed:
                return
            try:
                self.sample_once()
            except Exception:  # a sample is best effort; the pool may be stopping
                pass
