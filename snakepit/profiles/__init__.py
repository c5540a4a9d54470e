"""Worker profiles: how many requests a worker serves at once and how it is set up.

``process``: many single-threaded workers, capacity 1 each (full isolation).
``thread``: few workers, each running ``threads_per_worker`` requests at once on a thread
pool (shared memory inside a worker; for GIL-releasing work and free-threaded Pythons).
"""
from __future__ import annotations

from .base import WorkerProfile
from .process import ProcessProfile
from .thread import ThreadProfile

__all__ = ["WorkerProfile", "ProcessProfile", "ThreadProfile", "get_profile"]

_PROFILES: dict[str, WorkerProfile] = {"process": ProcessProfile(), "thread": ThreadProfile()}


def get_profile(name: str) -> WorkerProfile:
    """The profile object for ``"process"`` or ``"thread"``."""
    return _PROFILES[name]
