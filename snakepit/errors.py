"""Exceptions raised by snakepit.

Every error subclasses :class:`SnakepitError`, so ``except snakepit.SnakepitError`` catches
them all::

    SnakepitError
    ├── ConfigError                 a PoolConfig value is wrong (names the key)
    │   └── PoolExistsError         start_pool() with a name already running
    ├── PoolNotFoundError           get_pool()/stop_pool() of an unknown name
    ├── PoolClosedError             the pool was stopped: you closed it
    ├── PoolSaturatedError          the bounded queue is full (max_queue_size)
    ├── QueueTimeoutError           no worker freed up within queue_timeout
    ├── RequestTimeoutError         the request ran longer than its timeout
    ├── RequestCancelledError       the request was cancelled
    ├── WorkerCrashedError          the worker died while serving the request
    ├── WorkerStartError            a worker could not start (bad adapter, interpreter…)
    ├── ClusterError                cluster=: scheduler unreachable, no Dask workers, no snakepit there
    ├── PayloadTooLargeError        arguments or result exceed max_message_mb
    ├── SerializationError          arguments or result could not be pickled
    └── RemoteError                 the command raised in the worker
        └── UnknownCommandError     the adapter has no such command

Context travels as attributes (``worker_id``, ``pool``, ``key``…), never only in the text.
"""
from __future__ import annotations

from typing import Any

__all__ = [
    "ClusterError",
    "ConfigError",
    "PayloadTooLargeError",
    "PoolClosedError",
    "PoolExistsError",
    "PoolNotFoundError",
    "PoolSaturatedError",
    "QueueTimeoutError",
    "RemoteError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "SerializationError",
    "SnakepitError",
    "UnknownCommandError",
    "WorkerCrashedError",
    "WorkerStartError",
]


class SnakepitError(Exception):
    """Base class of every snakepit error."""


