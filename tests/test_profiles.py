"""Process vs thread profile: capacity is real, proven by timing against capacity."""
from __future__ import annotations

import time
from concurrent.futures import wait

import pytest

import snakepit

SLEEP = 0.5


def _run_16_sleeps(pool) -> float:
    start = time.monotonic()
    futures = [pool.submit_command("sleep", {"seconds": SLEEP}) for _ in range(16)]
    done, not_done = wait(futures, timeout=60)
    assert not not_done
    for f in done:
        f.result()
    return time.monotonic() - start


def test_thread_pool_runs_capacity_requests_at_once():
    pool = snakepit.start_pool("t-thread", profile="thread", pool_size=2, threads_per_worker=8)
    try:
        assert pool.capacity == 16
        assert all(w.capacity == 8 for w in pool.list_workers())
        elapsed = _run_16_sleeps(pool)
        # 16 sleeps on 16 slots: one round. Serialized it would be 16 x 0.3 s.
        assert elapsed < 2 * SLEEP, f"thread pool took {elapsed:.2f}s for one round of {SLEEP}s sleeps"
    finally:
        snakepit.shutdown()


def test_process_pool_of_two_runs_two_at_a_time():
    pool = snakepit.start_pool("t-proc", profile="process", pool_size=2)
    try:
        assert pool.capacity == 2
        elapsed = _run_16_sleeps(pool)
        assert elapsed >= 8 * SLEEP * 0.95, f"process pool of 2 finished 16 sleeps in {elapsed:.2f}s"
    finally:
        snakepit.shutdown()


def test_load_is_counted_per_worker_under_load(wait_until):
    pool = snakepit.start_pool("t-load", profile="thread", pool_size=2, threads_per_worker=4)
    try:
        futures = [pool.submit_command("sleep", {"seconds": 1.0}) for _ in range(6)]
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 6, 5)
        loads = sorted(w.load for w in pool.list_workers())
        assert loads == [3, 3], "least-loaded dispatch spreads the requests"
        stats = pool.statistics()
        assert stats["capacity_total"] == 8 and stats["capacity_used"] == 6
        wait(futures, timeout=30)
        assert all(w.load == 0 for w in pool.list_workers())
    finally:
        snakepit.shutdown()


def test_capacity_reached_event_when_a_thread_worker_fills_up(events):
    events.attach(("snakepit", "pool", "capacity_reached"))
    pool = snakepit.start_pool("t-cap", profile="thread", pool_size=1, threads_per_worker=3)
    try:
        futures = [pool.submit_command("sleep", {"seconds": 0.3}) for _ in range(3)]
        wait(futures, timeout=30)
        seen = events.of(("snakepit", "pool", "capacity_reached"))
        assert seen, "no capacity_reached event"
        measurements, metadata = seen[0]
        assert measurements == {"capacity": 3, "load": 3}
        worker = pool.list_workers()[0]
        assert metadata["worker_pid"] == worker.pid and metadata["worker_id"] == worker.worker_id
        assert metadata["profile"] == "thread" and metadata["rejected"] is False
    finally:
        snakepit.shutdown()


class NotThreadSafe(snakepit.Adapter):
    @snakepit.command
    def hello(self):
        return "hi"


class ThreadSafe(NotThreadSafe):
    thread_safe = True


def test_thread_profile_refuses_an_adapter_not_declared_thread_safe():
    with pytest.raises(snakepit.ConfigError) as info:
        snakepit.start_pool("t-unsafe", profile="thread", pool_size=1, adapter="test_profiles:NotThreadSafe",
                            env={"PYTHONPATH": _tests_path()})
    assert info.value.key == "adapter" and "thread-safe" in str(info.value)
    pool = snakepit.start_pool("t-safe", profile="thread", pool_size=1, adapter="test_profiles:ThreadSafe",
                               env={"PYTHONPATH": _tests_path()})
    try:
        assert pool.execute("hello") == "hi"
    finally:
        snakepit.shutdown()
    # The process profile accepts it.
    pool = snakepit.start_pool("t-unsafe-proc", pool_size=1, adapter="test_profiles:NotThreadSafe",
                               env={"PYTHONPATH": _tests_path()})
    try:
        assert pool.execute("hello") == "hi"
    finally:
        snakepit.shutdown()


def test_thread_limits_env_per_profile_and_user_env_wins():
    def env():
        import os

        return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                 "NUMEXPR_NUM_THREADS", "MY_SETTING")}

    proc = snakepit.start_pool("t-env-p", pool_size=1, env={"MY_SETTING": "x"})
    thread = snakepit.start_pool("t-env-t", profile="thread", pool_size=1, threads_per_worker=6,
                                 env={"MKL_NUM_THREADS": "2"})
    try:
        assert proc.submit(env).result(10) == {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                               "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1", "MY_SETTING": "x"}
        assert thread.submit(env).result(10) == {"OMP_NUM_THREADS": "6", "OPENBLAS_NUM_THREADS": "6",
                                                 "MKL_NUM_THREADS": "2", "NUMEXPR_NUM_THREADS": "6",
                                                 "MY_SETTING": None}
    finally:
        snakepit.shutdown()


def test_configurable_worker_interpreter(tmp_path):
    import os
    import sys

    wrapper = tmp_path / "mypython"
    wrapper.write_text(f"#!/bin/sh\nexport SNAKEPIT_VIA_WRAPPER=1\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    pool = snakepit.start_pool("t-python", pool_size=1, python=str(wrapper))
    try:
        assert pool.submit(lambda: os.environ.get("SNAKEPIT_VIA_WRAPPER")).result(10) == "1"
    finally:
        snakepit.shutdown()


def _tests_path() -> str:
    import os

    return os.path.dirname(os.path.abspath(__file__))
