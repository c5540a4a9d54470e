"""Module-level pool registry: ``start_pool``, ``get_pool``, ``list_pools``, ``stop_pool``, ``shutdown``.

Pools are named and live until stopped, or until the interpreter exits (an ``atexit`` hook
stops them; if the process is killed, the workers' parent-death watchdogs end them).
"""
from __future__ import annotations

import atexit
import threading
from typing import Any, Callable

import snakepit as _package  # initialised before its modules: its start_pool's docstring is ours

from .config import PoolConfig
from .errors import ConfigError, PoolExistsError, PoolNotFoundError
from .pool import Pool

__all__ = ["start_pool", "get_pool", "list_pools", "stop_pool", "shutdown", "add_listener"]

_lock = threading.RLock()
_pools: dict[str, Pool] = {}
_atexit_registered = False


def start_pool(name: str = "default", *, config: PoolConfig | None = None, exist_ok: bool = False,
               **options: Any) -> Pool:
    # The docstring is snakepit.start_pool's (the public entry point, which calls this).
    if config is not None:
        if options:
            raise ConfigError(next(iter(options)), "pass settings either in config= or as keywords, not both")
        cfg = config
    else:
        cfg = PoolConfig.from_options(name, **options)
    global _atexit_registered
    with _lock:
        existing = _pools.get(cfg.name)
        if existing is not None and not existing.closed:
            if exist_ok:
                return existing
            raise PoolExistsError(cfg.name)
        pool = Pool(cfg)
        _pools[cfg.name] = pool
        pool.on_stopped(_forget)  # pool.stop() or a with-block: the registry forgets it
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True
    _notify_started(pool)
    return pool


start_pool.__doc__ = _package.start_pool.__doc__

def get_pool(name: str = "default") -> Pool:
    """The running pool of that name. Raises :class:`PoolNotFoundError`."""
    with _lock:
        pool = _pools.get(name)
        if pool is None or pool.closed:
            raise PoolNotFoundError(name, sorted(n for n, p in _pools.items() if not p.closed))
        return pool


def list_pools() -> list[Pool]:
    """Every running pool, in start order."""
    with _lock:
        return [p for p in _pools.values() if not p.closed]


def stop_pool(name: str = "default", *, wait: bool = True, cancel_futures: bool = False) -> None:
    """Stop a pool and its workers. Raises :class:`PoolNotFoundError` for an unknown name."""
    with _lock:
        pool = _pools.get(name)
        if pool is None or pool.closed:
            raise PoolNotFoundError(name, sorted(n for n, p in _pools.items() if not p.closed))
        del _pools[name]
    pool.stop(wait=wait, cancel_futures=cancel_futures)


def shutdown(wait: bool = True) -> None:
    """Stop every pool (called automatically at interpreter exit). Idempotent."""
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.stop(wait=wait, grace=2.0)
    _notify_stopped_all()


def _forget(pool: Pool) -> None:
    with _lock:
        if _pools.get(pool.name) is pool:
            del _pools[pool.name]


# The registry's listeners, by name. The package edge (snakepit.start_pool) registers the admin
# endpoint's as "admin"; this module knows nothing of it.
_listeners: dict[str, Callable[[str, Pool | None], None]] = {}


def add_listener(name: str, listener: Callable[[str, Pool | None], None]) -> None:
    """Call ``listener("started", pool)`` after each pool starts and ``listener("shutdown", None)``
    after :func:`shutdown`. One listener per ``name``: registering a name again replaces it.
    A listener's exceptions are swallowed (a listener never fails ``start_pool``)."""
    with _lock:
        _listeners[name] = listener


def _notify_started(pool: Pool) -> None:
    for listener in list(_listeners.values()):
        try:
            listener("started", pool)
        except Exception:
            pass


def _notify_stopped_all() -> None:
    for listener in list(_listeners.values()):
        try:
            listener("shutdown", None)
        except Exception:
            pass
