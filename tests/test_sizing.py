"""Dynamic sizing: pool.scale(n) and pool.adapt(minimum, maximum) on real workers (issue 13)."""
from __future__ import annotations

import os
import threading
import time

import pytest

import snakepit
from snakepit import ConfigError, PoolNotFoundError

SCALED = ("snakepit", "pool", "scaled")
RECYCLED = ("snakepit", "worker", "recycled")


def _pids(pool) -> set[int]:
    return {w.pid for w in pool.list_workers() if w.status in ("available", "busy")}


def test_scale_up_and_down_changes_the_worker_processes(events):
    events.attach(SCALED, RECYCLED)
    pool = snakepit.start_pool("t-scale", pool_size=1)
    try:
        first = _pids(pool)
        pool.scale(3)
        assert pool.target_size == 3
        grown = _pids(pool)
        assert len(grown) == 3 and first <= grown
        for pid in grown:
            os.kill(pid, 0)  # real, live processes
        pool.scale(1)
        assert len(_pids(pool)) == 1
        assert [(m["from_size"], m["to_size"], md["reason"]) for m, md in events.of(SCALED)] == [
            (1, 3, "manual"), (3, 1, "manual")]
        assert sum(1 for _, md in events.of(RECYCLED) if md["reason"] == "scaled_down") == 2
        assert pool.execute("echo", {"ok": 1}) == {"ok": 1}
    finally:
        snakepit.stop_pool("t-scale")


def test_scale_down_while_calls_run_loses_none():
    pool = snakepit.start_pool("t-scale-busy", pool_size=3)
    try:
        futures = [pool.submit_command("sleep", {"seconds": 1.0}) for _ in range(3)]
        time.sleep(0.2)
        assert sum(w.load for w in pool.list_workers()) == 3  # all three are running
        pool.scale(1, wait=False)
        assert pool.target_size == 1
        assert all(f.result(10) is not None for f in futures)  # every call returned its result
        pool.wait_for_size(10)
        assert len(pool.list_workers()) == 1
    finally:
        snakepit.stop_pool("t-scale-busy")


def test_shrinking_prefers_workers_without_sessions_and_a_lost_session_says_so():
    pool = snakepit.start_pool("t-scale-sess", pool_size=2)
    try:
        with pool.session("keep") as s:
            s.run_code("x = 41")
            kept_pid = s.worker_pid
            pool.scale(1)
            assert _pids(pool) == {kept_pid}  # the worker without a session went
            assert s.run_code("x + 1").result == 42
    finally:
        snakepit.stop_pool("t-scale-sess")


def test_a_session_whose_worker_is_scaled_away_gets_a_clear_error_then_starts_afresh():
    pool = snakepit.start_pool("t-scale-lost", pool_size=2)
    try:
        a, b = pool.session("a"), pool.session("b")
        a.run_code("x = 1")
        b.run_code("y = 2")
        if a.worker_pid == b.worker_pid:
            pytest.skip("both sessions landed on one worker")
        pool.scale(1)
        survivors = _pids(pool)
        lost = a if a.worker_pid not in survivors else b
        with pytest.raises(snakepit.SessionLostError, match="scaled down"):
            lost.run_code("1")
        assert lost.run_code("2 + 2").result == 4  # afresh, on the remaining worker
        a.close(), b.close()
    finally:
        snakepit.stop_pool("t-scale-lost")


def test_crash_replacement_keeps_the_target_size(wait_until):
    pool = snakepit.start_pool("t-scale-crash", pool_size=1)
    try:
        pool.scale(3)
        victim = next(iter(_pids(pool)))
        os.kill(victim, 9)
        assert wait_until(lambda: len(_pids(pool)) == 3 and victim not in _pids(pool), 10)
        pool.scale(2)
        time.sleep(0.5)
        assert len(_pids(pool)) == 2  # replacements never push it past the target
    finally:
        snakepit.stop_pool("t-scale-crash")


@pytest.mark.parametrize("bad", [-1, 0, 1.5, "3", True, 5000])
def test_bad_sizes_are_config_errors_naming_the_value(bad):
    pool = snakepit.start_pool("t-scale-bad", pool_size=1, max_pool_size=8)
    try:
        with pytest.raises(ConfigError) as info:
            pool.scale(bad)
        assert repr(bad) in str(info.value) or str(bad) in str(info.value)
        with pytest.raises(ConfigError, match="hard cap"):
            pool.scale(9)
        with pytest.raises(ConfigError, match="minimum"):
            pool.adapt(minimum=4, maximum=2)
        with pytest.raises(ConfigError, match="hard cap"):
            pool.adapt(minimum=1, maximum=9)
        assert pool.execute("echo", {"ok": 1}) == {"ok": 1}
    finally:
        snakepit.stop_pool("t-scale-bad")


