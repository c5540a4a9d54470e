"""The manager's end of the local lane: a local worker's Dispatch stream without gRPC (issue 16).

A :class:`LaneConnection` is a :class:`~snakepit.connection.WorkerConnection` whose
request/reply stream runs over the worker's lane socket (``<socket>.lane``, owner-only)
as length-prefixed ``Request``/``Reply`` messages (:mod:`snakepit.protocol.framing`);
Ping, Info, Cancel and Shutdown still use the gRPC channel. What it saves per round trip: the
request leaves from the caller's own thread (no hand-off to gRPC's request-iterator thread
and C-core), and the reply is read by one thread of ours straight from the socket.

A thread-profile worker takes its requests on a request queue instead of the stream (a
``SOCK_SEQPACKET`` socket it passes over at connect, :func:`~snakepit.protocol.framing.receive_hello`):
one message a request, which wakes exactly one of its request threads; quick calls the pool
pipelined, corked together, as one batch message that one thread runs in turn (``send``).
Replies always come back on the stream.

Which pools use it: ``PoolConfig.transport`` (``"lane"`` by default for local workers;
``"grpc"`` keeps the gRPC stream). Cluster workers always use gRPC.
"""
from __future__ import annotations

import collections
import logging
import socket
import threading
from typing import Any

from .connection import WorkerConnection
from .protocol import codec, framing
from .signals import signals_blocked, start_thread
from .protocol import worker_pb2 as pb

log = logging.getLogger("snakepit.connection")
_MAIN_THREAD = threading.main_thread().ident
_HELLO_TIMEOUT = 30.0  # a worker answers at once; this only bounds a wedged one