class ConfigError(SnakepitError, ValueError):
    """A configuration value is invalid. ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class ClusterError(SnakepitError):
    """A cluster pool (``cluster=``) cannot use its Dask cluster: the scheduler is unreachable
    within ``cluster_connect_timeout`` (the message names its address), the cluster has no
    workers when ``startup_timeout`` ends, or no Dask worker's Python can run snakepit workers
    (the message names the host)."""


class PoolExistsError(ConfigError):
    """``start_pool`` was called with the name of a pool that is already running."""

    def __init__(self, name: str) -> None:
        super().__init__(
            "name",
            f"a pool named {name!r} is already running; use snakepit.get_pool({name!r}), "
            f"stop it first with snakepit.stop_pool({name!r}), or pass exist_ok=True",
        )
        self.pool = name


class PoolNotFoundError(SnakepitError, LookupError):
    """No pool of that name is running."""

    def __init__(self, name: str, known: list[str] | None = None) -> None:
        self.pool = name
        known_txt = ", ".join(repr(k) for k in known) if known else "none"
        super().__init__(f"no pool named {name!r} is running (running pools: {known_txt})")


class PoolClosedError(SnakepitError, RuntimeError):
    """The pool has been stopped; start a new one to run more work."""

    def __init__(self, name: str) -> None:
        self.pool = name
        super().__init__(f"pool {name!r} is stopped; start a new one with snakepit.start_pool()")


class PoolSaturatedError(SnakepitError):
    """Every worker is busy and the bounded queue is full."""

    def __init__(self, pool: str, queue_size: int, max_queue_size: int) -> None:
        self.pool = pool
        self.queue_size = queue_size
        self.max_queue_size = max_queue_size
        super().__init__(
            f"pool {pool!r} is saturated: all workers are busy and {queue_size} requests are "
            f"already queued (max_queue_size={max_queue_size}); add workers or raise max_queue_size"
        )


class QueueTimeoutError(SnakepitError, TimeoutError):
    """The request waited in the queue longer than ``queue_timeout``."""

    def __init__(self, pool: str, waited_s: float) -> None:
        self.pool = pool
        self.waited_s = waited_s
        super().__init__(
            f"pool {pool!r}: no worker became free within {waited_s:.3g}s (queue_timeout); "
            "add workers or raise queue_timeout"
        )


class RequestTimeoutError(SnakepitError, TimeoutError):
    """The request did not finish within its timeout; it was cancelled on the worker."""

    def __init__(self, pool: str, command: str, timeout: float, worker_id: str | None) -> None:
        self.pool = pool
        self.command = command
        self.timeout = timeout
        self.worker_id = worker_id
        super().__init__(
            f"request {command!r} on pool {pool!r} (worker {worker_id}) did not finish "
            f"within {timeout:.3g}s"
        )


class RequestCancelledError(SnakepitError):
    """The request was cancelled before it finished."""

    def __init__(self, command: str, worker_id: str | None = None, reason: str = "cancelled") -> None:
        self.command = command
        self.worker_id = worker_id
        super().__init__(f"request {command!r} was {reason}" + (f" on worker {worker_id}" if worker_id else ""))


class WorkerCrashedError(SnakepitError):
    """The worker process died while the request was in flight (or was declared unhealthy)."""

    def __init__(
        self,
        worker_id: str,
        pid: int | None,
        exit_code: int | None = None,
        reason: str = "",
    ) -> None:
        self.worker_id = worker_id
        self.pid = pid
        self.exit_code = exit_code
        how = reason or _describe_exit(exit_code)
        super().__init__(f"worker {worker_id} (pid {pid}) died: {how}")


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "connection lost"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


class SessionLostError(SnakepitError):
    """A session's worker was retired (the pool was scaled down): its state is gone.

    Raised once, on the session's next call; the call after it starts afresh on another
    worker. Sessions are kept off retiring workers when the pool can choose.
    """

    def __init__(self, session_id: str, worker_id: str | None, reason: str) -> None:
        self.session_id = session_id
        self.worker_id = worker_id
        self.reason = reason
        super().__init__(
            f"session {session_id!r} lost its worker {worker_id} ({reason}); its state is gone. "
            "The next call starts the session afresh on another worker."
        )


class WorkerStartError(SnakepitError):
    """A worker process could not be started or did not become ready."""

    def __init__(self, pool: str, message: str, *, key: str | None = None) -> None:
        self.pool = pool
        self.key = key
        super().__init__(f"pool {pool!r}: worker failed to start: {message}")


class PayloadTooLargeError(SnakepitError, ValueError):
    """A request's arguments or its result are larger than ``max_message_mb``."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"{what} is {size / 2**20:.1f} MiB, over the {limit / 2**20:.0f} MiB message limit "
            "(PoolConfig.max_message_mb); pass a path or shared storage instead, or raise the limit"
        )


class SerializationError(SnakepitError, TypeError):
    """Arguments or a result could not be pickled (cloudpickle) or unpickled."""


class RemoteError(SnakepitError):
    """The command raised an exception in the worker.

    Attributes:
        remote_type: qualified name of the remote exception type (``"builtins.ZeroDivisionError"``).
        remote_message: ``str()`` of the remote exception.
        remote_traceback: the traceback as formatted in the worker.
        exception: the original exception object when it could be unpickled, else ``None``.
        worker_id: the worker that ran the request.
    """

    def __init__(
        self,
        remote_type: str,
        remote_message: str,
        remote_traceback: str = "",
        *,
        exception: BaseException | None = None,
        worker_id: str | None = None,
        command: str | None = None,
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.exception = exception
        self.worker_id = worker_id
        self.command = command
        short = remote_type.removeprefix("builtins.")
        where = f" (worker {worker_id})" if worker_id else ""
        super().__init__(f"{short}: {remote_message}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_remote_error,
            (type(self), self.remote_type, self.remote_message, self.remote_traceback, self.worker_id, self.command),
        )


def _rebuild_remote_error(cls, remote_type, message, tb, worker_id, command):  # type: ignore[no-untyped-def]
    return cls(remote_type, message, tb, worker_id=worker_id, command=command)


class UnknownCommandError(RemoteError):
    """The worker's adapter has no command of that name."""


class RemoteTraceback(Exception):
    """Carries the worker-side traceback text; set as ``__cause__`` of a :class:`RemoteError`."""

    def __init__(self, tb: str) -> None:
        self.tb = tb

    def __str__(self) -> str:
        return "\n\nRemote traceback (from the worker):\n" + '"""\n' + self.tb.rstrip() + '\n"""'
