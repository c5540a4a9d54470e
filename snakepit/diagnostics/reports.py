"""The report types: frozen snapshots with ``.to_dict()`` (JSON-ready) and ``.to_frame()`` (pandas).

Every frame's columns are listed in the class's ``COLUMNS`` and documented in
``docs/diagnostics.md`` (a test checks both). pandas is imported inside ``to_frame`` only,
so importing snakepit (and starting a pool) never pulls it in.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .levels import utilization_level

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "CapacityStats",
    "ComprehensiveReport",
    "History",
    "MemoryStats",
    "PoolError",
    "PoolStats",
    "Recommendation",
    "Recommendations",
    "SaturationStatus",
    "ThreadInfo",
    "WorkerMemory",
    "WorkerStats",
]


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, tuples and NaN turned into JSON-ready dicts, lists and None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if hasattr(value, "to_dict"):
            return value.to_dict()
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _frame(rows: list[dict[str, Any]], columns: Sequence[str]) -> "pd.DataFrame":
    import pandas as pd  # noqa: PLC0415 - lazy: pandas is heavy

    return pd.DataFrame.from_records(rows, columns=list(columns))


def _fields(obj: Any, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


# ---------------------------------------------------------------------------------- workers
class _PerWorkerReport:
    """``to_dict``/``to_frame`` shared by the reports that carry one row per worker in ``workers``."""

    COLUMNS: tuple[str, ...] = ()
    workers: tuple = ()

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "workers"}
        out["workers"] = [w.to_dict() for w in self.workers]
        return out

    def to_frame(self) -> "pd.DataFrame":
        """One row per worker; columns: the class's ``COLUMNS``."""
        return _frame([_fields(w, self.COLUMNS) for w in self.workers], self.COLUMNS)


@dataclass(frozen=True)
class WorkerStats:
    """One worker as the inspector sees it: the pool's bookkeeping, its real process, its own figures.

    Fields that could not be measured (process gone, gRPC ``Info`` timed out, USS unavailable
    on this OS) are ``None``; ``info_error`` says why the worker's own figures are missing.
    ``metrics_source`` says where the worker's own figures come from: ``"heartbeat"`` (cached
    from its last heartbeat reply, ``metrics_age_s`` old; memory ``memory_age_s`` old),
    ``"live"`` (asked and measured now), or None (``detailed=False``: bookkeeping only).
    """

    worker_id: str
    pid: int
    pool: str
    profile: str
    status: str
    capacity: int
    load: int
    in_flight: int | None = None
    requests_served: int = 0
    sessions: int = 0
    uptime_s: float = 0.0
    started_at: float | None = None
    last_heartbeat: float | None = None
    heartbeat_age_s: float | None = None
    memory_mb: float | None = None
    uss_mb: float | None = None
    pss_mb: float | None = None
    swap_mb: float | None = None
    cpu_percent: float | None = None
    cpu_time_s: float | None = None
    threads: int | None = None
    gc_count_gen0: int | None = None
    gc_count_gen1: int | None = None
    gc_count_gen2: int | None = None
    gc_collections_gen0: int | None = None
    gc_collections_gen1: int | None = None
    gc_collections_gen2: int | None = None
    tracemalloc_current_mb: float | None = None
    tracemalloc_peak_mb: float | None = None
    recycle_reason: str | None = None
    info_error: str | None = None
    metrics_source: str | None = None
    metrics_age_s: float | None = None
    memory_age_s: float | None = None
    pipelined: int = 0
    host: str = ""
    dask_worker: str | None = None

    COLUMNS = (
        "worker_id", "pid", "pool", "profile", "host", "dask_worker", "status", "capacity", "load",
        "in_flight",
        "requests_served", "sessions", "uptime_s", "started_at", "last_heartbeat", "heartbeat_age_s",
        "memory_mb", "uss_mb", "pss_mb", "swap_mb", "cpu_percent", "cpu_time_s", "threads",
        "gc_count_gen0", "gc_count_gen1", "gc_count_gen2",
        "gc_collections_gen0", "gc_collections_gen1", "gc_collections_gen2",
        "tracemalloc_current_mb", "tracemalloc_peak_mb", "recycle_reason", "info_error",
        "metrics_source", "metrics_age_s", "memory_age_s", "pipelined",
    )

    def to_dict(self) -> dict[str, Any]:
        return jsonable(_fields(self, self.COLUMNS))

    @classmethod
    def _from_fields(cls, fields: dict[str, Any]) -> "WorkerStats":
        """A row from a dict holding every field (no validation: the inspector's fast path, ~0.3 µs
        instead of ~5 µs for the generated ``__init__`` with 38 keyword arguments)."""
        obj = object.__new__(cls)
        obj.__dict__.update(fields)
        return obj


