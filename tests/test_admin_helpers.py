"""Helpers for the admin/CLI tests: a pool manager running in a separate Python process.

No tests here; ``test_admin.py`` and ``test_cli.py`` import :class:`ManagerProcess`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil
import pytest

MANAGER_SCRIPT = r'''
import json, os, sys, time
import snakepit

spec = json.loads(sys.argv[1])
pools = {}
for p in spec["pools"]:
    p = dict(p)
    hold = p.pop("hold", 0)
    adapt = p.pop("adapt", None)
    pool = snakepit.start_pool(history_interval=None, **p)
    if adapt:
        pool.adapt(**adapt)
    pool._held = [pool.submit_command("sleep", {"seconds": 120}, timeout=None) for _ in range(hold)]
    end = time.monotonic() + 30
    while sum(w.load for w in pool.list_workers()) < hold and time.monotonic() < end:
        time.sleep(0.02)
    pools[pool.name] = pool
info = {
    "pid": os.getpid(),
    "pools": {name: {"workers": {w.worker_id: w.pid for w in pool.list_workers()},
                     "load": sum(w.load for w in pool.list_workers()),
                     "capacity": pool.capacity}
              for name, pool in pools.items()},
}
print(json.dumps(info), flush=True)
sys.stdin.read()          # run until the test closes our stdin
snakepit.shutdown(wait=False)
'''


def short_runtime_dir() -> str:
    """A short private directory (Unix socket paths are limited to 107 bytes)."""
    return tempfile.mkdtemp(prefix="sp", dir="/tmp")


class ManagerProcess:
    """``python -c MANAGER_SCRIPT spec``: starts pools, prints their figures, waits for stdin EOF.

    Example::

        with ManagerProcess([{"name": "default", "pool_size": 2}], env) as m:
            m.info["pools"]["default"]["workers"]   # {"default-w1": pid, ...}
    """

    def __init__(self, pools: list[dict], env: dict[str, str], timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MANAGER_SCRIPT, json.dumps({"pools": pools})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.pid = self.proc.pid
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or not line[0].strip():
            self.kill()
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError(f"the manager did not start: {err[-2000:]}")
        self.info = json.loads(line[0])
        self.worker_pids = [pid for p in self.info["pools"].values() for pid in p["workers"].values()]

    def stop(self, timeout: float = 30.0) -> None:
        """Close stdin: the manager shuts its pools down and exits normally."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._wait_workers_gone()
        self._close_pipes()

    def kill(self) -> None:
        """SIGKILL: no clean-up in the manager (its workers exit by their parent-death watchdog)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._wait_workers_gone()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                stream.close()
            except (OSError, AttributeError):
                pass

    def _wait_workers_gone(self, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        pids = list(getattr(self, "worker_pids", []))
        while time.monotonic() < end:
            alive = [p for p in pids if psutil.pid_exists(p) and _is_worker(p)]
            if not alive:
                return
            time.sleep(0.05)
        for p in pids:  # last resort, so that no test leaves processes behind
            try:
                if _is_worker(p):
                    psutil.Process(p).kill()
            except psutil.Error:
                pass

    def __enter__(self) -> "ManagerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_worker(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "snakepit.worker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess:
    """``python -m snakepit.cli ARGS`` in a subprocess (the real console entry point)."""
    return subprocess.run([sys.executable, "-m", "snakepit.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def runtime_env(monkeypatch):
    """A private runtime dir for this test, in this process's env and in a copy for subprocesses."""
    path = short_runtime_dir()
    monkeypatch.setenv("SNAKEPIT_RUNTIME_DIR", path)
    env = dict(os.environ)
    env["SNAKEPIT_RUNTIME_DIR"] = path
    env.pop("SNAKEPIT_ADMIN", None)
    env["PYTHONIOENCODING"] = "utf-8"
    yield env
    shutil.rmtree(path, ignore_errors=True)
