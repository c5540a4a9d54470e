"""The pool's call surface on real worker processes."""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

import snakepit
from snakepit import PoolExistsError, PoolNotFoundError, RemoteError


@pytest.fixture
def pool():
    p = snakepit.start_pool("t-pool", pool_size=2)
    try:
        yield p
    finally:
        snakepit.shutdown()


def test_execute_builtin_commands(pool):
    pong = pool.execute("ping", {"x": 1})
    assert pong["pong"] is True and pong["x"] == 1
    assert pong["pid"] in {w.pid for w in pool.list_workers()}
    assert pong["pid"] != os.getpid()
    assert pool.execute("echo", {"a": [1, 2], "b": {"c": None}}) == {"a": [1, 2], "b": {"c": None}}
    slept = pool.execute("sleep", {"seconds": 0.05})
    assert 0.04 <= slept < 5


def test_stream_yields_items_as_produced(pool):
    assert list(pool.execute_stream("count", {"n": 5})) == [0, 1, 2, 3, 4]


def test_submit_and_map_with_a_function_defined_in_the_test():
    factor = 3

    def triple(x):  # a closure, not importable by the worker
        return x * factor

    p = snakepit.start_pool("t-fn", pool_size=2)
    try:
        assert p.submit(triple, 14).result(timeout=10) == 42
        assert list(p.map(triple, range(50))) == [x * 3 for x in range(50)]
        assert list(p.map(triple, range(7), chunksize=3)) == [x * 3 for x in range(7)]
        assert list(p.map(pow, [2, 3], [5, 2])) == [32, 9]
        assert list(p.map(triple, [])) == []
    finally:
        snakepit.shutdown()


def test_functions_run_in_worker_processes(pool):
    pids = {pool.submit(os.getpid).result(timeout=10) for _ in range(20)}
    worker_pids = {w.pid for w in pool.list_workers()}
    assert pids <= worker_pids and os.getpid() not in pids


def test_session_affinity_same_pid(pool):
    with pool.session("s1") as s:
        pids = {s.execute("pid") for _ in range(20)}
        assert len(pids) == 1
        assert s.worker_pid in pids
        assert {s.submit(os.getpid).result(timeout=10) for _ in range(5)} == pids
        assert set(s.map(lambda _: os.getpid(), range(6))) == pids
    # Without a session, work spreads over both workers.
    spread = {pool.execute("pid") for _ in range(20)}
    assert len(spread) == 2


def test_session_moves_when_its_worker_dies_and_says_so(pool, events, wait_until):
    events.attach(("snakepit", "session", "moved"))
    s = pool.session("mover")
    first_pid = s.execute("pid")
    os.kill(first_pid, 9)
    assert wait_until(lambda: first_pid not in {w.pid for w in pool.list_workers()}, 5)
    pool.wait_for_workers(2, timeout=20)
    second_pid = s.execute("pid")
    assert second_pid != first_pid
    assert s.moved and s.moves[-1]["to"] == s.worker_id
    assert events.of(("snakepit", "session", "moved"))


def test_run_code_namespace_push_pull(pool):
    with pool.session("nb") as s:
        r = s.run_code("import os\nx = 41\nprint('hello')\nx + 1")
        assert r.result == 42 and r.result_repr == "42"
        assert r.stdout == "hello\n" and "x" in r.changed
        r2 = s.run_code("y = x * base", push={"base": 2}, pull=["y", "nope"])
        assert r2.pulled == {"y": 82} and r2.missing == ["nope"]
        assert r2.worker_id == r.worker_id
    fresh = pool.run_code("'x' in dir()")
    assert fresh.result is False


def test_run_code_streams_output_while_running(pool):
    seen = []
    pool.run_code(
        "import time\nprint('a', flush=True)\ntime.sleep(0.3)\nprint('b')",
        on_output=lambda stream, text: seen.append((stream, text, __import__("time").monotonic())),
    )
    texts = "".join(t for _, t, _ in seen)
    assert texts == "a\nb\n"
    first = next(ts for _, t, ts in seen if t.startswith("a"))
    last = next(ts for _, t, ts in seen if t.startswith("b"))
    assert last - first >= 0.25  # 'a' arrived before the sleep ended


