"""Bad input gets a clear snakepit error, and the pool keeps serving the next request."""
from __future__ import annotations

import os
import threading

import pytest

import snakepit
from snakepit import (
    PayloadTooLargeError,
    PoolClosedError,
    PoolNotFoundError,
    RemoteError,
    SerializationError,
    SnakepitError,
    UnknownCommandError,
)


@pytest.fixture(scope="module")
def pool():
    p = snakepit.start_pool("t-bad", pool_size=1, max_message_mb=80)
    yield p
    snakepit.shutdown()


@pytest.fixture(autouse=True)
def check_leaks():  # the module-scoped pool outlives each test by design
    yield


def _still_serving(pool):
    assert pool.execute("ping", {"after": "error"}, timeout=10)["after"] == "error"


def test_unknown_command(pool):
    with pytest.raises(UnknownCommandError) as info:
        pool.execute("frobnicate")
    assert "frobnicate" in str(info.value) and "ping" in str(info.value)
    assert isinstance(info.value, SnakepitError)
    _still_serving(pool)


def test_bad_arguments_for_a_command(pool):
    with pytest.raises(RemoteError) as info:
        pool.execute("sleep", {"nonsense": 1, "seconds": "abc"})
    assert info.value.remote_type == "builtins.ValueError"
    with pytest.raises(TypeError):
        pool.execute("echo", ["not", "a", "dict"])
    _still_serving(pool)


def test_unpicklable_argument(pool):
    lock = threading.Lock()
    with pytest.raises(SerializationError) as info:
        pool.execute("echo", {"lock": lock})
    assert "arguments of 'echo'" in str(info.value)
    _still_serving(pool)


def test_unpicklable_result(pool):
    with pytest.raises(SerializationError) as info:
        pool.submit(lambda: threading.Lock()).result(10)
    assert "result" in str(info.value)
    _still_serving(pool)


def test_handler_that_raises_and_one_that_exits(pool, wait_until):
    with pytest.raises(RemoteError):
        pool.submit(lambda: [][1]).result(10)
    _still_serving(pool)
    with pytest.raises(snakepit.WorkerCrashedError) as info:
        pool.submit(os._exit, 3).result(10)
    assert info.value.exit_code == 3 and "exited with code 3" in str(info.value)
    pool.wait_for_workers(1, timeout=20)
    _still_serving(pool)


def test_large_payloads_up_to_64_mb_work(pool):
    blob = os.urandom(64 * 2**20)
    assert pool.execute("echo", {"blob": blob}, timeout=60)["blob"] == blob
    assert len(pool.submit(bytes, 64 * 2**20).result(60)) == 64 * 2**20
    _still_serving(pool)


def test_payload_over_the_limit_fails_clearly(pool):
    with pytest.raises(PayloadTooLargeError) as info:
        pool.execute("echo", {"blob": b"x" * (81 * 2**20)})
    assert "MiB" in str(info.value) and "max_message_mb" in str(info.value)
    with pytest.raises(PayloadTooLargeError):
        pool.submit(bytes, 81 * 2**20).result(60)
    _still_serving(pool)


def test_unknown_pool_and_stopped_pool():
    with pytest.raises(PoolNotFoundError) as info:
        snakepit.get_pool("nope")
    assert "nope" in str(info.value)
    p = snakepit.start_pool("t-bad-stopped", pool_size=1)
    snakepit.stop_pool("t-bad-stopped")
    with pytest.raises(PoolClosedError):
        p.execute("ping")
    with pytest.raises(PoolClosedError):
        p.submit(print)


def test_bad_adapter_fails_at_start_naming_the_key():
    with pytest.raises(snakepit.ConfigError) as info:
        snakepit.start_pool("t-bad-adapter", pool_size=1, adapter="no_such_module:Thing")
    assert info.value.key == "adapter" and "no_such_module" in str(info.value)
    assert "t-bad-adapter" not in {p.name for p in snakepit.list_pools()}


def test_bad_timeout_value(pool):
    with pytest.raises(ValueError):
        pool.execute("ping", timeout=-1)
    _still_serving(pool)


def _exit_with(code):
    import sys

    sys.exit(code)


def _raise_generator_exit():
    raise GeneratorExit("closed")


class _CustomBase(BaseException):
    pass


def _raise_custom_base():
    raise _CustomBase("not an Exception")


@pytest.mark.parametrize("profile", ["process", "thread"])
def test_sys_exit_and_other_base_exceptions_in_a_task_come_back_and_the_worker_serves_on(profile):
    """Issue 18: ``sys.exit()`` in a task used to hang the call forever (no reply was sent)."""
    pool = snakepit.start_pool(f"t-exit-{profile}", profile=profile, pool_size=1, threads_per_worker=2)
    try:
        pid = pool.execute("pid")
        with pytest.raises(RemoteError) as info:
            pool.submit(_exit_with, 3).result(timeout=20)
        assert info.value.remote_type.endswith("SystemExit")
        assert "sys.exit(3)" in str(info.value)
        for fn in (_raise_generator_exit, _raise_custom_base):
            with pytest.raises(RemoteError) as info:
                pool.submit(fn).result(timeout=20)
            assert fn.__name__ and info.value.remote_type.endswith(("GeneratorExit", "_CustomBase"))
        with pytest.raises(RemoteError, match="sys.exit"):
            pool.run_code("import sys\nprint('bye')\nsys.exit(0)", timeout=20)
        with pytest.raises(RemoteError, match="SystemExit|sys.exit"):
            pool.run_code("raise SystemExit('usage: prog [-h]')", timeout=20)
        # The same worker process serves the next call, and nothing is left in flight.
        assert pool.execute("pid") == pid
        assert all(w.load == 0 and w.status == "available" for w in pool.list_workers())
    finally:
        snakepit.stop_pool(f"t-exit-{profile}")
