"""Recycling (max requests, TTL, memory, manual), heartbeats, crash replacement, cancellation."""
from __future__ import annotations

import os
import signal
import time

import pytest

import snakepit
from snakepit import WorkerCrashedError

RECYCLED = ("snakepit", "worker", "recycled")


def test_max_requests_sixth_request_lands_on_a_new_pid(events):
    events.attach(RECYCLED)
    pool = snakepit.start_pool("t-maxreq", pool_size=1, worker_max_requests=5)
    try:
        pids = [pool.execute("pid") for _ in range(5)]
        assert len(set(pids)) == 1
        sixth = pool.execute("pid")
        assert sixth != pids[0]
        (measurements, metadata), = events.of(RECYCLED)
        assert metadata["reason"] == "max_requests" and metadata["pool"] == "t-maxreq"
        assert measurements["request_count"] == 5 and measurements["uptime_s"] > 0
        history = list(pool.recycle_history)
        assert history[-1]["reason"] == "max_requests" and history[-1]["pid"] == pids[0]
    finally:
        snakepit.shutdown()


def test_ttl_recycles_without_failing_requests(events, wait_until):
    events.attach(RECYCLED)
    pool = snakepit.start_pool("t-ttl", pool_size=1, worker_ttl=1)
    try:
        first = pool.execute("pid")
        failures, pids = 0, set()
        end = time.monotonic() + 6
        while time.monotonic() < end and len(pids - {first}) == 0:
            try:
                pids.add(pool.execute("pid", timeout=10))
            except snakepit.SnakepitError:
                failures += 1
            time.sleep(0.02)
        assert pids - {first}, "the worker was not recycled within a few seconds"
        assert failures == 0
        assert any(md["reason"] == "ttl" for _, md in events.of(RECYCLED))
    finally:
        snakepit.shutdown()


