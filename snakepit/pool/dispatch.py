"""Dispatch: choosing a worker slot, the bounded FIFO queue, and pipelining.

A mixin of :class:`snakepit.pool.Pool`: every method here runs on the pool's state under
its lock (as marked), and sends outside it.
"""
from __future__ import annotations

import time
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, PENDING
from collections.abc import Mapping
from typing import Any

from .. import telemetry
from ..connection import WorkerConnection
from ..errors import PoolClosedError, PoolSaturatedError, WorkerCrashedError
from ..protocol import codec
from . import functions
from .calls import _DEFAULT, _Call
from .timers import normalize_timeout
from .records import RECYCLING, SCALED_DOWN, UNHEALTHY, _Worker


# Future.cancelled() without taking the future's lock: a cancel racing with the check is
# handled like any cancel of a queued or waiting call (Pool._drop_queued).
_CANCELLED_STATES = (CANCELLED, CANCELLED_AND_NOTIFIED)


class DispatchMixin:
    """Where a request goes: a free slot, a worker's pipeline, or the queue."""

    # ------------------------------------------------------------------ dispatch
    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError(self.name)

    def _check_session_worker(self, session: "Session") -> None:
        """(lock held) A session whose worker is being scaled away loses its state: say so."""
        if session.worker_id is not None:
            bound = self._workers.get(session.worker_id)
            if bound is not None and bound.recycle_reason == SCALED_DOWN:
                session._lose(bound.worker_id, "the pool was scaled down")
        session._raise_if_lost()

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
        expected_us = self._learnt_quick_us(call)
        if expected_us is None:
            return 0
        return max(1, min(self.AUTO_PIPELINE_MAX_DEPTH, int(self.AUTO_PIPELINE_WAIT_US / max(expected_us, 1.0))))

    def _learnt_quick_us(self, call: _Call) -> float | None:
        """(lock held) The learnt worker-side time of ``call`` (µs) when calls like it have
        been seen (twice at least) to finish as fast as automatic pipelining asks; else None.
        Such a call may also run after others of its batch, on one worker thread."""
        learnt = self._durations.get(call.key)
        if learnt is None or learnt[1] < 2:
            return None
        expected_us = learnt[0] * call.n_items
        return expected_us if expected_us <= self.AUTO_PIPELINE_MAX_US else None

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
            # A future cancelled an instant ago, its withdrawal not made yet (Pool._drop_queued
            # finds the call started and cancels it on the worker): it only learns so here.
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
        request = call.to_request()
        by_hash_only = call.function is not None and not functions.attach(request, call.function,
                                                                           worker.functions_sent)
        conn.send(request, call.waiting and self._learnt_quick_us(call) is not None)
        if by_hash_only:
            return  # the call keeps payload and function until the reply: the worker may need them again
        call.payload = b""  # on its way: the call no longer holds the arguments
        call.function = None

    def _send_all(self, calls: list[_Call]) -> None:
        for call in calls:
            self._send(call)

    def _dispatch(self, command: str, args: Any, *, session: "Session | None", stream: bool,
                  timeout: Any, key: Any = None, n_items: int = 1, queue_timeout: Any = _DEFAULT,
                  function: tuple[bytes, bytes] | None = None) -> _Call:
        if args is None:
            payload = codec.EMPTY_DICT_PAYLOAD
        elif isinstance(args, Mapping):  # a dict is pickled as it is, another mapping as a dict
            payload = codec.dumps(args if type(args) is dict else dict(args), f"arguments of {command!r}",
                                  self.config.max_message_bytes)
        else:
            raise TypeError(f"args must be a dict of keyword arguments for {command!r}, got {type(args).__name__}")
        if timeout is _DEFAULT:
            timeout = self.config.request_timeout
        else:
            timeout = normalize_timeout(timeout, "timeout")
        call = _Call(self._weak_self, next(self._request_ids), command, payload, session, stream, timeout)
        if key is not None:
            call.key = key
        call.function = function
        call.n_items = max(1, n_items)
        if session is not None:
            session.last_used = time.monotonic()
        saturated = None
        with self._lock:
            self._check_open()
            if session is not None:
                self._check_session_worker(session)
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
                # Behind queued calls it queues too (first come, first served; whoever frees a
                # slot takes from the queue and pipelines ahead).
                worker = None if self._queue else self._pick_pipeline_worker(call)
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
            if call.done or (call.future is not None and call.future._state in _CANCELLED_STATES):
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
            if call.done or (call.future is not None and call.future._state in _CANCELLED_STATES):
                self._queue.popleft()
                continue
            if not self._may_pipeline_to(worker, self._pipeline_limit(call)):
                break
            self._queue.popleft()
            self._enqueue_on_worker(call, worker)
            out.append(call)
        return out

    def _withdraw(self, call: _Call) -> WorkerConnection | None:
        """(lock held) A pipelined call leaves its worker's queue now; returns the connection
        to send its cancel on. The worker answers that request without running it (at once on
        gRPC, when it reads it on the lane); the pool no longer knows the request id and lets
        the answer go by."""
        call.cancel_sent = True
        worker = call.worker
        if worker is None:
            return None
        self._unwait(call)
        worker.in_flight.pop(call.request_id, None)
        return worker.conn

    def _drop_queued(self, call: _Call) -> None:
        """A queued or waiting call whose caller gave up (its future cancelled, its stream closed)."""
        conn = None
        started = False
        with self._lock:
            try:
                self._queue.remove(call)
            except ValueError:
                if call.done:
                    return
                if call.waiting:
                    conn = self._withdraw(call)
                    self.counters["cancelled"] += 1
                elif call.worker is not None:
                    started = True  # its turn came between the future's cancel and this
                else:
                    return
            else:
                call.done = True
        if call.queue_timer is not None:
            call.queue_timer.cancel()
        if conn is not None:
            conn.cancel(call.request_id)
        if started:
            self._cancel_running(call, "cancelled by the caller")

