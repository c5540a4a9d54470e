"""The rows of the inspector's reports: per-worker fields from the pool's bookkeeping, the
workers' heartbeat figures and live psutil measurements (used by :mod:`.inspector`)."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Iterable

from .. import lifecycle
from .reports import _WORKER_STATS_DEFAULTS, MemoryStats, WorkerMemory

if TYPE_CHECKING:  # pragma: no cover
    from ..pool import Pool, WorkerInfo

_MIB = float(2**20)

# pid -> (cpu seconds, monotonic time) at the last look, for CPU % between two looks.
_cpu_seen: dict[int, tuple[float, float]] = {}
_cpu_lock = threading.Lock()


def _records_of(p: "Pool", infos: Iterable["WorkerInfo"]) -> list[Any]:
    wanted = {w.worker_id for w in infos}
    return [r for r in p.worker_records() if r.worker_id in wanted]


def _memory_of(p: "Pool", infos: Iterable["WorkerInfo"]) -> dict[int, dict[str, float] | None]:
    """Memory by pid of these workers of ``p``: measured here for local workers, the worker's
    own last report for remote ones."""
    return lifecycle.records_memory(_records_of(p, infos))


def _cpu_of(p: "Pool", infos: Iterable["WorkerInfo"]) -> dict[int, tuple[float | None, float | None]]:
    """(CPU %, CPU seconds) by pid: psutil here for local workers, the heartbeat for remote ones."""
    out: dict[int, tuple[float | None, float | None]] = {}
    for r in _records_of(p, infos):
        if r.is_local:
            out[r.pid] = _cpu_percent(r.pid)
        else:
            f = r.figures
            out[r.pid] = ((f.cpu_percent, round(f.metrics.cpu_time_s, 3))
                          if f is not None and f.metrics.pid == r.pid else (None, None))
    return out


def _cpu_percent(pid: int) -> tuple[float | None, float | None]:
    """(CPU % of one core since the previous look — lifetime average at the first —, CPU seconds)."""
    if pid <= 0:
        return None, None
    try:
        import psutil  # noqa: PLC0415

        proc = psutil.Process(pid)
        times = proc.cpu_times()
        cpu = times.user + times.system
        created = proc.create_time()
    except Exception:
        return None, None
    now = time.monotonic()
    with _cpu_lock:
        prev = _cpu_seen.get(pid)
        _cpu_seen[pid] = (cpu, now)
        if len(_cpu_seen) > 4096:  # forget dead workers
            for old in list(_cpu_seen)[:1024]:
                del _cpu_seen[old]
    if prev is not None and now - prev[1] >= 0.05:
        return round(100.0 * max(0.0, cpu - prev[0]) / (now - prev[1]), 2), round(cpu, 3)
    age = time.time() - created
    return (round(100.0 * cpu / age, 2) if age > 0 else None), round(cpu, 3)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _bookkeeping_fields(w: "WorkerInfo", now_wall: float, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every WorkerStats field: ``fields`` (default: all empty) plus the pool's bookkeeping of ``w``."""
    if fields is None:
        fields = dict(_WORKER_STATS_DEFAULTS)
    last_hb = w.last_heartbeat
    fields.update(
        worker_id=w.worker_id, pid=w.pid, pool=w.pool, profile=w.profile, status=w.status,
        capacity=w.capacity, load=w.load, requests_served=w.requests_served, sessions=w.sessions,
        uptime_s=round(w.uptime_s, 3), started_at=w.started_at, last_heartbeat=last_hb,
        heartbeat_age_s=round(now_wall - last_hb, 3) if last_hb else None,
        recycle_reason=w.recycle_reason, pipelined=w.pipelined, host=w.host, dask_worker=w.dask_worker,
    )
    return fields


def _heartbeat_fields(f: "lifecycle.WorkerFigures") -> dict[str, Any]:
    """The WorkerStats columns that come from one heartbeat reply (memory without its age)."""
    m = f.metrics
    gc_counts = list(m.gc_counts) + [None] * 3
    gc_coll = list(m.gc_collections) + [None] * 3
    out: dict[str, Any] = {
        "in_flight": m.in_flight, "threads": m.thread_count,
        "gc_count_gen0": gc_counts[0], "gc_count_gen1": gc_counts[1], "gc_count_gen2": gc_counts[2],
        "gc_collections_gen0": gc_coll[0], "gc_collections_gen1": gc_coll[1], "gc_collections_gen2": gc_coll[2],
        "tracemalloc_current_mb": round(m.tracemalloc_current / _MIB, 3),
        "tracemalloc_peak_mb": round(m.tracemalloc_peak / _MIB, 3),
        "cpu_percent": f.cpu_percent, "cpu_time_s": round(m.cpu_time_s, 3),
        "metrics_source": "heartbeat", "info_error": None,
        "memory_mb": None, "uss_mb": None, "pss_mb": None, "swap_mb": None,
    }
    if m.HasField("rss_bytes"):
        out["memory_mb"] = round(m.rss_bytes / _MIB, 2)
        for key in ("uss", "pss", "swap"):
            if m.HasField(f"{key}_bytes"):
                out[f"{key}_mb"] = round(getattr(m, f"{key}_bytes") / _MIB, 2)
    return out


_heartbeat_memory = lifecycle.metrics_memory


def _memory_fields(mem: dict[str, float] | None) -> dict[str, float | None]:
    """The WorkerStats memory columns from MiB figures (``rss_mb``, ``uss_mb``, …)."""
    if not mem:
        return {}
    return {"memory_mb": _rounded(mem.get("rss_mb")), "uss_mb": _rounded(mem.get("uss_mb")),
            "pss_mb": _rounded(mem.get("pss_mb")), "swap_mb": _rounded(mem.get("swap_mb"))}


def _memory_stats(pool_name: str, profile: str, rows: list[WorkerMemory]) -> MemoryStats:
    rss = [w.memory_mb for w in rows if w.memory_mb is not None]
    uss = [w.uss_mb for w in rows if w.uss_mb is not None]
    pss = [w.pss_mb for w in rows if w.pss_mb is not None]
    full_uss = bool(rows) and len(uss) == len(rows)
    shared = max((w.shared_mb or 0.0) for w in rows) if full_uss else None
    total_uss = round(sum(uss), 2) if full_uss else None
    return MemoryStats(
        total_memory_mb=round(sum(rss), 2),
        avg_memory_per_worker_mb=round(sum(rss) / len(rss), 2) if rss else 0.0,
        max_memory_worker_mb=round(max(rss), 2) if rss else 0.0,
        min_memory_worker_mb=round(min(rss), 2) if rss else 0.0,
        workers=tuple(rows), pool_name=pool_name, profile=profile,
        total_uss_mb=total_uss,
        total_pss_mb=round(sum(pss), 2) if rows and len(pss) == len(rows) else None,
        shared_mb=round(shared, 2) if shared is not None else None,
        footprint_mb=round(total_uss + shared, 2) if total_uss is not None and shared is not None
        else (round(sum(rss), 2) if rss else None),
        basis="uss" if full_uss else "rss",
        collected_at=time.time(),
    )
