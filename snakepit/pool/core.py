"""The pool's public surface: :class:`Pool` (execute, submit, map, sessions, run_code, stop).

Its parts live beside it, one concern a module: :mod:`.dispatch` (slots, queue,
pipelining), :mod:`.completion` (replies, timeouts, cancel), :mod:`.workers` (start,
replace, recycle through the backend), :mod:`.mapping`, :mod:`.sessions`, :mod:`.calls`,
:mod:`.timers`, :mod:`.records`.
"""
from __future__ import annotations

import asyncio
import logging
import collections
import itertools
import os
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Mapping

from ..backends import Backend, create_backend
from ..config import PoolConfig
from ..errors import PoolClosedError
from ..lifecycle import LifecycleMonitor
from ..profiles import get_profile
from .functions import by_value
from .calls import _DEFAULT, SnakepitFuture, _Call, _function_key, _iterate_stream, _wait
from .completion import CompletionMixin
from .dispatch import DispatchMixin
from .mapping import MapMixin
from .records import COUNTERS, STOPPED, RunResult, WorkerInfo, _Worker
from .sessions import Session
from .sizing import SizingMixin
from .timers import _Timer
from .workers import WorkerSetMixin

log = logging.getLogger("snakepit.pool")


class Pool(DispatchMixin, CompletionMixin, WorkerSetMixin, SizingMixin, MapMixin):
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

    def __init__(self, config: PoolConfig, *, launcher: Any = None, backend: Backend | None = None) -> None:
        self.config = config
        self.name = config.name
        self.profile = get_profile(config.profile)
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._queue: collections.deque[_Call] = collections.deque()
        self._request_ids = itertools.count(1)
        self._weak_self = weakref.ref(self)  # what each call holds (a call never keeps its pool alive)
        self._worker_seq = itertools.count(1)
        self._rr = 0
        self._closed = False
        self._stopping_done = threading.Event()
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
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
        self._stop_callbacks: list[Callable[[Pool], None]] = []
        self._target = int(config.pool_size or 1)
        self._adaptive: Any = None
        # Counters and recent history for diagnostics (read-only for them).
        self.counters: dict[str, int] = collections.defaultdict(int, dict.fromkeys(COUNTERS, 0))
        self.recent_latencies_us: collections.deque[int] = collections.deque(maxlen=4096)
        self.recycle_history: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.crash_history: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.saturation_history: collections.deque[float] = collections.deque(maxlen=1000)
        self._backend = backend or create_backend(
            config, self.profile.environment(config, dict(os.environ)), self._capacity, launcher
        )
        self._timer = _Timer(config.name)
        self.lifecycle: Any = None
        self.history: Any = None
        try:
            self._start_initial_workers()
            self.lifecycle = LifecycleMonitor(self)
            self.lifecycle.start()
            if config.history_interval:
                from ..diagnostics.history import HistorySampler  # noqa: PLC0415 - keeps pandas out of import

                self.history = HistorySampler(self)
                self.history.start()
        except BaseException:  # includes Ctrl-C during start-up: leave nothing running
            self._teardown(grace=0.5)
            raise

    @property
    def backend(self) -> str:
        """Where the workers run: ``"local"`` (children of this process) or ``"dask"``."""
        return self._backend.name

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
        function = by_value(fn)  # shipped once per worker, then named by hash (pool/functions.py)
        call = self._dispatch("call", {"args": args, "kwargs": kwargs} if function else
                              {"fn": fn, "args": args, "kwargs": kwargs}, session=session,
                              stream=False, timeout=_DEFAULT, key=("call", _function_key(fn)), function=function)
        assert call.future is not None
        return call.future

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
                    host=w.host, dask_worker=getattr(w.process, "dask_worker", None),
                    address=getattr(w.process, "address", ""), pipelined=len(w.waiting),
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

    def worker_records(self) -> list[_Worker]:
        """The live workers' records, for lifecycle and diagnostics: **read them, never write**.

        Each has ``worker_id``, ``pid``, ``status``, ``load``, ``capacity``, ``figures`` (the
        worker's own figures from its last heartbeat), ``conn`` (its connection: ``info()``)
        and ``process`` (its :class:`~snakepit.backends.WorkerHandle`: ``host``, ``is_local``).
        """
        with self._lock:
            return list(self._workers.values())

    def on_stopped(self, fn: Callable[["Pool"], None]) -> None:
        """Call ``fn(pool)`` once the pool has stopped (the registry forgets it then)."""
        self._stop_callbacks.append(fn)

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
            while time.monotonic() < end and (self._queue or any(w.in_flight for w in self.worker_records())):
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
        if self._adaptive is not None:
            self._adaptive.stop()
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
        self._backend.stop_workers([w.process for w in workers if w.process is not None], grace)
        for thread in list(self._starter_threads):
            thread.join(timeout=self.config.startup_timeout + 1)
        self._timer.stop()
        with self._lock:
            self._workers.clear()
            self._sessions.clear()
        self._backend.close()
        self._stopping_done.set()
        for fn in self._stop_callbacks:
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - a callback must not break stopping
                log.exception("pool %r: stop callback failed", self.name)

    shutdown = stop

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
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


