"""%%snakepit_run in a real ipykernel (the installed version, 7.x), watched over iopub.

* streaming: the cell prints "first", then waits for a file that this test creates only
  once "first" has arrived on iopub, then prints "second". Without streaming the cell could
  never finish (the test would hit its deadline).
* interrupt: the kernel is interrupted (as the stop button does) while a worker sleeps 30 s;
  the cell returns, says the remote work was cancelled, and the worker slot is free again.
"""
from __future__ import annotations

import os
import queue
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Kernel:
    """A real kernel plus helpers to run cells and collect their iopub messages."""

    def __init__(self, cwd: str) -> None:
        from jupyter_client.manager import KernelManager

        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("JPY_PARENT_PID", None)
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=cwd, env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def execute(self, code: str, timeout: float = 120.0, on_message=None) -> tuple[dict, list[tuple[float, dict]]]:
        """Run ``code``; return its execute_reply and its iopub messages (with receive times)."""
        msg_id = self.kc.execute(code)
        messages: list[tuple[float, dict]] = []
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish within {timeout}s: {code[:80]!r}; saw {messages}")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append((time.monotonic(), msg))
            if on_message is not None:
                on_message(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=max(1.0, deadline - time.monotonic()))
        return reply, messages

    def value(self, expr: str):
        reply, messages = self.execute(expr)
        assert reply["content"]["status"] == "ok", reply["content"]
        for _, m in messages:
            if m["msg_type"] == "execute_result":
                return m["content"]["data"]["text/plain"]
        return None

    def close(self) -> None:
        try:
            self.execute("import snakepit; snakepit.shutdown()", timeout=60)
        finally:
            self.kc.stop_channels()
            self.km.shutdown_kernel(now=False)


def streams(messages) -> str:
    return "".join(m["content"]["text"] for _, m in messages if m["msg_type"] == "stream")


@pytest.fixture(params=["process"])
def kernel(tmp_path, request):
    k = Kernel(str(tmp_path))
    options = "threads_per_worker=2" if request.param == "thread" else ""
    try:
        reply, _ = k.execute("%load_ext snakepit_nb\nimport snakepit\n"
                             f"pool = snakepit.start_pool('default', profile={request.param!r}, pool_size=2,"
                             f" {options})")
        assert reply["content"]["status"] == "ok", reply["content"]
        yield k
    finally:
        k.close()


def test_output_streams_into_the_running_cell(kernel, tmp_path):
    flag = tmp_path / "release"
    cell = (
        "%%snakepit_run --timeout 90\n"
        "import os, time\n"
        "print('first')\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('second')\n"
        "'done'\n"
    )
    received: list[str] = []

    def on_message(msg):
        if msg["msg_type"] == "stream":
            received.append(msg["content"]["text"])
            if "first" in "".join(received) and not flag.exists():
                flag.write_text("go")  # release the worker only once 'first' reached the notebook

    reply, messages = kernel.execute(cell, timeout=120, on_message=on_message)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = streams(messages)
    assert text.index("first") < text.index("second")
    kinds = [m["msg_type"] for _, m in messages]
    # 'first' arrived in a stream message of its own, before 'second' and before the result.
    first_at = next(i for i, (_, m) in enumerate(messages) if m["msg_type"] == "stream" and "first" in m["content"]["text"])
    second_at = next(i for i, (_, m) in enumerate(messages) if m["msg_type"] == "stream" and "second" in m["content"]["text"])
    assert first_at < second_at < kinds.index("execute_result")
    result = next(m for _, m in messages if m["msg_type"] == "execute_result")
    assert result["content"]["data"]["text/plain"] == "'done'"


def test_remote_zero_division_shows_the_worker_traceback(kernel):
    reply, messages = kernel.execute("%%snakepit_run\nnumbers = [1, 2]\ntotal = sum(numbers) / 0\n")
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "RemoteCellError"
    assert "ZeroDivisionError" in content["evalue"]
    tb = "\n".join(content["traceback"])
    assert "Remote exception on worker default-w" in tb
    assert "total = sum(numbers) / 0" in tb
    assert "ZeroDivisionError: division by zero" in tb
    assert "snakepit/worker/" not in tb


def test_pull_brings_values_into_the_kernel(kernel):
    reply, _ = kernel.execute("%%snakepit_run --pull answer,pid\nimport os\nanswer = 6 * 7\npid = os.getpid()")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert kernel.value("answer") == "42"
    assert kernel.value("pid in {w.pid for w in pool.list_workers()}") == "True"


@pytest.mark.parametrize("kernel", ["process", "thread"], indirect=True)
def test_interrupt_cancels_the_remote_work_and_frees_the_slot(kernel, request):
    profile = request.node.callspec.params["kernel"]
    pids_before = kernel.value("sorted(w.pid for w in pool.list_workers())")
    interrupted_at: list[float] = []

    def on_message(msg):
        if msg["msg_type"] == "stream" and "sleeping" in msg["content"]["text"] and not interrupted_at:
            interrupted_at.append(time.monotonic())
            kernel.km.interrupt_kernel()  # what the notebook's stop button does

    reply, messages = kernel.execute(
        "%%snakepit_run\nimport time\nprint('sleeping')\ntime.sleep(30)\nprint('not reached')\n",
        timeout=60, on_message=on_message)
    returned_at = messages[-1][0]
    content = reply["content"]
    assert interrupted_at, "the cell never reported it was running"
    assert content["status"] == "error"
    assert content["ename"] == "CellInterrupted"
    tb = "\n".join(content["traceback"])
    assert "cancelled" in tb and "slot is free again" in tb
    assert "not reached" not in streams(messages)
    assert returned_at - interrupted_at[0] < 25  # well before the 30 s sleep would end
    # The slot is free: nothing in flight, and a new cell runs at once on the pool.
    assert kernel.value("pool.statistics()['in_flight']") == "0"
    reply, messages = kernel.execute("%%snakepit_run --timeout 30\n1 + 1")
    assert reply["content"]["status"] == "ok"
    pids_after = kernel.value("sorted(w.pid for w in pool.list_workers())")
    if profile == "process":
        # Cancelled cooperatively: the same worker processes are still serving.
        assert pids_after == pids_before
        assert "killed and replaced" not in tb
    else:
        # Today a request thread blocked in time.sleep cannot be interrupted: snakepit kills the
        # worker after its cancel grace and starts a replacement. Whatever happens, the
        # message tells the truth about it.
        assert ("killed and replaced" in tb) == (pids_after != pids_before)
