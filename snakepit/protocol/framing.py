"""Length-prefixed protobuf messages on a stream socket: the local lane's wire format.

The local lane (issue 16) carries the Dispatch stream's own messages — ``Request`` in,
``Reply`` out, exactly as in ``worker.proto`` — over the worker's owner-only Unix socket
without gRPC: each message is its serialized bytes preceded by their length (4 bytes,
little-endian). gRPC stays for everything else (Ping, Info, Cancel, Shutdown, and every
cluster worker).

Reading is buffered: one ``recv`` takes every message already waiting, so a burst of small
messages costs one system call, not one per message (the batching the gRPC stream needs
``codec.BATCH_COMMAND`` for comes free here, and a lone message waits for nothing).

The connection starts with two bytes from the worker (:func:`send_hello`): ``S`` when its
requests come on this stream, ``Q`` when they come on a request queue whose socket travels
with them; then :data:`LANE_VERSION`. A thread-profile worker has a queue: a
``SOCK_SEQPACKET`` socket pair, one ``Request`` per message (or one batch of quick pipelined
requests, ``codec.BATCH_COMMAND``), which all its request threads wait on at once; the kernel hands
each message to exactly one of them, so the thread that will run a request is the one woken
for it, and no thread wakes another to take its turn at reading (the cost of reading a
stream in turns: see docs/performance.md, "Thread profile: a request queue"). A request too
big for one queue message (over :data:`QUEUE_MESSAGE_BYTES`) goes on the stream, and the
queue carries :data:`ON_STREAM` ahead of it: the thread that takes that reads the stream's
next message.
"""
from __future__ import annotations

import mmap
import os
import select
import socket
import struct
from typing import Iterator

HEADER = struct.Struct("<I")
_RECV_BYTES = 256 * 1024
_SMALL = 64 * 1024  # below this, header and body leave in one send
QUEUE_MESSAGE_BYTES = 64 * 1024  # the largest request a queue message carries itself
ON_STREAM = b"\xff"  # a queue message meaning "the next request is on the stream" (not a protobuf)
HELLO_STREAM = b"S"
HELLO_QUEUE = b"Q"
# The lane's wire version, the hello's second byte: raised when the lane's messages change
# meaning (version 2: batch queue messages), so that a manager and workers of different
# snakepit releases say so instead of misreading each other.
LANE_VERSION = 2


def lane_path(socket_path: str) -> str:
    """Where the lane of the worker serving gRPC on the Unix socket ``socket_path`` listens."""
    return socket_path + ".lane"


class FrameTooLargeError(ValueError):
    """A peer announced a message larger than the agreed maximum: the lane is not trusted on."""


def shut_down(*socks: socket.socket | None) -> None:
    """Shut both directions of each socket given (``None`` skipped): whoever waits on one
    returns at once (EOF); errors (already shut, closed) are ignored."""
    for sock in socks:
        if sock is None:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def send_hello(sock: socket.socket, queue: socket.socket | None) -> None:
    """(worker) Start a lane connection: say where requests come from, with the manager's
    end of the request queue when there is one (passed over the socket, SCM_RIGHTS)."""
    version = bytes([LANE_VERSION])
    if queue is None:
        sock.sendall(HELLO_STREAM + version)
    else:
        socket.send_fds(sock, [HELLO_QUEUE + version], [queue.fileno()])


def receive_hello(sock: socket.socket) -> socket.socket | None:
    """(manager) Read the worker's hello: the request queue's socket to write requests
    to, or ``None`` when they go on ``sock`` itself. Raises ``ConnectionError`` for anything
    that is not a snakepit lane's start, or is another version's (the socket's timeout applies)."""
    data, fds, flags, _ = socket.recv_fds(sock, 2, 1)
    received = [socket.socket(fileno=fd) for fd in fds]  # owned at once: none can leak
    for sock_ in received:
        sock_.set_inheritable(False)  # SCM_RIGHTS delivers it inheritable: no exec'd child may keep it
    kind, version = data[:1], data[1:]
    if kind in (HELLO_STREAM, HELLO_QUEUE) and version != bytes([LANE_VERSION]):
        for extra in received:
            extra.close()
        theirs = f"version {version[0]}" if version else "version 1 (snakepit before lane versions)"
        raise ConnectionError(
            f"the worker's lane speaks {theirs}, this manager version {LANE_VERSION}: the workers' "
            "python has another snakepit release installed than the manager's")
    if kind == HELLO_STREAM and not received:
        return None
    if kind == HELLO_QUEUE and len(received) == 1 and not flags & socket.MSG_CTRUNC:
        queue = received[0]
        if queue.family == socket.AF_UNIX and queue.type == socket.SOCK_SEQPACKET:
            return queue
    for extra in received:
        extra.close()
    raise ConnectionError(f"not a snakepit lane: it started with {data!r} and {len(received)} descriptor(s)")


