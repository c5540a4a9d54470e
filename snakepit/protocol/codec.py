"""Encoding of arguments, results and exceptions for the wire (cloudpickle, protocol 5).

cloudpickle lets functions and classes defined in a notebook travel by value. Pickle is
safe here because both ends belong to the same user: workers listen on owner-only Unix
sockets in a 0700 directory.

Fast path (issue 7): ``cloudpickle.dumps`` costs 20–40 µs even for ``{"x": 1}`` (it builds
a Pickler with its reducer tables each call), the C pickler ~1–6 µs. The two produce the
same stream unless cloudpickle would pickle something *by value*: a function or class of
``__main__``, or of a module registered with ``cloudpickle.register_pickle_by_value``, or
one that cannot be found by name (lambdas, local functions, dynamic modules). The C
pickler raises for the last group, every reference to ``__main__`` spells ``__main__`` in
the stream, and registered modules switch the fast path off; in all three cases we fall
back to cloudpickle. So the bytes the worker sees are cloudpickle-equivalent.
"""
from __future__ import annotations

import pickle
import struct
import traceback
from typing import Any

import cloudpickle

from ..errors import (
    PayloadTooLargeError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    UnknownCommandError,
)
from . import worker_pb2 as pb

PROTOCOL = pickle.HIGHEST_PROTOCOL

# Codes carried in RemoteFailure.code
REMOTE = "remote"
UNKNOWN_COMMAND = "unknown_command"
SERIALIZATION = "serialization"
CANCELLED = "cancelled"
TOO_LARGE = "too_large"
BAD_REQUEST = "bad_request"
UNKNOWN_FUNCTION = "unknown_function"  # the worker has no function of that hash (resend it)

EMPTY_DICT_PAYLOAD = pickle.dumps({}, protocol=PROTOCOL)
NONE_PAYLOAD = pickle.dumps(None, protocol=PROTOCOL)


_plain_dumps = pickle.dumps
_BY_VALUE_MODULES = getattr(getattr(cloudpickle, "cloudpickle", None), "_PICKLE_BY_VALUE_MODULES", None)


def _fast_dumps(value: Any, buffer_callback: Any = None) -> bytes | None:
    """The C pickler's bytes when they are what cloudpickle would produce, else None."""
    if _BY_VALUE_MODULES is None or _BY_VALUE_MODULES:
        return None
    try:
        data = _plain_dumps(value, protocol=PROTOCOL, buffer_callback=buffer_callback)
    except Exception:  # lambdas, local functions, …: cloudpickle's job
        return None
    if b"__main__" in data:
        return None
    return data


