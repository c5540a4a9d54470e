"""How worker processes are started, watched and stopped on this machine.

The local backend (:mod:`snakepit.backends.local`) asks a :class:`Launcher` for
:class:`WorkerProcess` handles; the pool itself sees only the backend seam
(:mod:`snakepit.backends`). The process handles, the zygote and the reaper thread live in
:mod:`snakepit.processes`.

* Every ``Popen`` happens on one long-lived thread, because ``PR_SET_PDEATHSIG`` (set by
  the worker) fires when the *thread* that forked it exits.
* Workers get their own session (``start_new_session``) so a Ctrl-C in the terminal reaches
  the manager, not every worker; the manager decides what to cancel.
* One reaper thread waits on every worker's pidfd and reports exits at once.

Two start methods (``PoolConfig.start_method``, or ``$SNAKEPIT_START_METHOD``):

* ``forkserver`` (the default on Linux with ``pidfd`` and ``SCM_RIGHTS``): one template
  process per interpreter (the *zygote*, ``python -m snakepit.worker --zygote``) imports
  gRPC and the worker side of snakepit once, creates no thread and no gRPC object, and forks
  each worker on request; the worker then starts its own gRPC server, exactly as a spawned
  one. Forking costs ≈ 1 ms and the worker shares the zygote's pages (≈ 5 MB USS).
  Issue 7.

  The zygote is a child of the spawner thread with ``PR_SET_PDEATHSIG``; its workers set
  ``PR_SET_PDEATHSIG`` against the zygote and keep the manager's parent-alive pipe, so they
  still die with the manager. The zygote reaps them and sends their exit codes over its
  control socket (read by the reaper thread), so ``WorkerProcess`` behaves the same. It
  exits when its last worker is gone (and at once if the manager dies). Interpreter-level
  environment (``PYTHON*`` but ``PYTHONPATH``, ``LD_*``, ``MALLOC_*``, ``GRPC_*``) is part of
  a zygote's identity: a pool that changes it gets a zygote of its own. A pool whose
  ``python`` is not this interpreter (another path, a wrapper script, another venv) is
  always spawned, as is every pool when the zygote cannot start.
* ``spawn``: ``Popen([python, "-m", "snakepit.worker", ...])``; every worker imports gRPC
  and snakepit itself (≈ 0.2 s of CPU and ≈ 19 MB USS each).
"""
from __future__ import annotations

import logging
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Callable, Mapping, Sequence

from .signals import start_thread

log = logging.getLogger("snakepit.launcher")

__all__ = ["Launcher", "WorkerProcess", "ReadyReport", "default_launcher", "START_METHODS",
           "default_start_method"]

START_METHODS = ("spawn", "forkserver")
START_METHOD_ENV = "SNAKEPIT_START_METHOD"
_ZYGOTE_START_TIMEOUT = 60.0
# Environment read when an interpreter (or gRPC) starts: a zygote only serves workers that agree on it.
_INTERPRETER_ENV_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "GRPC_")
_NOT_INTERPRETER_ENV = {"PYTHONPATH", START_METHOD_ENV}
# PoolConfig.preload (what the zygote imports before forking) is part of its identity too.
_PRELOAD_ENV = "SNAKEPIT_PRELOAD"


def forkserver_available() -> bool:
    return (sys.platform.startswith("linux") and hasattr(socket, "send_fds") and hasattr(os, "pidfd_open")
            and hasattr(signal, "pidfd_send_signal"))


def default_start_method() -> str:
    """``$SNAKEPIT_START_METHOD`` if set, else ``forkserver`` where it is available, else ``spawn``.

    ``forkserver`` only serves workers of this very interpreter and environment; a pool with
    another ``python=`` (a wrapper script, another venv) is spawned whatever the method.
    """
    env = os.environ.get(START_METHOD_ENV)
    if env in START_METHODS:
        return env
    return "forkserver" if forkserver_available() else "spawn"


from .processes import ReadyReport, WorkerProcess, _Reaper, _Zygote


