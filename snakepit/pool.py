"""The pool: dispatch, bounded queue, sessions, worker bookkeeping.

Data flow::

    caller thread ──submit──► Pool._dispatch ──(lock)──► least-loaded worker with a free slot
                                   │ none free                      │
                                   ▼                                ▼
                             bounded FIFO queue ◄── slot freed ── WorkerConnection (Dispatch stream)
                                   │                                │ replies (reader thread)
                                   ▼                                ▼
                            queue_timeout timer            Future / stream queue of the call

One lock guards the pool's state; sending a request and completing a future happen outside
it. A worker is used only once it reported ready; a worker that dies is removed at once,
its in-flight requests fail with :class:`WorkerCrashedError`, and a replacement starts.
"""
from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import logging
import math
import os
import pickle
import queue
import random
import tempfile
import threading
import time
import weakref
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from . import runtime, telemetry
from .signals import start_thread
from .config import PoolConfig
from .connection import WorkerConnection
from .errors import (
    ConfigError,
    PoolClosedError,
    PoolSaturatedError,
    QueueTimeoutError,
    RequestCancelledError,
    RequestTimeoutError,
    SerializationError,
    WorkerCrashedError,
    WorkerStartError,
)
from .launcher import Launcher, WorkerProcess, apply_preload, default_launcher, worker_pythonpath
from .lifecycle import LifecycleMonitor, _rss_mb
from .profiles import get_profile
from .protocol import codec
from .protocol import worker_pb2 as pb

log = logging.getLogger("snakepit.pool")

__all__ = ["Pool", "Session", "WorkerInfo", "RunResult", "SnakepitFuture"]

_DEFAULT = object()  # "use the pool's default" (None means "no limit")
STREAM_END = object()

# Worker statuses
STARTING = "starting"
AVAILABLE = "available"
BUSY = "busy"
RECYCLING = "recycling"
UNHEALTHY = "unhealthy"
STOPPED = "stopped"

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


class SnakepitFuture(Future):
    """A :class:`concurrent.futures.Future` whose ``cancel()`` also stops running work.

    A queued request is simply dropped. A running one is cancelled on its worker (the
    cooperative flag, then an interrupt; see docs/lifecycle.md) and the future reports
    cancelled at once; the worker slot frees when the worker acknowledges.
    """

    _call: "_Call | None" = None

    def cancel(self) -> bool:
        while True:
            with self._condition:
                if self._state == RUNNING:
                    self._state = CANCELLED_AND_NOTIFIED
                    for waiter in self._waiters:
                        waiter.add_cancelled(self)
                    self._condition.notify_all()
                    break
            # Not running: the standard cancel (outside our condition: the pool lock is
            # taken before a future's condition, never after).
            if super().cancel():
                if self._call is not None:
                    self._call.pool_ref_cancel_queued()
                return True
            if self._state != RUNNING:
                return False
        call = self._call
        if call is not None:
            call.request_remote_cancel("cancelled by the caller")
        self._invoke_callbacks()
        return True


class _Call:
    """One request's journey through the pool."""

    __slots__ = (
        "request_id", "command", "payload", "session", "future", "chunks", "worker",
        "queued_at", "started_at", "deadline", "timeout", "stream", "pool_ref", "done",
        "queue_timer", "request_timer", "cancel_sent", "key", "waiting", "n_items",
    )

    def __init__(self, pool: "Pool", request_id: int, command: str, payload: bytes,
                 session: "Session | None", stream: bool, timeout: float | None) -> None:
        self.request_id = request_id
        self.command = command
        self.payload = payload
        self.session = session
        self.stream = stream
        self.timeout = timeout
        self.future: SnakepitFuture | None = None if stream else SnakepitFuture()
        if self.future is not None:
            self.future._call = self
        self.chunks: queue.SimpleQueue | None = queue.SimpleQueue() if stream else None
        self.worker: _Worker | None = None
        self.queued_at = time.monotonic()
        self.started_at = 0.0
        self.deadline: float | None = None
        self.pool_ref = weakref.ref(pool)
        self.done = False
        self.queue_timer: _TimerHandle | None = None
        self.request_timer: _TimerHandle | None = None
        self.cancel_sent = False
        self.key: Any = command  # what the pool learns durations by (see Pool._pipeline_limit)
        self.waiting = False  # pipelined: sent to its worker, waiting there behind running ones
        self.n_items = 1  # calls it stands for (a map chunk's length): durations are learnt per item

    def pool_ref_cancel_queued(self) -> None:
        pool = self.pool_ref()
        if pool is not None:
            pool._drop_queued(self)

    def request_remote_cancel(self, reason: str) -> None:
        pool = self.pool_ref()
        if pool is not None:
            pool._cancel_running(self, reason)

    def to_request(self) -> pb.Request:
        return pb.Request(
            request_id=self.request_id,
            command=self.command,
            payload=self.payload,
            session_id=self.session.session_id if self.session else "",
            timeout_s=(max(0.0, self.deadline - time.monotonic()) if self.deadline
                       else (self.timeout or 0.0)),
            stream=self.stream,
        )


class _Worker:
    """The pool's record of one worker process."""

    def __init__(self, worker_id: str, capacity: int, socket_path: str) -> None:
        self.worker_id = worker_id
        self.capacity = capacity
        self.socket_path = socket_path
        self.process: WorkerProcess | None = None
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
        self.last_heartbeat: float | None = None
        self.missed_heartbeats = 0
        self.figures: Any = None  # the worker's own figures from its last heartbeat (lifecycle.WorkerFigures)
        self.recycle_reason: str | None = None
        self.max_requests: int | None = None  # with jitter applied
        self.ttl: float | None = None  # with jitter applied
        self.exit_code: int | None = None
        self.kill_reason = ""
        self.gone = False

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else -1

    @property
    def accepting(self) -> bool:
        return self.status in (AVAILABLE, BUSY) and not self.gone

    def refresh_status(self) -> None:
        if self.status in (AVAILABLE, BUSY):
            self.status = BUSY if self.load >= self.capacity else AVAILABLE


class _TimerHandle:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Timer:
    """One thread per pool running callbacks at deadlines (queue/request timeouts, retries)."""

    def __init__(self, name: str) -> None:
        self._heap: list[tuple[float, int, _TimerHandle, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"snakepit-{name}-timer", daemon=True)
        start_thread(self._thread)

    def call_later(self, delay: float, fn: Callable[[], None]) -> _TimerHandle:
        handle = _TimerHandle()
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._seq), handle, fn))
            self._cond.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
                _, _, handle, fn = heapq.heappop(self._heap)
            if not handle.cancelled:
                try:
                    fn()
                except Exception:
                    log.exception("timer callback failed")

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)