def test_remote_exception_carries_type_message_and_traceback(pool):
    def boom():
        return 1 / 0

    with pytest.raises(RemoteError) as info:
        pool.submit(boom).result(timeout=10)
    err = info.value
    assert err.remote_type == "builtins.ZeroDivisionError"
    assert "division by zero" in err.remote_message
    assert "boom" in err.remote_traceback and "ZeroDivisionError" in err.remote_traceback
    assert isinstance(err.exception, ZeroDivisionError)
    assert err.worker_id in {w.worker_id for w in pool.list_workers()}
    with pytest.raises(RemoteError) as info2:
        pool.run_code("def f():\n    raise ValueError('bad cell')\nf()")
    assert "bad cell" in str(info2.value) and "f()" in info2.value.remote_traceback
    assert pool.execute("ping")["pong"]


def test_execute_async(pool):
    async def main():
        return await asyncio.gather(*(pool.execute_async("echo", {"i": i}) for i in range(10)))

    assert [r["i"] for r in asyncio.run(main())] == list(range(10))


def test_several_named_pools():
    a = snakepit.start_pool("t-a", pool_size=1)
    b = snakepit.start_pool("t-b", profile="thread", pool_size=1, threads_per_worker=4)
    try:
        assert snakepit.get_pool("t-a") is a and snakepit.get_pool("t-b") is b
        assert {p.name for p in snakepit.list_pools()} == {"t-a", "t-b"}
        assert a.execute("pid") != b.execute("pid")
        with pytest.raises(PoolExistsError):
            snakepit.start_pool("t-a", pool_size=1)
        assert snakepit.start_pool("t-a", exist_ok=True) is a
        snakepit.stop_pool("t-a")
        with pytest.raises(PoolNotFoundError):
            snakepit.get_pool("t-a")
        with pytest.raises(PoolNotFoundError):
            snakepit.stop_pool("t-a")
        assert b.execute("ping")["pong"]
    finally:
        snakepit.shutdown()


def test_list_workers_shape(pool):
    workers = pool.list_workers()
    assert len(workers) == 2
    for w in workers:
        assert w.status == "available" and w.capacity == 1 and w.load == 0
        assert w.pool == "t-pool" and w.profile == "process" and w.pid > 0


def test_cancel_queued_and_running_futures(pool):
    running = [pool.submit_command("sleep", {"seconds": 30}) for _ in range(2)]
    queued = pool.submit_command("sleep", {"seconds": 30})
    assert queued.cancel()
    assert all(f.cancel() for f in running)
    # Both slots free up quickly: the sleeps were interrupted on the workers.
    pool.execute("ping", timeout=5)
    assert pool.execute("sleep", {"seconds": 0.01}, timeout=5) < 1


def test_stop_is_idempotent_and_calls_fail_cleanly():
    p = snakepit.start_pool("t-stop", pool_size=1)
    p.stop()
    p.stop()
    with pytest.raises(snakepit.PoolClosedError):
        p.execute("ping")
    snakepit.shutdown()


