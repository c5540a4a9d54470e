"""Worker OS processes on this machine: the handle of one (spawned or forked), the zygote
(template process) that forks them, and the reaper thread that notices their exits at once.

Used by :class:`snakepit.launcher.Launcher`; see its module docstring for the design.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import queue
import selectors
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger("snakepit.launcher")

_ZYGOTE_START_TIMEOUT = 60.0


class ReadyReport(dict):
    """What a worker wrote on its ready pipe: ``{"ok": True, "pid": …}`` or ``{"ok": False, "error": …}``."""


class WorkerProcess:
    """A started worker OS process."""

    start_method = "spawn"

    def __init__(self, popen: subprocess.Popen | None, ready_fd: int, stdin_fd: int | None,
                 pid: int | None = None) -> None:
        self.popen = popen
        self.pid = popen.pid if popen is not None else int(pid)  # type: ignore[arg-type]
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
            code = self.wait(0.2)
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
        return self.exit_code is None and self.popen is not None and self.popen.poll() is None

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
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 2.0) -> int | None:
        """Ask the worker to exit, then SIGTERM, then SIGKILL; return its exit code."""
        return stop_together([self], grace)[self]

    def kill(self) -> None:
        self.signal(signal.SIGKILL)


class ForkedWorkerProcess(WorkerProcess):
    """A worker forked by a zygote: not our child, so its exit code comes from the zygote."""

    start_method = "forkserver"

    def __init__(self, pid: int, ready_fd: int, stdin_fd: int | None, zygote: "_Zygote") -> None:
        super().__init__(None, ready_fd, stdin_fd, pid=pid)
        self.zygote = zygote
        self._exit_event = threading.Event()
        try:
            # Signals go through a pidfd: never to a recycled pid once the zygote reaped ours.
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            self._pidfd = -1

    def _exited(self, code: int) -> None:
        if self._exit_event.is_set():
            return
        super()._exited(code)
        self._exit_event.set()
        if self._pidfd >= 0:
            try:
                os.close(self._pidfd)
            except OSError:
                pass
            self._pidfd = -1

    def is_alive(self) -> bool:
        return self.exit_code is None

    def wait(self, timeout: float | None = None) -> int | None:
        self._exit_event.wait(timeout)
        return self.exit_code

    def signal(self, sig: int) -> None:
        fd = self._pidfd
        if self.exit_code is not None or fd < 0:
            return
        try:
            signal.pidfd_send_signal(fd, sig)
        except OSError:  # already gone (ESRCH) or the fd was closed meanwhile (EBADF)
            pass


class _Zygote:
    """Manager side of one zygote (template) process; see the module docstring."""

    def __init__(self, key: tuple, python: str, env: Mapping[str, str]) -> None:
        self.key = key
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.popen = subprocess.Popen(
                [python, "-m", "snakepit.worker", "--zygote", "--control-fd", str(theirs.fileno()),
                 "--parent-pid", str(os.getpid()),
                 # room in the argv area for a forked worker's own command line (ps, psutil)
                 "--title-space", "_" * 1536],
                stdin=subprocess.DEVNULL, env=dict(env), pass_fds=(theirs.fileno(),), close_fds=True,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        self.pid = self.popen.pid
        ours.settimeout(_ZYGOTE_START_TIMEOUT)
        try:
            hello = ours.recv(65536)
        except OSError as exc:
            hello = b""
            log.warning("zygote did not start: %s", exc)
        ours.settimeout(None)
        if not hello:
            self.popen.kill()
            self.popen.wait()
            ours.close()
            raise RuntimeError(f"the worker template process (zygote) did not start (exit code {self.popen.returncode})")
        self.workers: dict[int, ForkedWorkerProcess] = {}
        self.pending: dict[int, tuple[Future, int, int]] = {}
        self.reserved = 0
        self.closed = False
        self._tags = itertools.count(1)
        self._send_lock = threading.Lock()

    def request(self, args: list[str], env: Mapping[str, str], cwd: str, ready_w: int, ready_r: int,
                stdin_r: int, stdin_w: int) -> Future:
        tag = next(self._tags)
        fut: Future = Future()
        self.pending[tag] = (fut, ready_r, stdin_w)
        payload = json.dumps({"tag": tag, "args": args, "env": dict(env), "cwd": cwd}).encode()
        try:
            with self._send_lock:
                socket.send_fds(self.sock, [payload], [ready_w, stdin_r])
        except OSError:
            self.pending.pop(tag, None)
            raise
        return fut


class _Reaper(threading.Thread):
    """Waits on every worker's pidfd; calls its exit callbacks as soon as it exits."""

    def __init__(self) -> None:
        super().__init__(name="snakepit-reaper", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._pending: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._polled: list[WorkerProcess] = []  # when pidfd_open is unavailable
        self.on_zygote_idle: Callable[[_Zygote], None] = lambda z: None

    def watch(self, proc: WorkerProcess) -> None:
        self._pending.put(proc)
        os.write(self._wake_w, b"x")

    def watch_zygote(self, zygote: _Zygote) -> None:
        self._pending.put(zygote)
        os.write(self._wake_w, b"x")

    def close_zygote(self, zygote: _Zygote) -> None:
        self._pending.put(("close", zygote))
        os.write(self._wake_w, b"x")

    def run(self) -> None:
        while True:
            while not self._pending.empty():
                proc = self._pending.get()
                if isinstance(proc, _Zygote):
                    self._selector.register(proc.sock, selectors.EVENT_READ, proc)
                    self._zygote_readable(proc)  # messages that came before registration
                    continue
                if isinstance(proc, tuple):
                    self._shut_zygote(proc[1], None)
                    continue
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
                if isinstance(key.data, _Zygote):
                    self._zygote_readable(key.data)
                    continue
                proc = key.data
                self._selector.unregister(key.fd)
                os.close(key.fd)
                proc._exited(proc.popen.wait())
            for proc in list(self._polled):
                if proc.popen.poll() is not None:
                    self._polled.remove(proc)
                    proc._exited(proc.popen.returncode)

    # -- zygotes (forkserver start method) -------------------------------------------
    def _zygote_readable(self, z: _Zygote) -> None:
        while not z.closed:
            try:
                msg = z.sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                msg = b""
                log.warning("zygote %s control socket failed: %s", z.pid, exc)
            if not msg:
                self._shut_zygote(z, "the worker template process (zygote) exited")
                return
            try:
                self._zygote_message(z, json.loads(msg))
            except Exception:
                log.exception("bad message from zygote %s", z.pid)

    def _zygote_message(self, z: _Zygote, msg: dict) -> None:
        op = msg.get("op")
        if op == "spawned":
            fut, ready_r, stdin_w = z.pending.pop(msg["tag"])
            proc = ForkedWorkerProcess(int(msg["pid"]), ready_r, stdin_w, z)
            z.workers[proc.pid] = proc
            fut.set_result(proc)
        elif op == "error":
            fut, ready_r, stdin_w = z.pending.pop(msg["tag"])
            fut.set_exception(RuntimeError(f"the zygote could not fork a worker: {msg.get('error')}"))
        elif op == "exit":
            proc = z.workers.pop(int(msg["pid"]), None)
            if proc is not None:
                proc._exited(int(msg["code"]))
            if not z.workers and not z.pending:
                self.on_zygote_idle(z)

    def _shut_zygote(self, z: _Zygote, error: str | None) -> None:
        """Close a zygote (idle, or gone): its socket, its process, and what it still owed us."""
        if z.closed:
            return
        z.closed = True
        try:
            self._selector.unregister(z.sock)
        except (KeyError, ValueError):
            pass
        z.sock.close()  # the zygote sees EOF and exits
        for tag, (fut, ready_r, stdin_w) in list(z.pending.items()):
            for fd in (ready_r, stdin_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
            fut.set_exception(RuntimeError(error or "the zygote was closed"))
        z.pending.clear()
        if z.workers:
            # Without their zygote they die too (PR_SET_PDEATHSIG): report them as killed.
            log.warning("zygote %s exited with %d live workers", z.pid, len(z.workers))
            for proc in list(z.workers.values()):
                proc.kill()
                proc._exited(-signal.SIGKILL)
            z.workers.clear()
        self.watch(WorkerProcess(z.popen, -1, None))  # reap the zygote process itself


def stop_together(procs: Sequence[Any], grace: float) -> dict[Any, int | None]:
    """Stop processes with one shared deadline per step (exit request, then SIGTERM, then
    SIGKILL), so stopping N takes as long as stopping one; returns their exit codes (None for
    one still running). ``procs`` need ``request_exit``, ``signal`` and ``wait``: worker
    processes here, or any backend's worker handles."""
    for proc in procs:
        proc.request_exit()
    codes: dict[Any, int | None] = {}
    alive = list(procs)
    for budget, sig in ((grace / 2, None), (grace / 2, signal.SIGTERM), (5.0, signal.SIGKILL)):
        if sig is not None:
            for proc in alive:
                proc.signal(sig)
        deadline = time.monotonic() + budget
        still = []
        for proc in alive:
            code = proc.wait(max(0.0, deadline - time.monotonic()))
            if code is None:
                still.append(proc)
            else:
                codes[proc] = code
        alive = still
        if not alive:
            break
    for proc in alive:
        codes[proc] = None
    return codes
