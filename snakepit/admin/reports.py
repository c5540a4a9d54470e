"""What the admin endpoint answers: the pools of this process as JSON-ready data.

These run in the process that owns the pools (the admin service, ``snakepit demo``) and read
them through their public surface and :mod:`snakepit.diagnostics`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any, Iterable, Mapping

log = logging.getLogger("snakepit.admin")


def jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value`` (NaN/inf become None; unknown objects become str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return jsonable(to_dict() if callable(to_dict) else dataclasses.asdict(value))
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return jsonable(item())
        except Exception:
            pass
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), allow_nan=False)


# ---------------------------------------------------------------------------- reports
_CONFIG_KEYS = (
    "profile", "pool_size", "threads_per_worker", "adapter", "worker_ttl", "worker_max_requests",
    "memory_threshold_mb", "recycle_jitter", "recycle_grace", "max_queue_size", "queue_timeout",
    "request_timeout", "startup_timeout", "heartbeat_interval", "heartbeat_max_missed",
    "max_message_mb", "history_interval", "history_size", "python", "cwd",
)


def pool_config_dict(pool: Any) -> dict[str, Any]:
    """The pool's settings that are safe to show (``env`` values and adapter options are left out).

    Example::

        >>> pool_config_dict(snakepit.get_pool("default"))["pool_size"]   # doctest: +SKIP
        2
    """
    cfg = pool.config
    out = {key: getattr(cfg, key, None) for key in _CONFIG_KEYS}
    out["capacity_per_worker"] = cfg.threads_per_worker if cfg.profile == "thread" else 1
    out["env_keys"] = sorted(getattr(cfg, "env", {}) or {})
    out["backend"] = getattr(pool, "backend", "local")
    out["target_size"] = getattr(pool, "target_size", cfg.pool_size)
    adaptive = getattr(pool, "adaptive", None)
    out["adaptive"] = adaptive.describe() if adaptive is not None else None
    return out


def _section(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return jsonable(fn(*args, **kwargs))
    except Exception as exc:  # one failing report must not hide the others
        log.debug("diagnostics call %s failed", getattr(fn, "__name__", fn), exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


_DIAGNOSTICS_API = (
    "get_pool_stats", "get_capacity_stats", "get_memory_stats", "get_comprehensive_report",
    "check_saturation", "get_recommendations", "get_history", "project_memory", "utilization_level",
)


def _diagnostics() -> Any:
    """:mod:`snakepit.diagnostics` (imported on first use: it pulls in pandas)."""
    from .. import diagnostics  # noqa: PLC0415

    missing = [name for name in _DIAGNOSTICS_API if not hasattr(diagnostics, name)]
    if missing:
        raise ImportError(f"snakepit.diagnostics lacks {', '.join(missing)}")
    return diagnostics


def collect_inspection(pools: Iterable[Any], *, detailed: bool = False,
                       recommendations: bool = False) -> dict[str, Any]:
    """The inspector's report of ``pools``, as JSON-ready data keyed by pool name.

    Each value is the pool's ``PoolStats.to_dict()`` (``pool_name, profile, worker_count,
    capacity_total, capacity_used, capacity_available, utilization_percent, workers``) plus:
    ``utilization_level`` (CRITICAL/HIGH/GOOD/LOW), ``config`` (the pool's settings),
    ``statistics`` (counters and queue depth), ``capacity``, ``memory`` and ``saturation``
    reports, ``recommendations`` (when asked; a list of dicts with ``severity, rule, message,
    evidence, suggestion, text``) and ``manager`` (pid of the process holding the pool).
    This runs in the process that owns the pools (the admin service, ``snakepit demo``).

    Example::

        >>> report = collect_inspection(snakepit.list_pools())     # doctest: +SKIP
        >>> report["default"]["utilization_percent"]
        0.0
    """
    diag = _diagnostics()
    out: dict[str, Any] = {}
    for pool in pools:
        stats = _section(diag.get_pool_stats, pool)
        entry: dict[str, Any] = dict(stats) if isinstance(stats, dict) else {"error": str(stats)}
        entry.setdefault("pool_name", pool.name)
        entry.setdefault("profile", pool.profile.name)
        pct = entry.get("utilization_percent")
        if isinstance(pct, (int, float)):
            entry["utilization_level"] = _section(diag.utilization_level, pct)
        entry["config"] = jsonable(pool_config_dict(pool))
        entry["statistics"] = _section(pool.statistics)
        entry["capacity"] = _section(diag.get_capacity_stats, pool)
        entry["memory"] = _section(diag.get_memory_stats, pool)
        entry["saturation"] = _section(diag.check_saturation, pool)
        if detailed:
            entry["worker_info"] = _section(lambda: [dataclasses.asdict(w) for w in pool.list_workers()])
        if recommendations:
            entry["recommendations"] = _section(_recommendations, diag, pool)
        entry["manager"] = {"pid": os.getpid()}
        out[pool.name] = entry
    return out


def _recommendations(diag: Any, pool: Any) -> list[dict[str, Any]]:
    recs = diag.get_recommendations(pool)
    items = []
    for rec in recs:
        data = jsonable(rec)
        if not isinstance(data, dict):
            data = {"message": str(rec)}
        data["text"] = str(rec)
        items.append(data)
    return items


_REPORTS = {
    "pool_stats": "get_pool_stats",
    "capacity": "get_capacity_stats",
    "memory": "get_memory_stats",
    "saturation": "check_saturation",
    "recommendations": "get_recommendations",
    "history": "get_history",
    "projection": "project_memory",
}


def run_report(kind: str, pool: Any | None, params: Mapping[str, Any]) -> Any:
    """One diagnostics report by name, as JSON-ready data (see ``ReportRequest`` in admin.proto)."""
    diag = _diagnostics()
    if kind == "comprehensive":
        return jsonable(diag.get_comprehensive_report())
    if kind not in _REPORTS:
        raise ValueError(f"unknown report {kind!r}; one of {sorted(_REPORTS) + ['comprehensive']}")
    if pool is None:
        raise ValueError(f"report {kind!r} needs a pool")
    fn = getattr(diag, _REPORTS[kind])
    if kind == "recommendations":
        return _recommendations(diag, pool)
    return jsonable(fn(pool, **dict(params)))


def pool_summaries(pools: Iterable[Any]) -> list[dict[str, Any]]:
    """One line per pool for ``Hello``: name, profile, workers, capacity, load, queue_depth."""
    out = []
    for pool in pools:
        try:
            workers = pool.list_workers()
        except Exception:
            workers = []
        out.append({
            "name": pool.name,
            "profile": pool.profile.name,
            "workers": len(workers),
            "capacity": sum(w.capacity for w in workers),
            "load": sum(w.load for w in workers),
            "queue_depth": pool.queue_depth(),
        })
    return out


def pool_listing(pools: Iterable[Any]) -> list[dict[str, Any]]:
    """The pools for ``ListPools``: name, profile, config, statistics and workers of each."""
    return [{
        "name": pool.name,
        "profile": pool.profile.name,
        "config": pool_config_dict(pool),
        "statistics": _section(pool.statistics),
        "workers": [dataclasses.asdict(w) for w in pool.list_workers()],
    } for pool in pools]