class LaneConnection(WorkerConnection):
    """Client side of one local worker, its requests and replies on the lane socket."""

    def __init__(self, target: str, lane_path: str, *, max_message_bytes: int, **kwargs: Any) -> None:
        """Connect to the worker serving gRPC at ``target`` and its lane at ``lane_path``;
        the other arguments are :class:`~snakepit.connection.WorkerConnection`'s.

        Raises ``OSError`` when the lane cannot be reached (the worker has none).
        """
        self._lane_path = lane_path
        self._max_frame = max_message_bytes + 2**16
        # Writes never block a caller (or the reader thread, which sends the next queued
        # calls): what the socket does not take at once waits in the backlog, in order, for
        # the writer thread (started the first time it is needed).
        self._write_lock = threading.Condition(threading.Lock())
        # (data, on_queue): on_queue data is one whole queue message
        self._backlog: collections.deque[tuple[memoryview, bool]] = collections.deque()
        self._writer_busy = False
        self._writer: threading.Thread | None = None
        # While the reader works through replies that came together, the requests they set
        # off (queued calls sent as slots free) wait here and leave at the end: in one write,
        # or (a request queue) one message after another with nothing in between.
        self._corked: list[bytes] | None = None
        # (a request queue) corked requests that may run one after another on one thread
        # (``send(batchable=True)``): they leave together, as batch messages
        self._corked_batchable: list[bytes] = []
        self._sock: socket.socket | None = None
        self._queue: socket.socket | None = None  # a thread worker's request queue
        self._cancels: set[Any] = set()
        super().__init__(target, max_message_bytes=max_message_bytes, **kwargs)

    def _open_dispatch(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_HELLO_TIMEOUT)
            sock.connect(self._lane_path)
            self._queue = framing.receive_hello(sock)
            sock.settimeout(None)
        except OSError:
            sock.close()
            self.channel.close()
            raise
        self._sock = sock

    def send(self, request: pb.Request, batchable: bool = False) -> None:
        """Write a request to the worker without blocking (from any thread).

        ``batchable``: the pool sent it ahead to a busy worker and has seen calls like it
        finish in under 2 ms. To a thread worker, such requests corked together leave as one
        batch message, which one request thread takes and runs in turn: a burst of quick
        calls then wakes one thread per batch, not one per call.

        A message is written whole or the lane is given up: the socket takes what it can at
        once (Ctrl-C held off meanwhile on the main thread) and the rest waits for the writer
        thread, so the worker never reads half a message as the start of the next; an
        exception in the middle of one shuts the socket and the pool replaces the worker
        like a lost one.
        """
        if self._queue is not None:
            data = request.SerializeToString()
            with self._write_lock:
                if self._closed:
                    return
                if 0 < len(data) <= framing.QUEUE_MESSAGE_BYTES:
                    if self._corked is not None:
                        if batchable and len(data) <= _BATCH_ITEM_BYTES:
                            self._corked_batchable.append(data)
                        else:
                            self._corked.append(data)
                    else:
                        self._write_now(data, True)
                else:  # too big for a queue message: announced on the queue, sent on the stream
                    # (announced first: the stream is read only by a thread that took a notice)
                    self._write_now(framing.ON_STREAM, True)
                    self._write_now(framing.frame(data), False)
            return
        data = framing.frame(request.SerializeToString())
        with self._write_lock:
            if self._closed:
                return
            if self._corked is not None:
                self._corked.append(data)
                return
            self._write_now(data, False)

    def _write_now(self, data: bytes, on_queue: bool) -> None:
        """(write lock held) Send ``data`` (on the request queue: as one message) without
        blocking; what the socket does not take goes, in order, to the writer thread."""
        sock = self._queue if on_queue else self._sock
        assert sock is not None
        if self._writer_busy:
            self._backlog.append((memoryview(data), on_queue))
            return
        try:
            if threading.get_ident() == _MAIN_THREAD:
                with signals_blocked():
                    sent = sock.send(data, socket.MSG_DONTWAIT)
            else:
                sent = sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the reader sees the broken lane and reports it once
        except BaseException:
            self._shut()
            raise
        if sent < len(data):  # a queue message is sent whole or not at all
            self._backlog.append((memoryview(data)[sent:], on_queue))
            self._writer_busy = True
            if self._writer is None:
                self._writer = start_thread(threading.Thread(
                    target=self._write_backlog, name=f"{self._reader.name}-writer", daemon=True))
            else:
                self._write_lock.notify()

    def _uncork(self) -> None:
        with self._write_lock:
            corked, self._corked = self._corked, None
            batchable, self._corked_batchable = self._corked_batchable, []
            if self._closed:
                return
            if self._queue is not None:
                for message in corked or ():
                    self._write_now(message, True)
                for message in _batches(batchable):
                    self._write_now(message, True)
            elif corked:
                self._write_now(corked[0] if len(corked) == 1 else b"".join(corked), False)

    def _write_backlog(self) -> None:
        stream, queue = self._sock, self._queue
        assert stream is not None
        while True:
            with self._write_lock:
                while not self._backlog:
                    self._writer_busy = False
                    if self._closed:
                        return
                    self._write_lock.wait()
                data, on_queue = self._backlog.popleft()
            try:
                if on_queue:
                    queue.send(data)  # type: ignore[union-attr]
                else:
                    stream.sendall(data)
            except OSError:
                with self._write_lock:
                    self._backlog.clear()
                    self._shut()
                return

    def _shut(self) -> None:
        framing.shut_down(self._sock, self._queue)

    def cancel(self, request_id: int) -> None:
        """Cancel on the gRPC channel: the worker's request threads read the lane only
        between requests, its gRPC loop answers at once (a cancel that overtakes its
        request is remembered there, see ``WorkerService.cancel``)."""
        if self._closed:
            return
        try:
            call = self.stub.Cancel.future(pb.CancelRequest(request_id=request_id), timeout=30.0,
                                           metadata=self.metadata)
            self._cancels.add(call)  # a gRPC future dropped before it is done cancels its call
            call.add_done_callback(self._cancels.discard)
        except Exception:  # noqa: BLE001 - the channel is closing: the worker goes with it
            log.debug("cancel of request %s not sent", request_id, exc_info=True)

    def _read(self) -> None:
        error: BaseException | None = None
        on_reply = self._on_reply
        parse = pb.Reply.FromString
        reader = framing.FrameReader(self._sock, self._max_frame)  # type: ignore[arg-type]
        try:
            while True:
                data = reader.next()
                more = reader.has_frame()
                if more and self._corked is None:
                    with self._write_lock:
                        self._corked = []
                on_reply(parse(data))
                if not more and self._corked is not None:
                    self._uncork()
        except EOFError:
            error = ConnectionResetError("the worker closed its lane")
        except BaseException as exc:  # noqa: BLE001
            if not self._closed and not isinstance(exc, OSError):
                log.exception("lane reader failed")
            error = exc
        if not self._closed:
            self._on_broken(error)

    def _close_dispatch(self) -> None:
        sock = self._sock
        if sock is None:
            return
        self._shut()
        with self._write_lock:
            self._backlog.clear()
            self._write_lock.notify()
            sock.close()
            if self._queue is not None:
                self._queue.close()


_BATCH_ITEM_BYTES = 16 * 1024  # a larger pipelined request leaves in a message of its own
_BATCH_ROOM = framing.QUEUE_MESSAGE_BYTES - 64  # a batch message's own fields take the rest


def _batches(messages: list[bytes]) -> list[bytes]:
    """Queue messages for ``messages`` (serialized requests): one alone as itself, several
    as batch requests (``codec.BATCH_COMMAND``, as on the gRPC stream) that fit the queue."""
    if len(messages) <= 1:
        return messages
    out: list[bytes] = []
    group: list[bytes] = []
    size = 0
    for message in messages:
        if group and (size + len(message) + 4 > _BATCH_ROOM or len(group) >= codec.BATCH_MAX_ITEMS):
            out.append(_batch(group))
            group, size = [], 0
        group.append(message)
        size += len(message) + 4
    out.append(_batch(group))
    return out


def _batch(group: list[bytes]) -> bytes:
    if len(group) == 1:
        return group[0]
    return codec.batch_request(group).SerializeToString()


def connect(target: str, lane_path: str | None, **kwargs: Any) -> WorkerConnection:
    """A lane connection when ``lane_path`` is given and the worker has one, else gRPC's."""
    if lane_path is not None:
        try:
            return LaneConnection(target, lane_path, **kwargs)
        except OSError as exc:
            log.warning("worker %s has no lane at %s (%s): using its gRPC stream",
                        kwargs.get("name"), lane_path, exc)
    return WorkerConnection(target, **kwargs)