def frame(data: bytes) -> bytes:
    """One message with its length header, ready for a single ``sendall``."""
    return HEADER.pack(len(data)) + data


def write_frame(sock: socket.socket, data: bytes) -> None:
    """Send one message (the caller serializes concurrent writers)."""
    if len(data) < _SMALL:
        sock.sendall(frame(data))
    else:
        sock.sendall(HEADER.pack(len(data)))
        sock.sendall(data)


class FrameReader:
    """The messages arriving on a socket, read into one reused buffer.

    ``next()`` returns the next whole message (``bytes``; a large one as its own
    ``bytearray``), blocking until it arrives. With ``wake_fd`` (the read end of a pipe),
    ``next()`` returns ``None`` when a byte arrives there instead: the caller has other work
    (see :mod:`snakepit.worker.runner`). Raises ``EOFError`` when the peer closed the
    socket, :class:`FrameTooLargeError` for a message over ``max_bytes`` and ``OSError``
    when the socket fails.

    One ``recv`` takes every message already waiting, and the buffer is reused: a burst of
    small messages costs one system call, and no read allocates (a fresh 256 KiB buffer per
    read is an ``mmap``/``munmap`` pair in glibc, and each ``munmap`` stops every thread of
    the process to flush its TLB).
    """

    def __init__(self, sock: socket.socket, max_bytes: int, wake_fd: int | None = None) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        # Anonymous memory: its pages are the kernel's zero page until a read first reaches
        # them (a bytearray would be zero-filled, 256 KiB more of every idle worker's USS).
        self._buf = mmap.mmap(-1, _RECV_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._wake_fd = wake_fd
        self._poll: select.poll | None = None
        if wake_fd is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)
            self._poll.register(wake_fd, select.POLLIN)

    def next(self) -> bytes | bytearray | None:
        size = HEADER.size
        buf, view = self._buf, self._view
        while True:
            start, end = self._start, self._end
            if end - start >= size:
                (n,) = HEADER.unpack_from(buf, start)
                if n > self.max_bytes:
                    raise FrameTooLargeError(f"a {n}-byte message exceeds the lane's limit of {self.max_bytes} bytes")
                if end - start - size >= n:
                    self._start = start + size + n
                    if self._start == end:
                        self._start = self._end = 0
                    return bytes(view[start + size:start + size + n])
                if size + n > len(buf):  # a large message: read the rest straight into its own buffer
                    body = bytearray(n)
                    have = end - start - size
                    body[:have] = view[start + size:end]
                    self._start = self._end = 0
                    _recv_exactly(self.sock, memoryview(body)[have:])
                    return body
                if start and size + n > len(buf) - start:  # make room at the end
                    buf[:end - start] = view[start:end]
                    self._start, self._end = 0, end - start
            got = self._recv()
            if got is None:
                return None
            if not got:
                raise EOFError("the peer closed the lane")
            self._end += got

    def has_frame(self) -> bool:
        """Is a whole message already buffered (the next :meth:`next` needs no system call)?"""
        have = self._end - self._start
        if have < HEADER.size:
            return False
        (n,) = HEADER.unpack_from(self._buf, self._start)
        return have - HEADER.size >= n

    def _recv(self) -> int | None:
        free = self._view[self._end:]
        if self._poll is None:
            return self.sock.recv_into(free)
        while True:
            try:
                return self.sock.recv_into(free, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            for fd, _ in self._poll.poll():
                if fd == self._wake_fd:
                    try:
                        os.read(fd, 4096)
                    except BlockingIOError:
                        pass
                    return None


def read_frames(sock: socket.socket, max_bytes: int) -> Iterator[bytes | bytearray]:
    """The messages arriving on ``sock``, in order, until the peer closes it.

    Raises :class:`FrameTooLargeError` for a message over ``max_bytes`` and ``OSError`` when
    the socket fails. A large message is received straight into a buffer of its own size.
    """
    reader = FrameReader(sock, max_bytes)
    while True:
        try:
            frame = reader.next()
        except EOFError:
            return
        assert frame is not None
        yield frame


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        n = sock.recv_into(view)
        if n == 0:
            raise ConnectionResetError("the peer closed the lane in the middle of a message")
        view = view[n:]
