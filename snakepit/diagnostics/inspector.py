"""The profile-aware inspector: pool, capacity, memory, saturation, recommendations, history, projection.

Data flow (everything read-only; the pool lock is held only inside ``list_workers()`` /
``statistics()`` / ``worker_records()``, a few microseconds each)::

    get_pool_stats(pool)            the default: no I/O
        pool.list_workers() ─────────► bookkeeping columns
        pool.worker_records()[i].figures ─► the worker's own figures from its last heartbeat
                                        (lifecycle.WorkerFigures: WorkerMetrics incl. memory,
                                        CPU % between heartbeats; ages in the row)
        a worker without figures ────► measured live, like fresh=True (metrics_source="live")

    get_pool_stats(pool, fresh=True) / get_memory_stats(pool)      live
        pool.worker_records() ─► gRPC Info.future() to every worker at once (short deadline)
        lifecycle.workers_memory(pids) ─► one /proc/<pid>/stat scan + a smaps_rollup walk of each
                                        process whose signature changed (procmem.RollupCache)
        psutil cpu_times(pid) ─► CPU % since the previous look
        wait for the Info replies ─► PoolStats / MemoryStats / …

    pool.history.samples ─────► History, measured recommendation rules

A worker that does not answer ``Info`` in time still has its row (``info_error`` says why).
"""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Iterable

from .. import lifecycle
from ..protocol import worker_pb2 as pb
from . import projection
from .levels import utilization_level
from .recommendations import Snapshot, Thresholds, evaluate
from .rows import (_MIB, _bookkeeping_fields, _cpu_of, _heartbeat_fields, _heartbeat_memory, _memory_fields,
                   _memory_of, _memory_stats, _rounded)