class Launcher:
    """Starts local worker processes (``python -m snakepit.worker``)."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._spawner = threading.Thread(target=self._spawn_loop, name="snakepit-spawner", daemon=True)
        start_thread(self._spawner)
        self._reaper = _Reaper()
        self._reaper.on_zygote_idle = self._zygote_idle
        start_thread(self._reaper)
        self._zygotes: dict[tuple, _Zygote] = {}
        self._zygote_lock = threading.Lock()
        self._zygote_failures: dict[tuple, str] = {}

    def _zygote_idle(self, z: _Zygote) -> None:
        """(reaper thread) The zygote's last worker exited: close it unless a spawn is under way."""
        with self._zygote_lock:
            if z.reserved or z.workers or z.pending or self._zygotes.get(z.key) is not z:
                return
            del self._zygotes[z.key]
        self._reaper._shut_zygote(z, None)

    @staticmethod
    def _zygote_key(argv: Sequence[str], env: Mapping[str, str]) -> tuple | None:
        if len(argv) < 3 or list(argv[1:3]) != ["-m", "snakepit.worker"]:
            return None
        # Only this very interpreter: a wrapper script or another environment may set
        # variables, flags or paths that a fork of our template would not have.
        # The same file is not enough: a venv's python is a symlink to its base interpreter,
        # and the interpreter finds its prefix (pyvenv.cfg) next to the path it was started as.
        try:
            if not os.path.samefile(argv[0], sys.executable):
                return None
        except OSError:
            return None
        if os.path.dirname(os.path.abspath(argv[0])) != os.path.dirname(os.path.abspath(sys.executable)):
            return None
        sig = tuple(sorted((k, v) for k, v in env.items()
                           if (k.startswith(_INTERPRETER_ENV_PREFIXES) and k not in _NOT_INTERPRETER_ENV)
                           or k == _PRELOAD_ENV))
        return (argv[0], sig)

    def _spawn_forked(self, key: tuple, argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                      ready_r: int, ready_w: int, stdin_r: int, stdin_w: int) -> WorkerProcess:
        """(spawner thread) Fork a worker from the zygote of ``key`` (started if needed)."""
        with self._zygote_lock:
            z = self._zygotes.get(key)
            if z is not None and not z.closed:
                z.reserved += 1
        if z is None or z.closed:
            z = _Zygote(key, argv[0], env)  # on this thread: its PR_SET_PDEATHSIG is tied to it
            with self._zygote_lock:
                self._zygotes[key] = z
                z.reserved += 1
            self._reaper.watch_zygote(z)
        try:
            fut = z.request(list(argv[3:]), env, cwd or os.getcwd(), ready_w, ready_r, stdin_r, stdin_w)
            return fut.result(_ZYGOTE_START_TIMEOUT)
        finally:
            with self._zygote_lock:
                z.reserved -= 1
                idle = not z.reserved and not z.workers and not z.pending
            if idle:
                self._reaper.close_zygote(z) if self._forget_zygote(z) else None

    def _forget_zygote(self, z: _Zygote) -> bool:
        with self._zygote_lock:
            if self._zygotes.get(z.key) is z and not z.reserved and not z.workers and not z.pending:
                del self._zygotes[z.key]
                return True
        return False

    def prestart(self, python: str, env: Mapping[str, str], start_method: str | None = None) -> Callable[[], None] | None:
        """Start, in the background, the zygote that workers of ``python`` and ``env`` would use.

        For the first ``start_pool`` of a process: the zygote's ≈ 0.15 s start then overlaps
        with the manager importing the pool side (gRPC, protobuf, ≈ 0.1 s). Returns a
        ``release()`` to call once the pool started (the zygote is closed if no worker came
        of it), or None when there is nothing to start: another start method, an interpreter
        a zygote cannot serve, or a zygote for that key exists already.
        """
        method = start_method or env.get(START_METHOD_ENV) or default_start_method()
        if method != "forkserver" or not forkserver_available():
            return None
        key = self._zygote_key([python, "-m", "snakepit.worker"], env)
        if key is None or key in self._zygote_failures:
            return None
        with self._zygote_lock:
            z = self._zygotes.get(key)
            if z is not None and not z.closed:
                return None
        held: list[_Zygote] = []

        def start() -> None:  # (spawner thread) so its PR_SET_PDEATHSIG is tied to that thread
            with self._zygote_lock:
                z = self._zygotes.get(key)
                if z is not None and not z.closed:
                    return
            try:
                z = _Zygote(key, python, env)
            except Exception as exc:  # noqa: BLE001 - the pool falls back to spawn
                self._zygote_failures[key] = str(exc)
                log.warning("forkserver start failed (%s); starting workers with spawn", exc)
                return
            with self._zygote_lock:
                self._zygotes[key] = z
                z.reserved += 1
            held.append(z)
            self._reaper.watch_zygote(z)

        def release() -> None:  # (spawner thread) after the pool's own starts, in order
            for z in held:
                with self._zygote_lock:
                    z.reserved -= 1
                    idle = not z.reserved and not z.workers and not z.pending
                if idle and self._forget_zygote(z):
                    self._reaper.close_zygote(z)
            held.clear()

        self._requests.put((start, Future()))
        return lambda: self._requests.put((release, Future()))

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
        start_method: str | None = None,
    ) -> WorkerProcess:
        """Start one worker. ``argv`` gets ``--ready-fd`` and ``--parent-pid`` appended.

        ``start_method``: ``"spawn"``, ``"forkserver"``, or None for ``env["SNAKEPIT_START_METHOD"]``
        then :func:`default_start_method`. ``forkserver`` falls back to ``spawn`` (with a
        warning) when the argv is not a ``snakepit.worker`` one or the zygote cannot start.
        """
        method = start_method or env.get(START_METHOD_ENV) or default_start_method()
        if method not in START_METHODS:
            raise ValueError(f"start_method must be one of {START_METHODS}, got {method!r}")
        key = self._zygote_key(argv, env) if method == "forkserver" and forkserver_available() else None

        def spawn() -> WorkerProcess:
            ready_r, ready_w = os.pipe()
            stdin_r, stdin_w = os.pipe()
            if key is not None and key not in self._zygote_failures:
                full = [*argv, "--ready-fd", str(ready_w), "--parent-pid", str(os.getpid())]
                try:
                    proc = self._spawn_forked(key, full, env, cwd, ready_r, ready_w, stdin_r, stdin_w)
                except Exception as exc:  # noqa: BLE001 - fall back to spawn, once per zygote key
                    self._zygote_failures[key] = str(exc)
                    log.warning("forkserver start failed (%s); starting workers with spawn", exc)
                    for fd in (ready_r, ready_w, stdin_r, stdin_w):
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                    ready_r, ready_w = os.pipe()
                    stdin_r, stdin_w = os.pipe()
                else:
                    os.close(ready_w)
                    os.close(stdin_r)
                    os.set_blocking(ready_r, False)
                    os.set_inheritable(stdin_w, False)
                    return proc
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
        try:
            return fut.result()
        except BaseException:
            # Interrupted (Ctrl-C) while the spawner thread starts the worker: nobody will own
            # that process, so stop it as soon as it exists instead of leaking it.
            fut.add_done_callback(_kill_orphaned_start)
            raise

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


