"""Length-prefixed protobuf messages on a stream socket: the local lane's wire format.

The local lane (issue 16) carries the Dispatch stream's own messages — ``Request`` in,
``Reply`` out, exactly as in ``worker.proto`` — over the worker's owner-only Unix socket
without gRPC: each message is its serialized bytes preceded by their length (4 bytes,
little-endian). gRPC stays for everything else (Ping, Info, Cancel, Shutdown, and every
cluster worker).

Reading is buffered: one ``recv`` takes every message already waiting, so a burst of small
messages costs one system call, not one per message (the batching the gRPC stream needs
``codec.BATCH_COMMAND`` for comes free here, and a lone message waits for nothing).
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


def lane_path(socket_path: str) -> str:
    """Where the lane of the worker serving gRPC on the Unix socket ``socket_path`` listens."""
    return socket_path + ".lane"


class FrameTooLargeError(ValueError):
    """A peer announced a message larger than the agreed maximum: the lane is not trusted on."""


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