from .reports import (
    CapacityStats,
    ComprehensiveReport,
    History,
    MemoryStats,
    PoolError,
    PoolStats,
    Recommendations,
    SaturationStatus,
    ThreadInfo,
    WorkerMemory,
    WorkerStats,
    _WORKER_STATS_DEFAULTS,
    utilization,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..pool import Pool, WorkerInfo

__all__ = ["ProfileInspector", "PoolLike", "resolve_pool", "DEFAULT_INFO_TIMEOUT"]

PoolLike = Any  # a snakepit.Pool or a pool name
DEFAULT_INFO_TIMEOUT = 0.5



def resolve_pool(pool: PoolLike) -> "Pool":
    """A :class:`snakepit.Pool` from a pool or a pool name.

    Raises:
        PoolNotFoundError: no running pool has that name.
        TypeError: ``pool`` is neither.
    """
    from ..api import get_pool  # noqa: PLC0415
    from ..pool import Pool  # noqa: PLC0415

    if isinstance(pool, Pool):
        return pool
    if isinstance(pool, str):
        return get_pool(pool)
    raise TypeError(f"expected a snakepit.Pool or a pool name, got {type(pool).__name__}")


class _InspectorMethod:
    """A ProfileInspector method that also works on the class, as the seed writes it
    (``ProfileInspector.get_pool_stats("default")``): there it uses a default inspector."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            obj = owner.default()
        return self.fn.__get__(obj, owner)


class ProfileInspector:
    """Inspects running pools. Never steers them; never holds the pool lock for long.

    Example::

        from snakepit.diagnostics import ProfileInspector

        insp = ProfileInspector(info_timeout=0.5)
        insp.get_pool_stats("default").to_frame()
        insp.get_memory_stats("default").total_memory_mb
        for rec in insp.get_recommendations("default"):
            print(rec)

    Args:
        info_timeout: seconds each worker may take to answer the gRPC ``Info`` call (the calls
            run concurrently, so a whole inspection waits at most this long for them).
        thresholds: the recommendation rules' thresholds.
    """

    _default: "ProfileInspector | None" = None

    @classmethod
    def default(cls) -> "ProfileInspector":
        """The inspector that calls on the class use (default timeouts and thresholds)."""
        if cls.__dict__.get("_default") is None:
            cls._default = cls()
        return cls._default  # type: ignore[return-value]

    def __init__(self, *, info_timeout: float = DEFAULT_INFO_TIMEOUT, thresholds: Thresholds | None = None) -> None:
        self.info_timeout = float(info_timeout)
        self.thresholds = thresholds or Thresholds()
        # worker_id -> (WorkerFigures, the WorkerStats columns derived from them)
        self._figure_fields: dict[str, tuple[Any, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ pool stats
    @_InspectorMethod
    def get_pool_stats(self, pool: PoolLike = "default", *, detailed: bool = True,
                       max_age_s: float | None = None, fresh: bool = False) -> PoolStats:
        """Pool and per-worker figures.

        By default the workers' own figures (threads, GC, in-flight, tracemalloc, CPU, process
        memory) are the ones their last heartbeat reply carried, cached by the pool: no I/O at
        all, whatever the pool's size. ``metrics_source``, ``metrics_age_s`` and
        ``memory_age_s`` say where each row's figures come from and how old they are. A worker
        without heartbeat figures yet (just started, ``heartbeat_interval=None``) is measured
        now instead (``metrics_source="live"``).

        Example::

            stats = get_pool_stats("default")                     # cached heartbeat figures
            stats.to_frame()[["worker_id", "memory_mb", "metrics_age_s"]]
            get_pool_stats("default", fresh=True)                 # ask every worker now

        Args:
            pool: a pool or its name.
            detailed: include the workers' own figures and their process memory and CPU.
                Without it only the pool's bookkeeping is read.
            max_age_s: figures may be at most this old: heartbeat figures older than that are
                replaced by live ones; memory may also come from the history sampler's latest
                measurement if it is at most this old (see :meth:`get_memory_stats`).
            fresh: measure every worker now, as before heartbeats carried figures: a gRPC
                ``Info`` call to every worker (concurrently, ``info_timeout``) and psutil /
                ``/proc`` reads of every process (memory, CPU %).

        Raises:
            PoolNotFoundError: no running pool of that name. A worker that does not answer is
            *not* an error: its row has ``info_error`` set.
        """
        p = resolve_pool(pool)
        infos = p.list_workers()
        now_wall = time.time()
        if not detailed:
            rows = [WorkerStats._from_fields(_bookkeeping_fields(w, now_wall)) for w in infos]
        elif fresh:
            rows = self._live_rows(p, infos, now_wall, max_age_s)
        else:
            rows = self._cached_rows(p, infos, now_wall, max_age_s)
        stats = p.statistics()
        cap = sum(w.capacity for w in infos)
        used = sum(w.load for w in infos)
        pct = utilization(used, cap)
        return PoolStats(
            pool_name=p.name, profile=p.profile.name, worker_count=len(infos), capacity_total=cap,
            capacity_used=used, capacity_available=max(0, cap - used), utilization_percent=pct,
            workers=tuple(rows), utilization_level=utilization_level(pct),
            threads_per_worker=(cap // len(infos)) if infos else p.config.capacity_per_worker,
            queue_depth=int(stats.get("queue_depth", 0)), max_queue_size=int(p.config.max_queue_size),
            collected_at=now_wall,
        )

    def _cached_rows(self, p: "Pool", infos: list["WorkerInfo"], now_wall: float,
                     max_age_s: float | None) -> list[WorkerStats]:
        """Rows from the heartbeat figures (no I/O); workers without usable ones are measured now.

        This is the default ``get_pool_stats`` path, so it is kept lean: the columns derived
        from one heartbeat reply are computed once per reply (memoized on the figures object)
        and rows are built without the dataclass ``__init__``.
        """
        figures = {h.worker_id: h.figures for h in p.worker_records()}
        history = self._recent_memory(p, infos, max_age_s, with_time=True) if max_age_s is not None else None
        memo = self._figure_fields
        rows: dict[str, WorkerStats] = {}
        live: list["WorkerInfo"] = []
        no_memory: list["WorkerInfo"] = []
        for w in infos:
            wid = w.worker_id
            f = figures.get(wid)
            if (f is None or f.metrics.pid != w.pid
                    or (max_age_s is not None and now_wall - f.received_at > max_age_s)):
                live.append(w)
                continue
            entry = memo.get(wid)
            if entry is None or entry[0] is not f:
                entry = memo[wid] = (f, _heartbeat_fields(f))
            fields = dict(_WORKER_STATS_DEFAULTS)
            fields.update(entry[1])
            age = now_wall - f.received_at
            fields["metrics_age_s"] = round(age, 3)
            if history is not None:
                fields.update(_memory_fields(history[0].get(w.pid)))
                fields["memory_age_s"] = round(now_wall - history[1], 3)
            elif fields["memory_mb"] is not None and (
                    max_age_s is None or age + f.metrics.memory_age_s <= max_age_s):
                fields["memory_age_s"] = round(age + f.metrics.memory_age_s, 3)
            else:  # no measurement yet (the worker's first one is still running): measured below
                fields.update(memory_mb=None, uss_mb=None, pss_mb=None, swap_mb=None)
                no_memory.append(w)
            rows[wid] = WorkerStats._from_fields(_bookkeeping_fields(w, now_wall, fields))
        if len(memo) > 2 * len(figures) + 16:  # forget workers that are gone
            for wid in [k for k in memo if k not in figures]:
                memo.pop(wid, None)
        if no_memory:
            memory = _memory_of(p, no_memory)
            for w in no_memory:
                mem = memory.get(w.pid)
                rows[w.worker_id] = dataclasses.replace(rows[w.worker_id], **_memory_fields(mem),
                                                        memory_age_s=0.0 if mem else None)
        if live:
            for row in self._live_rows(p, live, now_wall, max_age_s):
                rows[row.worker_id] = row
        return [rows[w.worker_id] for w in infos]

    def _live_rows(self, p: "Pool", infos: list["WorkerInfo"], now_wall: float,
                   max_age_s: float | None) -> list[WorkerStats]:
        """Rows measured now: gRPC ``Info`` of every worker at once, psutil memory and CPU."""
        futures = self._info_futures(p, {w.worker_id for w in infos})
        history = self._recent_memory(p, infos, max_age_s, with_time=True) if max_age_s is not None else None
        if history is not None:
            memory, mem_age = history[0], round(now_wall - history[1], 3)
        else:
            memory, mem_age = _memory_of(p, infos), 0.0
        cpu = _cpu_of(p, infos)
        metrics = self._info_results(futures)
        return [self._worker_row(w, now_wall, memory.get(w.pid), cpu.get(w.pid, (None, None)),
                                 metrics.get(w.worker_id, "no reply"), source="live", metrics_age=0.0,
                                 memory_age=mem_age)
                for w in infos]

    def _info_futures(self, p: "Pool", only: set[str] | None = None) -> dict[str, Any]:
        futures: dict[str, Any] = {}
        for h in p.worker_records():
            if only is not None and h.worker_id not in only:
                continue
            conn = h.conn
            if conn is None:
                futures[h.worker_id] = "not connected"
                continue
            try:
                futures[h.worker_id] = conn.info_future(timeout=self.info_timeout)
            except Exception as exc:  # channel closed under us
                futures[h.worker_id] = f"{type(exc).__name__}: {exc}"
        return futures

    @staticmethod
    def _info_results(futures: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for wid, fut in futures.items():
            if isinstance(fut, str):
                out[wid] = fut
                continue
            try:
                out[wid] = fut.result()
            except Exception as exc:  # grpc.RpcError (deadline, unavailable) …
                code = getattr(exc, "code", None)
                out[wid] = code().name if callable(code) else f"{type(exc).__name__}: {exc}"
        return out

    @staticmethod
    def _worker_row(w: "WorkerInfo", now_wall: float, mem: dict[str, float] | None = None,
                    cpu: tuple[float | None, float | None] = (None, None), metrics: Any = None, *,
                    source: str | None = None, metrics_age: float | None = None,
                    memory_age: float | None = None) -> WorkerStats:
        kw: dict[str, Any] = _memory_fields(mem) if mem else {}
        kw["cpu_percent"], kw["cpu_time_s"] = cpu
        if isinstance(metrics, pb.WorkerMetrics):
            gc_counts = list(metrics.gc_counts) + [None] * 3
            gc_coll = list(metrics.gc_collections) + [None] * 3
            kw.update(
                in_flight=metrics.in_flight, threads=metrics.thread_count,
                gc_count_gen0=gc_counts[0], gc_count_gen1=gc_counts[1], gc_count_gen2=gc_counts[2],
                gc_collections_gen0=gc_coll[0], gc_collections_gen1=gc_coll[1], gc_collections_gen2=gc_coll[2],
                tracemalloc_current_mb=round(metrics.tracemalloc_current / _MIB, 3),
                tracemalloc_peak_mb=round(metrics.tracemalloc_peak / _MIB, 3),
                metrics_age_s=None if metrics_age is None else round(metrics_age, 3),
            )
        elif source is not None:
            kw["info_error"] = str(metrics) if metrics is not None else "no reply"
        if mem:
            kw["memory_age_s"] = None if memory_age is None else round(memory_age, 3)
        return WorkerStats(
            worker_id=w.worker_id, pid=w.pid, pool=w.pool, profile=w.profile, status=w.status,
            capacity=w.capacity, load=w.load, requests_served=w.requests_served, sessions=w.sessions,
            uptime_s=round(w.uptime_s, 3), started_at=w.started_at, last_heartbeat=w.last_heartbeat,
            heartbeat_age_s=round(now_wall - w.last_heartbeat, 3) if w.last_heartbeat else None,
            recycle_reason=w.recycle_reason, metrics_source=source, pipelined=w.pipelined,
            host=w.host, dask_worker=w.dask_worker, **kw,
        )

    # ------------------------------------------------------------------ capacity
    @_InspectorMethod
    def get_capacity_stats(self, pool: PoolLike = "default") -> CapacityStats:
        """Capacity, load and (thread profile) thread figures, from the pool's bookkeeping only.

        ``thread_info`` is set for every thread-profile pool with workers (the seed built it only
        when some worker had capacity > 1) and is None for a process pool.
        """
        p = resolve_pool(pool)
        infos = p.list_workers()
        cap = sum(w.capacity for w in infos)
        used = sum(w.load for w in infos)
        pct = utilization(used, cap)
        thread_info = None
        if p.profile.name == "thread" and infos:
            thread_info = ThreadInfo(workers=len(infos), threads_per_worker=infos[0].capacity, total_threads=cap,
                                     avg_load_per_worker=round(used / len(infos), 2))
        return CapacityStats(
            total_capacity=cap, used_capacity=used, available_capacity=max(0, cap - used), utilization_percent=pct,
            thread_info=thread_info, pool_name=p.name, profile=p.profile.name, worker_count=len(infos),
            queue_depth=p.queue_depth(), utilization_level=utilization_level(pct),
            workers=tuple((w.worker_id, w.capacity, w.load, w.status) for w in infos),
        )

    # ------------------------------------------------------------------ memory
    @_InspectorMethod
    def get_memory_stats(self, pool: PoolLike = "default", *, max_age_s: float | None = None) -> MemoryStats:
        """Memory of every worker's real process (RSS, USS, PSS, swap; children included), measured now.

        Example::

            mem = get_memory_stats("default")                     # live
            mem.total_memory_mb, mem.footprint_mb
            cheap = get_memory_stats("default", max_age_s=2.0)   # recent figures, when there are

        Args:
            pool: a pool or its name.
            max_age_s: accept figures at most this old instead of measuring: the history
                sampler's latest memory measurement if it covers the workers, else each
                worker's heartbeat figures; only the workers left are measured now (for refresh
                loops). None (the default) always measures every worker now.

        Measuring scans the process table once (``/proc/<pid>/stat`` on Linux: children, and a
        cheap signature of each process), then reads ``/proc/<pid>/smaps_rollup`` — a kernel
        page-table walk, the costly part — of each worker tree that may have changed since its
        last walk: a tree whose processes all kept the same start time, page-fault counts,
        virtual size and resident pages (and whose parent, the forkserver template, kept its
        own and its set of children) keeps the figures of a walk at most
        ``procmem.ROLLUP_REUSE_MAX_S`` (1 s) old. Anything a worker or its children allocate,
        free or write (copy-on-write) shows at the next call (:class:`snakepit.procmem.RollupCache`).
        psutil elsewhere, walked every time. Workers whose process vanished between listing and
        measuring are left out.
        """
        p = resolve_pool(pool)
        infos = p.list_workers()
        now_wall = time.time()
        memory: dict[int, dict[str, float] | None] = {}
        ages: dict[int, float] = {}
        if max_age_s is not None:
            recent = self._recent_memory(p, infos, max_age_s, with_time=True)
            if recent is not None:
                memory = recent[0]
                ages = dict.fromkeys(memory, now_wall - recent[1])
            else:
                for h in p.worker_records():
                    f = h.figures
                    if f is None or f.metrics.pid != h.pid or not f.metrics.HasField("rss_bytes"):
                        continue
                    age = now_wall - f.received_at + f.metrics.memory_age_s
                    if age <= max_age_s:
                        memory[h.pid] = _heartbeat_memory(f.metrics)
                        ages[h.pid] = age
        for h in p.worker_records():  # remote workers: what they measured on their own host
            if not h.is_local and h.pid not in memory:
                mem = lifecycle.reported_memory(h)
                if mem is not None:
                    memory[h.pid] = mem
                    ages[h.pid] = now_wall - h.figures.received_at + h.figures.metrics.memory_age_s
        todo = [w for w in infos if w.pid not in memory]
        if todo:
            memory.update(_memory_of(p, todo))
        rows = []
        for w in infos:
            mem = memory.get(w.pid)
            if not mem:
                continue
            rss, uss = mem.get("rss_mb"), mem.get("uss_mb")
            rows.append(WorkerMemory(
                worker_id=w.worker_id, pid=w.pid, memory_mb=_rounded(rss), uss_mb=_rounded(uss),
                pss_mb=_rounded(mem.get("pss_mb")), swap_mb=_rounded(mem.get("swap_mb")),
                shared_mb=_rounded(max(0.0, rss - uss)) if rss is not None and uss is not None else None,
                status=w.status, requests_served=w.requests_served,
                memory_age_s=round(ages.get(w.pid, 0.0), 3), host=w.host, dask_worker=w.dask_worker,
            ))
        return _memory_stats(p.name, p.profile.name, rows)

    @staticmethod
    def _recent_memory(p: "Pool", infos: list["WorkerInfo"], max_age_s: float, *,
                       with_time: bool = False) -> Any:
        from .history import iter_workers  # noqa: PLC0415

        sampler = getattr(p, "history", None)
        sample = sampler.latest_memory() if sampler is not None else None
        if sample is None or time.time() - sample["time"] > max_age_s:
            return None
        out: dict[int, dict[str, float]] = {}
        for w in iter_workers(sample):
            figures = {k: w[k] for k in ("rss_mb", "uss_mb", "pss_mb", "swap_mb") if w[k] == w[k]}
            if "rss_mb" in figures:
                out[int(w["pid"])] = figures
        if not {w.pid for w in infos} <= set(out):
            return None  # workers changed since: measure now
        return (out, sample["time"]) if with_time else out

    # ------------------------------------------------------------------ all pools
    @_InspectorMethod
    def get_comprehensive_report(self, *, detailed: bool = True) -> ComprehensiveReport:
        """:class:`PoolStats` of every running pool, keyed by name; a pool that fails shows its error."""
        from ..api import list_pools  # noqa: PLC0415

        out: dict[str, PoolStats | PoolError] = {}
        for p in list_pools():
            try:
                out[p.name] = self.get_pool_stats(p, detailed=detailed)
            except Exception as exc:  # noqa: BLE001 - reported, never dropped
                out[p.name] = PoolError(pool_name=p.name, error=str(exc) or repr(exc), error_type=type(exc).__name__)
        return ComprehensiveReport(out)

    # ------------------------------------------------------------------ saturation
    @_InspectorMethod
    def check_saturation(self, pool: PoolLike = "default", threshold: float = 80.0) -> SaturationStatus:
        """``level="warning"`` (status ``"approaching_saturation"``) when utilization ≥ ``threshold``.

        Example::

            if not snakepit.diagnostics.check_saturation("default", threshold=75):
                print("pool is getting full")
        """
        p = resolve_pool(pool)
        infos = p.list_workers()
        cap = sum(w.capacity for w in infos)
        used = sum(w.load for w in infos)
        pct = utilization(used, cap)
        warn = pct >= threshold
        cutoff = time.time() - 60.0
        rejections = sum(1 for t in p.saturation_history.copy() if t >= cutoff)
        return SaturationStatus(
            pool_name=p.name, level="warning" if warn else "healthy", utilization_percent=pct,
            threshold=float(threshold), status="approaching_saturation" if warn else "healthy",
            utilization_level=utilization_level(pct), queue_depth=p.queue_depth(),
            max_queue_size=int(p.config.max_queue_size), rejections_last_minute=rejections,
        )

    # ------------------------------------------------------------------ recommendations
    @_InspectorMethod
    def snapshot(self, pool: PoolLike = "default") -> Snapshot:
        """What the recommendation rules look at (the pool now, its memory, its history window)."""
        p = resolve_pool(pool)
        cap_stats = self.get_capacity_stats(p)
        memory = self.get_memory_stats(p)
        samples = p.history.window(self.thresholds.window_s) if getattr(p, "history", None) is not None else []
        cfg = p.config
        return Snapshot(
            pool_name=p.name, profile=p.profile.name, worker_count=cap_stats.worker_count,
            capacity_total=cap_stats.total_capacity, capacity_used=cap_stats.used_capacity,
            utilization_percent=cap_stats.utilization_percent,
            threads_per_worker=(cap_stats.total_capacity // cap_stats.worker_count
                                if cap_stats.worker_count else cfg.capacity_per_worker),
            memory=memory, samples=samples, saturation_times=list(p.saturation_history.copy()), now=time.time(),
            settings={"pool_size": cfg.pool_size, "max_queue_size": cfg.max_queue_size,
                      "memory_threshold_mb": cfg.memory_threshold_mb, "worker_max_requests": cfg.worker_max_requests,
                      "threads_per_worker": cfg.threads_per_worker,
                      "adaptive": p.adaptive.describe() if getattr(p, "adaptive", None) is not None else None},
        )

    @_InspectorMethod
    def get_recommendations(self, pool: PoolLike = "default") -> Recommendations:
        """Structured recommendations: the seed's rules, then the measured ones.

        Example::

            >>> recs = get_recommendations("default")          # doctest: +SKIP
            >>> print(recs)                                      # doctest: +SKIP
            CRITICAL: Pool utilization is very high (100.0%). Add more workers immediately.
        """
        snap = self.snapshot(pool)
        return Recommendations(pool_name=snap.pool_name, items=tuple(evaluate(snap, self.thresholds)))

    # ------------------------------------------------------------------ history
    @_InspectorMethod
    def get_history(self, pool: PoolLike = "default", *, last_s: float | None = None) -> History:
        """The background samples (``config.history_interval``; none when it is None).

        Args:
            last_s: only the samples of the last ``last_s`` seconds.
        """
        p = resolve_pool(pool)
        sampler = getattr(p, "history", None)
        if sampler is None:
            return History(pool_name=p.name, interval_s=None, samples=())
        return History(pool_name=p.name, interval_s=sampler.interval, samples=tuple(sampler.window(last_s)))

    # ------------------------------------------------------------------ projection
    @_InspectorMethod
    def project_memory(self, pool: PoolLike = "default", worker_counts: Iterable[int] = (1, 2, 4, 8, 16), *,
                       statistic: str = "mean") -> "pd.DataFrame":
        """Projected total memory of the pool with other worker counts (see :mod:`.projection`).

        Example::

            df = project_memory("default", [2, 4, 8])
            df[["workers", "projected_total_mb", "naive_rss_total_mb"]]

        Returns:
            One row per worker count; columns :data:`projection.PROJECTION_COLUMNS`.
        """
        p = resolve_pool(pool)
        memory = self.get_memory_stats(p)
        tpw = p.config.capacity_per_worker
        rows = projection.projection_rows(memory, worker_counts, profile=p.profile.name, threads_per_worker=tpw,
                                          statistic=statistic)
        return projection.to_frame(rows, projection.PROJECTION_COLUMNS)

    @_InspectorMethod
    def compare_profiles(self, pool: PoolLike = "default", capacity: int | None = None,
                         threads_per_worker: int | None = None, *, statistic: str = "mean") -> "pd.DataFrame":
        """Process vs thread profile for the same capacity, from the pool's measured memory.

        Args:
            capacity: concurrent requests to plan for (default: the pool's capacity now).
            threads_per_worker: of the thread row (default: the pool's, for a thread pool;
                otherwise ``capacity`` clipped to 4–16).

        Returns:
            Two rows (``process``, ``thread``); columns :data:`projection.COMPARISON_COLUMNS`;
            ``saving_mb`` is relative to the process row.
        """
        p = resolve_pool(pool)
        memory = self.get_memory_stats(p)
        per_worker = p.config.capacity_per_worker
        if capacity is None:
            capacity = max(1, sum(w.capacity for w in p.list_workers()) or p.config.total_capacity)
        if threads_per_worker is None:
            threads_per_worker = per_worker if p.profile.name == "thread" else max(4, min(16, capacity))
        rows = projection.comparison_rows(memory, profile=p.profile.name, threads_per_worker=per_worker,
                                          capacity=int(capacity), target_threads_per_worker=int(threads_per_worker),
                                          statistic=statistic)
        return projection.to_frame(rows, projection.COMPARISON_COLUMNS)
