"""A Jupyter kernel restart (or shutdown) leaves no worker behind."""
from __future__ import annotations

import json
import time

import psutil
import pytest

jupyter_client = pytest.importorskip("jupyter_client")


def _run(kc, code: str, timeout: float = 60) -> str:
    msg_id = kc.execute(code)
    out = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(code)


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _gone_within(pids, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end and _alive(pids):
        time.sleep(0.05)
    return _alive(pids)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["restart", "shutdown"])
def test_kernel_restart_leaves_nothing_behind(how, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out = _run(kc, "import json, snakepit\n"
                       "pool = snakepit.start_pool('nb', pool_size=3)\n"
                       "print(json.dumps([w.pid for w in pool.list_workers()]))")
        pids = json.loads(out.strip().splitlines()[-1])
        assert len(_alive(pids)) == 3
        if how == "restart":
            km.restart_kernel(now=True)
        else:
            km.shutdown_kernel(now=True)
        left = _gone_within(pids, 3.0)
        for pid in left:
            psutil.Process(pid).kill()
        assert not left, f"workers survived a kernel {how}: {left}"
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
