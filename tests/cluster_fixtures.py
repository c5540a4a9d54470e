"""Real loopback Dask clusters for the cluster-pool tests (no mocks).

* :func:`start_cli_cluster` starts ``dask scheduler`` and N ``dask worker`` processes (the
  CLI, ``--nworkers 1``, nanny included) as separate processes, each in its own session, and
  :meth:`CliCluster.close` tears them down leaving nothing (SIGTERM, then SIGKILL of each
  process group and of every descendant).
* the ``local_cluster`` fixture is a ``distributed.LocalCluster(processes=True)``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

BIN = os.path.dirname(sys.executable)
DASK = os.path.join(BIN, "dask")


def _dask_argv(*args: str) -> list[str]:
    if os.path.exists(DASK):
        return [DASK, *args]
    return [sys.executable, "-m", "dask", *args]


class CliCluster:
    def __init__(self, n_workers: int = 2, nthreads: int = 2, env: dict | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="snakepit-dask-test-")
        self.scheduler_file = os.path.join(self.dir, "scheduler.json")
        self.env = dict(os.environ, **(env or {}))
        self.env.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")
        self.procs: list[subprocess.Popen] = []
        self.nthreads = nthreads
        self.logs: list[str] = []
        self.scheduler = self._spawn("scheduler", _dask_argv(
            "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", self.scheduler_file))
        deadline = time.monotonic() + 60
        while not os.path.exists(self.scheduler_file) or not os.path.getsize(self.scheduler_file):
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"dask scheduler did not start: {self._log_tail()}")
            time.sleep(0.1)
        time.sleep(0.1)
        with open(self.scheduler_file) as fh:
            self.address = json.load(fh)["address"]
        for _ in range(n_workers):
            self.add_worker()
        if n_workers:
            self.wait_for_workers(n_workers)

    def _spawn(self, label: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = os.path.join(self.dir, f"{label}-{len(self.procs)}.log")
        self.logs.append(log)
        with open(log, "wb") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env or self.env,
                                    start_new_session=True, cwd=self.dir)
        self.procs.append(proc)
        return proc

    def _log_tail(self) -> str:
        out = []
        for log in self.logs:
            try:
                with open(log, errors="replace") as fh:
                    out.append(f"--- {log}\n" + fh.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def add_worker(self, nthreads: int | None = None, env: dict | None = None) -> subprocess.Popen:
        return self._spawn("worker", _dask_argv(
            "worker", self.address, "--nworkers", "1", "--nthreads", str(nthreads or self.nthreads),
            "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30"), env=env)

    def client(self):  # type: ignore[no-untyped-def]
        import distributed

        return distributed.Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        with self.client() as client:
            client.wait_for_workers(n, timeout=timeout)

    def worker_pids(self) -> dict[str, int]:
        """Dask worker address -> pid of the Dask worker process."""
        with self.client() as client:
            return client.run(os.getpid)

    def close(self) -> None:
        for proc in reversed(self.procs):  # workers first (their nannies close them), then the scheduler
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except OSError:
                    pass
        end = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            try:
                descendants = psutil.Process(proc.pid).children(recursive=True)
            except psutil.Error:
                descendants = []
            for p in descendants:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


def start_cli_cluster(**kwargs) -> CliCluster:  # type: ignore[no-untyped-def]
    return CliCluster(**kwargs)


@pytest.fixture
def cli_cluster():
    cluster = CliCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def shared_cli_cluster():
    """One CLI cluster for the tests of a module that leave it as they found it."""
    cluster = CliCluster()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def local_cluster():
    import distributed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0")  # ":0": any free port (None means 8787)
    try:
        yield cluster
    finally:
        cluster.close()
