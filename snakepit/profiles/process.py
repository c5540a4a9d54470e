"""The ``process`` profile: one request at a time per worker, one native thread each."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import WorkerProfile

if TYPE_CHECKING:
    from ..config import PoolConfig


class ProcessProfile(WorkerProfile):
    name = "process"
    worker_type = "single-process"
    threading = "single-threaded"

    def capacity(self, config: "PoolConfig") -> int:
        return 1

    def native_threads(self, config: "PoolConfig") -> int:
        return 1
