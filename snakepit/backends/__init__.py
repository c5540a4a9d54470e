"""Where a pool's workers run: the backend seam (see :mod:`snakepit.backends.base`).

``create_backend`` picks the implementation from the pool's configuration: the local
launcher, or — with ``PoolConfig.cluster`` set — the Dask placement (``pip install
"snakepit[dask]"``; ``distributed`` is imported only then).
"""
from __future__ import annotations

from typing import Any, Mapping

from .base import Backend, StartFailure, WorkerHandle, stop_together

__all__ = ["Backend", "StartFailure", "WorkerHandle", "create_backend", "stop_together"]


def create_backend(config: Any, env: Mapping[str, str], capacity: int, launcher: Any = None) -> Backend:
    """The backend for one pool (``config`` is its validated :class:`snakepit.PoolConfig`)."""
    if getattr(config, "cluster", None) is not None:
        from .dask import DaskBackend  # noqa: PLC0415 - distributed only for cluster pools

        return DaskBackend(config, env, capacity)
    from .local import LocalBackend  # noqa: PLC0415

    return LocalBackend(config, env, capacity, launcher)