class Pool:
    """A pool of worker processes. Create it with :func:`snakepit.start_pool`.

    Example::

        pool = snakepit.start_pool("default", profile="process", pool_size=4)
        pool.execute("ping", {"x": 1})
        fut = pool.submit(pow, 2, 10)        # concurrent.futures.Future
        list(pool.map(str.upper, ["a", "b"]))
        with pool.session("s1") as s:         # same worker while it lives
            s.run_code("x = 41")
            s.run_code("x + 1").result        # 42
        snakepit.stop_pool("default")
    """

    def __init__(self, config: PoolConfig, *, launcher: Launcher | None = None) -> None:
        self.config = config
        self.name = config.name
        self.profile = get_profile(config.profile)
        self._launcher = launcher or default_launcher()
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._queue: collections.deque[_Call] = collections.deque()
        self._request_ids = itertools.count(1)
        self._worker_seq = itertools.count(1)
        self._rr = 0
        self._closed = False
        self._stopping_done = threading.Event()
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._timer = _Timer(config.name)
        self._capacity = self.profile.capacity(config)
        self._sessions: dict[str, Session] = {}
        # Pipelining: calls waiting in workers, and the learnt worker-side duration of each
        # kind of call (an exponential moving average, µs, with its sample count).
        self._pipelined = 0
        self._durations: dict[Any, list[float]] = {}
        self._replacements_pending = 0
        self._start_failures = 0
        self._last_start_error: str | None = None
        self._starter_threads: set[threading.Thread] = set()
        # Counters and recent history for diagnostics (read-only for them).
        self.counters: dict[str, int] = collections.defaultdict(int, dict.fromkeys(COUNTERS, 0))
        self.recent_latencies_us: collections.deque[int] = collections.deque(maxlen=4096)
        self.recycle_history: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.crash_history: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.saturation_history: collections.deque[float] = collections.deque(maxlen=1000)
        self._options_file = self._write_adapter_options()
        self._env = self.profile.environment(config, dict(os.environ))
        self._env["PYTHONPATH"] = worker_pythonpath(self._env.get("PYTHONPATH"))
        apply_preload(self._env, config.preload)
        self.lifecycle: Any = None
        self.history: Any = None
        try:
            self._start_initial_workers()
            self.lifecycle = LifecycleMonitor(self)
            self.lifecycle.start()
            if config.history_interval:
                from .diagnostics.history import HistorySampler  # noqa: PLC0415 - keeps pandas out of import

                self.history = HistorySampler(self)
                self.history.start()
        except BaseException:  # includes Ctrl-C during start-up: leave nothing running
            self._teardown(grace=0.5)
            raise

    # ------------------------------------------------------------------ start-up
    def _write_adapter_options(self) -> str:
        if not self.config.adapter_options:
            return ""
        try:
            data = pickle.dumps(dict(self.config.adapter_options))
        except Exception as exc:
            raise ConfigError("adapter_options", f"must be picklable: {exc}") from exc
        fd, path = tempfile.mkstemp(prefix="opts-", dir=runtime.process_dir())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path

    def _new_worker(self) -> _Worker:
        seq = next(self._worker_seq)
        worker = _Worker(f"{self.name}-w{seq}", self._capacity, runtime.new_socket_path())
        cfg = self.config
        if cfg.worker_max_requests:
            spread = int(cfg.worker_max_requests * cfg.recycle_jitter)
            worker.max_requests = cfg.worker_max_requests + (random.randint(0, spread) if spread else 0)
        if cfg.worker_ttl:
            worker.ttl = cfg.worker_ttl * (1.0 + random.uniform(0, cfg.recycle_jitter))
        return worker

    def _launch(self, worker: _Worker) -> None:
        cfg = self.config
        argv = [
            cfg.python, "-m", "snakepit.worker",
            "--socket", worker.socket_path,
            "--worker-id", worker.worker_id,
            "--adapter", cfg.adapter,
            "--profile", cfg.profile,
            "--capacity", str(self._capacity),
            "--max-message-bytes", str(cfg.max_message_bytes),
        ]
        if self._options_file:
            argv += ["--options-file", self._options_file]
        worker.process = self._launcher.start(argv, env=self._env, cwd=cfg.cwd, start_method=cfg.start_method)
        worker.started_mono = time.monotonic()
        worker.started_wall = time.time()

    def _connect(self, worker: _Worker) -> None:
        worker.conn = WorkerConnection(
            f"unix:{worker.socket_path}",
            name=worker.worker_id,
            max_message_bytes=self.config.max_message_bytes,
            on_reply=lambda reply, w=worker: self._on_reply(w, reply),
            on_broken=lambda err, w=worker: self._on_connection_broken(w, err),
        )
        assert worker.process is not None
        worker.process.add_exit_callback(lambda code, w=worker: self._on_worker_exit(w, code))

    def _start_initial_workers(self) -> None:
        workers = [self._new_worker() for _ in range(int(self.config.pool_size or 1))]
        try:
            for worker in workers:
                self._launch(worker)
            procs = [w.process for w in workers]
            reports = Launcher.wait_ready(procs, self.config.startup_timeout)  # type: ignore[arg-type]
            failed = [(w, reports[w.process]) for w in workers if not reports[w.process].get("ok")]
            if failed:
                self._raise_start_error(failed[0][1])
        except BaseException:
            for worker in workers:
                if worker.process is not None:
                    worker.process.kill()
            for worker in workers:
                if worker.process is not None:
                    worker.process.wait(5.0)
            raise
        with self._lock:
            for worker in workers:
                self._workers[worker.worker_id] = worker
        for worker in workers:
            self._activate(worker)

    def _raise_start_error(self, report: Mapping[str, Any]) -> None:
        message = str(report.get("error", "unknown error"))
        if "adapter" in message and ("cannot load adapter" in message or "thread-safe" in message
                                      or "not a snakepit.Adapter" in message):
            raise ConfigError("adapter", message)
        if "interpreter" in message or "No module named 'snakepit'" in message:
            raise ConfigError("python", message)
        raise WorkerStartError(self.name, message)

    def _activate(self, worker: _Worker) -> None:
        """Connect to a ready worker and make it available."""
        self._connect(worker)
        startup_ms = (time.monotonic() - worker.started_mono) * 1000
        with self._lock:
            if worker.gone:
                return
            worker.status = AVAILABLE
            worker.last_heartbeat = time.time()
            self._workers[worker.worker_id] = worker
            dispatch = self._fill_from_queue(worker)
        self.counters["workers_started"] += 1
        telemetry.execute(
            telemetry.WORKER_STARTED,
            {"startup_ms": startup_ms},
            {"pool": self.name, "worker_id": worker.worker_id, "pid": worker.pid},
        )
        self._send_all(dispatch)

    def _start_replacement(self, delay: float = 0.0, then: Callable[[], None] | None = None) -> None:
        """Start one worker in the background (after ``delay``), retrying with backoff.

        ``then`` runs once the new worker is serving (used to retire the worker it replaces).
        """
        with self._lock:
            if self._closed:
                return
            self._replacements_pending += 1

        def run() -> None:
            try:
                if delay:
                    time.sleep(delay)
                if self._closed:
                    return
                worker = self._new_worker()
                self._launch(worker)
                report = Launcher.wait_ready([worker.process], self.config.startup_timeout)[worker.process]  # type: ignore[list-item]
                if not report.get("ok"):
                    if worker.process is not None:
                        worker.process.kill()
                        worker.process.wait(5.0)
                    raise WorkerStartError(self.name, str(report.get("error")))
                if self._closed:
                    worker.process.stop(1.0)  # type: ignore[union-attr]
                    return
                self._activate(worker)
                self._start_failures = 0
                if then is not None:
                    then()
            except Exception as exc:  # noqa: BLE001 - retried with backoff, reported in diagnostics
                self._start_failures += 1
                self._last_start_error = str(exc)
                self.counters["start_failures"] += 1
                backoff = min(30.0, 0.2 * 2 ** min(self._start_failures, 8))
                log.warning("pool %r: replacement worker failed to start (%s); retrying in %.1fs",
                            self.name, exc, backoff)
                if not self._closed:
                    with self._lock:
                        self._replacements_pending -= 1
                    self._start_replacement(delay=backoff, then=then)
                    return
            finally:
                self._starter_threads.discard(threading.current_thread())
            with self._lock:
                self._replacements_pending -= 1

        thread = threading.Thread(target=run, name=f"snakepit-{self.name}-starter", daemon=True)
        self._starter_threads.add(thread)
        start_thread(thread)

    # ------------------------------------------------------------------ dispatch
    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError(self.name)

    def _pick_worker(self, session: "Session | None") -> _Worker | None:
        """Least-loaded accepting worker with a free slot (lock held)."""
        if session is not None and session.worker_id is not None:
            bound = self._workers.get(session.worker_id)
            if bound is not None and not bound.gone and bound.status != UNHEALTHY:
                if bound.accepting and bound.load < bound.capacity:
                    return bound
                if bound.status != RECYCLING:
                    return None  # strict affinity: wait for this worker
            # The session's worker is gone (or retiring): it moves.
            session._unbind("worker gone" if bound is None or bound.gone else (bound.recycle_reason or "recycled"))
        best: _Worker | None = None
        limit = self._capacity
        workers = list(self._workers.values())
        n = len(workers)
        if not n:
            return None
        start = self._rr % n
        for i in range(n):
            w = workers[(start + i) % n]
            if w.accepting and w.load < limit and (best is None or w.load < best.load):
                best = w
                if w.load == 0:
                    break
        if best is not None:
            self._rr = (start + 1) % max(n, 1)
        return best

    def _assign(self, call: _Call, worker: _Worker) -> None:
        """Bind a call to a worker slot (lock held)."""
        worker.load += 1
        worker.in_flight[call.request_id] = call
        worker.refresh_status()
        call.worker = worker
        if call.session is not None and call.session.worker_id != worker.worker_id:
            call.session._bind(worker)
        self._mark_started(call)

    @staticmethod
    def _mark_started(call: _Call) -> None:
        call.started_at = time.monotonic()
        if call.timeout is not None:
            call.deadline = call.started_at + call.timeout
        if call.queue_timer is not None:
            call.queue_timer.cancel()
            call.queue_timer = None

    # -- pipelining -----------------------------------------------------------------
    # When every slot is busy, a call may be sent ahead to a worker, to wait *there* (FIFO)
    # instead of in the pool's queue: the worker starts it the moment a slot frees, without a
    # round trip, and calls sent together travel in one message. It still counts as queued
    # (queue depth, max_queue_size, queue_timeout) until the pool infers it started: when one
    # of the worker's running requests finishes, its oldest waiting one starts. Automatic
    # (pipeline_depth=None) for calls the pool has seen finish quickly; never for sessions
    # and streams.
    AUTO_PIPELINE_MAX_US = 2_000      # calls slower than this are not pipelined automatically
    AUTO_PIPELINE_WAIT_US = 4_000     # … and a worker holds about this much waiting work
    AUTO_PIPELINE_MAX_DEPTH = 64

    def _pipeline_limit(self, call: _Call) -> int:
        """(lock held) How many calls like ``call`` a worker may hold waiting (0: none)."""
        if call.session is not None or call.stream:
            return 0
        depth = self.config.pipeline_depth
        if depth is not None:
            return depth
        learnt = self._durations.get(call.key)
        if learnt is None or learnt[1] < 2:
            return 0
        expected_us = learnt[0] * call.n_items
        if expected_us > self.AUTO_PIPELINE_MAX_US:
            return 0
        return max(1, min(self.AUTO_PIPELINE_MAX_DEPTH, int(self.AUTO_PIPELINE_WAIT_US / max(expected_us, 1.0))))

    def learnt_duration_us(self, key: Any) -> float | None:
        """The learnt worker-side duration of one call (or one map item) of this kind, in µs."""
        learnt = self._durations.get(key)
        return learnt[0] if learnt is not None else None

    def _learn_duration(self, key: Any, worker_us: float) -> None:
        """(lock held) Update the moving average of a kind of call's worker-side duration."""
        learnt = self._durations.get(key)
        if learnt is None:
            if len(self._durations) >= 1024:
                self._durations.clear()
            self._durations[key] = [float(worker_us), 1]
        else:
            learnt[0] += 0.25 * (worker_us - learnt[0])
            learnt[1] += 1

    @staticmethod
    def _may_pipeline_to(worker: _Worker, limit: int) -> bool:
        if not worker.accepting or len(worker.waiting) >= limit:
            return False
        # Never send a worker more than it will serve before max_requests recycles it.
        return not worker.max_requests or (
            worker.requests_served + len(worker.in_flight) < worker.max_requests
        )

    def _pick_pipeline_worker(self, call: _Call) -> _Worker | None:
        """(lock held) The worker with the fewest waiting calls that may take ``call``."""
        limit = self._pipeline_limit(call)
        if limit <= 0:
            return None
        best: _Worker | None = None
        for w in self._workers.values():
            if self._may_pipeline_to(w, limit) and (best is None or len(w.waiting) < len(best.waiting)):
                best = w
                if not w.waiting:
                    break
        return best

    def _enqueue_on_worker(self, call: _Call, worker: _Worker) -> None:
        """(lock held) Pipeline ``call`` to ``worker``: it waits there, still counted as queued."""
        worker.in_flight[call.request_id] = call
        worker.waiting.append(call)
        self._pipelined += 1
        call.worker = worker
        call.waiting = True

    def _promote_waiting(self, worker: _Worker) -> list[_Call]:
        """(lock held) The worker freed slots: its oldest waiting calls are now running."""
        started: list[_Call] = []
        while worker.waiting and worker.load < worker.capacity:
            call = worker.waiting.popleft()
            self._pipelined -= 1
            call.waiting = False
            worker.load += 1
            self._mark_started(call)
            # A call cancelled or timed out while waiting is being withdrawn in the worker: it
            # holds the slot until that answer; its future only learns it was cancelled.
            if call.future is not None and call.future._state in (PENDING, CANCELLED):
                call.future.set_running_or_notify_cancel()
            started.append(call)
        worker.refresh_status()
        return started

    def _unwait(self, call: _Call) -> None:
        """(lock held) A waiting call ended before it started (cancelled, timed out, worker gone)."""
        worker = call.worker
        if call.waiting and worker is not None:
            try:
                worker.waiting.remove(call)
            except ValueError:
                pass
            else:
                self._pipelined -= 1
            call.waiting = False

    def _start_request_timer(self, call: _Call) -> None:
        if call.timeout is not None and call.request_timer is None:
            call.request_timer = self._timer.call_later(call.timeout, lambda c=call: self._on_request_timeout(c))

    def _send(self, call: _Call) -> None:
        worker = call.worker
        assert worker is not None
        if not call.waiting:
            self._start_request_timer(call)
        if (self.profile.name == "thread" and not call.waiting and worker.load >= worker.capacity
                and telemetry.has_handlers(
            telemetry.POOL_CAPACITY_REACHED
        )):
            telemetry.execute(
                telemetry.POOL_CAPACITY_REACHED,
                {"capacity": worker.capacity, "load": worker.load},
                {"worker_pid": worker.pid, "worker_id": worker.worker_id, "profile": self.profile.name,
                 "rejected": False, "pool": self.name},
            )
        conn = worker.conn
        if conn is None:
            self._fail_call(call, WorkerCrashedError(worker.worker_id, worker.pid, worker.exit_code))
            return
        conn.send(call.to_request())

    def _send_all(self, calls: list[_Call]) -> None:
        for call in calls:
            self._send(call)

    def _dispatch(self, command: str, args: Any, *, session: "Session | None", stream: bool,
                  timeout: Any, key: Any = None, n_items: int = 1, queue_timeout: Any = _DEFAULT) -> _Call:
        if args is None:
            payload = codec.EMPTY_DICT_PAYLOAD
        elif isinstance(args, Mapping):
            payload = codec.dumps(dict(args), f"arguments of {command!r}", self.config.max_message_bytes)
        else:
            raise TypeError(f"args must be a dict of keyword arguments for {command!r}, got {type(args).__name__}")
        if timeout is _DEFAULT:
            timeout = self.config.request_timeout
        elif timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        call = _Call(self, next(self._request_ids), command, payload, session, stream, timeout)
        if key is not None:
            call.key = key
        call.n_items = max(1, n_items)
        if session is not None:
            session.last_used = time.monotonic()
        saturated = None
        with self._lock:
            self._check_open()
            self.counters["requests"] += 1
            worker = self._pick_worker(session)
            if worker is not None:
                self._assign(call, worker)
                if call.future is not None:
                    call.future.set_running_or_notify_cancel()
            elif len(self._queue) + self._pipelined >= self.config.max_queue_size:
                self.counters["saturated"] += 1
                self.counters["requests"] -= 1
                self.saturation_history.append(time.time())
                saturated = (len(self._queue) + self._pipelined, self._available_count(), self._busy_count())
            else:
                self.counters["queued"] += 1
                worker = self._pick_pipeline_worker(call)
                if worker is not None:
                    self._enqueue_on_worker(call, worker)
                else:
                    self._queue.append(call)
                if queue_timeout is _DEFAULT:
                    queue_timeout = self.config.queue_timeout
                if queue_timeout is not None:
                    call.queue_timer = self._timer.call_later(
                        queue_timeout, lambda c=call: self._on_queue_timeout(c)
                    )
        if saturated is not None:
            queue_size, available, busy = saturated
            telemetry.execute(
                telemetry.POOL_SATURATED,
                {"queue_size": queue_size, "max_queue_size": self.config.max_queue_size},
                {"pool": self.name, "available_workers": available, "busy_workers": busy},
            )
            raise PoolSaturatedError(self.name, queue_size, self.config.max_queue_size)
        if worker is not None:
            self._send(call)
        return call

    def _available_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.accepting and w.load < w.capacity)

    def _busy_count(self) -> int:
        return sum(1 for w in self._workers.values() if w.load >= w.capacity)

    def _fill_from_queue(self, worker: _Worker) -> list[_Call]:
        """Hand queued calls to ``worker``'s free slots, FIFO, respecting affinity (lock held)."""
        out: list[_Call] = []
        if not self._queue or not worker.accepting:
            return out
        kept: list[_Call] = []
        while self._queue and worker.load < worker.capacity:
            call = self._queue.popleft()
            if call.done or (call.future is not None and call.future.cancelled()):
                continue
            session = call.session
            if session is not None and session.worker_id is not None and session.worker_id != worker.worker_id:
                bound = self._workers.get(session.worker_id)
                if bound is not None and not bound.gone and bound.status not in (RECYCLING, UNHEALTHY):
                    kept.append(call)  # waits for its own worker
                    continue
                session._unbind("worker gone")
            if call.future is not None and not call.future.set_running_or_notify_cancel():
                continue
            self._assign(call, worker)
            out.append(call)
        self._queue.extendleft(reversed(kept))
        # Every slot taken: send more ahead while the head of the queue may be pipelined.
        while self._queue and worker.load >= worker.capacity:
            call = self._queue[0]
            if call.done or (call.future is not None and call.future.cancelled()):
                self._queue.popleft()
                continue
            if not self._may_pipeline_to(worker, self._pipeline_limit(call)):
                break
            self._queue.popleft()
            self._enqueue_on_worker(call, worker)
            out.append(call)
        return out

    @staticmethod
    def _withdraw(call: _Call) -> WorkerConnection | None:
        """(lock held) A pipelined call leaves the queue: the connection to send its cancel on.
        The worker answers the cancel of a request it has not started at once, and that reply
        ends the call (its slot bookkeeping included)."""
        call.cancel_sent = True
        worker = call.worker
        return worker.conn if worker is not None else None

    def _drop_queued(self, call: _Call) -> None:
        with self._lock:
            try:
                self._queue.remove(call)
            except ValueError:
                if not call.waiting:
                    return  # already dispatched (or finished)
                conn = self._withdraw(call)
                self.counters["cancelled"] += 1
            else:
                conn = None
                call.done = True
        if call.queue_timer is not None:
            call.queue_timer.cancel()
        if conn is not None:
            conn.cancel(call.request_id)

    # ------------------------------------------------------------------ completion
    def _on_reply(self, worker: _Worker, reply: pb.Reply) -> None:
        call = worker.in_flight.get(reply.request_id)
        if call is None:
            return
        kind = reply.kind
        if kind == pb.Reply.CHUNK:
            if call.chunks is not None:
                try:
                    call.chunks.put(codec.loads(reply.payload, "stream item"))
                except SerializationError as exc:
                    call.chunks.put(_Failure(exc))
            return
        success = kind != pb.Reply.ERROR
        error: BaseException | None = None
        value: Any = None
        if kind == pb.Reply.ERROR:
            if reply.error.code == codec.CANCELLED:
                error = RequestCancelledError(call.command, worker.worker_id)
            else:
                error = codec.error_from_failure(reply.error, worker_id=worker.worker_id, command=call.command)
        elif kind == pb.Reply.RESULT:
            try:
                value = codec.loads(reply.payload, f"result of {call.command!r}")
            except SerializationError as exc:
                error, success = exc, False
        self._finish(worker, call, value, error, success, reply.duration_us)

    def _finish(self, worker: _Worker, call: _Call, value: Any, error: BaseException | None,
                success: bool, worker_us: int = 0) -> None:
        with self._lock:
            if worker.in_flight.pop(call.request_id, None) is None:
                return
            if call.waiting:  # ended before it started (cancelled or timed out while waiting)
                self._unwait(call)
                call.started_at = time.monotonic()
                started: list[_Call] = []
            else:
                worker.load -= 1
                worker.requests_served += 1
                if success and worker_us:
                    self._learn_duration(call.key, worker_us / call.n_items)
                started = self._promote_waiting(worker)
            duration_us = int((time.monotonic() - call.started_at) * 1e6)
            worker.refresh_status()
            self.counters["completed"] += 1
            if not success:
                self.counters["failed"] += 1
            self.recent_latencies_us.append(duration_us)
            newly_recycling = self._check_max_requests(worker)
            drained = worker.status == RECYCLING and not worker.in_flight
            dispatch = self._fill_from_queue(worker)
        for started_call in started:
            self._start_request_timer(started_call)
        if call.request_timer is not None:
            call.request_timer.cancel()
        self._complete(call, value, error)
        telemetry.execute(
            telemetry.REQUEST_EXECUTED,
            {"duration_us": duration_us},
            {"pool": self.name, "worker_id": worker.worker_id, "command": call.command, "success": success},
        )
        self._send_all(dispatch)
        if newly_recycling:
            self._start_replacement()
        if drained:
            self._retire(worker)

    def _complete(self, call: _Call, value: Any, error: BaseException | None) -> None:
        if call.done:
            return
        call.done = True
        if call.chunks is not None:
            call.chunks.put(_Failure(error) if error is not None else STREAM_END)
            return
        fut = call.future
        assert fut is not None
        if fut.done():
            return
        try:
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)
        except Exception:  # InvalidStateError: cancelled meanwhile
            pass

    def _fail_call(self, call: _Call, error: BaseException) -> None:
        worker = call.worker
        if worker is not None:
            with self._lock:
                if worker.in_flight.pop(call.request_id, None) is not None:
                    if call.waiting:
                        self._unwait(call)
                    else:
                        worker.load -= 1
                    worker.refresh_status()
                    self.counters["failed"] += 1
        self._complete(call, None, error)

    # ------------------------------------------------------------------ timeouts & cancel
    def _on_queue_timeout(self, call: _Call) -> None:
        conn = None
        with self._lock:
            try:
                self._queue.remove(call)
            except ValueError:
                if not call.waiting or call.done:
                    return  # already started
                conn = self._withdraw(call)
            self.counters["queue_timeouts"] += 1
        waited = time.monotonic() - call.queued_at
        self._complete(call, None, QueueTimeoutError(self.name, waited))
        if conn is not None:
            conn.cancel(call.request_id)

    def _on_request_timeout(self, call: _Call) -> None:
        if call.done:
            return
        worker = call.worker
        self.counters["request_timeouts"] += 1
        self._complete(call, None, RequestTimeoutError(self.name, call.command, call.timeout or 0.0,
                                                       worker.worker_id if worker else None))
        self._cancel_running(call, "timed out")

    def _cancel_running(self, call: _Call, reason: str) -> None:
        """Cancel ladder: cooperative flag + interrupt in the worker, then kill and replace."""
        worker = call.worker
        if worker is None or worker.conn is None or call.cancel_sent:
            return
        call.cancel_sent = True
        self.counters["cancelled"] += 1
        if not call.done:
            self._complete(call, None, RequestCancelledError(call.command, worker.worker_id, reason))
        worker.conn.cancel(call.request_id)
        self._timer.call_later(self.lifecycle_cancel_grace, lambda: self._escalate_cancel(worker, call))

    lifecycle_cancel_grace = 2.0

    def _escalate_cancel(self, worker: _Worker, call: _Call) -> None:
        if call.request_id not in worker.in_flight or worker.gone:
            return
        others = worker.load - 1  # other running requests (pipelined ones have not started)
        if others and self.profile.name == "thread":
            log.warning("pool %r: request %r ignores cancellation on worker %s; recycling the worker",
                        self.name, call.command, worker.worker_id)
            self.begin_recycle(worker.worker_id, "cancel")
            return
        log.warning("pool %r: request %r ignored cancellation; killing worker %s (pid %s)",
                    self.name, call.command, worker.worker_id, worker.pid)
        self._kill_worker(worker, "did not stop after cancellation")

    # ------------------------------------------------------------------ worker death
    def _on_connection_broken(self, worker: _Worker, error: BaseException | None) -> None:
        proc = worker.process
        code = proc.wait(1.0) if proc is not None else None
        self._handle_worker_gone(worker, code, worker.kill_reason or ("connection lost" if code is None else ""))

    def _on_worker_exit(self, worker: _Worker, code: int) -> None:
        self._handle_worker_gone(worker, code, worker.kill_reason)

    def _handle_worker_gone(self, worker: _Worker, exit_code: int | None, reason: str) -> None:
        with self._lock:
            if worker.gone:
                return
            worker.gone = True
            worker.exit_code = exit_code
            expected = worker.status == STOPPED or self._closed
            retiring = worker.status == RECYCLING
            worker.status = STOPPED
            self._workers.pop(worker.worker_id, None)
            orphans = list(worker.in_flight.values())
            worker.in_flight.clear()
            worker.load = 0
            for call in worker.waiting:
                call.waiting = False
                self._pipelined -= 1
            worker.waiting.clear()
            if not expected:
                self.counters["crashes"] += 1
                self.crash_history.append({
                    "time": time.time(), "worker_id": worker.worker_id, "pid": worker.pid,
                    "exit_code": exit_code, "reason": reason or "exited",
                })
        if not expected and not retiring:
            telemetry.execute(
                telemetry.WORKER_CRASHED,
                {"exit_code": exit_code if exit_code is not None else -1},
                {"pool": self.name, "worker_id": worker.worker_id, "pid": worker.pid},
            )
        for call in orphans:
            if call.request_timer is not None:
                call.request_timer.cancel()
            if call.queue_timer is not None:
                call.queue_timer.cancel()
            if not call.started_at:
                call.started_at = time.monotonic()
            self._complete(call, None, WorkerCrashedError(worker.worker_id, worker.pid, exit_code, reason))
            telemetry.execute(
                telemetry.REQUEST_EXECUTED,
                {"duration_us": int((time.monotonic() - call.started_at) * 1e6)},
                {"pool": self.name, "worker_id": worker.worker_id, "command": call.command, "success": False},
            )
        if worker.conn is not None:
            start_thread(threading.Thread(target=worker.conn.close, name="snakepit-conn-close", daemon=True))
        if expected:
            return
        if not retiring:
            log.warning("pool %r: worker %s (pid %s) died (exit code %s); starting a replacement",
                        self.name, worker.worker_id, worker.pid, exit_code)
            self._start_replacement()
        else:
            # A recycling worker that died: its replacement is already on its way.
            self._record_recycle(worker, worker.recycle_reason or "manual")

    def _kill_worker(self, worker: _Worker, reason: str) -> None:
        """Kill a worker now; it is handled as a crash (in-flight calls fail, replacement starts)."""
        worker.kill_reason = reason
        if worker.process is not None:
            worker.process.kill()

    def _declare_unhealthy(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            if worker.gone:
                return
            worker.status = UNHEALTHY
            self.counters["unhealthy"] += 1
        self._kill_worker(worker, f"unhealthy: {reason}")

    # ------------------------------------------------------------------ recycling
    def _check_max_requests(self, worker: _Worker) -> bool:
        """(lock held) After a request: stop routing to a worker that reached max_requests."""
        if worker.max_requests and worker.requests_served >= worker.max_requests:
            return self._mark_recycling(worker, "max_requests")
        return False

    def _mark_recycling(self, worker: _Worker, reason: str) -> bool:
        """(lock held) Stop routing to ``worker``; it is stopped once drained (or after the grace)."""
        if worker.status not in (AVAILABLE, BUSY, UNHEALTHY) or worker.gone:
            return False
        worker.status = RECYCLING
        worker.recycle_reason = reason
        self._timer.call_later(self.config.recycle_grace, lambda: self._recycle_grace_expired(worker))
        return True

    def begin_recycle(self, worker_id: str, reason: str, *, replace_first: bool = True) -> bool:
        """Retire a worker gracefully.

        With ``replace_first`` the replacement starts while the old worker keeps serving; once
        it is ready the old worker stops taking requests, finishes its in-flight ones (up to
        ``recycle_grace``) and exits. Otherwise the old worker stops taking requests at once.
        """
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None or worker.gone or worker.status not in (AVAILABLE, BUSY, UNHEALTHY):
                return False
            if worker.recycle_reason is not None:
                return False  # already on its way out
            worker.recycle_reason = reason
            if not replace_first or worker.status == UNHEALTHY:
                worker.recycle_reason = None
                self._mark_recycling(worker, reason)
                drained = not worker.in_flight
            else:
                drained = None
        if drained is None:
            self._start_replacement(then=lambda: self._retire_when_drained(worker, reason))
            return True
        self._start_replacement()
        if drained:
            self._retire(worker)
        return True

    def _retire_when_drained(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            worker.recycle_reason = None
            if not self._mark_recycling(worker, reason):
                return
            drained = not worker.in_flight
        if drained:
            self._retire(worker)

    def _recycle_grace_expired(self, worker: _Worker) -> None:
        if worker.gone or worker.status != RECYCLING:
            return
        log.warning("pool %r: recycling worker %s still busy after %.0fs grace; killing it",
                    self.name, worker.worker_id, self.config.recycle_grace)
        if worker.process is not None:
            worker.process.kill()

    def _retire(self, worker: _Worker) -> None:
        """Stop a drained recycling worker and record the recycle."""
        with self._lock:
            if worker.gone:
                return
            worker.gone = True
            worker.status = STOPPED
            self._workers.pop(worker.worker_id, None)
            sessions = list(worker.sessions)
        reason = worker.recycle_reason or "manual"
        memory_mb = _rss_mb(worker.pid)
        for sid in sessions:
            session = self._sessions.get(sid)
            if session is not None and session.worker_id == worker.worker_id:
                session._unbind(f"worker recycled ({reason})")
        if worker.conn is not None:
            worker.conn.close()
        if worker.process is not None:
            start_thread(threading.Thread(target=worker.process.stop, args=(2.0,), name="snakepit-stop", daemon=True))
        self._record_recycle(worker, reason, memory_mb)

    def _record_recycle(self, worker: _Worker, reason: str, memory_mb: float | None = None) -> None:
        uptime = time.monotonic() - worker.started_mono
        entry = {
            "time": time.time(), "worker_id": worker.worker_id, "pid": worker.pid, "reason": reason,
            "uptime_s": uptime, "request_count": worker.requests_served, "memory_mb": memory_mb,
        }
        self.recycle_history.append(entry)
        self.counters["recycled"] += 1
        telemetry.execute(
            telemetry.WORKER_RECYCLED,
            {"uptime_s": uptime, "request_count": worker.requests_served, "memory_mb": memory_mb or 0.0},
            {"pool": self.name, "worker_id": worker.worker_id, "reason": reason,
             "memory_threshold_mb": self.config.memory_threshold_mb},
        )

    def recycle_worker(self, worker_id: str) -> None:
        """Recycle one worker now (reason ``manual``): a replacement starts, the old one drains.

        Raises:
            KeyError: no live worker has that id (see :meth:`list_workers`).
        """
        self._check_open()
        if not self.begin_recycle(worker_id, "manual"):
            raise KeyError(f"pool {self.name!r} has no active worker {worker_id!r}")

    # ------------------------------------------------------------------ public API
    def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT,
                session_id: str | None = None) -> Any:
        """Run an adapter command on a worker and return its result.

        Args:
            command: the command name (``"ping"``, ``"echo"``, ``"sleep"``, or your adapter's).
            args: keyword arguments of the command (picklable).
            timeout: seconds the request may run (default: ``request_timeout``; None: no limit).
            session_id: run on the session's worker (see :meth:`session`).

        Raises:
            RemoteError: the command raised (``UnknownCommandError`` for an unknown command).
            PoolSaturatedError / QueueTimeoutError / RequestTimeoutError / WorkerCrashedError.
        """
        session = self.session(session_id) if session_id else None
        call = self._dispatch(command, args, session=session, stream=False, timeout=timeout)
        return _wait(call)

    def execute_async(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT,
                      session_id: str | None = None) -> "asyncio.Future[Any]":
        """``await pool.execute_async("ping")``: the asyncio flavour of :meth:`execute`."""
        return asyncio.wrap_future(self.submit_command(command, args, timeout=timeout, session_id=session_id))

    def submit_command(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT,
                       session_id: str | None = None) -> SnakepitFuture:
        """Like :meth:`execute` but returns a future at once."""
        session = self.session(session_id) if session_id else None
        call = self._dispatch(command, args, session=session, stream=False, timeout=timeout)
        assert call.future is not None
        return call.future

    def execute_stream(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT,
                       session_id: str | None = None) -> Iterator[Any]:
        """Run a streaming command; iterate over its items as the worker produces them.

        Closing the iterator early (``break``) cancels the command on the worker.
        """
        session = self.session(session_id) if session_id else None
        call = self._dispatch(command, args, session=session, stream=True, timeout=timeout)
        return _iterate_stream(self, call)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> SnakepitFuture:
        """Run ``fn(*args, **kwargs)`` on a worker; returns a :class:`concurrent.futures.Future`.

        ``fn`` may be defined in a notebook or a test: it travels by value (cloudpickle).
        """
        return self._submit_fn(fn, args, kwargs, None)

    def _submit_fn(self, fn: Callable[..., Any], args: tuple, kwargs: dict, session: "Session | None") -> SnakepitFuture:
        if not callable(fn):
            raise TypeError(f"submit() needs a callable, got {type(fn).__name__}")
        call = self._dispatch("call", {"fn": fn, "args": args, "kwargs": kwargs}, session=session,
                              stream=False, timeout=_DEFAULT, key=("call", _function_key(fn)))
        assert call.future is not None
        return call.future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], chunksize: int | None = None,
            timeout: float | None = None) -> Iterator[Any]:
        """Like :meth:`concurrent.futures.Executor.map`: results in order, computed in chunks.

        ``chunksize=None`` picks ``ceil(n / (4 × capacity))`` like ``multiprocessing.Pool.map``.
        The chunks are fed to the pool a few at a time (about two per slot), so a long map
        does not fill the pool's queue (no :class:`PoolSaturatedError`), and its few queued
        chunks are exempt from ``queue_timeout``: ``timeout`` bounds the whole map, like
        ``Executor.map``'s. Closing the iterator early cancels what has not run.

        Example::

            squares = list(pool.map(pow, range(10), [2] * 10))
        """
        if not callable(fn):
            raise TypeError(f"map() needs a callable, got {type(fn).__name__}")
        return self._map(fn, iterables, chunksize, timeout, None)

    MAP_CHUNK_TARGET_US = 20_000  # automatic chunks of cheap items grow to about this much work

    def _auto_chunksize(self, n: int, key: Any) -> int:
        """``chunksize=None``: ``ceil(n / (4 × capacity))`` like ``multiprocessing.Pool.map``;
        once the pool has measured the function (an earlier map or chunk), chunks of items
        too cheap for that grow to ≈ 20 ms of work, at most one chunk per slot."""
        capacity = max(1, self.capacity)
        chunksize = max(1, math.ceil(n / (4 * capacity)))
        per_item_us = self.learnt_duration_us(key)
        if per_item_us is not None:
            wanted = int(self.MAP_CHUNK_TARGET_US / max(per_item_us, 0.01))
            chunksize = max(chunksize, min(wanted, math.ceil(n / capacity)))
        return chunksize

    def _map(self, fn: Callable[..., Any], iterables: tuple, chunksize: int | None, timeout: float | None,
             session: "Session | None") -> Iterator[Any]:
        star = len(iterables) != 1  # one iterable: fn(item), no 1-tuples to build and pickle
        items = list(iterables[0]) if not star else list(zip(*iterables))
        key = ("call_batch", _function_key(fn))
        if chunksize is None:
            chunksize = self._auto_chunksize(len(items), key)
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive integer, got {chunksize!r}")
        end = time.monotonic() + timeout if timeout is not None else None
        chunks = [items[i:i + chunksize] for i in range(0, len(items), chunksize)]
        # A session runs on one worker: its chunks go one slot's worth at a time.
        window = 2 * max(1, self.capacity) if session is None else max(1, self._capacity)
        feeder = _MapFeeder(self, fn, chunks, star, key, session, window=window)
        feeder.start()

        def results() -> Iterator[Any]:
            try:
                for fut in feeder.futures:
                    remaining = None if end is None else max(0.0, end - time.monotonic())
                    try:
                        chunk = fut.result(remaining)
                    except FutureTimeoutError:
                        if fut.done():  # the request itself timed out (queue/request timeout)
                            raise
                        raise TimeoutError(f"map() did not finish within {timeout}s") from None
                    yield from chunk
            finally:
                feeder.close()

        return results()

    def run_code(self, source: str, session_id: str | None = None, *, push: Mapping[str, Any] | None = None,
                 pull: Iterable[str] | None = None, on_output: Callable[[str, str], None] | None = None,
                 timeout: Any = _DEFAULT, worker_id: str | None = None,
                 cancel: threading.Event | None = None) -> RunResult:
        """Run Python source on a worker (what ``%%snakepit_run`` uses).

        Args:
            source: the code. The value of its last expression is returned as ``result``.
            session_id: keep the namespace between calls on the session's worker; without it
                the code runs in a fresh namespace.
            push: variables to define before running.
            pull: names whose values to bring back (``RunResult.pulled``).
            on_output: called as ``on_output("stdout"|"stderr", text)`` while the code runs.
            worker_id: run on this particular worker (used by ``%%snakepit_run --all``).
            cancel: an event another thread may set to cancel the run (the remote code is
                interrupted; :class:`RequestCancelledError` is raised here).

        Raises:
            RemoteError: the code raised; ``remote_traceback`` holds the worker's traceback.
        """
        if not isinstance(source, str):
            raise TypeError("source must be a string of Python code")
        session = self.session(session_id) if session_id else None
        if worker_id is not None:
            session = self._pinned_session(worker_id)
        args = {"source": source, "session_id": session_id, "push": dict(push or {}), "pull": list(pull or ())}
        call = self._dispatch("run_code", args, session=session, stream=True, timeout=timeout)
        final: dict[str, Any] | None = None
        worker = call.worker
        for item in _iterate_stream(self, call, cancel):
            if isinstance(item, tuple) and len(item) == 2 and item[0] in ("stdout", "stderr"):
                if on_output is not None:
                    on_output(item[0], item[1])
            elif isinstance(item, dict):
                final = item
        worker = call.worker or worker
        assert final is not None
        return RunResult(
            stdout=final["stdout"], stderr=final["stderr"], result=final["result"],
            result_repr=final["result_repr"], changed=final["changed"], pulled=final["pulled"],
            missing=final["missing"], worker_id=worker.worker_id if worker else None,
            pid=worker.pid if worker else None,
        )

    def _pinned_session(self, worker_id: str) -> "Session":
        with self._lock:
            worker = self._workers.get(worker_id)
        if worker is None:
            raise KeyError(f"pool {self.name!r} has no worker {worker_id!r}")
        session = Session(self, f"__pinned__{worker_id}", register=False)
        session.worker_id = worker_id
        session.worker_pid = worker.pid
        session.pinned = True
        return session

    def session(self, session_id: str | None = None) -> "Session":
        """A session: every call made through it runs on the same worker while that worker lives.

        Reusing an id returns the same session. ``with pool.session("s1") as s:`` closes it
        (and frees its namespace on the worker) at the end of the block.
        """
        if session_id is None:
            session_id = f"s{next(self._request_ids)}-{os.urandom(3).hex()}"
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session(self, session_id)
        return session

    def list_sessions(self) -> list["Session"]:
        with self._lock:
            return list(self._sessions.values())

    session_idle_ttl = 3600.0  # seconds, as Snakepit's session store

    def expire_sessions(self, idle_ttl: float | None = None) -> list[str]:
        """Close sessions unused for ``idle_ttl`` seconds (default: one hour); return their ids.

        Called by the lifecycle thread, so that sessions opened with ``session_id=`` and
        never closed do not pin namespaces on workers forever.
        """
        ttl = self.session_idle_ttl if idle_ttl is None else idle_ttl
        now = time.monotonic()
        with self._lock:
            stale = [s for s in self._sessions.values() if now - s.last_used >= ttl]
        for session in stale:
            session.close()
        return [s.session_id for s in stale]

    def list_workers(self) -> list[WorkerInfo]:
        """A snapshot of every live worker (starting ones are not listed until ready)."""
        now = time.monotonic()
        with self._lock:
            return [
                WorkerInfo(
                    worker_id=w.worker_id, pid=w.pid, status=w.status, capacity=w.capacity, load=w.load,
                    pool=self.name, profile=self.profile.name, requests_served=w.requests_served,
                    started_at=w.started_wall, uptime_s=now - w.started_mono, sessions=len(w.sessions),
                    last_heartbeat=w.last_heartbeat, recycle_reason=w.recycle_reason,
                    pipelined=len(w.waiting),
                )
                for w in self._workers.values()
            ]

    @property
    def capacity(self) -> int:
        """Requests the pool can run at once right now (live workers × capacity per worker)."""
        with self._lock:
            return sum(w.capacity for w in self._workers.values() if w.accepting)

    @property
    def closed(self) -> bool:
        return self._closed

    def queue_depth(self) -> int:
        """Requests waiting to start: in the pool's queue, or pipelined to a busy worker."""
        return len(self._queue) + self._pipelined

    def statistics(self) -> dict[str, Any]:
        """Counters and gauges of the pool (a JSON-ready snapshot)."""
        with self._lock:
            workers = list(self._workers.values())
            return {
                "pool": self.name,
                "profile": self.profile.name,
                "workers": len(workers),
                "capacity_total": sum(w.capacity for w in workers),
                "capacity_used": sum(w.load for w in workers),
                "queue_depth": len(self._queue) + self._pipelined,
                "pipelined": self._pipelined,
                "max_queue_size": self.config.max_queue_size,
                "in_flight": sum(w.load for w in workers),
                "replacements_pending": self._replacements_pending,
                "start_failures": self._start_failures,
                "last_start_error": self._last_start_error,
                "uptime_s": time.monotonic() - self._started_mono,
                "started_at": self._started_wall,
                **{k: int(v) for k, v in self.counters.items()},
            }

    def _worker_handles(self) -> list[_Worker]:
        """Live worker records (for lifecycle and diagnostics in this package)."""
        with self._lock:
            return list(self._workers.values())

    def wait_for_workers(self, count: int | None = None, timeout: float = 30.0) -> None:
        """Block until ``count`` (default: pool_size) workers are accepting requests."""
        want = count if count is not None else int(self.config.pool_size or 1)
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                n = sum(1 for w in self._workers.values() if w.accepting)
            if n >= want:
                return
            if time.monotonic() >= end:
                raise TimeoutError(f"pool {self.name!r} has {n} of {want} workers after {timeout}s")
            time.sleep(0.02)

    # ------------------------------------------------------------------ shutdown
    def stop(self, wait: bool = True, *, cancel_futures: bool = False, grace: float = 5.0) -> None:
        """Stop the pool: no new requests; then stop every worker. Idempotent.

        Args:
            wait: let queued and in-flight requests finish (up to ``grace`` seconds) before
                stopping the workers; what is left then fails with :class:`PoolClosedError`.
            cancel_futures: cancel queued requests instead of running them.
        """
        with self._lock:
            if self._closed:
                already = True
            else:
                already = False
                self._closed = True
                queued = [] if wait and not cancel_futures else list(self._queue)
                for call in queued:
                    self._queue.remove(call)
                withdrawn = [] if wait and not cancel_futures else [
                    c for w in self._workers.values() for c in w.waiting
                ]
        if already:
            self._stopping_done.wait(10.0)
            return
        for call in withdrawn:  # pipelined, not started: cancelled in their workers
            if call.future is not None:
                call.future.cancel()
            else:
                self._complete(call, None, PoolClosedError(self.name))
                self._drop_queued(call)
        for call in queued:
            if call.queue_timer is not None:
                call.queue_timer.cancel()
            if call.future is not None:
                call.future.cancel()
            self._complete(call, None, PoolClosedError(self.name))
        if wait:
            # Like Executor.shutdown(wait=True): queued and running requests finish first.
            end = time.monotonic() + grace
            while time.monotonic() < end and (self._queue or any(w.in_flight for w in self._worker_handles())):
                time.sleep(0.01)
        with self._lock:
            leftover = list(self._queue)
            self._queue.clear()
        for call in leftover:
            if call.queue_timer is not None:
                call.queue_timer.cancel()
            self._complete(call, None, PoolClosedError(self.name))
        self._teardown(grace=2.0)

    def _teardown(self, grace: float) -> None:
        self._closed = True
        if self.lifecycle is not None:
            self.lifecycle.stop()
        if getattr(self, "history", None) is not None:
            self.history.stop()
        with self._lock:
            workers = list(self._workers.values())
            for w in workers:
                w.status = STOPPED
        for w in workers:
            for call in list(w.in_flight.values()):
                self._complete(call, None, PoolClosedError(self.name))
            if w.conn is not None:
                w.conn.close()
            if w.process is not None:
                w.process.request_exit()
        _stop_processes([w.process for w in workers if w.process is not None], grace)
        for thread in list(self._starter_threads):
            thread.join(timeout=self.config.startup_timeout + 1)
        self._timer.stop()
        with self._lock:
            self._workers.clear()
            self._sessions.clear()
        if self._options_file:
            try:
                os.unlink(self._options_file)
            except OSError:
                pass
        self._stopping_done.set()

    shutdown = stop

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        from . import api

        api._forget(self)
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._closed else f"{len(self._workers)} workers"
        return f"<snakepit.Pool {self.name!r} profile={self.profile.name} {state} capacity={self.capacity}>"

    def _repr_html_(self) -> str:
        """A static summary for notebooks (the live view is ``snakepit_nb.Panel``). Never raises."""
        import html

        try:
            stats = self.statistics()
            workers = self.list_workers()
        except Exception as exc:  # a repr must not raise
            return f"<pre>{html.escape(repr(self))}: {html.escape(str(exc))}</pre>"
        used, total = stats["capacity_used"], stats["capacity_total"]
        pct = 100.0 * used / total if total else 0.0
        rows = "".join(
            f"<tr><td>{html.escape(w.worker_id)}</td><td>{w.pid}</td><td>{html.escape(w.status)}</td>"
            f"<td>{w.load}/{w.capacity}</td><td>{w.requests_served}</td><td>{w.uptime_s:.0f}s</td></tr>"
            for w in workers
        )
        state = "stopped" if self._closed else "running"
        return (
            f"<div><strong>snakepit pool {html.escape(self.name)}</strong> — {self.profile.name} profile, "
            f"{state}, {len(workers)} workers, capacity {used}/{total} in use ({pct:.0f}%), "
            f"queue {stats['queue_depth']}/{stats['max_queue_size']}"
            "<table><thead><tr><th>worker</th><th>pid</th><th>status</th><th>load</th><th>requests</th>"
            f"<th>uptime</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )


class Session:
    """Calls made through a session run on one worker while that worker lives.

    When the worker dies or is recycled, the next call moves to another worker: ``moves``
    records it (``[{"from": ..., "to": ..., "reason": ..., "time": ...}]``) and the
    ``("snakepit","session","moved")`` event is emitted. The namespace of ``run_code`` does
    not survive a move.
    """

    def __init__(self, pool: Pool, session_id: str, register: bool = True) -> None:
        self.pool = pool
        self.session_id = session_id
        self.worker_id: str | None = None
        self.worker_pid: int | None = None
        self.moves: list[dict[str, Any]] = []
        self.pinned = False
        self.last_used = time.monotonic()
        self._pending_move: str | None = None
        self._previous: str | None = None

    # Called with the pool lock held.
    def _bind(self, worker: _Worker) -> None:
        old = self.pool._workers.get(self.worker_id) if self.worker_id is not None else None
        if old is not None:
            old.sessions.discard(self.session_id)
        previous = self._previous
        self.worker_id = worker.worker_id
        self.worker_pid = worker.pid
        worker.sessions.add(self.session_id)
        if self._pending_move is not None:
            move = {"from": previous, "to": worker.worker_id, "reason": self._pending_move, "time": time.time()}
            self.moves.append(move)
            self._pending_move = None
            telemetry.execute(
                telemetry.SESSION_MOVED, {"count": len(self.moves)},
                {"pool": self.pool.name, "session_id": self.session_id, "from_worker": previous,
                 "to_worker": worker.worker_id, "reason": move["reason"]},
            )

    def _unbind(self, reason: str) -> None:
        if self.pinned:
            raise WorkerCrashedError(self.worker_id or "?", self.worker_pid, None, f"pinned worker {reason}")
        if self.worker_id is not None:
            self._previous = self.worker_id
            self._pending_move = reason
            self.worker_id = None

    @property
    def moved(self) -> bool:
        """True if the session changed workers at least once."""
        return bool(self.moves)

    def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT) -> Any:
        call = self.pool._dispatch(command, args, session=self, stream=False, timeout=timeout)
        return _wait(call)

    def submit_command(self, command: str, args: Mapping[str, Any] | None = None, *,
                       timeout: Any = _DEFAULT) -> SnakepitFuture:
        call = self.pool._dispatch(command, args, session=self, stream=False, timeout=timeout)
        assert call.future is not None
        return call.future

    def execute_stream(self, command: str, args: Mapping[str, Any] | None = None, *,
                       timeout: Any = _DEFAULT) -> Iterator[Any]:
        call = self.pool._dispatch(command, args, session=self, stream=True, timeout=timeout)
        return _iterate_stream(self.pool, call)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> SnakepitFuture:
        return self.pool._submit_fn(fn, args, kwargs, self)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], chunksize: int | None = None,
            timeout: float | None = None) -> Iterator[Any]:
        return self.pool._map(fn, iterables, chunksize, timeout, self)

    def run_code(self, source: str, *, push: Mapping[str, Any] | None = None, pull: Iterable[str] | None = None,
                 on_output: Callable[[str, str], None] | None = None, timeout: Any = _DEFAULT) -> RunResult:
        return self.pool.run_code(source, self.session_id, push=push, pull=pull, on_output=on_output,
                                  timeout=timeout)

    def close(self) -> None:
        """Forget the session (and its namespace on the worker)."""
        pool = self.pool
        worker_id = self.worker_id
        with pool._lock:
            pool._sessions.pop(self.session_id, None)
            worker = pool._workers.get(worker_id) if worker_id else None
            if worker is not None:
                worker.sessions.discard(self.session_id)
        if worker is not None and not pool.closed:
            try:
                on_worker = pool._pinned_session(worker.worker_id)
                pool._dispatch("session_close", {"session_id": self.session_id}, session=on_worker,
                               stream=False, timeout=5.0)
            except Exception:  # closing is best effort: the worker may be gone already
                pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<snakepit.Session {self.session_id!r} worker={self.worker_id}>"


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _function_key(fn: Callable[..., Any]) -> tuple[str | None, str]:
    """What the pool learns a submitted function's duration by (its qualified name)."""
    return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None) or type(fn).__qualname__


