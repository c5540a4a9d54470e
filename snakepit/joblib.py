"""A joblib backend: ``import snakepit.joblib`` registers ``"snakepit"``.

Example::

    import joblib, snakepit, snakepit.joblib
    snakepit.start_pool("default", pool_size=2)
    with joblib.parallel_config(backend="snakepit", pool="default"):
        joblib.Parallel(n_jobs=-1)(joblib.delayed(abs)(-i) for i in range(10))

``pool=`` names the pool (or is a Pool); without it the "default" pool is used and started
if none runs (like ``%%snakepit_run``). ``n_jobs=-1`` is the pool's capacity, a positive
``n_jobs`` is capped at it. Batches go through ``pool.submit`` (telemetry, inspector as any
other work); joblib's auto-batching applies; on error ``abort_everything`` cancels the
outstanding batches; nested joblib calls inside a worker run sequentially.
"""
from __future__ import annotations

import threading
from typing import Any

import joblib  # absolute import: the real joblib, not this module
from joblib._parallel_backends import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

__all__ = ["SnakepitBackend"]


class SnakepitBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib ``ParallelBackendBase`` running batches on a snakepit pool."""

    supports_retrieve_callback = True
    default_n_jobs = -1

    def __init__(self, pool: Any = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **kwargs: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads, **kwargs)
        self._pool_ref = pool
        self._futures: set = set()
        self._lock = threading.Lock()

    def _pool(self) -> Any:
        import snakepit

        ref = self._pool_ref
        if ref is not None and not isinstance(ref, str):
            return ref
        name = ref or "default"
        try:
            return snakepit.get_pool(name)
        except snakepit.PoolNotFoundError:
            if ref is None:
                return snakepit.start_pool("default", exist_ok=True)
            raise

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        capacity = max(1, self._pool().capacity)
        if n_jobs is None or n_jobs < 0:
            n = capacity + 1 + (n_jobs if n_jobs is not None else -1)
            return max(1, min(n, capacity))
        return min(n_jobs, capacity)

    def configure(self, n_jobs: int = 1, parallel: Any = None, **kwargs: Any) -> int:
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Any, callback: Any = None) -> Any:
        fut = self._pool().submit(func)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(self._forget)
        if callback is not None:
            fut.add_done_callback(callback)
        return fut

    def _forget(self, fut: Any) -> None:
        with self._lock:
            self._futures.discard(fut)

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        with self._lock:
            pending = list(self._futures)
        for fut in pending:
            fut.cancel()

    def get_nested_backend(self) -> Any:
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None


joblib.register_parallel_backend("snakepit", SnakepitBackend)
