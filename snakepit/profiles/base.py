"""What a worker profile decides: capacity, environment, and how the worker is told."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import PoolConfig

# Native thread pools (BLAS, OpenMP, numexpr) sized per worker, as Snakepit v0.6 did.
THREAD_LIMIT_VARS = (
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)

BASE_ENV = {
    "PYTHONUNBUFFERED": "1",
    "GRPC_VERBOSITY": "ERROR",
    "GRPC_ENABLE_FORK_SUPPORT": "0",
}


class WorkerProfile:
    """Base class: subclasses set ``name`` and implement :meth:`capacity` and :meth:`native_threads`."""

    name: str = ""
    worker_type: str = ""
    threading: str = ""

    def capacity(self, config: "PoolConfig") -> int:
        raise NotImplementedError

    def native_threads(self, config: "PoolConfig") -> int:
        raise NotImplementedError

    def environment(self, config: "PoolConfig", inherited: dict[str, str]) -> dict[str, str]:
        """The worker's environment: inherited, then snakepit's defaults, then the user's ``env``."""
        env = dict(inherited)
        env.update(BASE_ENV)
        threads = str(self.native_threads(config))
        for var in THREAD_LIMIT_VARS:
            env[var] = threads
        env.update(config.env)
        return env

    def metadata(self, config: "PoolConfig") -> dict[str, Any]:
        return {
            "profile": self.name,
            "capacity": self.capacity(config),
            "worker_type": self.worker_type,
            "threading": self.threading,
        }