#: Every WorkerStats field with its default (the required ones None), for ``_from_fields``.
_WORKER_STATS_DEFAULTS = {f.name: (None if f.default is dataclasses.MISSING else f.default)
                          for f in dataclasses.fields(WorkerStats)}


# ---------------------------------------------------------------------------------- pool stats
@dataclass(frozen=True)
class PoolStats:
    """What :func:`get_pool_stats` returns: the seed's fields plus queue figures and worker rows.

    Example::

        stats = snakepit.diagnostics.get_pool_stats("default")
        stats.utilization_percent, stats.utilization_level     # 50.0, 'LOW'
        stats.to_frame()[["worker_id", "status", "load", "memory_mb"]]
        json.dumps(stats.to_dict())
    """

    pool_name: str
    profile: str
    worker_count: int
    capacity_total: int
    capacity_used: int
    capacity_available: int
    utilization_percent: float
    workers: tuple[WorkerStats, ...] = ()
    utilization_level: str = "LOW"
    threads_per_worker: int = 1
    queue_depth: int = 0
    max_queue_size: int = 0
    collected_at: float = 0.0

    COLUMNS = WorkerStats.COLUMNS

    to_dict = _PerWorkerReport.to_dict
    to_frame = _PerWorkerReport.to_frame


@dataclass(frozen=True)
class PoolError:
    """A pool that could not report (shown in :class:`ComprehensiveReport` with its error)."""

    pool_name: str
    error: str
    error_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"pool_name": self.pool_name, "error": self.error, "error_type": self.error_type}


@dataclass(frozen=True)
class ComprehensiveReport(Mapping):
    """Every running pool's :class:`PoolStats` keyed by pool name (a :class:`PoolError` if it failed).

    ``to_dict()`` is what ``snakepit profile-inspector --format json`` prints, so
    ``jq '.default.utilization_percent'`` works as in the seed.
    """

    pools: Mapping[str, PoolStats | PoolError] = field(default_factory=dict)

    COLUMNS = (
        "pool_name", "profile", "worker_count", "capacity_total", "capacity_used", "capacity_available",
        "utilization_percent", "utilization_level", "queue_depth", "error",
    )

    def __getitem__(self, name: str) -> PoolStats | PoolError:
        return self.pools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.pools)

    def __len__(self) -> int:
        return len(self.pools)

    @property
    def errors(self) -> dict[str, PoolError]:
        return {k: v for k, v in self.pools.items() if isinstance(v, PoolError)}

    def to_dict(self) -> dict[str, Any]:
        return {name: report.to_dict() for name, report in self.pools.items()}

    def to_frame(self) -> "pd.DataFrame":
        """One row per pool."""
        rows = []
        for name, rep in self.pools.items():
            if isinstance(rep, PoolError):
                rows.append({"pool_name": name, "error": rep.error})
            else:
                row = {c: getattr(rep, c) for c in self.COLUMNS if c != "error"}
                row["error"] = None
                rows.append(row)
        return _frame(rows, self.COLUMNS)


# ---------------------------------------------------------------------------------- capacity
@dataclass(frozen=True)
class ThreadInfo:
    """Thread-profile details: worker processes, threads each, total threads, mean busy threads."""

    workers: int
    threads_per_worker: int
    total_threads: int
    avg_load_per_worker: float

    def to_dict(self) -> dict[str, Any]:
        return jsonable(dataclasses.asdict(self))


