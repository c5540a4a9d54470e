"""The pool's records: worker statuses, counters, and the snapshots it hands out.

:class:`WorkerInfo` and :class:`RunResult` are public (what ``list_workers`` and
``run_code`` return); :class:`WorkerRecord` is the pool's own mutable record of one worker,
which lifecycle and diagnostics read (never write) through ``Pool.worker_records()``.
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

# Worker statuses
STARTING = "starting"
AVAILABLE = "available"
BUSY = "busy"
RECYCLING = "recycling"
UNHEALTHY = "unhealthy"
STOPPED = "stopped"

#: The recycle reason of a worker retired by a scale-down (``pool.scale`` / ``pool.adapt``).
SCALED_DOWN = "scaled_down"
#: The recycle reason of a worker whose host was retired from outside (Dask's ``retire_workers``).
RETIRED = "retired"

# Every counter statistics() reports (always present, from 0).
COUNTERS = (
    "requests", "queued", "completed", "failed", "saturated", "queue_timeouts", "request_timeouts",
    "cancelled", "crashes", "unhealthy", "recycled", "workers_started", "start_failures",
)


@dataclass(frozen=True)
class WorkerInfo:
    """A snapshot of one worker, as returned by :meth:`Pool.list_workers`."""

    worker_id: str
    pid: int
    status: str
    capacity: int
    load: int
    pool: str
    profile: str
    requests_served: int
    started_at: float
    uptime_s: float
    sessions: int
    last_heartbeat: float | None
    recycle_reason: str | None = None
    host: str = ""
    """Host name of the machine the worker runs on."""
    dask_worker: str | None = None
    """The Dask worker hosting it (cluster pools), None for a local pool."""
    address: str = ""
    """Its gRPC address (``unix:/path`` locally, ``host:port`` on a cluster)."""
    pipelined: int = 0
    """Requests sent ahead to this worker that wait there behind its running ones (counted in
    the pool's queue depth, not in ``load``; see ``PoolConfig.pipeline_depth``)."""


@dataclass
class RunResult:
    """What :meth:`Pool.run_code` returns.

    Attributes:
        stdout / stderr: everything the code printed.
        result: the value of the cell's last expression (None if there was none, or it could
            not be pickled; see ``result_repr``).
        result_repr: ``repr()`` of that value, made in the worker.
        changed: names the code bound or rebound in its namespace.
        pulled: the values of the names asked for with ``pull=``.
        missing: names in ``pull=`` that did not exist.
        worker_id / pid: where it ran.
    """

    stdout: str
    stderr: str
    result: Any
    result_repr: str | None
    changed: list[str]
    pulled: dict[str, Any]
    missing: list[str]
    worker_id: str | None = None
    pid: int | None = None



class WorkerRecord:
    """The pool's record of one worker process."""

    def __init__(self, worker_id: str, capacity: int) -> None:
        self.worker_id = worker_id
        self.capacity = capacity
        self.process: Any = None  # its backends.WorkerHandle, once started
        self.conn: WorkerConnection | None = None
        self.status = STARTING
        self.load = 0
        self.in_flight: dict[int, _Call] = {}
        # Pipelined calls, in the order sent: the worker runs requests FIFO, so when one of its
        # running requests finishes, the oldest waiting one is the one that starts.
        self.waiting: collections.deque[_Call] = collections.deque()
        self.requests_served = 0
        self.started_mono = time.monotonic()
        self.started_wall = time.time()
        self.sessions: set[str] = set()
        self.functions_sent: set[bytes] = set()  # by-value function hashes sent (pool/functions.py)
        self.last_heartbeat: float | None = None
        self.missed_heartbeats = 0
        self.figures: Any = None  # the worker's own figures from its last heartbeat (lifecycle.WorkerFigures)
        self.recycle_reason: str | None = None
        self.max_requests: int | None = None  # with jitter applied
        self.ttl: float | None = None  # with jitter applied
        self.exit_code: int | None = None
        self.kill_reason = ""
        self.recycle_memory_mb: float | None = None  # measured just before a recycle kill
        self.gone = False

    def attach(self, handle: Any) -> None:
        """The backend started this worker: remember its handle."""
        self.process = handle
        self.started_mono = handle.started_mono or time.monotonic()
        self.started_wall = time.time()

    @property
    def host(self) -> str:
        return getattr(self.process, "host", "") or ""

    @property
    def dask_worker(self) -> str | None:
        return getattr(self.process, "dask_worker", None)

    @property
    def is_local(self) -> bool:
        return bool(getattr(self.process, "is_local", True))

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    @property
    def accepting(self) -> bool:
        return self.status in (AVAILABLE, BUSY) and not self.gone

    def refresh_status(self) -> None:
        if self.status in (AVAILABLE, BUSY):
            self.status = BUSY if self.load >= self.capacity else AVAILABLE




_Worker = WorkerRecord  # the name the pool's modules use
