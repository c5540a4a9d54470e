"""By-value functions are shipped once per worker, then named by hash (issue #16).

A function defined in ``__main__`` (every notebook function) is cloudpickled by value. The
worker keeps it by the hash of its bytes (``worker/functions.py``, seen through the
``function_cache`` builtin command); the manager sends the bytes only to a worker that has
not had them (``pool/functions.py``). Counters, not timings, prove it.
"""
from __future__ import annotations

import os

import pytest

import snakepit

SOURCE = '''
FACTOR = {factor}
SEEN = []

def scale(x):
    return x * FACTOR + len(SEEN)
'''


def notebook_namespace(factor: int = 2) -> dict:
    """A namespace like a notebook's: its functions live in ``__main__`` (pickled by value)."""
    ns = {"__name__": "__main__"}
    exec(SOURCE.format(factor=factor), ns)
    assert ns["scale"].__module__ == "__main__"
    return ns


@pytest.fixture
def pool():
    p = snakepit.start_pool("t-fncache", pool_size=1)
    try:
        yield p
    finally:
        snakepit.shutdown()


def _cache(pool) -> dict:
    return pool.execute("function_cache")


def test_a_main_function_is_shipped_once_per_worker(pool):
    scale = notebook_namespace()["scale"]
    before = _cache(pool)
    assert [pool.submit(scale, i).result(10) for i in range(10)] == [2 * i for i in range(10)]
    assert list(pool.map(scale, range(20), chunksize=5)) == [2 * i for i in range(20)]
    after = _cache(pool)
    assert after["loads"] - before["loads"] == 1  # unpickled once
    assert after["hits"] - before["hits"] == 9 + 4  # then named by hash: 9 submits, 4 chunks
    assert after["unknown"] == before["unknown"]
    # an importable function still travels by reference, outside the cache
    assert pool.submit(os.getpid).result(10) in {w.pid for w in pool.list_workers()}
    assert _cache(pool)["loads"] == after["loads"]


def test_a_changed_global_gives_the_new_result(pool):
    ns = notebook_namespace(factor=2)
    scale = ns["scale"]
    assert pool.submit(scale, 3).result(10) == 6
    ns["FACTOR"] = 5  # what re-running a notebook cell that sets FACTOR does
    assert pool.submit(scale, 3).result(10) == 15
    ns["SEEN"].append("x")  # a mutated (same object) global is captured afresh too
    assert pool.submit(scale, 3).result(10) == 16
    assert list(pool.map(scale, [1, 2])) == [6, 11]
    ns["FACTOR"] = 2
    ns["SEEN"].clear()
    assert pool.submit(scale, 3).result(10) == 6  # back to the first bytes: a hit, not a load
    info = _cache(pool)
    assert info["loads"] == 3 and info["hits"] >= 1


def test_functions_with_the_same_name_do_not_collide(pool):
    a = notebook_namespace(factor=2)["scale"]
    b = notebook_namespace(factor=3)["scale"]
    assert a.__qualname__ == b.__qualname__ == "scale"
    double = lambda x: 2 * x  # noqa: E731
    treble = lambda x: 3 * x  # noqa: E731
    for _ in range(3):
        assert pool.submit(a, 10).result(10) == 20
        assert pool.submit(b, 10).result(10) == 30
        assert pool.submit(double, 10).result(10) == 20
        assert pool.submit(treble, 10).result(10) == 30
    info = _cache(pool)
    assert info["loads"] == 4 and info["size"] == 4