def apply_preload(env: dict[str, str], modules: Sequence[str]) -> None:
    """Put ``PoolConfig.preload`` into a worker environment (``$SNAKEPIT_PRELOAD``), which the
    zygote imports before forking and a spawned worker at start; it is part of the zygote's
    identity (see :meth:`Launcher._zygote_key`)."""
    if modules:
        env[_PRELOAD_ENV] = ",".join(modules)
    else:
        env.pop(_PRELOAD_ENV, None)


def worker_pythonpath(existing: str | None) -> str:
    """The PYTHONPATH a pool gives its workers: ``existing`` first, then this process's own
    import paths but the interpreter's.

    Like multiprocessing's spawn start method, workers can then import what the manager can
    (modules next to a script or notebook, test directories, ``sys.path`` tweaks), so that
    functions passed by reference unpickle. (Here rather than in ``snakepit.pool``:
    :meth:`Launcher.prestart` needs it before that module is imported.)"""
    skip = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    paths = [p for p in (existing or "").split(os.pathsep) if p]
    for entry in sys.path:
        entry = os.path.abspath(entry or os.getcwd())
        if entry.startswith(skip) or entry in paths or not os.path.isdir(entry):
            continue
        paths.append(entry)
    return os.pathsep.join(paths)


def _kill_orphaned_start(fut: "Future[WorkerProcess]") -> None:
    if fut.cancelled() or fut.exception() is not None:
        return
    proc = fut.result()
    proc.kill()
    proc.request_exit()


_default: Launcher | None = None
_default_lock = threading.Lock()


def default_launcher() -> Launcher:
    """The process-wide launcher (its threads live as long as the process)."""
    with _default_lock:
        if _default is None or _default_pid != os.getpid():
            _set_default(Launcher())
        return _default  # type: ignore[return-value]


_default_pid = -1


def _set_default(launcher: Launcher) -> None:
    global _default, _default_pid
    _default, _default_pid = launcher, os.getpid()
