"""The manager's end of the local lane: a local worker's Dispatch stream without gRPC (issue 16).

A :class:`LaneConnection` is a :class:`~snakepit.connection.WorkerConnection` whose
request/reply stream runs over the worker's lane socket (``<socket>.lane``, owner-only)
as length-prefixed ``Request``/``Reply`` messages (:mod:`snakepit.protocol.framing`);
Ping, Info and Shutdown still use the gRPC channel. What it saves per round trip: the
request leaves from the caller's own thread (no hand-off to gRPC's request-iterator thread
and C-core), and the reply is read by one thread of ours straight from the socket.

Which pools use it: ``PoolConfig.transport`` (``"lane"`` by default for local workers;
``"grpc"`` keeps the gRPC stream). Cluster workers always use gRPC.
"""
from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from .connection import WorkerConnection
from .protocol import framing
from .signals import signals_blocked
from .protocol import worker_pb2 as pb

log = logging.getLogger("snakepit.connection")


class LaneConnection(WorkerConnection):
    """Client side of one local worker, its requests and replies on the lane socket."""

    def __init__(self, target: str, lane_path: str, *, max_message_bytes: int, **kwargs: Any) -> None:
        """Connect to the worker serving gRPC at ``target`` and its lane at ``lane_path``;
        the other arguments are :class:`~snakepit.connection.WorkerConnection`'s.

        Raises ``OSError`` when the lane cannot be reached (the worker has none).
        """
        self._lane_path = lane_path
        self._max_frame = max_message_bytes + 2**16
        self._write_lock = threading.Lock()
        self._sock: socket.socket | None = None
        super().__init__(target, max_message_bytes=max_message_bytes, **kwargs)

    def _open_dispatch(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._lane_path)
        except OSError:
            sock.close()
            self.channel.close()
            raise
        self._sock = sock

    def send(self, request: pb.Request) -> None:
        """Write a request to the worker (from the calling thread).

        A message is written whole or the lane is given up: Ctrl-C (or the kernel's
        interrupt) is held off during the write on the main thread, and an exception in
        the middle of one shuts the socket, so the worker never reads half a message as
        the start of the next; the pool then replaces the worker like a lost one.
        """
        frame = framing.frame(request.SerializeToString())
        sock = self._sock
        with self._write_lock:
            if self._closed:
                return
            try:
                if threading.current_thread() is threading.main_thread():
                    with signals_blocked():
                        sock.sendall(frame)  # type: ignore[union-attr]
                else:
                    sock.sendall(frame)  # type: ignore[union-attr]
            except OSError:
                pass  # the reader sees the broken lane and reports it once
            except BaseException:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                except OSError:
                    pass
                raise

    def cancel(self, request_id: int) -> None:
        self.send(pb.Request(request_id=request_id, cancel=True))

    def _read(self) -> None:
        error: BaseException | None = None
        on_reply = self._on_reply
        parse = pb.Reply.FromString
        try:
            for frame in framing.read_frames(self._sock, self._max_frame):  # type: ignore[arg-type]
                on_reply(parse(frame))
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
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        with self._write_lock:
            sock.close()


def connect(target: str, lane_path: str | None, **kwargs: Any) -> WorkerConnection:
    """A lane connection when ``lane_path`` is given and the worker has one, else gRPC's."""
    if lane_path is not None:
        try:
            return LaneConnection(target, lane_path, **kwargs)
        except OSError as exc:
            log.warning("worker %s has no lane at %s (%s): using its gRPC stream",
                        kwargs.get("name"), lane_path, exc)
    return WorkerConnection(target, **kwargs)
