"""Bounded FIFO queue: saturation, queue timeout, request timeout, FIFO order, telemetry."""
from __future__ import annotations

import time
from concurrent.futures import wait

import pytest

import snakepit
from snakepit import PoolSaturatedError, QueueTimeoutError, RequestTimeoutError


def test_saturation_error_and_event(events, wait_until):
    events.attach(("snakepit", "pool", "saturated"))
    pool = snakepit.start_pool("t-sat", pool_size=1, max_queue_size=2, queue_timeout=30)
    try:
        busy = pool.submit_command("sleep", {"seconds": 1.0})
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        queued = [pool.submit_command("echo", {"i": i}) for i in range(2)]
        with pytest.raises(PoolSaturatedError) as info:
            pool.submit_command("echo", {"i": 99})
        assert info.value.queue_size == 2 and info.value.max_queue_size == 2
        (measurements, metadata), = events.of(("snakepit", "pool", "saturated"))
        assert measurements == {"queue_size": 2, "max_queue_size": 2}
        assert metadata == {"pool": "t-sat", "available_workers": 0, "busy_workers": 1}
        # Nothing is lost: the queued requests are served in order after the busy one.
        assert [f.result(10)["i"] for f in queued] == [0, 1]
        busy.result(10)
        assert pool.execute("ping")["pong"]
        assert pool.statistics()["saturated"] == 1
    finally:
        snakepit.shutdown()


def test_queue_timeout_fires_once_and_is_cancelled_on_dequeue(wait_until):
    pool = snakepit.start_pool("t-qt", pool_size=1, queue_timeout=0.3)
    try:
        busy = pool.submit_command("sleep", {"seconds": 1.0})
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        late = pool.submit_command("echo", {"late": True})
        with pytest.raises(QueueTimeoutError) as info:
            late.result(5)
        assert info.value.waited_s >= 0.25
        busy.result(10)
        # A request dequeued in time is not timed out afterwards.
        quick = pool.submit_command("sleep", {"seconds": 0.1})
        served = pool.submit_command("echo", {"ok": 1})
        assert served.result(5) == {"ok": 1}
        quick.result(5)
        time.sleep(0.4)
        assert pool.statistics()["queue_timeouts"] == 1
    finally:
        snakepit.shutdown()


def test_request_timeout_frees_the_slot():
    pool = snakepit.start_pool("t-rt", pool_size=1)
    try:
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            pool.execute("sleep", {"seconds": 30}, timeout=0.3)
        assert time.monotonic() - start < 5
        assert info.value.command == "sleep" and info.value.worker_id
        # The worker was interrupted: the next request is served at once.
        assert pool.execute("sleep", {"seconds": 0.01}, timeout=5) < 1
    finally:
        snakepit.shutdown()


def test_fifo_order_of_queued_requests():
    pool = snakepit.start_pool("t-fifo", pool_size=1, queue_timeout=30)
    try:
        order = []
        first = pool.submit_command("sleep", {"seconds": 0.2})
        futures = [pool.submit_command("echo", {"i": i}) for i in range(20)]
        for f in futures:
            f.add_done_callback(lambda fut: order.append(fut.result()["i"]))
        wait(futures + [first], timeout=30)
        assert order == list(range(20))
    finally:
        snakepit.shutdown()


def test_request_executed_for_immediate_queued_and_streamed(events):
    events.attach(("snakepit", "request", "executed"))
    pool = snakepit.start_pool("t-tel", pool_size=1, queue_timeout=30)
    try:
        futures = [pool.submit_command("echo", {"i": i}) for i in range(5)]  # 4 of them queue
        wait(futures, timeout=30)
        list(pool.execute_stream("count", {"n": 2}))
        with pytest.raises(snakepit.RemoteError):
            pool.execute("no-such-command")
        seen = events.of(("snakepit", "request", "executed"))
        assert [md["command"] for _, md in seen] == ["echo"] * 5 + ["count", "no-such-command"]
        assert [md["success"] for _, md in seen] == [True] * 6 + [False]
        assert all(m["duration_us"] > 0 and md["pool"] == "t-tel" and md["worker_id"] for m, md in seen)
    finally:
        snakepit.shutdown()


