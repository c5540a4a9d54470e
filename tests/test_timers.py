"""Timeouts that keep firing, and timers that hold no memory (issue 18, items 5 and 6)."""
from __future__ import annotations

import gc
import math
import threading

import psutil
import pytest

import snakepit
from snakepit.pool.timers import MAX_DELAY_S, _Timer, normalize_timeout


@pytest.mark.parametrize("huge", [float("inf"), 1e10, 1e300])
def test_huge_or_infinite_timeout_keeps_every_later_timeout_working(huge):
    pool = snakepit.start_pool("t-huge", pool_size=1)
    try:
        assert pool.execute("echo", {"v": 1}, timeout=huge) == {"v": 1}
        # The timer thread must still be alive: a short timeout fires, it does not wait 5 s.
        with pytest.raises(snakepit.RequestTimeoutError):
            pool.execute("sleep", {"seconds": 5}, timeout=0.3)
        assert pool._timer._thread.is_alive()
    finally:
        snakepit.stop_pool("t-huge")


def test_config_infinite_and_huge_timeouts_mean_no_limit_or_clamp():
    pool = snakepit.start_pool("t-inf-cfg", pool_size=1, queue_timeout=float("inf"), request_timeout=1e12)
    try:
        assert pool.config.queue_timeout is None
        assert pool.config.request_timeout == MAX_DELAY_S
        assert pool.execute("echo", {"v": 2}) == {"v": 2}
        with pytest.raises(snakepit.RequestTimeoutError):
            pool.execute("sleep", {"seconds": 5}, timeout=0.3)
    finally:
        snakepit.stop_pool("t-inf-cfg")


@pytest.mark.parametrize("bad", [float("nan"), -1, 0, "3"])
def test_bad_per_call_timeout_is_refused_naming_the_argument(bad):
    pool = snakepit.start_pool("t-bad-timeout", pool_size=1)
    try:
        with pytest.raises(ValueError, match="timeout"):
            pool.execute("echo", {}, timeout=bad)
        assert pool.execute("echo", {"ok": True}) == {"ok": True}  # nothing lost
    finally:
        snakepit.stop_pool("t-bad-timeout")


@pytest.mark.parametrize("key", ["queue_timeout", "request_timeout"])
def test_nan_or_negative_timeout_setting_is_a_config_error(key):
    for bad in (float("nan"), -5):
        with pytest.raises(snakepit.ConfigError) as info:
            snakepit.start_pool("t-bad-cfg", pool_size=1, **{key: bad})
        assert info.value.key == key


def test_normalize_timeout():
    assert normalize_timeout(None, "t") is None
    assert normalize_timeout(math.inf, "t") is None
    assert normalize_timeout(1e20, "t") == MAX_DELAY_S
    assert normalize_timeout(2, "t") == 2.0


def test_a_failing_timer_callback_does_not_stop_later_timeouts():
    timer = _Timer("t-fail")
    fired = threading.Event()
    try:
        def boom() -> None:
            raise RuntimeError("callback failed")

        def leave() -> None:
            raise SystemExit(1)

        timer.call_later(0.0, boom)
        timer.call_later(0.0, leave)
        timer.call_later(0.05, fired.set)
        assert fired.wait(5.0), "the timer thread died with its callback"
        assert timer._thread.is_alive()
    finally:
        timer.stop()


def test_cancelled_timers_leave_the_heap_and_hold_nothing():
    timer = _Timer("t-heap")
    try:
        big = [bytearray(2**20) for _ in range(3)]
        handles = [timer.call_later(3600, (lambda b=b: b)) for b in big for _ in range(100)]
        for h in handles:
            h.cancel()
        assert timer.pending() <= 64 + 1
        # A cancelled handle no longer references its callback (nor what it closes over).
        assert all(h.fn is None for h in handles)
    finally:
        timer.stop()


def test_many_calls_with_long_timeouts_keep_memory_bounded():
    pool = snakepit.start_pool("t-timer-mem", pool_size=1)
    me = psutil.Process()
    blob = b"x" * 2**20
    try:
        pool.execute("echo", {"blob": blob}, timeout=3600)  # warm-up
        gc.collect()
        before = me.memory_info().rss
        for _ in range(200):
            pool.execute("echo", {"blob": blob}, timeout=3600)
        gc.collect()
        grown_mb = (me.memory_info().rss - before) / 2**20
        assert pool._timer.pending() <= 70, pool._timer.pending()
        # 200 × (1 MiB sent + 1 MiB back) held by the timers was ~400 MB; now bounded.
        assert grown_mb < 120, f"kernel grew {grown_mb:.0f} MB over 200 calls"
    finally:
        snakepit.stop_pool("t-timer-mem")


def test_a_timer_starts_its_thread_at_its_first_deadline_and_stops_either_way():
    """A pool interrupted before it first needs its timer must leave no thread behind."""
    unused = _Timer("t-unused")
    assert not any(t.name == "snakepit-t-unused-timer" for t in threading.enumerate())
    unused.stop()
    used = _Timer("t-used")
    fired = threading.Event()
    used.call_later(0.01, fired.set)
    assert fired.wait(10)
    assert used._thread.is_alive()
    used.stop()
    assert not used._thread.is_alive()
