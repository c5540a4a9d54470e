"""Where a worker's requests run: the main thread (process profile) or N threads (thread profile).

Requests reach the runner two ways:

* ``submit(fn)``: a request from the gRPC Dispatch stream (or a unary ``Execute``), queued
  for the next free request thread;
* the local lane (issue 16): while the manager's lane is open, the request threads read it
  themselves and run what they read at once, with no hand-off to another thread. The main
  thread reads the lane's stream; a thread worker's threads all wait on the lane's request
  queue together, and each request wakes one of them (``LaneSession.concurrent_reads``). A
  thread busy with a request reads nothing, so a cancel travels on gRPC, not on the lane.

A request queued by ``submit`` while the main thread waits on the lane wakes it through a
pipe. Threads waiting on a request queue cannot be woken that way (a queue message is the
only thing that wakes one, and only the manager writes them): what ``submit`` queues then
runs on a thread of its own, started for it and gone when no such work is left.
"""
from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import threading
from typing import Any, Callable

from ..signals import start_thread
from .adapter import Cancelled, RequestContext

# The runner sits below the service and the lane (they hand it work); it names them only
# in annotations: ``LaneSession`` (worker/lane.py) and ``WorkerService`` (worker/server.py).
LaneSession = WorkerService = Any

log = logging.getLogger("snakepit.worker")


class RequestRunner:
    """Runs requests: on the main thread (capacity 1) or on ``capacity`` threads."""

    def __init__(self, capacity: int, use_main_thread: bool) -> None:
        self.capacity = capacity
        self.use_main_thread = use_main_thread
        self._work: collections.deque[Callable[[], None]] = collections.deque()
        self._changed = threading.Condition(threading.Lock())  # work queued, a lane opened, stopping
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._lane: LaneSession | None = None
        self._aside = False  # a thread runs submitted work beside threads waiting on a request queue
        self._stopping = False
        self._main_ident = threading.main_thread().ident
        if not use_main_thread:
            for i in range(capacity):
                start_thread(threading.Thread(target=self._loop, name=f"snakepit-request-{i}", daemon=True))

    @property
    def wake_fd(self) -> int:
        """The read end of the pipe that interrupts a thread waiting on the lane."""
        return self._wake_r

    def submit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the next free request thread."""
        with self._changed:
            self._work.append(fn)
            self._changed.notify()
            lane = self._lane
            aside = lane is not None and lane.concurrent_reads and not self._aside
            if aside:
                self._aside = True
        if aside:
            start_thread(threading.Thread(target=self._run_aside, name="snakepit-request-aside", daemon=True))
        elif lane is not None:
            self._wake()

    def _run_aside(self) -> None:
        work, changed = self._work, self._changed
        while True:
            with changed:
                if not work or self._stopping:
                    self._aside = False
                    return
                item = work.popleft()
            try:
                item()
            except BaseException:  # noqa: BLE001 - as in _loop
                log.debug("interrupt outside a request ignored", exc_info=True)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake is pending anyway) or closed (stopping)

    def serve_lane(self, lane: "LaneSession") -> None:
        """From now until it closes, the request threads read their requests from ``lane``."""
        with self._changed:
            self._lane = lane
            self._changed.notify_all()

    def run_main_loop(self) -> None:
        """Main-thread loop of the process profile (returns when the runner stops)."""
        self._loop()

    def _loop(self) -> None:
        work, changed = self._work, self._changed
        while True:
            try:
                with changed:
                    while not work and self._lane is None and not self._stopping:
                        changed.wait()
                    if self._stopping:
                        return
                    item = work.popleft() if work else None
                    lane = self._lane
                if item is not None:
                    item()
                elif lane is not None:
                    self._serve_one(lane)
            except BaseException:  # noqa: BLE001 - a stray interrupt must not end the loop
                log.debug("interrupt outside a request ignored", exc_info=True)

    def _serve_one(self, lane: "LaneSession") -> None:
        """Read one request from the lane and run it on this thread (or return when woken)."""
        if lane.concurrent_reads:
            frame = lane.next_queued()
        else:
            with lane.read_lock:
                if self._stopping or self._work:
                    return
                frame = lane.next_frame()
        if frame is None:
            if lane.closed:
                with self._changed:
                    if self._lane is lane:
                        self._lane = None
            return
        lane.handle(frame)

    def install_interrupt_handler(self, service: "WorkerService") -> None:
        """SIGINT raises Cancelled in the main thread only when its request was cancelled."""

        def on_sigint(signum: int, frame: Any) -> None:
            ctx = service.main_thread_request
            if ctx is not None and ctx.cancelled and ctx.thread_ident is not None:
                raise Cancelled()

        signal.signal(signal.SIGINT, on_sigint)

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._wake()

    def interrupt(self, ctx: RequestContext) -> None:
        """Interrupt the thread running ``ctx`` (best effort; the flag is already set)."""
        ident = ctx.thread_ident
        if ident is None:
            return
        if ident == self._main_ident:
            signal.pthread_kill(ident, signal.SIGINT)
        else:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(Cancelled))