class _MapFeeder:
    """Feeds one ``map()``'s chunks to its pool, keeping at most ``window`` of them outstanding.

    ``futures`` are the chunks' results in order; each is settled from its request's future,
    and every finished chunk lets the next one go out.
    """

    def __init__(self, pool: Pool, fn: Callable[..., Any], chunks: list[list[Any]], star: bool, key: Any,
                 session: "Session | None", window: int) -> None:
        self.pool = pool
        self.fn = fn
        self.star = star
        self.chunks = chunks
        self.session = session
        self.window = window
        self.futures: list[Future] = [Future() for _ in chunks]
        self._key = key
        self._next = 0
        self._closed = False
        self._lock = threading.Lock()
        self._requests: dict[int, Future] = {}

    def start(self) -> None:
        """Send the first window; an error sending the first chunk is raised here."""
        for _ in range(min(self.window, len(self.chunks))):
            if not self._send_next(raise_first=True):
                break

    def _send_next(self, raise_first: bool = False) -> bool:
        with self._lock:
            if self._closed or self._next >= len(self.chunks):
                return False
            index = self._next
            self._next += 1
        try:
            args = {"fn": self.fn, "items": self.chunks[index]}
            if not self.star:
                args["star"] = False
            call = self.pool._dispatch("call_batch", args,
                                       session=self.session, stream=False, timeout=_DEFAULT, key=self._key,
                                       n_items=len(self.chunks[index]), queue_timeout=None)
        except BaseException as exc:
            if raise_first and index == 0:
                self.close()
                raise
            self._fail_from(index, exc)
            return False
        request = call.future
        assert request is not None
        with self._lock:
            self._requests[index] = request
        request.add_done_callback(lambda f, i=index: self._on_done(i, f))
        return True

    def _fail_from(self, index: int, exc: BaseException) -> None:
        """Chunks from ``index`` on cannot be sent: they all fail with ``exc``."""
        with self._lock:
            self._closed = True
        for fut in self.futures[index:]:
            if not fut.done():
                try:
                    fut.set_exception(exc)
                except Exception:  # InvalidStateError: cancelled meanwhile
                    pass

    def _on_done(self, index: int, request: Future) -> None:
        with self._lock:
            self._requests.pop(index, None)
        self._send_next()  # first keep the pool busy, then settle this chunk
        out = self.futures[index]
        try:
            if request.cancelled():
                out.cancel()
            elif request.exception() is not None:
                out.set_exception(request.exception())
            else:
                out.set_result(request.result())
        except Exception:  # InvalidStateError: the map was closed meanwhile
            pass

    def close(self) -> None:
        """Stop feeding; cancel every chunk that has not finished."""
        with self._lock:
            self._closed = True
            requests = list(self._requests.values())
        for fut in self.futures:
            fut.cancel()
        for request in requests:
            request.cancel()