def _keep_50mb():
    import builtins

    block = bytearray(50 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    builtins.__dict__.setdefault("_snakepit_test_keep", []).append(block)
    return len(builtins._snakepit_test_keep)


def _hold_200mb_then_sleep(seconds: float) -> int:
    block = bytearray(200 * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(seconds)
    return len(block)


def test_memory_recycle_killed_after_its_grace_reports_the_measured_memory(events, wait_until):
    """A busy worker over the threshold outlives recycle_grace and is killed: the recycled
    event still carries its memory (it said 0.0 before)."""
    events.attach(RECYCLED)
    pool = snakepit.start_pool("t-mem-grace", pool_size=1, memory_threshold_mb=150, recycle_grace=0.5,
                               heartbeat_interval=0.2)
    try:
        held = pool.submit(_hold_200mb_then_sleep, 60)
        assert wait_until(lambda: any(md["reason"] == "memory" for _, md in events.of(RECYCLED)), 20)
        measurements, _ = next((m, md) for m, md in events.of(RECYCLED) if md["reason"] == "memory")
        assert measurements["memory_mb"] >= 150
        with pytest.raises(WorkerCrashedError):
            held.result(10)
        assert pool.execute("echo", {"ok": 1}) == {"ok": 1}
    finally:
        snakepit.shutdown()


def test_memory_threshold_recycles_with_reason_memory(events, wait_until):
    events.attach(RECYCLED)
    pool = snakepit.start_pool("t-mem", pool_size=1, memory_threshold_mb=180, heartbeat_interval=0.2)
    try:
        first = pool.execute("pid")
        results = []
        for _ in range(8):
            results.append(pool.submit(_keep_50mb).result(30))
            time.sleep(0.3)
        assert all(isinstance(r, int) for r in results)  # every request's result came back
        assert wait_until(lambda: any(md["reason"] == "memory" for _, md in events.of(RECYCLED)), 10)
        measurements, metadata = next((m, md) for m, md in events.of(RECYCLED) if md["reason"] == "memory")
        assert measurements["memory_mb"] >= 180
        assert pool.execute("pid") != first
    finally:
        snakepit.shutdown()


def test_manual_recycle_changes_pid(events, wait_until):
    events.attach(RECYCLED)
    pool = snakepit.start_pool("t-manual", pool_size=2)
    try:
        target = pool.list_workers()[0]
        pool.recycle_worker(target.worker_id)
        assert wait_until(lambda: target.pid not in {w.pid for w in pool.list_workers()}, 10)
        pool.wait_for_workers(2, timeout=10)
        assert len(pool.list_workers()) == 2
        assert wait_until(lambda: any(md["reason"] == "manual" and md["worker_id"] == target.worker_id
                                      for _, md in events.of(RECYCLED)), 5)
        with pytest.raises(KeyError):
            pool.recycle_worker("no-such-worker")
    finally:
        snakepit.shutdown()


def test_recycling_worker_finishes_in_flight_request():
    pool = snakepit.start_pool("t-drain", profile="thread", pool_size=1, threads_per_worker=4)
    try:
        worker = pool.list_workers()[0]
        slow = pool.submit_command("sleep", {"seconds": 1.0})
        time.sleep(0.1)
        pool.recycle_worker(worker.worker_id)
        assert slow.result(10) >= 0.9  # not killed: it finished
        assert pool.execute("pid") != worker.pid
    finally:
        snakepit.shutdown()


def test_sigstopped_worker_is_declared_unhealthy_and_replaced(events, wait_until):
    events.attach(("snakepit", "worker", "health_check_failed"))
    pool = snakepit.start_pool("t-hb", pool_size=2, heartbeat_interval=0.3, heartbeat_max_missed=2)
    try:
        victim = pool.list_workers()[0]
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: victim.pid not in {w.pid for w in pool.list_workers()}, 10)
        finally:
            try:
                os.kill(victim.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        failed = events.of(("snakepit", "worker", "health_check_failed"))
        assert failed and failed[0][1]["worker_id"] == victim.worker_id
        assert max(m["missed"] for m, _ in failed) >= 2
        pool.wait_for_workers(2, timeout=10)
        assert pool.execute("ping")["pong"]
    finally:
        snakepit.shutdown()


def test_crash_is_detected_at_once_and_fails_in_flight_requests(events, wait_until):
    events.attach(("snakepit", "worker", "crashed"), ("snakepit", "worker", "started"))
    pool = snakepit.start_pool("t-crash", pool_size=1, heartbeat_interval=None)
    try:
        worker = pool.list_workers()[0]
        fut = pool.submit_command("sleep", {"seconds": 30})
        time.sleep(0.2)
        start = time.monotonic()
        os.kill(worker.pid, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError) as info:
            fut.result(10)
        assert time.monotonic() - start < 2  # no heartbeat needed
        assert info.value.worker_id == worker.worker_id and "SIGKILL" in str(info.value)
        (m, md), = events.of(("snakepit", "worker", "crashed"))
        assert m["exit_code"] == -signal.SIGKILL and md["pid"] == worker.pid
        pool.wait_for_workers(1, timeout=10)
        assert pool.execute("pid") != worker.pid
        assert len(events.of(("snakepit", "worker", "started"))) >= 1
    finally:
        snakepit.shutdown()


def test_worker_crashing_at_startup_is_backed_off_and_reported(tmp_path, wait_until):
    flag = tmp_path / "broken"
    adapter_dir = tmp_path / "mods"
    adapter_dir.mkdir()
    (adapter_dir / "flaky_adapter.py").write_text(
        "import os, snakepit\n"
        "from snakepit.worker.builtin import DefaultAdapter\n"
        "class Flaky(DefaultAdapter):\n"
        "    def setup(self):\n"
        f"        if os.path.exists({str(flag)!r}):\n"
        "            raise RuntimeError('cannot start today')\n"
    )
    pool = snakepit.start_pool("t-flaky", pool_size=1, adapter="flaky_adapter:Flaky",
                               env={"PYTHONPATH": str(adapter_dir)})
    try:
        flag.write_text("1")
        os.kill(pool.list_workers()[0].pid, signal.SIGKILL)
        assert wait_until(lambda: pool.statistics()["start_failures"] >= 2, 15)
        stats = pool.statistics()
        assert "cannot start today" in stats["last_start_error"]
        failures_then = stats["start_failures"]
        time.sleep(1.0)
        assert pool.statistics()["start_failures"] <= failures_then + 3, "restarted in a tight loop"
        flag.unlink()
        pool.wait_for_workers(1, timeout=60)
        assert pool.execute("ping")["pong"]
    finally:
        snakepit.shutdown()


def _spin_forever():
    while True:  # pure Python, never checks for cancellation
        pass


@pytest.mark.parametrize(
    "profile, how",
    [
        ("process", "time.sleep"),    # blocking C call: interrupted by SIGINT on the main thread
        ("process", "spin"),
        ("thread", "sleep-command"),  # the cooperative built-in sleep
        ("thread", "spin"),           # pure Python in a thread: interrupted by an async exception
    ],
)
def test_cancelled_long_request_frees_its_slot_within_a_second(profile, how):
    pool = snakepit.start_pool(f"t-cancel-{profile}", profile=profile, pool_size=1, threads_per_worker=1)
    try:
        pid = pool.list_workers()[0].pid
        if how == "time.sleep":
            fut = pool.submit(time.sleep, 30)
        elif how == "spin":
            fut = pool.submit(_spin_forever)
        else:
            fut = pool.submit_command("sleep", {"seconds": 30})
        time.sleep(0.3)
        start = time.monotonic()
        assert fut.cancel() and fut.cancelled()
        while pool.list_workers()[0].load and time.monotonic() - start < 10:
            time.sleep(0.005)
        freed_after = time.monotonic() - start
        assert freed_after < 1.0, f"the slot was freed {freed_after:.2f}s after the cancel"
        assert pool.list_workers()[0].pid == pid, "the worker was killed instead of interrupted"
        assert pool.execute("ping", timeout=5)["pong"]
    finally:
        snakepit.shutdown()


def test_uncooperative_request_is_killed_and_replaced(wait_until):
    pool = snakepit.start_pool("t-stubborn", pool_size=1)
    pool.lifecycle_cancel_grace = 0.5
    try:
        def stubborn():
            import signal
            import time

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            time.sleep(60)

        first = pool.list_workers()[0].pid
        fut = pool.submit(stubborn)
        time.sleep(0.3)
        fut.cancel()
        assert wait_until(lambda: first not in {w.pid for w in pool.list_workers()}, 10)
        pool.wait_for_workers(1, timeout=10)
        assert pool.execute("ping", timeout=5)["pong"]
    finally:
        snakepit.shutdown()
