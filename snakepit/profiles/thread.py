"""The ``thread`` profile: ``threads_per_worker`` requests at once per worker.

The adapter must declare itself thread-safe (``thread_safe = True``); the worker refuses to
start otherwise. Native thread pools get ``threads_per_worker`` threads (user ``env`` wins).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import WorkerProfile

if TYPE_CHECKING:
    from ..config import PoolConfig


class ThreadProfile(WorkerProfile):
    name = "thread"
    worker_type = "multi-threaded"
    threading = "thread-pool"

    def capacity(self, config: "PoolConfig") -> int:
        return config.threads_per_worker

    def native_threads(self, config: "PoolConfig") -> int:
        return config.threads_per_worker
