"""The worker's end of the local lane: the Dispatch stream without gRPC (issue 16).

Data flow::

    process profile:  manager ──frames (stream)──► the main thread
    thread profile:   manager ──one message a request (queue)──► the one of N threads
                                                                  the kernel woke for it
                      each runs its request and writes the reply:
    manager ◄──frames (stream)──┘
    manager ──Cancel (gRPC)──► the asyncio loop thread: flag + interrupt

Compared with the gRPC Dispatch stream, a request skips gRPC's threads and the asyncio
loop, and no thread hands it to another: the thread that will run it reads it, and writes
the reply. The main thread reads the stream itself; a thread worker's N threads all wait
on its request queue (a ``SOCK_SEQPACKET`` pair whose other end goes to the manager with
the connection's hello, :func:`snakepit.protocol.framing.send_hello`), and the kernel
gives each request to exactly one of them (a batch of quick pipelined requests: one thread
runs them in turn, :meth:`WorkerService.run_requests`). A thread busy
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

from ..protocol import bulk, codec, framing
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
            queue = None
            try:
                if not self.service.runner.use_main_thread:
                    queue, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                    try:
                        framing.send_hello(conn, theirs)
                    finally:
                        theirs.close()
                else:
                    framing.send_hello(conn, None)
            except OSError:
                conn.close()
                if queue is not None:
                    queue.close()
                continue
            self._session = LaneSession(self.service, conn, queue)
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
    """One manager connection: read by the request threads, written by whoever made a reply.

    Without a ``queue`` its requests arrive on ``sock`` and one thread reads at a time
    (holding ``read_lock``, :meth:`next_frame`); with one, every request thread waits in
    :meth:`next_queued` at once.
    """

    def __init__(self, service: WorkerService, sock: socket.socket, queue: socket.socket | None = None) -> None:
        self.service = service
        self.sock = sock
        self.queue = queue
        self.concurrent_reads = queue is not None
        self.read_lock = threading.Lock()  # the request thread reading the stream now holds it
        wake_fd = None if queue is not None else service.runner.wake_fd
        self._reader = framing.FrameReader(sock, service.max_message_bytes + 2**16, wake_fd)
        self._write_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._queue_readers = 0  # threads in next_queued: the sockets close when the last leaves
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

    def next_queued(self) -> bytes | bytearray | None:
        """(any number of threads at once) The next request's bytes from the queue, waiting
        for it; None once the lane is closed."""
        with self._state_lock:
            if self._closed:
                return None
            self._queue_readers += 1
        try:
            message = self.queue.recv(framing.QUEUE_MESSAGE_BYTES + 1)  # type: ignore[union-attr]
            if not message:
                raise EOFError("the manager closed the lane")
            if message == framing.ON_STREAM:
                with self.read_lock:
                    return self._reader.next()
            if len(message) > framing.QUEUE_MESSAGE_BYTES:
                raise framing.FrameTooLargeError("a queue message over the lane's limit")
            return message
        except Exception:  # noqa: BLE001 - a broken or untrusted lane is closed; gRPC still serves
            log.debug("lane closed", exc_info=True)
            self.close()
            return None
        finally:
            with self._state_lock:
                self._queue_readers -= 1
                last = self._closed and not self._queue_readers
            if last:
                self._close_sockets()

    def handle(self, frame: bytes | bytearray) -> None:
        """Run the request in ``frame`` on this thread (a cancel: at once)."""
        try:
            req = pb.Request.FromString(frame)
            batch = codec.batched_requests(req)
        except Exception:  # noqa: BLE001 - not our protocol: the lane is not trusted on
            log.debug("lane closed: an unreadable message", exc_info=True)
            self.close()
            return
        if batch is not None:  # pipelined requests, run here in turn (see snakepit/lane.py)
            self.service.run_requests(batch, self.send)
        elif req.cancel:
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
        """Shut the connection: every thread waiting on it returns, and its sockets are
        closed once none is reading them (a descriptor closed under a reader could be reused
        by the next file the process opens, and read as the lane)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            idle_queue = self.queue is not None and not self._queue_readers
        framing.shut_down(self.sock, self.queue)
        if self.queue is None:
            self.service.runner.submit(self._release)  # a thread waiting on the lane looks again
        elif idle_queue:
            self._close_sockets()

    def _release(self) -> None:
        with self.read_lock:  # no request thread is reading it any more
            self.sock.close()

    def _close_sockets(self) -> None:
        self._release()
        self.queue.close()  # type: ignore[union-attr]
