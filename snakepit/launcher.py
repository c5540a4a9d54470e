"""How worker processes are started, watched and stopped on this machine.

This is the seam between "the pool" and "how its workers are started and reached": the
pool asks a :class:`Launcher` for :class:`WorkerProcess` handles and never touches
``subprocess`` itself. (A Dask-backed launcher would implement the same few methods.)

* Every ``Popen`` happens on one long-lived thread, because ``PR_SET_PDEATHSIG`` (set by
  the worker) fires when the *thread* that forked it exits.
* Workers get their own session (``start_new_session``) so a Ctrl-C in the terminal reaches
  the manager, not every worker; the manager decides what to cancel.
* One reaper thread waits on every worker's pidfd and reports exits at once.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import selectors
import signal
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Callable, Mapping, Sequence

log = logging.getLogger("snakepit.launcher")

__all__ = ["Launcher", "WorkerProcess", "ReadyReport", "default_launcher"]


class ReadyReport(dict):
    """What a worker wrote on its ready pipe: ``{"ok": True, "pid": …}`` or ``{"ok": False, "error": …}``."""


class WorkerProcess:
    """A started worker OS process."""

    def __init__(self, popen: subprocess.Popen, ready_fd: int, stdin_fd: int | None) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._ready_fd = ready_fd
        self._ready_buf = b""
        self._stdin_fd = stdin_fd
        self.started = time.monotonic()
        self.exit_code: int | None = None
        self._exit_callbacks: list[Callable[[int], None]] = []
        self._lock = threading.Lock()

    # -- readiness ------------------------------------------------------------------
    def ready_fileno(self) -> int:
        return self._ready_fd

    def read_ready(self) -> ReadyReport | None:
        """Read what is available on the ready pipe; the report once complete, else None."""
        try:
            chunk = os.read(self._ready_fd, 65536)
        except BlockingIOError:
            return None
        if chunk:
            self._ready_buf += chunk
            if not self._ready_buf.endswith(b"\n"):
                return None
        self._close_ready()
        if not self._ready_buf:
            code = self.popen.poll()
            return ReadyReport(ok=False, error=f"the worker exited before it was ready (exit code {code})")
        try:
            return ReadyReport(json.loads(self._ready_buf.decode()))
        except ValueError:
            return ReadyReport(ok=False, error=f"bad ready report: {self._ready_buf[:200]!r}")

    def _close_ready(self) -> None:
        if self._ready_fd >= 0:
            os.close(self._ready_fd)
            self._ready_fd = -1

    # -- exit -----------------------------------------------------------------------
    def add_exit_callback(self, fn: Callable[[int], None]) -> None:
        with self._lock:
            if self.exit_code is None:
                self._exit_callbacks.append(fn)
                return
        fn(self.exit_code)

    def _exited(self, code: int) -> None:
        with self._lock:
            self.exit_code = code
            callbacks, self._exit_callbacks = self._exit_callbacks, []
        self._close_ready()
        self._close_stdin()
        for fn in callbacks:
            try:
                fn(code)
            except Exception:
                log.exception("worker exit callback failed")

    def is_alive(self) -> bool:
        return self.exit_code is None and self.popen.poll() is None

    # -- stopping -------------------------------------------------------------------
    def _close_stdin(self) -> None:
        if self._stdin_fd is not None:
            try:
                os.close(self._stdin_fd)
            except OSError:
                pass
            self._stdin_fd = None

    def request_exit(self) -> None:
        """Close the parent-alive pipe: the worker exits at once (its watchdog sees EOF)."""
        self._close_stdin()

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 2.0) -> int | None:
        """Ask the worker to exit, then SIGTERM, then SIGKILL; return its exit code."""
        self.request_exit()
        code = self.wait(grace / 2)
        if code is None:
            self.signal(signal.SIGTERM)
            code = self.wait(grace / 2)
        if code is None:
            self.signal(signal.SIGKILL)
            code = self.wait(5.0)
        return code

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


class _Reaper(threading.Thread):
    """Waits on every worker's pidfd; calls its exit callbacks as soon as it exits."""

    def __init__(self) -> None:
        super().__init__(name="snakepit-reaper", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: queue.SimpleQueue[WorkerProcess] = queue.SimpleQueue()
        self._polled: list[WorkerProcess] = []  # when pidfd_open is unavailable

    def watch(self, proc: WorkerProcess) -> None:
        self._pending.put(proc)
        os.write(self._wake_w, b"x")

    def run(self) -> None:
        while True:
            while not self._pending.empty():
                proc = self._pending.get()
                try:
                    fd = os.pidfd_open(proc.pid)
                    self._selector.register(fd, selectors.EVENT_READ, proc)
                except (AttributeError, OSError):
                    if proc.popen.poll() is not None:
                        proc._exited(proc.popen.returncode)
                    else:
                        self._polled.append(proc)
            events = self._selector.select(0.2 if self._polled else None)
            for key, _ in events:
                if key.data is None:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                proc = key.data
                self._selector.unregister(key.fd)
                os.close(key.fd)
                proc._exited(proc.popen.wait())
            for proc in list(self._polled):
                if proc.popen.poll() is not None:
                    self._polled.remove(proc)
                    proc._exited(proc.popen.returncode)


class Launcher:
    """Starts local worker processes (``python -m snakepit.worker``)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._spawner = threading.Thread(target=self._spawn_loop, name="snakepit-spawner", daemon=True)
        self._spawner.start()
        self._reaper = _Reaper()
        self._reaper.start()

    def _spawn_loop(self) -> None:
        while True:
            fn, fut = self._requests.get()
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001
                    fut.set_exception(exc)

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None,
    ) -> WorkerProcess:
        """Start one worker. ``argv`` gets ``--ready-fd`` and ``--parent-pid`` appended."""

        def spawn() -> WorkerProcess:
            ready_r, ready_w = os.pipe()
            stdin_r, stdin_w = os.pipe()
            try:
                full = [*argv, "--ready-fd", str(ready_w), "--parent-pid", str(os.getpid())]
                popen = subprocess.Popen(
                    full,
                    stdin=stdin_r,
                    env=dict(env),
                    cwd=cwd,
                    pass_fds=(ready_w,),
                    close_fds=True,
                    start_new_session=True,
                )
            except BaseException:
                for fd in (ready_r, stdin_w):
                    os.close(fd)
                raise
            finally:
                os.close(ready_w)
                os.close(stdin_r)
            os.set_blocking(ready_r, False)
            os.set_inheritable(stdin_w, False)
            proc = WorkerProcess(popen, ready_r, stdin_w)
            self._reaper.watch(proc)
            return proc

        fut: Future[WorkerProcess] = Future()
        self._requests.put((spawn, fut))
        return fut.result()

    @staticmethod
    def wait_ready(procs: Sequence[WorkerProcess], timeout: float) -> dict[WorkerProcess, ReadyReport]:
        """Wait until every worker reported on its ready pipe (or ``timeout`` passed)."""
        reports: dict[WorkerProcess, ReadyReport] = {}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            for proc in procs:
                if proc.ready_fileno() >= 0:
                    sel.register(proc.ready_fileno(), selectors.EVENT_READ, proc)
                else:
                    reports[proc] = ReadyReport(ok=False, error="worker already gone")
            while len(reports) < len(procs):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in sel.select(remaining):
                    report = key.data.read_ready()
                    if report is not None:
                        sel.unregister(key.fd)
                        reports[key.data] = report
        for proc in procs:
            reports.setdefault(proc, ReadyReport(ok=False, error=f"not ready within {timeout:.3g}s (startup_timeout)"))
        return reports


_default: Launcher | None = None
_default_lock = threading.Lock()


def default_launcher() -> Launcher:
    """The process-wide launcher (its threads live as long as the process)."""
    global _default
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _set_default(Launcher())
        return _default  # type: ignore[return-value]


_default_pid = -1


def _set_default(launcher: Launcher) -> None:
    global _default, _default_pid
    _default, _default_pid = launcher, os.getpid()
