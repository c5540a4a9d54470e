"""The worker's end of the local lane: the Dispatch stream without gRPC (issue 16).

Data flow::

    manager ──frames──► lane reader thread ("snakepit-lane")
                           │  service.start_request / service.cancel
                           ▼
                RequestRunner (main thread, or N threads)
                           │  the reply is written to the socket by the thread that made it
    manager ◄──frames──────┘

Compared with the gRPC Dispatch stream, a reply skips the asyncio loop and gRPC's threads:
the command's own thread serializes it and writes it. The reader thread never writes (the
replies to cancels it handles leave through a helper thread), so a full socket in one
direction can never stop the other.

The socket lives next to the worker's gRPC socket (``<socket>.lane``), owner-only, in the
pool's 0700 directory. One manager connection at a time is served; others are closed at once.
"""
from __future__ import annotations

import logging
import os
import queue
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
        self._session: _LaneSession | None = None
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
            self._session = _LaneSession(self.service, conn)
            self._session.start()

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


class _LaneSession:
    """One manager connection: a reader thread in, replies written by whoever made them."""

    def __init__(self, service: WorkerService, sock: socket.socket) -> None:
        self.service = service
        self.sock = sock
        self._write_lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="snakepit-lane", daemon=True)
        self._deferred: queue.SimpleQueue[Any] | None = None

    def start(self) -> None:
        self._reader.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, reply: "pb.Reply | bulk.LargeReply | None") -> None:
        """Write ``reply`` (from any thread but the reader's, which defers it)."""
        if reply is None or self._closed:
            return
        if threading.current_thread() is self._reader:
            self._defer(reply)
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

    def _defer(self, reply: Any) -> None:
        if self._deferred is None:
            self._deferred = queue.SimpleQueue()
            threading.Thread(target=self._write_deferred, name="snakepit-lane-replies", daemon=True).start()
        self._deferred.put(reply)

    def _write_deferred(self) -> None:
        assert self._deferred is not None
        while True:
            reply = self._deferred.get()
            if reply is None:
                return
            self.send(reply)

    def _read(self) -> None:
        service = self.service
        parse = pb.Request.FromString
        send = self.send
        try:
            for frame in framing.read_frames(self.sock, service.max_message_bytes + 2**16):
                req = parse(frame)
                if req.cancel:
                    service.cancel(req.request_id)
                else:
                    service.start_request(req, send, stream=req.stream)
        except Exception:  # noqa: BLE001 - a broken or untrusted lane is closed; gRPC still serves
            log.debug("lane closed", exc_info=True)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._deferred is not None:
            self._deferred.put(None)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
