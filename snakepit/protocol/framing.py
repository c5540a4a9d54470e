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


def read_frames(sock: socket.socket, max_bytes: int) -> Iterator[bytes | bytearray]:
    """The messages arriving on ``sock``, in order, until the peer closes it.

    Raises :class:`FrameTooLargeError` for a message over ``max_bytes`` and ``OSError`` when
    the socket fails. A large message is received straight into a buffer of its own size.
    """
    size = HEADER.size
    unpack = HEADER.unpack_from
    buf = b""
    while True:
        chunk = sock.recv(_RECV_BYTES)
        if not chunk:
            return
        buf = buf + chunk if buf else chunk
        pos, end = 0, len(buf)
        while end - pos >= size:
            (n,) = unpack(buf, pos)
            if n > max_bytes:
                raise FrameTooLargeError(f"a {n}-byte message exceeds the lane's limit of {max_bytes} bytes")
            if end - pos - size < n:
                if n > _RECV_BYTES:  # a large message: read the rest in place
                    body = bytearray(n)
                    have = end - pos - size
                    body[:have] = buf[pos + size:end]
                    _recv_exactly(sock, memoryview(body)[have:])
                    yield body
                    pos = end = 0
                    buf = b""
                break
            yield buf[pos + size:pos + size + n]
            pos += size + n
        if pos:
            buf = buf[pos:] if pos < len(buf) else b""


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    while len(view):
        n = sock.recv_into(view)
        if n == 0:
            raise ConnectionResetError("the peer closed the lane in the middle of a message")
        view = view[n:]
