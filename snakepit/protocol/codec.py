"""Encoding of arguments, results and exceptions for the wire (cloudpickle, protocol 5).

cloudpickle lets functions and classes defined in a notebook travel by value. Pickle is
safe here because both ends belong to the same user: workers listen on owner-only Unix
sockets in a 0700 directory.
"""
from __future__ import annotations

import pickle
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

EMPTY_DICT_PAYLOAD = pickle.dumps({}, protocol=PROTOCOL)
NONE_PAYLOAD = pickle.dumps(None, protocol=PROTOCOL)


def dumps(value: Any, what: str, limit: int | None = None) -> bytes:
    """Pickle ``value``; raise SerializationError / PayloadTooLargeError with a clear message."""
    if value is None:
        return NONE_PAYLOAD
    try:
        data = cloudpickle.dumps(value, protocol=PROTOCOL)
    except Exception as exc:  # cloudpickle raises many types (TypeError, PicklingError, …)
        raise SerializationError(f"{what} cannot be pickled: {type(exc).__name__}: {exc}") from exc
    if limit is not None and len(data) > limit:
        raise PayloadTooLargeError(what, len(data), limit)
    return data


def loads(data: bytes, what: str) -> Any:
    """Unpickle ``data`` (empty bytes mean ``None``)."""
    if not data:
        return None
    try:
        return pickle.loads(data)
    except Exception as exc:
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