def test_threads_submit_concurrently(pool):
    results = []

    def worker(i):
        results.append(pool.execute("echo", {"i": i})["i"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(16))


def test_stop_waits_for_queued_work_or_cancels_it():
    p = snakepit.start_pool("t-drain-stop", pool_size=1, queue_timeout=30)
    futures = [p.submit_command("sleep", {"seconds": 0.1}) for _ in range(4)]
    p.stop(wait=True)
    assert all(f.result(1) >= 0.09 for f in futures)
    p = snakepit.start_pool("t-cancel-stop", pool_size=1, queue_timeout=30)
    running = p.submit_command("sleep", {"seconds": 0.3})
    queued = [p.submit_command("sleep", {"seconds": 5}) for _ in range(3)]
    p.stop(wait=True, cancel_futures=True)
    assert running.result(1) >= 0.29
    assert all(f.cancelled() for f in queued)
    snakepit.shutdown()


def test_repr_and_html_summary(pool):
    assert "t-pool" in repr(pool) and "process" in repr(pool)
    html = pool._repr_html_()
    assert html.count("<tr><td>t-pool-w") == 2 and "capacity 0/2" in html
    pool.stop()
    assert "stopped" in repr(pool) and "stopped" in pool._repr_html_()


def test_idle_sessions_expire_and_free_their_namespace(pool):
    s = pool.session("idle")
    s.run_code("big = list(range(10))")
    on_that_worker = pool._pinned_session(s.worker_id)
    assert on_that_worker.execute("session_names", {"session_id": "idle"}) == ["big"]
    assert pool.expire_sessions(idle_ttl=3600) == []
    assert pool.expire_sessions(idle_ttl=0) == ["idle"]
    assert "idle" not in {x.session_id for x in pool.list_sessions()}
    # The namespace is gone on the worker too (session_close was sent before this request).
    assert on_that_worker.execute("session_names", {"session_id": "idle"}) == []


def test_run_code_cancelled_from_another_thread(pool):
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    start = __import__("time").monotonic()
    with pytest.raises(snakepit.RequestCancelledError):
        pool.run_code("import time\ntime.sleep(30)", cancel=cancel)
    assert __import__("time").monotonic() - start < 3
    assert pool.execute("sleep", {"seconds": 0.01}, timeout=5) < 1


def test_map_reports_a_request_timeout_as_such():
    p = snakepit.start_pool("t-map-timeout", pool_size=1, request_timeout=0.3)
    try:
        with pytest.raises(snakepit.RequestTimeoutError):
            list(p.map(__import__("time").sleep, [5]))
    finally:
        snakepit.shutdown()


def test_a_long_map_neither_saturates_the_queue_nor_times_out_in_it():
    # 8 chunks of 0.4 s on one worker: more chunks than max_queue_size, each longer than
    # queue_timeout. Sent all at once they would fail; fed, none does.
    p = snakepit.start_pool("t-map-long", pool_size=1, max_queue_size=2, queue_timeout=0.3)
    try:
        import time as _time

        assert list(p.map(_time.sleep, [0.4] * 8, chunksize=1)) == [None] * 8
        assert p.statistics()["saturated"] == 0 and p.statistics()["queue_timeouts"] == 0
    finally:
        p.stop()


def test_closing_a_map_early_cancels_the_chunks_not_yet_run(wait_until):
    p = snakepit.start_pool("t-map-close", pool_size=1, queue_timeout=None)
    try:
        import time as _time

        results = p.map(_time.sleep, [0.2] * 50, chunksize=1)
        assert next(results) is None
        results.close()
        # At most the chunks already sent run; the other ~45 are never dispatched.
        assert wait_until(lambda: p.list_workers()[0].load == 0 and p.queue_depth() == 0, 5)
        assert p.statistics()["completed"] <= 4
        assert p.execute("echo", {"x": 1}) == {"x": 1}
    finally:
        p.stop()


def test_closing_or_dropping_a_map_before_reading_it_cancels_its_chunks(wait_until):
    p = snakepit.start_pool("t-map-unread", pool_size=1, queue_timeout=None)
    try:
        import time as _time

        p.map(_time.sleep, [0.2] * 50, chunksize=1).close()  # closed before the first next()
        results = p.map(_time.sleep, [0.2] * 50, chunksize=1)
        del results  # dropped unread
        assert wait_until(lambda: p.list_workers()[0].load == 0 and p.queue_depth() == 0, 5)
        assert p.statistics()["completed"] <= 8
        assert list(p.map(abs, [-1, -2])) == [1, 2]
    finally:
        p.stop()


def test_map_of_many_short_items_is_pipelined_and_in_order():
    p = snakepit.start_pool("t-map-many", pool_size=2, queue_timeout=None)
    try:
        out = list(p.map(abs, range(-20_000, 0), chunksize=100))
        assert out == [abs(x) for x in range(-20_000, 0)]
        assert p.statistics()["completed"] == 200
    finally:
        p.stop()


def test_automatic_map_chunks_grow_once_the_function_is_known_to_be_cheap():
    p = snakepit.start_pool("t-map-auto", pool_size=2, queue_timeout=None)
    try:
        assert list(p.map(abs, range(-20_000, 0))) == list(range(20_000, 0, -1))
        first = p.statistics()["completed"]
        assert first == 8  # ceil(n / (4 × capacity)), like multiprocessing.Pool.map
        assert list(p.map(abs, range(-20_000, 0))) == list(range(20_000, 0, -1))
        # abs costs well under a microsecond: the next map sends one chunk per slot.
        assert p.statistics()["completed"] - first == 2
        # An explicit chunksize is kept as given.
        list(p.map(abs, range(100), chunksize=10))
        assert p.statistics()["completed"] - first == 12
    finally:
        p.stop()