def dumps_segments(value: Any, what: str) -> list[Any]:
    """``value`` pickled with out-of-band buffers (protocol 5): ``[stream, buffer, ...]``, each
    buffer a byte view of the value's own memory (a NumPy array's data is not copied).
    Raises SerializationError like :func:`dumps`."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = _fast_dumps(value, buffers.append)
        if data is None:
            buffers.clear()
            data = cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=buffers.append)
    except Exception as exc:
        raise SerializationError(f"{what} cannot be pickled: {type(exc).__name__}: {exc}") from exc
    return [data, *(buf.raw() for buf in buffers)]


def dumps(value: Any, what: str, limit: int | None = None) -> bytes:
    """Pickle ``value``; raise SerializationError / PayloadTooLargeError with a clear message."""
    if value is None:
        return NONE_PAYLOAD
    try:
        data = _fast_dumps(value) or cloudpickle.dumps(value, protocol=PROTOCOL)
    except Exception as exc:  # cloudpickle raises many types (TypeError, PicklingError, …)
        raise SerializationError(f"{what} cannot be pickled: {type(exc).__name__}: {exc}") from exc
    if limit is not None and len(data) > limit:
        raise PayloadTooLargeError(what, len(data), limit)
    return data


def loads(data: bytes, what: str, command: str | None = None) -> Any:
    """Unpickle ``data`` (empty bytes mean ``None``); an error names ``what`` (and ``command``:
    ``loads(data, "result of", "call")`` says "result of 'call'", the string made only then)."""
    if not data:
        return None
    try:
        return pickle.loads(data)
    except Exception as exc:
        if command is not None:
            what = f"{what} {command!r}"
        raise SerializationError(f"{what} cannot be unpickled: {type(exc).__name__}: {exc}") from exc


def qualified_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def failure_from_exception(exc: BaseException, code: str = REMOTE, tb: str | None = None) -> pb.RemoteFailure:
    """Describe an exception raised in the worker for the wire."""
    if tb is None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickled = cloudpickle.dumps(exc, protocol=PROTOCOL)
        pickle.loads(pickled)  # only ship what the other side can rebuild
    except Exception:
        pickled = b""
    return pb.RemoteFailure(
        type=qualified_name(type(exc)), message=str(exc), traceback=tb, pickled=pickled, code=code
    )


def error_from_failure(failure: pb.RemoteFailure, *, worker_id: str | None, command: str | None) -> Exception:
    """Turn a RemoteFailure into the exception the caller sees."""
    if failure.code == SERIALIZATION:
        return SerializationError(f"{failure.message} (worker {worker_id})")
    if failure.code == TOO_LARGE:
        return _too_large(failure.message)
    original = None
    if failure.pickled:
        try:
            original = pickle.loads(failure.pickled)
        except Exception:
            original = None
    cls = UnknownCommandError if failure.code == UNKNOWN_COMMAND else RemoteError
    err = cls(
        failure.type,
        failure.message,
        failure.traceback,
        exception=original,
        worker_id=worker_id,
        command=command,
    )
    if failure.traceback:
        err.__cause__ = RemoteTraceback(failure.traceback)
    return err


def _too_large(message: str) -> Exception:
    err = PayloadTooLargeError.__new__(PayloadTooLargeError)
    Exception.__init__(err, message)
    err.size = -1
    err.limit = -1
    return err


# -- batches on the Dispatch stream (issue 7) ---------------------------------------------
# Every gRPC message costs tens of microseconds of Python and thread hand-offs on each side,
# so when several small requests (or replies) are waiting at once they travel as one
# message: a Request with ``request_id=0, command=BATCH_COMMAND`` (a Reply with
# ``request_id=0, kind=CHUNK``; no real request has id 0) whose payload holds the
# serialized messages, each prefixed with its length. A lone message is sent as itself, so
# an idle round trip pays nothing for this.
BATCH_COMMAND = "__snakepit_batch__"
BATCH_MAX_ITEMS = 256
BATCH_MAX_ITEM_BYTES = 64 * 1024  # bigger messages travel alone
BATCH_MAX_BYTES = 1024 * 1024

_LEN = struct.Struct("<I")


def pack(messages: list[bytes]) -> bytes:
    """Length-prefix and join serialized messages."""
    pack_len = _LEN.pack
    return b"".join([part for msg in messages for part in (pack_len(len(msg)), msg)])


def unpack(data: bytes) -> list[bytes]:
    """The serialized messages of :func:`pack`."""
    out = []
    view = memoryview(data)
    pos, end, size = 0, len(data), _LEN.size
    unpack_len = _LEN.unpack_from
    while pos < end:
        (n,) = unpack_len(view, pos)
        pos += size
        out.append(bytes(view[pos:pos + n]))
        pos += n
    return out


def batch_request(messages: list[bytes]) -> pb.Request:
    """One Request carrying the serialized requests ``messages`` (a batch, see above)."""
    return pb.Request(request_id=0, command=BATCH_COMMAND, payload=pack(messages))


def batched_requests(req: pb.Request) -> list[pb.Request] | None:
    """The requests the batch ``req`` carries, in order; ``None`` when it is not a batch."""
    if req.request_id != 0 or req.command != BATCH_COMMAND:
        return None
    parse = pb.Request.FromString
    return [parse(raw) for raw in unpack(req.payload)]
