"""By-value functions sent once per worker (issue #16); the worker side is worker/functions.py.

``submit(fn)`` / ``map(fn)`` with a function cloudpickle pickles by value (a notebook's, a
lambda, a local function) pickle it on its own, hash the bytes (blake2b, ~1 µs) and send the
bytes only to a worker that has not had them (``WorkerRecord.functions_sent``; a replaced
worker is a new record, so it starts empty). The function is pickled afresh on every call:
cloudpickle captures the *current* values of the globals and closure cells it uses, so a
cache of the pickled bytes would send stale ones; the hash of fresh bytes cannot.
An importable function travels by reference inside the arguments, as before.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import cloudpickle

from ..errors import SerializationError
from ..protocol import codec

MAX_TRACKED = 4096  # hashes remembered per worker (the worker keeps 256; a miss is resent)


def by_value(fn: Callable[..., Any]) -> tuple[bytes, bytes] | None:
    """``(hash, cloudpickled bytes)`` of a function that travels by value; None for one that
    the worker can import (its reference is a few bytes in the arguments)."""
    if codec._fast_dumps(fn) is not None:
        return None
    try:
        data = cloudpickle.dumps(fn, protocol=codec.PROTOCOL)
    except Exception as exc:
        raise SerializationError(f"the function cannot be pickled: {type(exc).__name__}: {exc}") from exc
    return hashlib.blake2b(data, digest_size=16).digest(), data


def attach(request: Any, function: tuple[bytes, bytes], sent: set[bytes], force: bool = False) -> bool:
    """Name ``function`` in ``request``; add its bytes unless the worker already has them.
    True when the bytes went along."""
    digest, data = function
    request.function_hash = digest
    if force or digest not in sent:
        request.function = data
        if len(sent) >= MAX_TRACKED:
            sent.clear()
        sent.add(digest)
        return True
    return False
