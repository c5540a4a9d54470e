"""Entry point of a worker process: ``python -m snakepit.worker --socket PATH ...``.

Start-up: watchdogs first (so a dead manager never leaves us behind), then the adapter,
then the gRPC server; then one JSON line on the ready pipe tells the manager the outcome.
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
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the stdin pipe still covers it
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


def _report(fd: int, payload: dict) -> None:
    with os.fdopen(fd, "w") as ready:
        ready.write(json.dumps(payload) + "\n")


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

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