@dataclass(frozen=True)
class CapacityStats:
    """What :func:`get_capacity_stats` returns. ``thread_info`` is None for a process pool."""

    total_capacity: int
    used_capacity: int
    available_capacity: int
    utilization_percent: float
    thread_info: ThreadInfo | None
    pool_name: str = ""
    profile: str = ""
    worker_count: int = 0
    queue_depth: int = 0
    utilization_level: str = "LOW"
    workers: tuple[tuple[str, int, int, str], ...] = ()  # (worker_id, capacity, load, status)

    COLUMNS = ("worker_id", "capacity", "load", "available", "utilization_percent", "status")

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "workers"}
        out["workers"] = [
            {"worker_id": w, "capacity": c, "load": l, "status": s} for w, c, l, s in self.workers
        ]
        return out

    def to_frame(self) -> "pd.DataFrame":
        """One row per worker: its slots, busy slots, free slots and its own utilization."""
        rows = [
            {"worker_id": w, "capacity": c, "load": l, "available": max(0, c - l),
             "utilization_percent": round(100.0 * l / c, 2) if c else 0.0, "status": s}
            for w, c, l, s in self.workers
        ]
        return _frame(rows, self.COLUMNS)


# ---------------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class WorkerMemory:
    """One worker's real process memory in MiB, children included (psutil).

    ``memory_mb`` is RSS; ``uss_mb`` (private pages), ``pss_mb`` (proportional share) and
    ``swap_mb`` are None where the OS does not give them; ``shared_mb`` = RSS − USS.
    ``memory_age_s`` is 0 for a figure measured now (the default), else its age (``max_age_s``).
    """

    worker_id: str
    pid: int
    memory_mb: float | None
    uss_mb: float | None = None
    pss_mb: float | None = None
    swap_mb: float | None = None
    shared_mb: float | None = None
    status: str = ""
    requests_served: int = 0
    memory_age_s: float | None = 0.0
    host: str = ""
    dask_worker: str | None = None

    COLUMNS = ("worker_id", "pid", "host", "dask_worker", "memory_mb", "uss_mb", "pss_mb", "swap_mb",
               "shared_mb", "status",
               "requests_served", "memory_age_s")

    def to_dict(self) -> dict[str, Any]:
        return jsonable(_fields(self, self.COLUMNS))


@dataclass(frozen=True)
class MemoryStats:
    """What :func:`get_memory_stats` returns.

    The seed's four figures are over RSS (``memory_mb``): ``total_memory_mb`` therefore counts
    pages shared between workers once per worker. ``footprint_mb`` is the honest total:
    private memory of every worker (``total_uss_mb``) plus the shared memory counted once
    (``shared_mb``, the largest RSS − USS of any worker).
    """

    total_memory_mb: float
    avg_memory_per_worker_mb: float
    max_memory_worker_mb: float
    min_memory_worker_mb: float
    workers: tuple[WorkerMemory, ...] = ()
    pool_name: str = ""
    profile: str = ""
    total_uss_mb: float | None = None
    total_pss_mb: float | None = None
    shared_mb: float | None = None
    footprint_mb: float | None = None
    basis: str = "rss"
    collected_at: float = 0.0

    COLUMNS = WorkerMemory.COLUMNS

    to_dict = _PerWorkerReport.to_dict
    to_frame = _PerWorkerReport.to_frame

    def by_worker(self) -> dict[str, WorkerMemory]:
        return {w.worker_id: w for w in self.workers}


