"""The manager's handle of one snakepit worker running under a Dask worker."""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any, Callable, Mapping

from ...connection import WorkerConnection
from ...protocol import worker_pb2 as pb
from ..base import WorkerHandle

SECRET_METADATA_KEY = "snakepit-secret"
log = logging.getLogger("snakepit.backends.dask")


class DaskWorkerHandle(WorkerHandle):
    """A snakepit worker hosted by a Dask worker."""

    def __init__(self, backend: "DaskBackend", worker_id: str, dask_worker: str, report: Mapping[str, Any],
                 started_mono: float) -> None:
        self.backend = backend
        self.worker_id = worker_id
        self.dask_worker = dask_worker
        self.pid = int(report["pid"])
        self.ip = str(report["host"])
        self.host = str(report.get("hostname") or report["host"])
        self.address = str(report["address"])
        self.is_local = self.ip.startswith("127.") or self.ip in backend.local_addresses
        self.started_mono = started_mono
        self.exit_code: int | None = None
        self.draining = False
        self._exited = threading.Event()
        self._callbacks: list[Callable[[int], None]] = []
        self._drain_callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.conn: WorkerConnection | None = None

    def __repr__(self) -> str:
        return f"<DaskWorkerHandle {self.worker_id} pid={self.pid} at {self.address} on {self.dask_worker}>"

    def connect(self, *, max_message_bytes: int, on_reply: Callable[[pb.Reply], None],
                on_broken: Callable[[BaseException | None], None]) -> WorkerConnection:
        conn = self.backend.open_connection(self, max_message_bytes=max_message_bytes,
                                            on_reply=on_reply, on_broken=on_broken)
        self.conn = conn
        return conn

    def add_exit_callback(self, fn: Callable[[int], None]) -> None:
        with self._lock:
            if self.exit_code is None:
                self._callbacks.append(fn)
                return
            code = self.exit_code
        fn(code)

    def add_drain_callback(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once when Dask starts retiring this worker's Dask worker (it drains:
        the pool should route nothing new to it and start a replacement elsewhere)."""
        with self._lock:
            if not self.draining:
                self._drain_callbacks.append(fn)
                return
        fn()

    def _set_draining(self) -> None:
        with self._lock:
            if self.draining or self.exit_code is not None:
                return
            self.draining = True
            callbacks, self._drain_callbacks = self._drain_callbacks, []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("drain callback of %s failed", self.worker_id)

    def _set_exit(self, code: int) -> None:
        with self._lock:
            if self.exit_code is not None:
                return
            self.exit_code = int(code)
            callbacks, self._callbacks = self._callbacks, []
        self._exited.set()
        self.backend._forget(self)
        for fn in callbacks:
            try:
                fn(int(code))
            except Exception:  # noqa: BLE001
                log.exception("exit callback of %s failed", self.worker_id)

    def request_exit(self) -> None:
        self.signal(signal.SIGTERM)

    def signal(self, sig: int) -> None:
        if self.exit_code is None:
            self.backend.signal(self, int(sig))

    def wait(self, timeout: float | None = None) -> int | None:
        if self.exit_code is None:
            self.backend.poll_now()
            self._exited.wait(timeout)
        return self.exit_code

    def is_alive(self) -> bool:
        return self.exit_code is None
