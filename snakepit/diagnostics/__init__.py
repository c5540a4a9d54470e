"""Diagnostics: the profile-aware inspector, history, memory projection, recommendations.

Diagnostics read the pool; they never steer it. Every report is a frozen dataclass with
``.to_dict()`` (JSON-ready) and ``.to_frame()`` (a pandas DataFrame; pandas is imported only
then). Columns are documented in ``docs/diagnostics.md``.

Example::

    import snakepit
    from snakepit import diagnostics as dx

    pool = snakepit.start_pool("default", profile="thread", pool_size=2, threads_per_worker=8)
    dx.get_pool_stats("default").to_frame()        # one row per worker
    dx.get_capacity_stats(pool).thread_info        # ThreadInfo(workers=2, threads_per_worker=8, …)
    dx.get_memory_stats(pool).footprint_mb         # private memory + shared memory counted once
    dx.check_saturation(pool, threshold=80.0).level
    print(dx.get_recommendations(pool))
    dx.get_history(pool).to_frame()                # background samples
    dx.project_memory(pool, [2, 4, 8])             # capacity planning
    dx.compare_profiles(pool)                      # process vs thread, same capacity
    dx.utilization_level(85.0)                     # 'HIGH'

Module layout: ``levels`` (utilization levels) → ``reports`` (dataclasses) → ``history``
(the pool's background sampler; imported by the pool, so kept light) → ``projection`` →
``recommendations`` (rules) → ``inspector`` (collects, builds the reports).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from .history import HistorySampler
from .inspector import ProfileInspector, resolve_pool
from .levels import LEVEL_BADGES, LEVELS, utilization_badge, utilization_level
from .projection import COMPARISON_COLUMNS, PROJECTION_COLUMNS, THREAD_OVERHEAD_MB
from .recommendations import Snapshot, Thresholds
from .reports import (
    CapacityStats,
    ComprehensiveReport,
    History,
    MemoryStats,
    PoolError,
    PoolStats,
    Recommendation,
    Recommendations,
    SaturationStatus,
    ThreadInfo,
    WorkerMemory,
    WorkerStats,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "COMPARISON_COLUMNS",
    "CapacityStats",
    "ComprehensiveReport",
    "History",
    "HistorySampler",
    "LEVELS",
    "LEVEL_BADGES",
    "MemoryStats",
    "PROJECTION_COLUMNS",
    "PoolError",
    "PoolStats",
    "ProfileInspector",
    "Recommendation",
    "Recommendations",
    "SaturationStatus",
    "Snapshot",
    "THREAD_OVERHEAD_MB",
    "ThreadInfo",
    "Thresholds",
    "WorkerMemory",
    "WorkerStats",
    "check_saturation",
    "compare_profiles",
    "get_capacity_stats",
    "get_comprehensive_report",
    "get_history",
    "get_memory_stats",
    "get_pool_stats",
    "get_recommendations",
    "project_memory",
    "resolve_pool",
    "utilization_badge",
    "utilization_level",
]

_default = ProfileInspector()


def get_pool_stats(pool="default", *, detailed: bool = True,  # noqa: ANN001
                   max_age_s: float | None = None, fresh: bool = False) -> PoolStats:
    """:meth:`ProfileInspector.get_pool_stats` with the default inspector. ``pool``: a Pool or a name.

    The workers' figures come from their last heartbeat (no I/O); ``fresh=True`` asks them now.
    """
    return _default.get_pool_stats(pool, detailed=detailed, max_age_s=max_age_s, fresh=fresh)


def get_capacity_stats(pool="default") -> CapacityStats:  # noqa: ANN001
    """:meth:`ProfileInspector.get_capacity_stats` with the default inspector."""
    return _default.get_capacity_stats(pool)


def get_memory_stats(pool="default", *, max_age_s: float | None = None) -> MemoryStats:  # noqa: ANN001
    """:meth:`ProfileInspector.get_memory_stats` with the default inspector."""
    return _default.get_memory_stats(pool, max_age_s=max_age_s)


def get_comprehensive_report(*, detailed: bool = True) -> ComprehensiveReport:
    """:meth:`ProfileInspector.get_comprehensive_report` with the default inspector."""
    return _default.get_comprehensive_report(detailed=detailed)


def check_saturation(pool="default", threshold: float = 80.0) -> SaturationStatus:  # noqa: ANN001
    """:meth:`ProfileInspector.check_saturation` with the default inspector."""
    return _default.check_saturation(pool, threshold)


def get_recommendations(pool="default") -> Recommendations:  # noqa: ANN001
    """:meth:`ProfileInspector.get_recommendations` with the default inspector."""
    return _default.get_recommendations(pool)


def get_history(pool="default", *, last_s: float | None = None) -> History:  # noqa: ANN001
    """:meth:`ProfileInspector.get_history` with the default inspector."""
    return _default.get_history(pool, last_s=last_s)


def project_memory(pool="default", worker_counts: Iterable[int] = (1, 2, 4, 8, 16), *,  # noqa: ANN001
                   statistic: str = "mean") -> "pd.DataFrame":
    """:meth:`ProfileInspector.project_memory` with the default inspector."""
    return _default.project_memory(pool, worker_counts, statistic=statistic)


def compare_profiles(pool="default", capacity: int | None = None,  # noqa: ANN001
                     threads_per_worker: int | None = None, *, statistic: str = "mean") -> "pd.DataFrame":
    """:meth:`ProfileInspector.compare_profiles` with the default inspector."""
    return _default.compare_profiles(pool, capacity, threads_per_worker, statistic=statistic)


def _fixup_module_metadata() -> None:
    # Public objects show their public path (snakepit.diagnostics.PoolStats), as trio does.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith(__name__ + "."):
            try:
                obj.__module__ = __name__
            except (AttributeError, TypeError):
                pass


_fixup_module_metadata()
