"""One request's journey: its future, its record in the pool, and how a caller waits for it."""
from __future__ import annotations

import _thread
import collections
import queue
import threading
import time
from concurrent.futures import CancelledError, Future
from concurrent.futures._base import CANCELLED_AND_NOTIFIED, PENDING, RUNNING
from typing import Any, Callable, Iterator

from ..errors import RequestCancelledError
from ..protocol import worker_pb2 as pb

_DEFAULT = object()  # "use the pool's default" (None means "no limit")
STREAM_END = object()


class _FutureCondition(_thread.RLock):
    """What a future asks of :class:`threading.Condition`, at a fraction of its cost.

    ``threading.Condition()`` builds an RLock, a deque and five bound methods per instance:
    a burst of 20k submits spent a quarter of its time there and in the garbage collector
    walking them (docs/performance.md, "Lighter futures"). This is the reentrant lock itself
    (``acquire``, ``release`` and ``with`` stay in C) plus ``wait``/``notify`` with the same
    semantics as ``threading.Condition``'s (waiters woken first come, first served); the
    waiters' deque is made by the first ``wait``.
    """

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: collections.deque | None = None

    def wait(self, timeout: float | None = None) -> bool:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot wait on un-acquired lock")
        waiter = threading.Lock()
        waiter.acquire()
        if self._waiters is None:
            self._waiters = collections.deque()
        self._waiters.append(waiter)
        saved = self._release_save()  # type: ignore[attr-defined]
        woken = False
        try:
            if timeout is None:
                woken = waiter.acquire()
            elif timeout > 0:
                woken = waiter.acquire(True, timeout)
            else:
                woken = waiter.acquire(False)
            return woken
        finally:
            self._acquire_restore(saved)  # type: ignore[attr-defined]
            if not woken:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters
        while waiters and n > 0:
            waiter = waiters.popleft()
            try:
                waiter.release()
            except RuntimeError:  # pragma: no cover - a waiter that timed out meanwhile
                pass
            n -= 1

    def notify_all(self) -> None:
        if self._waiters:  # (usually nobody waits yet when a result comes)
            self.notify(len(self._waiters))


class SnakepitFuture(Future):
    """A :class:`concurrent.futures.Future` whose ``cancel()`` also stops running work.

    A queued request is simply dropped. A running one is cancelled on its worker (the
    cooperative flag, then an interrupt; see docs/lifecycle.md) and the future reports
    cancelled at once; the worker slot frees when the worker acknowledges.
    """

    _call: "_Call | None" = None

    def __init__(self) -> None:
        # Future.__init__'s attributes, with a lighter condition (tests/test_futures.py
        # checks that none is missing on this Python).
        self._condition = _FutureCondition()  # type: ignore[assignment]
        self._state = PENDING
        self._result = None
        self._exception = None
        self._waiters = []
        self._done_callbacks = []

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
        "queue_timer", "request_timer", "cancel_sent", "key", "waiting", "n_items", "parts",
        "function",
    )

    def __init__(self, pool_ref: Callable[[], "Pool | None"], request_id: int, command: str, payload: bytes,
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
        self.pool_ref = pool_ref
        self.done = False
        self.queue_timer: _TimerHandle | None = None
        self.request_timer: _TimerHandle | None = None
        self.cancel_sent = False
        self.key: Any = command  # what the pool learns durations by (see Pool._pipeline_limit)
        self.waiting = False  # pipelined: sent to its worker, waiting there behind running ones
        self.n_items = 1  # calls it stands for (a map chunk's length): durations are learnt per item
        self.parts: Any = None  # a large result being received (protocol.bulk.Assembly)
        self.function: tuple[bytes, bytes] | None = None  # (hash, bytes) of a by-value fn

    def pool_ref_cancel_queued(self) -> None:
        pool = self.pool_ref()
        if pool is not None:
            pool._drop_queued(self)

    def request_remote_cancel(self, reason: str) -> None:
        pool = self.pool_ref()
        if pool is not None:
            pool._cancel_running(self, reason)

    def to_request(self) -> pb.Request:
        request = pb.Request(request_id=self.request_id, command=self.command, payload=self.payload)
        if self.session is not None:
            request.session_id = self.session.session_id
        if self.deadline:
            request.timeout_s = max(0.0, self.deadline - time.monotonic())
        elif self.timeout:
            request.timeout_s = self.timeout
        if self.stream:
            request.stream = True
        return request



class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _function_key(fn: Callable[..., Any]) -> tuple[str | None, str]:
    """What the pool learns a submitted function's duration by (its qualified name)."""
    return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None) or type(fn).__qualname__



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


