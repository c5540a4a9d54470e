"""The worker's cache of by-value functions (issue #16): shipped once, then named by hash.

A function cloudpickle pickles by value (defined in ``__main__`` — every notebook function —
a lambda, a local function) used to be unpickled by the worker on every call. The manager
now sends its cloudpickled bytes with their blake2b hash the first time a worker sees them,
and only the hash after (``Request.function`` / ``Request.function_hash``). The hash is of
the *freshly pickled* bytes, so a function whose captured globals or closure changed is a new
entry, never a stale one. Bounded LRU: a worker that evicted a hash (or a new worker) answers
``unknown_function`` and the manager resends the bytes, which the caller never sees.
"""
from __future__ import annotations

import collections
import pickle
import threading
from typing import Any, Callable

MAX_ENTRIES = 256


class UnknownFunction(LookupError):
    """The request named a function by a hash this worker does not hold."""


class FunctionCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[bytes, Callable[..., Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.loads = 0
        self.unknown = 0

    def resolve(self, digest: bytes, data: bytes) -> Callable[..., Any]:
        """The function named ``digest``: from the cache, or unpickled from ``data`` and kept."""
        with self._lock:
            fn = self._entries.get(digest)
            if fn is not None:
                self._entries.move_to_end(digest)
                self.hits += 1
                return fn
            if not data:
                self.unknown += 1
                raise UnknownFunction(f"no function {digest.hex()} in this worker's cache")
        fn = pickle.loads(data)
        with self._lock:
            self._entries[digest] = fn
            self._entries.move_to_end(digest)
            self.loads += 1
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return fn

    def info(self, clear: bool = False) -> dict[str, int]:
        with self._lock:
            out = {"size": len(self._entries), "max_entries": self.max_entries, "hits": self.hits,
                   "loads": self.loads, "unknown": self.unknown}
            if clear:
                self._entries.clear()
            return out


CACHE = FunctionCache()
