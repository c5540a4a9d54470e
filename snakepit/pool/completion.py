"""Completion: replies, results and errors, timeouts and the cancel ladder.

A mixin of :class:`snakepit.pool.Pool`.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from .. import telemetry
from ..errors import QueueTimeoutError, RequestCancelledError, RequestTimeoutError, SerializationError
from ..protocol import bulk, codec
from ..protocol import worker_pb2 as pb
from . import functions
from .calls import STREAM_END, _Call, _Failure
from .records import RECYCLING, _Worker

log = logging.getLogger("snakepit.pool")
_RESULT, _PART, _CHUNK, _ERROR = pb.Reply.RESULT, pb.Reply.PART, pb.Reply.CHUNK, pb.Reply.ERROR


class CompletionMixin:
    """How a request ends: its reply, a timeout, or a cancel."""

    # ------------------------------------------------------------------ completion
    def _on_reply(self, worker: _Worker, reply: pb.Reply) -> None:
        call = worker.in_flight.get(reply.request_id)
        if call is None:
            return
        kind = reply.kind
        error: BaseException | None = None
        value: Any = None
        if kind == _RESULT:
            try:
                if reply.in_parts:
                    value = self._assembled(call)
                else:
                    value = codec.loads(reply.payload, "result of", call.command)
            except SerializationError as exc:
                error = exc
        elif kind == _PART:
            self._on_part(call, reply)
            return
        elif kind == _CHUNK:
            if call.chunks is not None:
                try:
                    call.chunks.put(codec.loads(reply.payload, "stream item"))
                except SerializationError as exc:
                    call.chunks.put(_Failure(exc))
            return
        elif kind == _ERROR:
            code = reply.error.code
            if code == codec.UNKNOWN_FUNCTION and self._resend_function(worker, call):
                return
            if code == codec.CANCELLED:
                error = RequestCancelledError(call.command, worker.worker_id)
            else:
                error = codec.error_from_failure(reply.error, worker_id=worker.worker_id, command=call.command)
        self._finish(worker, call, value, error, error is None, reply.duration_us)

    @staticmethod
    def _resend_function(worker: _Worker, call: _Call) -> bool:
        """The worker lacked the by-value function named by hash (new or evicted): the same
        request again, with the bytes (pool/functions.py). False if it cannot be resent."""
        conn = worker.conn
        if call.function is None or call.done or conn is None:
            return False
        request = call.to_request()
        functions.attach(request, call.function, worker.functions_sent, force=True)
        call.payload, call.function = b"", None
        conn.send(request)
        return True

    @staticmethod
    def _on_part(call: _Call, reply: pb.Reply) -> None:
        """One slice of a large result, copied into its buffers (protocol/bulk.py)."""
        if call.done or isinstance(call.parts, BaseException):
            return
        try:
            if call.parts is None:
                call.parts = bulk.Assembly(reply.segments)
            call.parts.add(reply.payload)
        except (ValueError, MemoryError) as exc:
            call.parts = exc

    @staticmethod
    def _assembled(call: _Call) -> Any:
        """The value of a large result whose parts all came; its buffers are let go here."""
        parts, call.parts = call.parts, None
        what = f"result of {call.command!r}"
        try:
            if not isinstance(parts, bulk.Assembly):
                raise ValueError(parts or "no parts received")
            return parts.loads()
        except Exception as exc:
            raise SerializationError(f"{what} cannot be unpickled: {type(exc).__name__}: {exc}") from exc
        finally:
            del parts
            bulk.trim_memory()  # the freed receive buffers go back to the OS

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
        if telemetry.has_handlers(telemetry.REQUEST_EXECUTED):
            telemetry.execute(
                telemetry.REQUEST_EXECUTED,
                {"duration_us": duration_us},
                {"pool": self.name, "worker_id": worker.worker_id, "command": call.command, "success": success},
            )
        self._send_all(dispatch)
        if newly_recycling:
            self._grow_to_target()
        if drained:
            self._retire(worker)

    def _complete(self, call: _Call, value: Any, error: BaseException | None) -> None:
        if call.done:
            return
        call.done = True
        call.parts = None  # a large result cut short: its buffers go now
        if call.chunks is not None:
            call.chunks.put(_Failure(error) if error is not None else STREAM_END)
            return
        fut = call.future
        assert fut is not None
        fut._call = None  # the future outlives the call; no cycle left for the collector
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