# ---------------------------------------------------------------------------------- saturation
@dataclass(frozen=True)
class SaturationStatus:
    """What :func:`check_saturation` returns.

    ``level`` is ``"warning"`` when ``utilization_percent >= threshold``, else ``"healthy"``
    (the seed's ``{:warning, :approaching_saturation, pct}`` / ``{:ok, :healthy}``).
    ``bool(status)`` is True when healthy.
    """

    pool_name: str
    level: str
    utilization_percent: float
    threshold: float
    status: str
    utilization_level: str
    queue_depth: int = 0
    max_queue_size: int = 0
    rejections_last_minute: int = 0

    COLUMNS = ("pool_name", "level", "status", "utilization_percent", "threshold", "utilization_level",
               "queue_depth", "max_queue_size", "rejections_last_minute")

    @property
    def healthy(self) -> bool:
        return self.level == "healthy"

    def __bool__(self) -> bool:
        return self.healthy

    def to_dict(self) -> dict[str, Any]:
        return jsonable(_fields(self, self.COLUMNS))

    def to_frame(self) -> "pd.DataFrame":
        """One row."""
        return _frame([_fields(self, self.COLUMNS)], self.COLUMNS)


# ---------------------------------------------------------------------------------- recommendations
@dataclass(frozen=True)
class Recommendation:
    """One recommendation.

    Attributes:
        severity: ``"critical"``, ``"warning"`` or ``"info"``.
        rule: a stable identifier (``"utilization_critical"``, ``"gil_bound"`` …; see docs).
        message: the sentence, as in the seed (``"Pool utilization is very high (95.0%). Add
            more workers immediately."``).
        evidence: the measured figures the rule fired on.
        suggestion: settings to change, e.g. ``{"pool_size": 6}`` (may be empty).

    ``str(rec)`` reads like the seed: ``"CRITICAL: Pool utilization is very high (95.0%). …"``.
    """

    severity: str
    rule: str
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    suggestion: Mapping[str, Any] = field(default_factory=dict)

    COLUMNS = ("severity", "rule", "message", "evidence", "suggestion")

    def __str__(self) -> str:
        return f"{self.severity.upper()}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "rule": self.rule, "message": self.message,
                "evidence": jsonable(dict(self.evidence)), "suggestion": jsonable(dict(self.suggestion)),
                "text": str(self)}


@dataclass(frozen=True)
class Recommendations(Sequence):
    """What :func:`get_recommendations` returns: a list-like of :class:`Recommendation`.

    Example::

        recs = snakepit.diagnostics.get_recommendations("default")
        for rec in recs:
            print(rec)                      # "WARNING: Pool utilization is high (85.0%). …"
        recs.rules()                        # ['utilization_high']
        recs.to_frame()
    """

    pool_name: str
    items: tuple[Recommendation, ...] = ()

    COLUMNS = ("pool_name",) + Recommendation.COLUMNS

    def __getitem__(self, index):  # type: ignore[override]
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __str__(self) -> str:
        return "\n".join(str(r) for r in self.items)

    def rules(self) -> list[str]:
        """The rule ids that fired, in order."""
        return [r.rule for r in self.items]

    def messages(self) -> list[str]:
        """The seed's list of strings."""
        return [str(r) for r in self.items]

    def by_rule(self, rule: str) -> Recommendation | None:
        return next((r for r in self.items if r.rule == rule), None)

    def to_dict(self) -> dict[str, Any]:
        return {"pool_name": self.pool_name, "recommendations": [r.to_dict() for r in self.items]}

    def to_frame(self) -> "pd.DataFrame":
        """One row per recommendation (``evidence`` and ``suggestion`` are dicts)."""
        rows = [{"pool_name": self.pool_name, **{c: getattr(r, c) for c in Recommendation.COLUMNS}}
                for r in self.items]
        for row in rows:
            row["evidence"] = dict(row["evidence"])
            row["suggestion"] = dict(row["suggestion"])
        return _frame(rows, self.COLUMNS)


