"""Entry point of a worker process: ``python -m snakepit.worker --socket PATH ...``.

Start-up: watchdogs first (so a dead manager never leaves us behind), then the adapter,
then the gRPC server; then one JSON line on the ready pipe tells the manager the outcome.

``python -m snakepit.worker --zygote --control-fd N --parent-pid P`` is the template
process of the ``forkserver`` start method (see :mod:`snakepit.launcher`): it imports gRPC
and snakepit once, starts no thread and no gRPC object, and forks one worker per request
received on its control socket. A forked worker then runs :func:`main` exactly as a
spawned one would (issue 7: 16 workers ready in half of loky's time, ≤ 5 MB USS each).
"""
from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import os
import pickle
import signal
import sys
import threading
import traceback

PR_SET_PDEATHSIG = 1


def _watch_parent(expected_ppid: int) -> None:
    """Die with the manager: PR_SET_PDEATHSIG, plus EOF on stdin (the manager holds the pipe)."""
    _set_pdeathsig()  # not Linux: the stdin pipe still covers it
    if os.getppid() != expected_ppid:  # the manager died before prctl took effect
        os._exit(70)

    def wait_for_eof() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=wait_for_eof, name="snakepit-parent-watch", daemon=True).start()


def _set_pdeathsig() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _set_cmdline(argv: list[str]) -> None:
    """Show a forked worker as ``python -m snakepit.worker …`` in ps / psutil (best effort).

    The zygote was started with a padding argument, so its argv area has room to hold the
    worker's own command line; /proc/self/stat gives the area's bounds.
    """
    try:
        with open("/proc/self/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        size = end - start
        data = b"\0".join(os.fsencode(a) for a in argv)[: size - 1]
        data += b"\0" * (size - len(data))
        ctypes.memmove(start, data, size)
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _warm_up() -> None:
    """Run, once in the zygote, the pure-Python paths every worker runs, so that their lazily
    built state (regex and argparse caches, protobuf and pickle tables, asyncio's imports) is
    created before the fork and shared, instead of being built again in each worker."""
    import asyncio

    from ..protocol import codec
    from ..protocol import worker_pb2 as pb
    from .builtin import DefaultAdapter

    _parser().parse_args(["--socket", "s", "--worker-id", "w", "--adapter", "a:B", "--ready-fd", "0",
                          "--parent-pid", "1", "--capacity", "1"])
    for value in ({"a": 1}, None, [1, 2.0, "x"], _warm_up):
        codec.loads(codec.dumps(value, "warm-up"), "warm-up")
    codec.failure_from_exception(ValueError("warm-up"))
    pb.Reply(request_id=1, kind=pb.Reply.RESULT, payload=b"x").SerializeToString()
    pb.Request.FromString(pb.Request(request_id=1, command="echo", payload=b"x").SerializeToString())
    pb.WorkerMetrics(pid=1, gc_counts=[1, 2, 3])
    adapter = DefaultAdapter()
    adapter.resolve("echo")
    json.dumps({"ok": True, "pid": 1})
    loop = asyncio.new_event_loop()  # closed again: no fd or thread survives into the fork
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()


def _zygote(argv: list[str]) -> int:
    """The forkserver template: fork a worker per request until the control socket closes.

    Control messages (SOCK_SEQPACKET, JSON): in ``{"tag", "args", "env", "cwd"}`` with the
    worker's ready-pipe write end and parent-alive pipe read end attached (SCM_RIGHTS);
    out ``{"op": "ready"}``, ``{"op": "spawned", "tag", "pid"}`` / ``{"op": "error", "tag",
    "error"}``, and ``{"op": "exit", "pid", "code"}`` for every worker that ends (its exit code
    as ``subprocess`` reports it: ``-N`` for signal N).
    """
    import gc
    import selectors
    import socket

    parser = argparse.ArgumentParser(prog="python -m snakepit.worker --zygote")
    parser.add_argument("--zygote", action="store_true")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--title-space", default="")
    args = parser.parse_args(argv)
    _set_pdeathsig()  # the zygote dies with the manager; its workers die with the zygote
    if os.getppid() != args.parent_pid:
        os._exit(70)
    control = socket.socket(fileno=args.control_fd)
    # Warm everything a worker needs; no thread, no gRPC channel or server is created here.
    import asyncio  # noqa: F401
    import concurrent.futures  # noqa: F401

    import grpc  # noqa: F401
    import grpc.aio  # noqa: F401

    from . import builtin, server  # noqa: F401

    _warm_up()
    gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the inherited objects
    start_cwd = os.getcwd()
    # sys.path without what our own PYTHONPATH put there: a worker puts its own in front (below).
    own_pythonpath = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base_path = [p for p in sys.path[1:] if p not in own_pythonpath]
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    control.send(json.dumps({"op": "ready", "pid": os.getpid()}).encode())

    def send(msg: dict) -> None:
        try:
            control.send(json.dumps(msg).encode())
        except OSError:
            os._exit(0)

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            send({"op": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def fork_worker(req: dict, fds: list[int]) -> int:
        ready_w, stdin_r = fds
        wargs = list(req["args"])
        wargs[wargs.index("--ready-fd") + 1] = str(ready_w)
        wargs[wargs.index("--parent-pid") + 1] = str(os.getpid())
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sel.close()
            control.close()
            os.close(wake_r)
            os.close(wake_w)
            os.setsid()
            os.dup2(stdin_r, 0)
            os.close(stdin_r)
            os.environ.clear()
            os.environ.update(req["env"])
            if req.get("cwd"):
                os.chdir(req["cwd"])
                if sys.path and sys.path[0] == start_cwd:
                    sys.path[0] = os.getcwd()
            # The sys.path a spawned worker would have: its PYTHONPATH, then the interpreter's.
            wanted: list[str] = []
            for entry in req["env"].get("PYTHONPATH", "").split(os.pathsep):
                entry = os.path.abspath(entry) if entry else ""
                if entry and entry not in wanted:
                    wanted.append(entry)
            sys.path[1:] = wanted + [p for p in base_path if p not in wanted]
            _set_cmdline([sys.executable, "-m", "snakepit.worker", *wargs])
            sys.argv = [sys.argv[0], *wargs]
            code = main(wargs)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(code)
        return 0  # not reached

    while True:
        for key, _ in sel.select():
            if key.fileobj is control:
                try:
                    msg, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 4)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    os._exit(0)
                if not msg:  # the manager closed the socket (or died): the workers follow us
                    os._exit(0)
                req = json.loads(msg)
                try:
                    pid = fork_worker(req, fds)
                    send({"op": "spawned", "tag": req["tag"], "pid": pid})
                except Exception as exc:  # noqa: BLE001
                    send({"op": "error", "tag": req["tag"], "error": f"{type(exc).__name__}: {exc}"})
                finally:
                    for fd in fds:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
            else:
                try:
                    while os.read(wake_r, 4096):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
        reap()


def _report(fd: int, payload: dict) -> None:
    with os.fdopen(fd, "w") as ready:
        ready.write(json.dumps(payload) + "\n")


def main(argv: list[str] | None = None) -> int:
    # The manager's spawner thread blocks Ctrl-C/SIGTERM (see snakepit.signals); the mask is
    # inherited across exec, and this process needs them (cancellation uses SIGINT).
    from ..signals import unblock_main_thread_signals

    unblock_main_thread_signals()
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--zygote"]:
        return _zygote(argv)
    args = _parser().parse_args(argv)
    return _run_worker(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m snakepit.worker")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--profile", choices=("process", "thread"), default="process")
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--options-file", default="")
    parser.add_argument("--max-message-bytes", type=int, default=256 * 2**20)
    return parser


def _run_worker(args: argparse.Namespace) -> int:
    _watch_parent(args.parent_pid)
    try:
        from .builtin import install_output_routing
        from .server import RequestRunner, WorkerService, serve

        module_name, _, class_name = args.adapter.partition(":")
        try:
            module = importlib.import_module(module_name)
            adapter_cls = module
            for part in class_name.split("."):
                adapter_cls = getattr(adapter_cls, part)
        except Exception as exc:
            raise RuntimeError(f"cannot load adapter {args.adapter!r}: {type(exc).__name__}: {exc}") from exc
        from .adapter import Adapter

        if not (isinstance(adapter_cls, type) and issubclass(adapter_cls, Adapter)):
            raise RuntimeError(f"adapter {args.adapter!r} is not a snakepit.Adapter subclass")
        if args.profile == "thread" and not adapter_cls.is_thread_safe():
            raise RuntimeError(
                f"adapter {args.adapter!r} does not declare itself thread-safe; the 'thread' profile runs "
                "several requests at once on one adapter instance. Set `thread_safe = True` on the class "
                "once it is safe, or use profile='process'"
            )
        options = {}
        if args.options_file:
            with open(args.options_file, "rb") as fh:
                options = pickle.load(fh)
        adapter = adapter_cls(**options)
        adapter.worker_id = args.worker_id
        adapter.setup()
        install_output_routing()
        runner = RequestRunner(args.capacity, use_main_thread=args.profile == "process")
        holder: dict = {}
        service = WorkerService(
            adapter,
            worker_id=args.worker_id,
            capacity=args.capacity,
            max_message_bytes=args.max_message_bytes,
            runner=runner,
            on_shutdown=lambda: holder["server"].stop(),
        )
        server = holder["server"] = serve(service, args.socket)
    except BaseException as exc:  # noqa: BLE001 - every start failure is reported
        _report(args.ready_fd, {"ok": False, "error": f"{exc}", "traceback": traceback.format_exc()})
        return 1

    runner.install_interrupt_handler(service)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    _report(args.ready_fd, {"ok": True, "pid": os.getpid()})
    if runner.use_main_thread:
        runner.run_main_loop(server.stopped)
    else:
        while not server.stopped.wait(1.0):
            pass
    try:
        adapter.teardown()
    except Exception:
        traceback.print_exc()
    try:
        os.unlink(args.socket)
    except OSError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
