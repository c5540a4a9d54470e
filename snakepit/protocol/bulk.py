"""Large results in parts (issue #18 item 7b): fewer copies of a big value on both sides.

A result whose pickle is bigger than :data:`LARGE_BYTES` does not travel as one Reply. In
one message, a 200 MB value was copied about five times in the manager (gRPC's receive
buffer, the bytearray and the ``bytes`` gRPC builds from it, protobuf's parse, the
``payload`` attribute, then the unpickled value), and the reader thread kept the last
Reply alive until the next message: the kernel peaked at ~4.5x the value's size and kept
+1x resident.

Instead the worker pickles with protocol 5 and out-of-band buffers (a NumPy array's data
is not copied into the stream: :func:`dumps_segments`) and sends the stream and the
buffers as a series of ``PART`` replies of :data:`PART_BYTES` each, made one at a time as
the stream's flow control takes them (:class:`LargeReply`). The manager copies each part
straight into one preallocated buffer per segment (:class:`Assembly`) and unpickles from
those: a NumPy array is rebuilt *on* its buffer (no copy at all), ``bytes`` are copied
once out of the stream. gRPC and protobuf only ever hold one part. After a large result
the manager asks glibc to give freed heap memory back to the OS (:func:`trim_memory`).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import pickle
import sys
from typing import Any, Iterator

from ..errors import PayloadTooLargeError
from . import codec
from . import worker_pb2 as pb

LARGE_BYTES = 4 * 2**20  # results whose pickle (stream + buffers) is bigger travel in parts
PART_BYTES = 2 * 2**20  # payload of one PART message


def _nbytes(segment: Any) -> int:
    return segment.nbytes if isinstance(segment, memoryview) else len(segment)


def result_reply(request_id: int, value: Any, what: str, limit: int | None) -> "pb.Reply | LargeReply":
    """The reply carrying ``value``: one RESULT, or a :class:`LargeReply` for a big one.
    Raises SerializationError / PayloadTooLargeError like :func:`codec.dumps`."""
    if value is None:
        return pb.Reply(request_id=request_id, kind=pb.Reply.RESULT, payload=codec.NONE_PAYLOAD)
    segments = codec.dumps_segments(value, what)
    size = sum(_nbytes(s) for s in segments)
    if limit is not None and size > limit:
        raise PayloadTooLargeError(what, size, limit)
    if size <= LARGE_BYTES:
        # small: one message, buffers in-band (re-pickled; only values with buffers pay this)
        data = segments[0] if len(segments) == 1 else codec.dumps(value, what, limit)
        return pb.Reply(request_id=request_id, kind=pb.Reply.RESULT, payload=data)
    return LargeReply(request_id, segments)


class LargeReply:
    """A RESULT sent as PART messages (made lazily: at most one part exists at a time)."""

    kind = pb.Reply.RESULT

    def __init__(self, request_id: int, segments: list[Any]) -> None:
        self.request_id = request_id
        self.segments = segments
        self.duration_us = 0

    def messages(self, part_bytes: int = PART_BYTES) -> Iterator[pb.Reply]:
        """The PART messages, then the closing RESULT; the segments are dropped at the end."""
        rid = self.request_id
        sizes = [_nbytes(s) for s in self.segments]
        first = True
        chunk: list[bytes] = []
        room = part_bytes
        segments, self.segments = self.segments, []
        while segments:
            view = memoryview(segments.pop(0))  # a sent segment is let go at once
            pos, n = 0, len(view)
            while pos < n:
                take = min(room, n - pos)
                chunk.append(view[pos:pos + take].tobytes())
                pos += take
                room -= take
                if room == 0:
                    yield self._part(rid, chunk, sizes if first else None)
                    first, chunk, room = False, [], part_bytes
            view.release()
            view = None
        if chunk or first:
            yield self._part(rid, chunk, sizes if first else None)
        yield pb.Reply(request_id=rid, kind=pb.Reply.RESULT, in_parts=True, duration_us=self.duration_us)

    @staticmethod
    def _part(rid: int, chunk: list[bytes], sizes: list[int] | None) -> pb.Reply:
        payload = chunk[0] if len(chunk) == 1 else b"".join(chunk)
        chunk.clear()
        if sizes is None:
            return pb.Reply(request_id=rid, kind=pb.Reply.PART, payload=payload)
        return pb.Reply(request_id=rid, kind=pb.Reply.PART, payload=payload, segments=sizes)

    def single(self) -> pb.Reply:
        """The same result as one RESULT message (for the unary Execute call)."""
        segments, self.segments = self.segments, []
        value = pickle.loads(segments[0], buffers=segments[1:])
        return pb.Reply(request_id=self.request_id, kind=pb.Reply.RESULT,
                        payload=codec.dumps(value, "result"), duration_us=self.duration_us)


class Assembly:
    """The manager's side: PART payloads copied into one buffer per segment, then unpickled."""

    __slots__ = ("buffers", "_index", "_pos", "received", "total")

    def __init__(self, sizes: list[int]) -> None:
        self.buffers = [bytearray(int(n)) for n in sizes]
        self._index = 0
        self._pos = 0
        self.received = 0
        self.total = sum(int(n) for n in sizes)

    def add(self, payload: bytes) -> None:
        view = memoryview(payload)
        pos, n = 0, len(view)
        buffers = self.buffers
        while pos < n:
            if self._index >= len(buffers):
                raise ValueError("more data than the segments announced")
            buf = buffers[self._index]
            take = min(len(buf) - self._pos, n - pos)
            buf[self._pos:self._pos + take] = view[pos:pos + take]
            pos += take
            self._pos += take
            if self._pos >= len(buf):
                self._index += 1
                self._pos = 0
        self.received += n
        # empty segments after the data (a zero-length buffer) are complete already
        while self._index < len(buffers) and not len(buffers[self._index]):
            self._index += 1

    def loads(self) -> Any:
        """The value; this assembly lets go of its buffers (a NumPy array keeps its own)."""
        if self.received != self.total:
            raise ValueError(f"incomplete large result: {self.received} of {self.total} bytes")
        stream, *buffers = self.buffers
        self.buffers = []
        with memoryview(stream) as view:
            return pickle.loads(view, buffers=buffers)


def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM: Any = _malloc_trim()


def trim_memory() -> None:
    """Return free heap memory to the OS (glibc ``malloc_trim(0)``; a no-op elsewhere)."""
    if _TRIM is not None:
        try:
            _TRIM(0)
        except Exception:  # noqa: BLE001 - best effort
            pass