# ---------------------------------------------------------------------------------- history
@dataclass(frozen=True)
class History:
    """What :func:`get_history` returns: the pool's background samples, oldest first.

    ``to_frame()`` has one row per sample (columns :attr:`COLUMNS`, then one
    ``memory_mb[<worker_id>]`` column per worker seen); ``workers_frame()`` has one row per
    worker per sample.
    """

    pool_name: str
    interval_s: float | None
    samples: tuple[Mapping[str, Any], ...] = ()

    COLUMNS = (
        "time", "workers", "capacity_total", "capacity_used", "utilization_percent", "queue_depth",
        "in_flight", "throughput_rps", "latency_p50_ms", "latency_p99_ms", "completed", "failed",
        "saturated", "memory_total_mb", "uss_total_mb",
    )
    WORKER_COLUMNS = ("time", "worker_id", "pid", "load", "capacity", "requests_served", "memory_mb",
                      "uss_mb", "cpu_percent")

    def __len__(self) -> int:
        return len(self.samples)

    # A little of the DataFrame surface, for code that treats the history as its frame.
    def __getitem__(self, key: Any) -> Any:
        """``history["utilization_percent"]`` is ``history.to_frame()["utilization_percent"]``."""
        return self.to_frame()[key]

    @property
    def columns(self) -> "pd.Index":
        return self.to_frame().columns

    @property
    def empty(self) -> bool:
        return not self.samples

    def worker_rows(self) -> list[dict[str, Any]]:
        """Per-worker rows (``time`` as epoch seconds); ``cpu_percent`` from consecutive samples."""
        from .history import iter_workers  # noqa: PLC0415

        rows: list[dict[str, Any]] = []
        last: dict[tuple[str, int], tuple[float, float]] = {}
        for sample in self.samples:
            t = sample["time"]
            for w in iter_workers(sample):
                key = (w["worker_id"], int(w["pid"]))
                cpu = w["cpu_time_s"]
                pct = None
                prev = last.get(key)
                if prev is not None and cpu == cpu and prev[1] == prev[1] and t > prev[0]:
                    pct = round(100.0 * (cpu - prev[1]) / (t - prev[0]), 2)
                last[key] = (t, cpu)
                rows.append({"time": t, "worker_id": w["worker_id"], "pid": int(w["pid"]),
                             "load": int(w["load"]), "capacity": int(w["capacity"]),
                             "requests_served": int(w["requests_served"]),
                             "memory_mb": _nan_none(w["rss_mb"]), "uss_mb": _nan_none(w["uss_mb"]),
                             "cpu_percent": pct})
        return rows

    def to_dict(self) -> dict[str, Any]:
        from .history import iter_workers  # noqa: PLC0415

        samples = []
        for s in self.samples:
            row = {c: s.get(c) for c in self.COLUMNS}
            row["workers_detail"] = {w["worker_id"]: {k: v for k, v in w.items() if k != "worker_id"}
                                     for w in iter_workers(s)}
            samples.append(jsonable(row))
        return {"pool_name": self.pool_name, "interval_s": self.interval_s, "samples": samples}

    def to_frame(self) -> "pd.DataFrame":
        """One row per sample; ``time`` is a UTC timestamp."""
        import pandas as pd  # noqa: PLC0415

        from .history import iter_workers  # noqa: PLC0415

        rows = []
        worker_cols: dict[str, None] = {}
        for s in self.samples:
            row = {c: s.get(c) for c in self.COLUMNS}
            for w in iter_workers(s):
                col = f"memory_mb[{w['worker_id']}]"
                worker_cols[col] = None
                row[col] = w["rss_mb"]
            rows.append(row)
        df = pd.DataFrame.from_records(rows, columns=list(self.COLUMNS) + list(worker_cols))
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        return df

    def workers_frame(self) -> "pd.DataFrame":
        """One row per worker per sample; columns :attr:`WORKER_COLUMNS`."""
        import pandas as pd  # noqa: PLC0415

        df = _frame(self.worker_rows(), self.WORKER_COLUMNS)
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
        return df


def _nan_none(v: float) -> float | None:
    return None if v != v else v


def utilization(used: int, total: int) -> float:
    """``used/total*100`` rounded to 2 (0.0 when total is 0), as the seed."""
    return round(100.0 * used / total, 2) if total else 0.0


def level_of(percent: float) -> str:
    return utilization_level(percent)