def test_a_worker_without_the_function_gets_it_again_transparently(pool, wait_until):
    scale = notebook_namespace()["scale"]
    assert pool.submit(scale, 1).result(10) == 2
    # evicted (the cache is bounded): the manager still thinks the worker has it
    pool.execute("function_cache", {"clear": True})
    assert pool.submit(scale, 4).result(10) == 8  # no user-visible failure
    info = _cache(pool)
    assert info["unknown"] == 1 and info["loads"] == 2
    # a recycled worker is a new process with an empty cache, and a new record in the pool
    old = pool.list_workers()[0]
    pool.recycle_worker(old.worker_id)
    assert wait_until(lambda: [w.worker_id for w in pool.list_workers()] not in ([], [old.worker_id]), 30)
    assert wait_until(lambda: all(w.status == "available" for w in pool.list_workers()), 30)
    assert [pool.submit(scale, i).result(10) for i in range(3)] == [0, 2, 4]
    fresh = _cache(pool)
    assert fresh["loads"] == 1 and fresh["hits"] == 2 and fresh["unknown"] == 0  # sent with the bytes


def test_concurrent_first_calls_on_a_thread_worker():
    """Requests that race the first one carrying the bytes are resent, never failed."""
    p = snakepit.start_pool("t-fncache-thread", pool_size=1, profile="thread", threads_per_worker=4)
    try:
        scale = notebook_namespace(factor=7)["scale"]
        futures = [p.submit(scale, i) for i in range(40)]
        assert [f.result(20) for f in futures] == [7 * i for i in range(40)]
        info = p.execute("function_cache")
        assert info["size"] == 1 and info["loads"] >= 1  # one entry; a racing resend may load it twice
    finally:
        snakepit.shutdown()


HELPERS = '''
import math
K = 2

def helper(x):
    return x + K

def outer(x, *, bias=0):
    return helper(x) * 10 + bias + math.floor(0.5)
'''


def test_the_manager_reuses_pickled_bytes_only_while_nothing_captured_changed(pool):
    from snakepit.pool import functions

    ns = {"__name__": "__main__"}
    exec(HELPERS, ns)
    outer = ns["outer"]
    first = functions.by_value(outer)
    assert functions.by_value(outer) is first  # the same (hash, bytes): not pickled again
    assert pool.submit(outer, 1).result(10) == 30
    ns["K"] = 5  # a global of the helper it calls
    assert functions.by_value(outer) is not first
    assert pool.submit(outer, 1).result(10) == 60
    ns["helper"] = lambda x: -x  # the helper redefined (re-running its cell)
    assert pool.submit(outer, 1).result(10) == -10
    outer.__kwdefaults__ = {"bias": 7}
    assert pool.submit(outer, 1).result(10) == -3
    outer.tag = "x"  # a function attribute: never cached
    assert functions.by_value(outer) is not functions.by_value(outer)
    assert pool.submit(outer, 1).result(10) == -3

    def make(n):
        def add(x):
            return x + n
        return add

    add = make(1)
    assert functions.by_value(add) is functions.by_value(add)  # closure over an int
    state = {"n": 1}
    uses_dict = lambda x: x + state["n"]  # noqa: E731 - a mutable global/closure: never cached
    assert functions.by_value(uses_dict) is not functions.by_value(uses_dict)
    state["n"] = 41
    assert pool.submit(uses_dict, 1).result(10) == 42
    assert pool.submit(add, 1).result(10) == 2

    def counter():
        n = 0

        def bump(x: int = 1, *, by: int = 1) -> int:
            return x + n + by

        def set_n(value):
            nonlocal n
            n = value
        return bump, set_n

    bump, set_n = counter()
    cached = functions.by_value(bump)
    assert functions.by_value(bump) is cached
    set_n(100)  # a closure cell rebound
    assert functions.by_value(bump) is not cached
    assert pool.submit(bump).result(10) == 102
    for change in (lambda: setattr(bump, "__defaults__", (5,)),
                   lambda: bump.__kwdefaults__.__setitem__("by", 3),  # the same dict, changed in place
                   lambda: bump.__annotations__.__setitem__("x", float)):
        cached = functions.by_value(bump)
        assert functions.by_value(bump) is cached
        change()
        assert functions.by_value(bump) is not cached
    assert pool.submit(bump).result(10) == 108
