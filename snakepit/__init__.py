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
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the submodule that defines it. Nothing is imported until a name is first
# used (PEP 562): a worker process (``python -m snakepit.worker``, and the forkserver zygote
# that forks workers) imports the ``snakepit`` package too, and must not pay for the manager
# side (pool, gRPC client, launcher, config) it never uses (issue 7).
_LAZY = {
    "Adapter": "worker.adapter",
    "Cancelled": "worker.adapter",
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
    "start_pool": "api",
    "stop_pool": "api",
}
# Submodules reachable as attributes without an explicit import (``snakepit.telemetry``,
# ``snakepit.diagnostics`` — the latter pulls in pandas, so it was always lazy).
_SUBMODULES = frozenset({
    "admin", "api", "cli", "config", "connection", "diagnostics", "errors", "launcher", "lifecycle",
    "pool", "profiles", "protocol", "runtime", "signals", "telemetry", "worker",
})

__all__ = [
    "Adapter",
    "Cancelled",
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
    from .api import get_pool, list_pools, shutdown, start_pool, stop_pool
    from .config import PoolConfig
    from .errors import (
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
