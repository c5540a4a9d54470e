"""snakepit: a pool of Python worker processes, driven from your program or Jupyter kernel.

Quick start::

    import snakepit

    pool = snakepit.start_pool("default", profile="process", pool_size=4)
    pool.execute("ping", {"x": 1})
    fut = pool.submit(sum, [1, 2, 3])            # a concurrent.futures.Future
    print(fut.result())
    snakepit.shutdown()

See docs/ for the architecture, the lifecycle and diagnostics.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it. Nothing is imported until a name is first
# used (PEP 562): a worker process (``python -m snakepit.worker``, and the forkserver zygote
# that forks workers) imports the ``snakepit`` package too, and must not pay for the manager
# side (pool, gRPC client, launcher, config) it never uses (issue 7).
_LAZY = {
    "Adapter": "worker.adapter",
    "Adaptive": "adaptive",
    "Cancelled": "worker.adapter",
    "ClusterError": "errors",
    "ConfigError": "errors",
    "PayloadTooLargeError": "errors",
    "Pool": "pool",
    "PoolClosedError": "errors",
    "PoolConfig": "config",
    "PoolExistsError": "errors",
    "PoolNotFoundError": "errors",
    "PoolSaturatedError": "errors",
    "QueueTimeoutError": "errors",
    "RemoteError": "errors",
    "RequestCancelledError": "errors",
    "RequestContext": "worker.adapter",
    "RequestTimeoutError": "errors",
    "RunResult": "pool",
    "SerializationError": "errors",
    "Session": "pool",
    "SessionLostError": "errors",
    "SnakepitError": "errors",
    "SnakepitFuture": "pool",
    "UnknownCommandError": "errors",
    "WorkerCrashedError": "errors",
    "WorkerInfo": "pool",
    "WorkerStartError": "errors",
    "command": "worker.adapter",
    "current_request": "worker.adapter",
    "get_pool": "api",
    "list_pools": "api",
    "shutdown": "api",
    "stop_pool": "api",
}
# Submodules reachable as attributes without an explicit import (``snakepit.telemetry``,
# ``snakepit.diagnostics`` — the latter pulls in pandas, so it was always lazy).
_SUBMODULES = frozenset({
    "adaptive", "admin", "api", "backends", "cli", "config", "connection", "diagnostics", "errors", "launcher", "lifecycle",
    "pool", "profiles", "protocol", "runtime", "signals", "telemetry", "worker",
})

__all__ = [
    "Adapter",
    "Adaptive",
    "Cancelled",
    "ClusterError",
    "ConfigError",
    "PayloadTooLargeError",
    "Pool",
    "PoolClosedError",
    "PoolConfig",
    "PoolExistsError",
    "PoolNotFoundError",
    "PoolSaturatedError",
    "QueueTimeoutError",
    "RemoteError",
    "RequestCancelledError",
    "RequestContext",
    "RequestTimeoutError",
    "RunResult",
    "SerializationError",
    "Session",
    "SessionLostError",
    "SnakepitError",
    "SnakepitFuture",
    "UnknownCommandError",
    "WorkerCrashedError",
    "WorkerInfo",
    "WorkerStartError",
    "command",
    "current_request",
    "get_pool",
    "list_pools",
    "shutdown",
    "start_pool",
    "stop_pool",
    "telemetry",
]


def start_pool(name: str = "default", *, config: PoolConfig | None = None, exist_ok: bool = False,
               **options: Any) -> Pool:
    """Start a named pool of worker processes and return it once every worker is ready.

    Args:
        name: the pool's name (ignored when ``config`` is given).
        config: a ready :class:`PoolConfig`; otherwise ``options`` are its settings.
        exist_ok: return the running pool of that name instead of raising.
        **options: any :class:`PoolConfig` setting, e.g. ``profile="thread"``, ``pool_size=2``,
            ``threads_per_worker=8``, ``worker_ttl=3600``.

    Example::

        pool = snakepit.start_pool("hpc", profile="thread", pool_size=2, threads_per_worker=8)

    Raises:
        ConfigError: a setting is wrong (``err.key`` names it), including an adapter that
            cannot be loaded or is not thread-safe for the thread profile.
        PoolExistsError: a pool of that name runs already (and ``exist_ok`` is False).
        WorkerStartError: workers did not become ready within ``startup_timeout``.
    """
    # snakepit.api.start_pool does the work. The first call in a process also imports the
    # manager side (gRPC, protobuf: ≈ 0.1 s); the forkserver zygote is started first, so that
    # its own start overlaps with that import (issue 7).
    release = None
    first = "snakepit.pool" not in sys.modules
    if first:
        release = _prestart_zygote(name, config, options)
    try:
        if first:
            _import_manager(config, options)
        from . import api

        api.add_listener("admin", _admin_listener)
        return api.start_pool(name, config=config, exist_ok=exist_ok, **options)
    finally:
        if release is not None:
            release()


def _admin_listener(event: str, pool: Any) -> None:
    """The registry's listener that publishes this process's admin endpoint (snakepit.admin).

    The registry (snakepit.api) never imports the endpoint: this edge wires it in. It is imported
    at the first event, after the workers are ready (by then _import_manager has imported it)."""
    from .admin import on_pool_event

    on_pool_event(event, pool)


def _prestart_zygote(name: str, config: Any, options: dict):  # -> Callable[[], None] | None
    """Start the zygote this pool will use, before importing anything heavy (not even
    ``snakepit.config``: dataclasses and inspect are ≈ 15 ms). The zygote is started with the
    pool's environment but for the native thread limits, which are not part of its identity
    and which each worker gets from its pool anyway."""
    try:
        from .launcher import apply_preload, default_launcher, worker_pythonpath
        from .profiles.base import BASE_ENV

        settings = options if config is None else {
            "python": config.python, "env": config.env, "start_method": config.start_method,
            "preload": config.preload}
        python = settings.get("python") or sys.executable
        env = {**os.environ, **BASE_ENV, **dict(settings.get("env") or {})}
        env["PYTHONPATH"] = worker_pythonpath(env.get("PYTHONPATH"))
        preload = settings.get("preload") or ()
        apply_preload(env, [m.strip() for m in preload] if isinstance(preload, (list, tuple)) else ())
        return default_launcher().prestart(python, env, settings.get("start_method"))
    except Exception:  # noqa: BLE001 - an optimisation only: start_pool reports bad settings
        return None


def _import_manager(config: Any, options: dict) -> None:
    """Import the manager side, and what start_pool imports only after the workers are ready
    (the admin endpoint, the history sampler), while the zygote starts (≈ 75 ms in all).

    Ctrl-C is held off meanwhile (the notebook's stop button lands a moment later): an
    interrupt inside importlib's own bookkeeping can leave a module lock held, and every
    later import of that module on another thread would wait for it forever."""
    from .signals import signals_blocked

    later = [".admin"]
    interval = config.history_interval if config is not None else options.get("history_interval", 1.0)
    if interval:
        later.append(".diagnostics.history")
    with signals_blocked():
        importlib.import_module(".api", __name__)
        for module in later:
            try:
                importlib.import_module(module, __name__)
            except Exception:  # noqa: BLE001 - imported (and reported) again where it is used
                pass


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'snakepit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from . import telemetry
    from .api import get_pool, list_pools, shutdown, stop_pool
    from .config import PoolConfig
    from .errors import (
        ClusterError,
        ConfigError,
        PayloadTooLargeError,
        PoolClosedError,
        PoolExistsError,
        PoolNotFoundError,
        PoolSaturatedError,
        QueueTimeoutError,
        RemoteError,
        RequestCancelledError,
        RequestTimeoutError,
        SerializationError,
        SnakepitError,
        UnknownCommandError,
        WorkerCrashedError,
        WorkerStartError,
    )
    from .pool import Pool, RunResult, Session, SnakepitFuture, WorkerInfo
    from .worker.adapter import Adapter, Cancelled, RequestContext, command, current_request
