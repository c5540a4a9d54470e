"""The local backend: workers are child processes of this one, on owner-only Unix sockets.

Started by :class:`snakepit.launcher.Launcher` (forked from a warmed zygote, or spawned),
they die with this process (``PR_SET_PDEATHSIG`` and a parent-alive pipe; see
docs/architecture.md, "no orphans").
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
import time
from typing import Any, Callable, Mapping, Sequence

from .. import lane, runtime
from ..config import PoolConfig
from ..connection import WorkerConnection
from ..errors import ConfigError
from ..launcher import Launcher, WorkerProcess, apply_preload, default_launcher, worker_pythonpath
from ..protocol import worker_pb2 as pb
from ..protocol.framing import lane_path as worker_lane_path
from .base import Backend, StartFailure, WorkerHandle

_HOST = socket.gethostname()


class LocalWorker(WorkerHandle):
    """A worker process started by this process."""

    is_local = True
    dask_worker = None

    def __init__(self, worker_id: str, process: WorkerProcess, socket_path: str, started_mono: float,
                 lane_path: str | None = None) -> None:
        self.worker_id = worker_id
        self.lane_path = lane_path
        self.process = process
        self.socket_path = socket_path
        self.pid = process.pid
        self.host = _HOST
        self.address = f"unix:{socket_path}"
        self.started_mono = started_mono

    def connect(self, *, max_message_bytes: int, on_reply: Callable[[pb.Reply], None],
                on_broken: Callable[[BaseException | None], None]) -> WorkerConnection:
        return lane.connect(self.address, self.lane_path, name=self.worker_id,
                            max_message_bytes=max_message_bytes, on_reply=on_reply, on_broken=on_broken)

    def add_exit_callback(self, fn: Callable[[int], None]) -> None:
        self.process.add_exit_callback(fn)

    def request_exit(self) -> None:
        self.process.request_exit()

    def signal(self, sig: int) -> None:
        self.process.signal(sig)

    def wait(self, timeout: float | None = None) -> int | None:
        return self.process.wait(timeout)

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()


class LocalBackend(Backend):
    """Starts a pool's workers on this machine (``pool.backend == "local"``)."""

    name = "local"

    def __init__(self, config: PoolConfig, env: Mapping[str, str], capacity: int,
                 launcher: Launcher | None = None) -> None:
        self.config = config
        self.capacity = capacity
        self.launcher = launcher or default_launcher()
        self.env = dict(env)
        self.env["PYTHONPATH"] = worker_pythonpath(self.env.get("PYTHONPATH"))
        apply_preload(self.env, config.preload)
        self._options_file = self._write_adapter_options(config)
        self._use_lane = config.resolved_transport == "lane"  # read once: $SNAKEPIT_TRANSPORT at pool start

    @staticmethod
    def _write_adapter_options(config: PoolConfig) -> str:
        if not config.adapter_options:
            return ""
        try:
            data = pickle.dumps(dict(config.adapter_options))
        except Exception as exc:
            raise ConfigError("adapter_options", f"must be picklable: {exc}") from exc
        fd, path = tempfile.mkstemp(prefix="opts-", dir=runtime.process_dir())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return path

    def _argv(self, worker_id: str, socket_path: str) -> list[str]:
        cfg = self.config
        argv = [
            cfg.python, "-m", "snakepit.worker",
            "--socket", socket_path,
            "--worker-id", worker_id,
            "--adapter", cfg.adapter,
            "--profile", cfg.profile,
            "--capacity", str(self.capacity),
            "--max-message-bytes", str(cfg.max_message_bytes),
        ]
        if self._options_file:
            argv += ["--options-file", self._options_file]
        return argv

    def start_workers(self, worker_ids: Sequence[str], timeout: float) -> list[WorkerHandle | StartFailure]:
        started: list[tuple[str, WorkerProcess, str, float]] = []
        try:
            for worker_id in worker_ids:
                socket_path = runtime.new_socket_path()
                t0 = time.monotonic()
                proc = self.launcher.start(self._argv(worker_id, socket_path), env=self.env,
                                           cwd=self.config.cwd, start_method=self.config.start_method)
                started.append((worker_id, proc, socket_path, t0))
            reports = Launcher.wait_ready([s[1] for s in started], timeout)
        except BaseException:
            _kill_all([s[1] for s in started])
            raise
        out: list[WorkerHandle | StartFailure] = []
        failed: list[WorkerProcess] = []
        for worker_id, proc, socket_path, t0 in started:
            report: dict[str, Any] = reports[proc]
            if report.get("ok"):
                lane_path = worker_lane_path(socket_path) if self._use_lane else None
                out.append(LocalWorker(worker_id, proc, socket_path, t0, lane_path))
            else:
                failed.append(proc)
                out.append(StartFailure(worker_id, str(report.get("error", "unknown error"))))
        _kill_all(failed)
        return out

    def close(self) -> None:
        if self._options_file:
            try:
                os.unlink(self._options_file)
            except OSError:
                pass
            self._options_file = ""


def _kill_all(procs: Sequence[WorkerProcess]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait(5.0)
