"""The worker's end of the local lane: the Dispatch stream without gRPC (issue 16).

Data flow::

    manager ──frames──► the free request thread (the main thread, or one of N)
                           │  reads one request, runs it, writes its reply
    manager ◄──frames──────┘
    manager ──Cancel (gRPC)──► the asyncio loop thread: flag + interrupt

Compared with the gRPC Dispatch stream, a request skips gRPC's threads and the asyncio
loop, and no thread hands it to another: the thread that will run it reads it (one thread
reads at a time; see :mod:`snakepit.worker.runner`), and writes the reply. A thread busy
with a request reads nothing: cancels arrive on gRPC, whose loop thread is always free.
Nothing here waits for the manager to read, except a thread writing its reply: the
manager's reader never blocks (its writes that do not fit wait in its backlog), so a full
socket in one direction can never stop the other.

The socket lives next to the worker's gRPC socket (``<socket>.lane``), owner-only, in the
pool's 0700 directory. One manager connection at a time is served; others are closed at once.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from ..protocol import bulk, framing
from ..protocol import worker_pb2 as pb
from .server import WorkerService

log = logging.getLogger("snakepit.worker")


class LaneServer:
    """Accepts the manager's lane connection and serves it until closed."""

    def __init__(self, service: WorkerService, path: str) -> None:
        self.service = service
        self.path = path
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self._listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        self._listener.listen(2)
        self._closed = False
        self._session: LaneSession | None = None
        self._thread = threading.Thread(target=self._accept, name="snakepit-lane-accept", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self._session is not None and not self._session.closed:
                conn.close()  # one manager per worker: a second connection is refused
                continue
            self._session = LaneSession(self.service, conn)
            self.service.runner.serve_lane(self._session)

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        if self._session is not None:
            self._session.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class LaneSession:
    """One manager connection: read by the request threads, written by whoever made a reply."""

    def __init__(self, service: WorkerService, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self.read_lock = threading.Lock()  # the request thread reading now holds it
        self._reader = framing.FrameReader(sock, service.max_message_bytes + 2**16, service.runner.wake_fd)
        self._write_lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def next_frame(self) -> bytes | bytearray | None:
        """(read_lock held) The next request's bytes; None when woken for other work or closed."""
        if self._closed:
            return None
        try:
            return self._reader.next()
        except Exception:  # noqa: BLE001 - a broken or untrusted lane is closed; gRPC still serves
            log.debug("lane closed", exc_info=True)
            self.close()
            return None

    def handle(self, frame: bytes | bytearray) -> None:
        """Run the request in ``frame`` on this thread (a cancel: at once)."""
        try:
            req = pb.Request.FromString(frame)
        except Exception:  # noqa: BLE001 - not our protocol: the lane is not trusted on
            log.debug("lane closed: an unreadable message", exc_info=True)
            self.close()
            return
        if req.cancel:
            self.service.cancel(req.request_id)
        else:
            self.service.run_request(req, self.send)

    def send(self, reply: "pb.Reply | bulk.LargeReply | None") -> None:
        """Write ``reply`` (from any thread)."""
        if reply is None or self._closed:
            return
        if type(reply) is bulk.LargeReply:  # its parts, made one at a time (protocol/bulk.py)
            for part in reply.messages():
                self._write(part.SerializeToString())
            return
        self._write(reply.SerializeToString())

    def _write(self, data: bytes) -> None:
        with self._write_lock:
            if self._closed:
                return
            try:
                framing.write_frame(self.sock, data)
            except OSError:  # the manager went away; its calls are ended on its side
                self._closed = True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.service.runner.submit(self._release)  # a thread waiting on the lane looks again

    def _release(self) -> None:
        with self.read_lock:  # no request thread is reading it any more
            self.sock.close()
