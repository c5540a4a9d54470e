"""``pool.executor()``: a real :class:`concurrent.futures.Executor` over a pool or a session.

Example::

    import asyncio, snakepit
    pool = snakepit.start_pool("default", pool_size=2)
    with pool.executor() as ex:                       # shutdown() ends the view, not the pool
        assert ex.submit(pow, 2, 10).result() == 1024
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.run_in_executor(pool.executor(), sum, [1, 2]))   # 3

``shutdown()`` stops *this executor view*: it refuses new work, optionally cancels the futures
it submitted (``cancel_futures=True``) and waits for the rest (``wait=True``). The pool keeps
running for its other users, unless the executor owns it (``SnakepitExecutor.start_pool(...)``),
in which case shutdown also stops the pool.
"""
from __future__ import annotations

import threading
from concurrent.futures import Executor, Future, wait as _wait
from typing import Any, Callable, Iterable, Iterator

__all__ = ["SnakepitExecutor"]


class SnakepitExecutor(Executor):
    """A ``concurrent.futures.Executor`` whose work runs on a snakepit pool (or one session).

    Example::

        ex = SnakepitExecutor(pool)            # or pool.executor(), session.executor()
        ex.submit(len, "abc").result()         # 3
        ex.shutdown()
    """

    def __init__(self, target: Any, *, owns_pool: bool = False) -> None:
        self._target = target  # a snakepit.Pool or snakepit.Session
        self._owns_pool = owns_pool
        self._lock = threading.Lock()
        self._shutdown = False
        self._futures: set[Future] = set()

    @classmethod
    def start_pool(cls, name: str = "executor", **options: Any) -> "SnakepitExecutor":
        """Start a pool owned by the executor: ``shutdown()`` stops it.

        Example::

            with SnakepitExecutor.start_pool("tmp", pool_size=2) as ex:
                ex.submit(pow, 3, 2).result()   # 9
        """
        import snakepit

        return cls(snakepit.start_pool(name, **options), owns_pool=True)

    @property
    def pool(self) -> Any:
        """The pool the work runs on."""
        return getattr(self._target, "pool", self._target)

    def _check(self) -> None:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on the pool; returns a Future."""
        with self._lock:
            self._check()
            fut = self._target.submit(fn, *args, **kwargs)
            self._futures.add(fut)
        fut.add_done_callback(self._forget)
        return fut

    def _forget(self, fut: Future) -> None:
        with self._lock:
            self._futures.discard(fut)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | None = None, **kw: Any) -> Iterator[Any]:
        """Like ``Executor.map``: results in order; ``chunksize=None`` lets the pool choose."""
        self._check()
        return self._target.map(fn, *iterables, chunksize=chunksize, timeout=timeout, **kw)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End this executor view (see the module docstring); stops the pool only if owned."""
        with self._lock:
            self._shutdown = True
            pending = list(self._futures)
        if cancel_futures:
            for fut in pending:
                fut.cancel()
        if wait:
            _wait(pending)
        if self._owns_pool and not self.pool.closed:
            import snakepit

            try:
                snakepit.stop_pool(self.pool.name, wait=wait, cancel_futures=cancel_futures)
            except snakepit.PoolNotFoundError:
                self.pool.stop(wait=wait, cancel_futures=cancel_futures)
