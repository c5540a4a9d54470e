"""A thin, read-only bridge to :mod:`snakepit.diagnostics` and the pool's public API.

Everything the notebook layer shows comes through here, so the notebook never re-implements
a diagnostic (thresholds, memory accounting, recommendations): it only calls the inspector
and turns what it returns into something to draw. A missing inspector function is reported
by name (:class:`MissingDiagnostic`) instead of being papered over.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import snakepit

__all__ = [
    "LEVEL_COLOURS",
    "LEVEL_ICONS",
    "MissingDiagnostic",
    "PoolSnapshot",
    "diag",
    "level_colour",
    "level_of",
    "resolve_pools",
    "snapshot",
]

#: Colour per utilization level (the level itself comes from ``snakepit.diagnostics.utilization_level``).
LEVEL_COLOURS: dict[str, str] = {
    "CRITICAL": "#d62728",
    "HIGH": "#e6a100",
    "GOOD": "#2ca02c",
    "LOW": "#8c8c8c",
}
#: The seed's badges, for plain-text output.
LEVEL_ICONS: dict[str, str] = {"CRITICAL": "🔴", "HIGH": "🟡", "GOOD": "🟢", "LOW": "⚪"}
SEVERITY_COLOURS: dict[str, str] = {"critical": "#d62728", "warning": "#e6a100", "info": "#1f77b4"}


class MissingDiagnostic(RuntimeError):
    """``snakepit.diagnostics`` does not (yet) provide a function the notebook needs."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        super().__init__(f"snakepit.diagnostics.{name} is not available{': ' + detail if detail else ''}")


def diag(name: str) -> Callable[..., Any]:
    """The diagnostics function ``name`` (module-level, or a ``ProfileInspector`` method).

    Example::

        get_pool_stats = diag("get_pool_stats")
        get_pool_stats(pool).utilization_percent
    """
    try:
        module = importlib.import_module("snakepit.diagnostics")
    except Exception as exc:  # noqa: BLE001 - reported by name
        raise MissingDiagnostic(name, f"cannot import snakepit.diagnostics ({exc})") from exc
    fn = getattr(module, name, None)
    if fn is None:
        inspector = getattr(module, "ProfileInspector", None)
        fn = getattr(inspector, name, None) if inspector is not None else None
    if fn is None:
        raise MissingDiagnostic(name)
    return fn


def level_of(percent: float | None) -> str:
    """Utilization level name (``CRITICAL``/``HIGH``/``GOOD``/``LOW``) from the inspector's rule.

    >>> level_of(95.0), level_of(70), level_of(None)
    ('CRITICAL', 'GOOD', 'UNKNOWN')
    """
    if percent is None:
        return "UNKNOWN"
    try:
        level = diag("utilization_level")(float(percent))
    except MissingDiagnostic:
        return "UNKNOWN"
    return str(getattr(level, "value", level)).upper()


def level_colour(level: str) -> str:
    """CSS colour of a level name (grey for anything unknown)."""
    return LEVEL_COLOURS.get(level.upper(), "#8c8c8c")


def resolve_pools(names: list[str] | tuple[str, ...] | None = None,
                  pools: list[Any] | None = None) -> list[snakepit.Pool]:
    """The running pools to show: the given objects or names, else every running pool."""
    if pools is not None:
        return [p for p in pools if not p.closed]
    if names:
        out = []
        for name in names:
            try:
                out.append(snakepit.get_pool(name))
            except snakepit.PoolNotFoundError:
                pass
        return out
    return list(snakepit.list_pools())


@dataclass
class PoolSnapshot:
    """Everything the inspector says about one pool at one moment (plus what failed)."""

    name: str
    profile: str
    taken_at: float
    statistics: dict[str, Any]
    workers: list[Any]
    pool_stats: Any = None
    capacity: Any = None
    memory: Any = None
    memory_by_worker: dict[str, float] = field(default_factory=dict)
    recommendations: list[Any] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def utilization_percent(self) -> float | None:
        for src in (self.capacity, self.pool_stats):
            value = getattr(src, "utilization_percent", None)
            if value is not None:
                return float(value)
        total = self.statistics.get("capacity_total") or 0
        return 100.0 * self.statistics.get("capacity_used", 0) / total if total else 0.0

    @property
    def level(self) -> str:
        return level_of(self.utilization_percent)

    @property
    def capacity_total(self) -> int:
        return int(getattr(self.capacity, "total_capacity", None) or self.statistics.get("capacity_total", 0))

    @property
    def capacity_used(self) -> int:
        value = getattr(self.capacity, "used_capacity", None)
        return int(value if value is not None else self.statistics.get("capacity_used", 0))

    @property
    def total_memory_mb(self) -> float | None:
        value = getattr(self.memory, "total_memory_mb", None)
        return None if value is None else float(value)

    def worker_rows(self) -> list[dict[str, Any]]:
        """One dict per worker: the columns of the worker table."""
        rows = []
        by_id = {getattr(w, "worker_id", None): w for w in getattr(self.pool_stats, "workers", ()) or ()}
        for w in self.workers:
            stats = by_id.get(w.worker_id)
            memory = self.memory_by_worker.get(w.worker_id)
            if memory is None and stats is not None:
                memory = getattr(stats, "memory_mb", None)
            rows.append({
                "worker_id": w.worker_id,
                "pid": w.pid,
                "host": getattr(w, "host", ""),
                "dask_worker": getattr(w, "dask_worker", None),
                "status": w.status,
                "load": w.load,
                "capacity": w.capacity,
                "requests": w.requests_served,
                "memory_mb": memory,
                "uptime_s": w.uptime_s,
            })
        return rows


def _try(snap: PoolSnapshot, key: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - shown next to the figure that is missing
        snap.errors[key] = f"{type(exc).__name__}: {exc}"
        return None


def snapshot(pool: snakepit.Pool, *, recommendations: bool = True, capacity: bool = True,
             memory_max_age_s: float | None = None) -> PoolSnapshot:
    """Collect one pool's figures from the inspector (never raises; failures land in ``errors``).

    ``memory_max_age_s`` lets memory figures come from the pool's history sampler when its
    latest sample is that fresh (load and status are always read now): the live panel uses
    it so that refreshing often does not rescan every worker process each time.
    """
    age = {} if memory_max_age_s is None else {"max_age_s": memory_max_age_s}
    snap = PoolSnapshot(
        name=pool.name, profile=str(pool.config.profile), taken_at=time.time(),
        statistics={}, workers=[],
    )
    snap.statistics = _try(snap, "statistics", pool.statistics) or {}
    snap.workers = _try(snap, "workers", pool.list_workers) or []
    snap.pool_stats = _try(snap, "pool_stats", lambda: diag("get_pool_stats")(pool, **age))
    if capacity:
        snap.capacity = _try(snap, "capacity", lambda: diag("get_capacity_stats")(pool))
    snap.memory = _try(snap, "memory", lambda: diag("get_memory_stats")(pool, **age))
    if snap.memory is not None:
        frame = _try(snap, "memory_frame", snap.memory.to_frame)
        if frame is not None and "worker_id" in frame and "memory_mb" in frame:
            snap.memory_by_worker = {str(k): float(v) for k, v in zip(frame["worker_id"], frame["memory_mb"])}
    if recommendations:
        recs = _try(snap, "recommendations", lambda: diag("get_recommendations")(pool))
        snap.recommendations = list(recs) if recs is not None else []
    return snap
