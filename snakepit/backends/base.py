"""The seam between a pool and the place its workers run.

A :class:`Pool` never starts, finds or stops a worker process itself: it asks its
:class:`Backend` to start workers (named by the pool), and gets back a
:class:`WorkerHandle` for each ready one — its pid, host and gRPC address, a way to open the
:class:`~snakepit.connection.WorkerConnection`, a callback when it exits, and the stop
ladder. Two implementations:

* :class:`snakepit.backends.local.LocalBackend` (``pool.backend == "local"``): workers are
  children of this process, forked from a warmed zygote or spawned, on owner-only Unix
  sockets;
* the Dask backend (``cluster=``): workers are children of Dask worker processes on the
  cluster's hosts, reached over authenticated gRPC on TCP.

Writing a backend: subclass both classes below; ``start`` blocks until each requested
worker is ready or has failed, and must leave nothing running for a worker it reports as
failed (or when it is interrupted).
"""
from __future__ import annotations

import abc
import signal
from dataclasses import dataclass
from typing import Callable, Sequence

from ..connection import WorkerConnection
from ..processes import stop_together
from ..protocol import worker_pb2 as pb


@dataclass(frozen=True)
class StartFailure:
    """A worker that could not start: which one, and the worker's own words why."""

    worker_id: str
    error: str


class WorkerHandle(abc.ABC):
    """One started, ready worker process, wherever it runs."""

    worker_id: str
    pid: int
    host: str
    """Host name of the machine the worker runs on."""
    address: str
    """Its gRPC target (``unix:/path`` locally, ``host:port`` on a cluster)."""
    dask_worker: str | None = None
    """The Dask worker hosting it (its address), or None for a local worker."""
    is_local: bool = True
    """True when the worker runs on this host (its memory can be read here with psutil)."""
    started_mono: float = 0.0

    @abc.abstractmethod
    def connect(self, *, max_message_bytes: int, on_reply: Callable[[pb.Reply], None],
                on_broken: Callable[[BaseException | None], None]) -> WorkerConnection:
        """Open the long-lived connection the pool dispatches on."""

    @abc.abstractmethod
    def add_exit_callback(self, fn: Callable[[int], None]) -> None:
        """Call ``fn(exit_code)`` once the worker has exited (at once if it already has)."""

    def add_drain_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once if the place hosting this worker starts retiring it (the pool
        then routes nothing new to it and starts a replacement elsewhere). Local workers are
        never retired from outside: the default does nothing."""

    @abc.abstractmethod
    def request_exit(self) -> None:
        """Ask the worker to exit now (it finishes nothing more)."""

    @abc.abstractmethod
    def signal(self, sig: int) -> None:
        """Send a signal to the worker process."""

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the exit; its exit code, or None if still running after ``timeout``."""

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the process still runs."""

    def kill(self) -> None:
        """Kill the worker at once (SIGKILL)."""
        self.signal(signal.SIGKILL)

    def stop(self, grace: float = 2.0) -> int | None:
        """Stop one worker: see :meth:`Backend.stop_workers`."""
        return stop_together([self], grace).get(self)


class Backend(abc.ABC):
    """Where and how a pool's workers start and are reached (one instance per pool)."""

    name: str = "?"
    """What ``pool.backend`` says: ``"local"`` or ``"dask"``."""

    @abc.abstractmethod
    def start_workers(self, worker_ids: Sequence[str], timeout: float) -> list[WorkerHandle | StartFailure]:
        """Start one worker per id and wait until each is ready or failed (``timeout`` seconds).

        Returns, in the order asked, a handle or a :class:`StartFailure`. Interrupted
        (KeyboardInterrupt), it leaves nothing running.
        """

    def stop_workers(self, handles: Sequence[WorkerHandle], grace: float) -> None:
        """Stop workers together: ask them to exit, then SIGTERM, then SIGKILL."""
        stop_together(handles, grace)

    def close(self) -> None:
        """Release what the backend holds (after its pool stopped every worker)."""

    def describe(self) -> dict[str, object]:
        """A JSON-ready description for diagnostics (e.g. the cluster's address)."""
        return {"backend": self.name}
