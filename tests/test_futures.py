"""The pool's futures are real concurrent.futures.Futures, with a lighter condition inside.

SnakepitFuture builds Future's state itself (snakepit/pool/calls.py) so that a submit does
not pay for a full threading.Condition: these tests hold it to everything the standard
library and asyncio do with a Future.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import gc
import threading
import time

import pytest

import snakepit
from snakepit.pool.calls import SnakepitFuture, _Call, _FutureCondition


def test_a_snakepit_future_has_every_attribute_a_future_sets_up():
    assert set(vars(cf.Future())) <= set(vars(SnakepitFuture()))


def test_the_condition_blocks_wakes_and_times_out_like_threading_condition():
    cond = _FutureCondition()
    with pytest.raises(RuntimeError):
        cond.wait(0)
    with pytest.raises(RuntimeError):
        cond.notify()
    with cond:
        with cond:  # reentrant, like the RLock Future's own condition holds
            assert cond.wait(0) is False
            assert cond.wait(0.01) is False
    woken: list[str] = []

    def waiter(name: str) -> None:
        with cond:
            if cond.wait(30):
                woken.append(name)

    threads = [threading.Thread(target=waiter, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # every waiter inside wait(), the lock let go
        with cond:
            if cond._waiters is not None and len(cond._waiters) == 3:
                cond.notify()
                break
        time.sleep(0.01)
    deadline = time.monotonic() + 30
    while not woken and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(woken) == 1
    with cond:
        cond.notify_all()
    for t in threads:
        t.join(30)
    assert sorted(woken) == ["t0", "t1", "t2"]
    with cond:
        assert cond.wait_for(lambda: len(woken) == 3, timeout=0) is True
        assert cond.wait_for(lambda: False, timeout=0.01) is False


def test_futures_work_with_wait_as_completed_callbacks_timeouts_and_asyncio():
    pool = snakepit.start_pool("futures", pool_size=2)
    try:
        slow = pool.submit(time.sleep, 0.5)
        fast = [pool.submit(pow, 2, i) for i in range(8)]
        assert all(isinstance(f, SnakepitFuture) for f in fast)
        with pytest.raises(cf.TimeoutError):
            slow.result(timeout=0.01)
        done, not_done = cf.wait(fast + [slow], timeout=60, return_when=cf.FIRST_COMPLETED)
        assert done
        assert sorted(f.result() for f in cf.as_completed(fast, timeout=60)) == [2 ** i for i in range(8)]
        seen: list[object] = []
        fast[0].add_done_callback(seen.append)  # already done: called at once
        assert seen == [fast[0]]
        many = threading.Barrier(5)
        results: list[object] = []

        def wait_on_slow() -> None:
            many.wait()
            results.append(slow.result(60))

        waiters = [threading.Thread(target=wait_on_slow) for _ in range(4)]
        for t in waiters:
            t.start()
        many.wait()
        for t in waiters:
            t.join(60)
        assert results == [None] * 4  # one reply woke every thread waiting on it

        async def awaited() -> int:
            return await asyncio.wrap_future(pool.submit(sum, [1, 2, 3]))

        assert asyncio.run(awaited()) == 6
        queued = [pool.submit(time.sleep, 0.3) for _ in range(4)]
        assert queued[-1].cancel() and queued[-1].cancelled()
        with pytest.raises(cf.CancelledError):
            queued[-1].result(0)
        done, _ = cf.wait(queued[:-1], timeout=60)
        assert len(done) == 3
    finally:
        snakepit.stop_pool("futures")


def test_a_finished_future_lets_its_call_go_without_the_garbage_collector():
    pool = snakepit.start_pool("futures-cycle", pool_size=1)
    try:
        future = pool.submit(abs, -3)
        assert future.result(60) == 3
        gc.disable()
        try:
            assert not any(isinstance(o, _Call) for o in gc.get_referents(future))
            assert future.cancel() is False  # done: nothing left to cancel
        finally:
            gc.enable()
    finally:
        snakepit.stop_pool("futures-cycle")
