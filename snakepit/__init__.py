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

__version__ = "0.1.0"

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


def __getattr__(name: str):  # lazy: diagnostics pulls in pandas
    if name == "diagnostics":
        import importlib

        return importlib.import_module(".diagnostics", __name__)
    raise AttributeError(f"module 'snakepit' has no attribute {name!r}")
