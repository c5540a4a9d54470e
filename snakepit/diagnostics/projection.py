"""Memory projection for capacity planning.

A worker's resident memory (RSS) has two parts: pages only it uses (USS, "private") and
pages it shares with the other workers (the interpreter, shared libraries: RSS − USS).
Adding a worker adds its private memory; the shared pages are already there. So::

    projected_total_mb(N) = shared_mb + N × private_per_worker_mb

with ``private_per_worker_mb`` the *measured* mean USS of the pool's workers and
``shared_mb`` the largest RSS − USS of a worker (shared memory counted once). The seed's
``avg RSS × N`` counts the shared pages N times; it is shown as ``naive_rss_total_mb``.
Where the OS gives no USS, private = RSS and shared = 0 (``basis == "rss"``).

The process-vs-thread comparison uses the same model: for the same capacity, the thread
profile needs ``ceil(capacity / threads_per_worker)`` processes, each with the measured
private memory of a worker plus :data:`THREAD_OVERHEAD_MB` per thread. Memory a request
holds only while it runs is not counted in either profile.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .reports import MemoryStats

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["PROJECTION_COLUMNS", "COMPARISON_COLUMNS", "THREAD_OVERHEAD_MB", "memory_model",
           "projection_rows", "comparison_rows"]

#: Private memory one more request thread costs a worker (touched stack pages and the
#: thread state; measured at about 0.025 MiB on CPython 3.11/Linux, rounded up).
THREAD_OVERHEAD_MB = 0.05

PROJECTION_COLUMNS = (
    "workers", "profile", "threads_per_worker", "capacity", "private_per_worker_mb", "shared_mb",
    "projected_private_mb", "projected_total_mb", "naive_rss_total_mb", "overcount_mb",
    "measured_total_mb", "basis",
)

COMPARISON_COLUMNS = (
    "profile", "workers", "threads_per_worker", "capacity", "private_per_worker_mb", "shared_mb",
    "projected_total_mb", "naive_rss_total_mb", "saving_mb", "saving_percent", "current",
)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def memory_model(memory: MemoryStats, statistic: str = "mean") -> dict[str, Any]:
    """``private_per_worker_mb``, ``shared_mb``, ``avg_rss_mb`` and ``basis`` of a measured pool.

    Args:
        memory: a :class:`MemoryStats` of the pool.
        statistic: how to summarise private memory across workers: ``"mean"`` (default),
            ``"median"`` or ``"max"`` (the most conservative).
    """
    rows = [w for w in memory.workers if w.memory_mb is not None]
    if statistic not in ("mean", "median", "max"):
        raise ValueError(f"statistic must be 'mean', 'median' or 'max', got {statistic!r}")
    rss = [w.memory_mb for w in rows if w.memory_mb is not None]
    with_uss = [w for w in rows if w.uss_mb is not None]
    if rows and len(with_uss) == len(rows):
        private = [w.uss_mb for w in with_uss if w.uss_mb is not None]
        shared = max(max(0.0, (w.memory_mb or 0.0) - (w.uss_mb or 0.0)) for w in with_uss)
        basis = "uss"
    else:
        private = list(rss)
        shared = 0.0
        basis = "rss"

    def summary(values: list[float]) -> float:
        if not values:
            return 0.0
        if statistic == "max":
            return max(values)
        if statistic == "median":
            ordered = sorted(values)
            mid = len(ordered) // 2
            return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
        return _mean(values)

    return {
        "private_per_worker_mb": summary(private),
        "shared_mb": shared,
        "avg_rss_mb": _mean(rss),
        "basis": basis,
        "workers": len(rows),
    }


def projection_rows(memory: MemoryStats, worker_counts: Iterable[int], *, profile: str,
                    threads_per_worker: int, statistic: str = "mean") -> list[dict[str, Any]]:
    """Rows of :func:`snakepit.diagnostics.project_memory` (one per worker count)."""
    model = memory_model(memory, statistic)
    private = model["private_per_worker_mb"]
    shared = model["shared_mb"]
    current = model["workers"]
    rows = []
    for n in worker_counts:
        n = int(n)
        if n < 0:
            raise ValueError(f"worker counts must be >= 0, got {n}")
        projected_private = n * private
        total = (shared if n else 0.0) + projected_private
        naive = n * model["avg_rss_mb"]
        rows.append({
            "workers": n,
            "profile": profile,
            "threads_per_worker": threads_per_worker,
            "capacity": n * threads_per_worker,
            "private_per_worker_mb": round(private, 2),
            "shared_mb": round(shared, 2),
            "projected_private_mb": round(projected_private, 2),
            "projected_total_mb": round(total, 2),
            "naive_rss_total_mb": round(naive, 2),
            "overcount_mb": round(naive - total, 2),
            "measured_total_mb": (round(memory.footprint_mb, 2)
                                  if n == current and memory.footprint_mb is not None else None),
            "basis": model["basis"],
        })
    return rows


def comparison_rows(memory: MemoryStats, *, profile: str, threads_per_worker: int, capacity: int,
                    target_threads_per_worker: int, statistic: str = "mean") -> list[dict[str, Any]]:
    """Rows of :func:`snakepit.diagnostics.compare_profiles`: process, then thread, same capacity."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if target_threads_per_worker < 1:
        raise ValueError(f"threads_per_worker must be >= 1, got {target_threads_per_worker}")
    model = memory_model(memory, statistic)
    own_threads = threads_per_worker if profile == "thread" else 0
    base_private = max(0.0, model["private_per_worker_mb"] - own_threads * THREAD_OVERHEAD_MB)
    shared = model["shared_mb"]
    avg_rss = model["avg_rss_mb"]
    extra_rss = model["avg_rss_mb"] - model["private_per_worker_mb"]  # the shared part of one RSS

    def row(prof: str, workers: int, tpw: int) -> dict[str, Any]:
        private = base_private + (tpw * THREAD_OVERHEAD_MB if prof == "thread" else 0.0)
        total = shared + workers * private
        naive = workers * (private + extra_rss) if avg_rss else 0.0
        return {
            "profile": prof, "workers": workers, "threads_per_worker": tpw, "capacity": workers * tpw,
            "private_per_worker_mb": round(private, 2), "shared_mb": round(shared, 2),
            "projected_total_mb": round(total, 2), "naive_rss_total_mb": round(naive, 2),
            "current": prof == profile and workers * tpw == capacity and tpw == threads_per_worker,
        }

    proc = row("process", capacity, 1)
    thr_workers = max(1, math.ceil(capacity / target_threads_per_worker))
    thr = row("thread", thr_workers, target_threads_per_worker)
    for r in (proc, thr):
        saving = proc["projected_total_mb"] - r["projected_total_mb"]
        r["saving_mb"] = round(saving, 2)
        r["saving_percent"] = (round(100.0 * saving / proc["projected_total_mb"], 2)
                               if proc["projected_total_mb"] else 0.0)
    return [proc, thr]


def to_frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> "pd.DataFrame":
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame.from_records(rows, columns=list(columns))