def test_explicit_pipeline_depth_waits_in_the_worker_and_counts_as_queued(wait_until):
    pool = snakepit.start_pool("t-pipe", pool_size=1, pipeline_depth=8, queue_timeout=30)
    try:
        blocker = pool.submit_command("sleep", {"seconds": 0.5})
        futures = [pool.submit_command("echo", {"i": i}) for i in range(50)]
        # 8 requests wait in the worker, the rest in the pool's queue; all count as queued and
        # the worker's load stays within its capacity.
        assert wait_until(lambda: pool.list_workers()[0].pipelined == 8, 5)
        (worker,) = pool.list_workers()
        assert worker.load == 1
        assert pool.queue_depth() == 50 and pool.statistics()["pipelined"] == 8
        from snakepit import diagnostics as dx

        stats = dx.get_pool_stats(pool)
        assert stats.queue_depth == 50 and stats.capacity_used == 1
        assert stats.to_frame()["pipelined"].tolist() == [8]
        assert not any(f.running() for f in futures[:8])  # waiting, not started
        assert [f.result(30)["i"] for f in futures] == list(range(50))
        blocker.result(10)
        assert pool.queue_depth() == 0 and pool.list_workers()[0].pipelined == 0
        with pool.session("no-pipelining") as s:
            assert s.execute("echo", {"ok": 1}) == {"ok": 1}
    finally:
        snakepit.shutdown()
    assert snakepit.PoolConfig().pipeline_depth is None  # automatic


def test_pipeline_depth_zero_never_pipelines(wait_until):
    pool = snakepit.start_pool("t-nopipe", pool_size=1, pipeline_depth=0, queue_timeout=30)
    try:
        for _ in range(5):
            pool.execute("echo", {})  # short calls: automatic pipelining would kick in
        blocker = pool.submit_command("sleep", {"seconds": 0.3})
        futures = [pool.submit_command("echo", {"i": i}) for i in range(10)]
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        assert pool.list_workers()[0].pipelined == 0 and pool.queue_depth() == 10
        assert [f.result(10)["i"] for f in futures] == list(range(10))
        blocker.result(10)
    finally:
        snakepit.shutdown()


def test_automatic_pipelining_only_for_calls_known_to_be_short(wait_until):
    pool = snakepit.start_pool("t-autopipe", pool_size=1, queue_timeout=30)
    try:
        blocker = pool.submit_command("sleep", {"seconds": 0.5})
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        unknown = [pool.submit_command("echo", {"i": i}) for i in range(5)]
        assert pool.list_workers()[0].pipelined == 0  # never seen: waits in the pool's queue
        assert [f.result(10)["i"] for f in unknown] == list(range(5))
        blocker.result(10)
        blocker = pool.submit_command("sleep", {"seconds": 0.5})
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        known = [pool.submit_command("echo", {"i": i}) for i in range(100)]
        pipelined = pool.list_workers()[0].pipelined
        assert 1 <= pipelined <= 64 and pool.queue_depth() == 100
        slow = pool.submit_command("sleep", {"seconds": 0.01})  # 'sleep' was seen taking 0.5 s
        assert [f.result(10)["i"] for f in known] == list(range(100))
        slow.result(10)
        blocker.result(10)
    finally:
        snakepit.shutdown()


def test_pipelined_requests_can_be_cancelled_and_time_out_in_the_queue(wait_until):
    pool = snakepit.start_pool("t-pipecancel", pool_size=1, pipeline_depth=4, queue_timeout=0.5)
    try:
        blocker = pool.submit_command("sleep", {"seconds": 1.5})
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 5)
        waiting = [pool.submit_command("echo", {"i": i}) for i in range(4)]
        assert pool.list_workers()[0].pipelined == 4
        assert waiting[0].cancel() and waiting[0].cancelled()
        assert pool.list_workers()[0].pipelined == 3  # withdrawn at once, on either transport
        for f in waiting[1:]:
            with pytest.raises(QueueTimeoutError):
                f.result(5)
        assert wait_until(lambda: pool.list_workers()[0].pipelined == 0, 5)
        blocker.result(10)
        assert pool.execute("echo", {"after": 1}) == {"after": 1}
        assert pool.statistics()["queue_timeouts"] == 3
    finally:
        snakepit.shutdown()


def test_a_pipelined_request_timing_out_as_its_turn_comes_does_not_break_the_connection():
    # The queue timeout withdraws a waiting request from its worker; if the request ahead of it
    # finishes before the worker's answer arrives, the pool must still take its turn calmly
    # (it once failed the connection's reader thread, and the worker was counted as crashed).
    pool = snakepit.start_pool("t-pipe-race", pool_size=1, pipeline_depth=8, queue_timeout=0.2,
                               heartbeat_interval=None)
    try:
        for i in range(40):
            blocker = pool.submit_command("sleep", {"seconds": 0.2 + (i % 6) * 0.002})
            time.sleep(0.001 * (i % 3))
            waiting = [pool.submit_command("echo", {"i": j}) for j in range(4)]
            wait([blocker, *waiting], timeout=5)
            assert blocker.result(0) == pytest.approx(0.2, abs=0.1)
        assert pool.statistics()["crashes"] == 0
        assert pool.execute("echo", {"ok": 1}) == {"ok": 1}
    finally:
        snakepit.shutdown()