def _wait(call: _Call) -> Any:
    fut = call.future
    assert fut is not None
    try:
        return fut.result()
    except CancelledError:
        raise RequestCancelledError(call.command) from None
    except KeyboardInterrupt:
        # Ctrl-C in the caller (a notebook's stop button): stop the remote work too.
        fut.cancel()
        raise


def _iterate_stream(pool: Pool, call: _Call, cancel: threading.Event | None = None) -> Iterator[Any]:
    chunks = call.chunks
    assert chunks is not None
    finished = False
    try:
        while True:
            if cancel is None:
                item = chunks.get()
            else:
                try:
                    item = chunks.get(timeout=0.05)
                except queue.Empty:
                    if cancel.is_set():
                        raise RequestCancelledError(
                            call.command, call.worker.worker_id if call.worker else None, "cancelled by the caller"
                        ) from None
                    continue
            if item is STREAM_END:
                finished = True
                return
            if isinstance(item, _Failure):
                finished = True
                raise item.error
            yield item
    finally:
        if not finished:
            # Closed early (break, KeyboardInterrupt, garbage collection): stop the worker side.
            if call.worker is None:
                pool._drop_queued(call)
            if call.worker is not None:
                pool._cancel_running(call, "stream closed by the caller")


def _stop_processes(procs: list[WorkerProcess], grace: float) -> None:
    """Stop worker processes together: pipe closed (already), then SIGTERM, then SIGKILL.

    One shared deadline per step, so stopping N workers takes as long as stopping one.
    """
    import signal

    for proc in procs:
        proc.request_exit()
    steps = ((grace / 2, None), (grace / 2, signal.SIGTERM), (5.0, signal.SIGKILL))
    alive = list(procs)
    for budget, sig in steps:
        if sig is not None:
            for proc in alive:
                proc.signal(sig)
        deadline = time.monotonic() + budget
        still = []
        for proc in alive:
            if proc.wait(max(0.0, deadline - time.monotonic())) is None:
                still.append(proc)
        alive = still
        if not alive:
            return
    if alive:
        log.warning("workers did not exit: %s", [p.pid for p in alive])