def test_scale_and_adapt_on_a_stopped_pool():
    pool = snakepit.start_pool("t-scale-stopped", pool_size=1)
    snakepit.stop_pool("t-scale-stopped")
    with pytest.raises(PoolNotFoundError):
        pool.scale(2)
    with pytest.raises(PoolNotFoundError):
        pool.adapt(1, 2)


def test_adapt_grows_fast_under_a_burst_and_shrinks_slowly_after(events, wait_until):
    events.attach(SCALED)
    pool = snakepit.start_pool("t-adapt", pool_size=1, queue_timeout=60)
    try:
        a = pool.adapt(minimum=1, maximum=4, interval=0.5, wait_count=3)
        assert pool.adaptive is a
        futures = [pool.submit_command("sleep", {"seconds": 0.3}) for _ in range(40)]
        # Up within two intervals, by what the backlog needs (not +1 per interval).
        assert wait_until(lambda: pool.target_size >= 3, 2 * a.interval + 0.5)
        assert all(f.result(30) is not None for f in futures)
        # Down only after wait_count low intervals; back to the minimum.
        assert wait_until(lambda: pool.target_size == 1, (a.wait_count + 2) * a.interval + 1.0)
        frame = a.log.to_frame()
        assert list(frame.columns) == ["time", "from_size", "to_size", "reason", "utilization", "queue_depth"]
        assert frame["reason"].iloc[0] == "adapt_up" and frame["queue_depth"].iloc[0] > 0
        assert "adapt_down" in set(frame["reason"])
        ups = [i for i, row in frame.iterrows() if row["reason"] == "adapt_up"]
        assert len(ups) <= 2
        # No decision moved both ways.
        assert all((r.to_size > r.from_size) == (r.reason == "adapt_up") for r in frame.itertuples())
        assert {md["reason"] for _, md in events.of(SCALED)} == {"adapt_up", "adapt_down"}
    finally:
        snakepit.stop_pool("t-adapt")


def test_adapt_settles_under_a_steady_load():
    pool = snakepit.start_pool("t-adapt-steady", pool_size=1, queue_timeout=60)
    stop = threading.Event()

    def keep_two_busy() -> None:
        while not stop.is_set():
            pool.execute("sleep", {"seconds": 0.1})

    try:
        a = pool.adapt(minimum=1, maximum=6, interval=0.4, wait_count=3)
        threads = [threading.Thread(target=keep_two_busy) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(6)
        stop.set()
        for t in threads:
            t.join()
        changes = [r for r in a.log if r["reason"] in ("adapt_up", "adapt_down")]
        assert len(changes) <= 2, changes
    finally:
        stop.set()
        snakepit.stop_pool("t-adapt-steady")


def test_adapt_twice_replaces_and_a_manual_scale_ends_it():
    pool = snakepit.start_pool("t-adapt-twice", pool_size=1)
    try:
        first = pool.adapt(1, 3, interval=0.2)
        second = pool.adapt(2, 3, interval=0.2)
        assert not first.running and second.running and pool.adaptive is second
        assert pool.target_size == 2  # the new minimum applies at once
        pool.scale(3)
        assert pool.adaptive is None and not second.running
        time.sleep(1.0)
        assert pool.target_size == 3  # adaptive sizing does not undo it
        assert pool.adapt(None) is None
    finally:
        snakepit.stop_pool("t-adapt-twice")


def test_adapt_on_a_thread_pool_counts_threads():
    pool = snakepit.start_pool("t-adapt-thread", profile="thread", pool_size=1, threads_per_worker=4,
                               queue_timeout=60)
    try:
        a = pool.adapt(1, 3, interval=0.3)
        futures = [pool.submit_command("sleep", {"seconds": 0.5}) for _ in range(12)]
        time.sleep(0.9)
        # 12 concurrent requests at 4 threads a worker, 80 % target → 3 workers.
        assert pool.target_size == 3
        assert all(f.result(20) is not None for f in futures)
        a.stop()
    finally:
        snakepit.stop_pool("t-adapt-thread")


def test_adapt_recovers_after_every_worker_was_lost(wait_until):
    pool = snakepit.start_pool("t-adapt-recover", pool_size=2)
    try:
        pool.adapt(2, 4, interval=0.3)
        victims = _pids(pool)
        for pid in victims:
            os.kill(pid, 9)
        assert wait_until(lambda: len(_pids(pool)) == 2 and not victims & _pids(pool), 15)
        assert pool.execute("echo", {"back": True}) == {"back": True}
    finally:
        snakepit.stop_pool("t-adapt-recover")
