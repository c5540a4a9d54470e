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


_prctl = None


def _set_pdeathsig() -> None:
    global _prctl
    try:
        if _prctl is None:  # kept: a forked worker reuses the zygote's
            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
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
    try:
        loop.run_until_complete(_warm_up_service(loop))
    finally:
        loop.close()


class _InlineRunner:
    """Stands in for the worker's RequestRunner during the warm-up: runs nothing on threads."""

    use_main_thread = True

    def __init__(self) -> None:
        self.queued: list = []

    def submit(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.queued.append(fn)

    def interrupt(self, ctx) -> None:  # type: ignore[no-untyped-def]
        pass

    def stop(self) -> None:
        pass


async def _warm_up_service(loop) -> None:  # type: ignore[no-untyped-def]
    """Drive a WorkerService through a Dispatch stream (a single request and a batch), a
    Ping and its metrics, with no gRPC object: the Python paths of a worker's first requests."""
    import asyncio

    from ..protocol import codec
    from ..protocol import worker_pb2 as pb
    from .builtin import DefaultAdapter
    from .server import WorkerService

    adapter = DefaultAdapter()
    adapter.worker_id = "warm-up"
    runner = _InlineRunner()
    service = WorkerService(adapter, worker_id="warm-up", capacity=1, max_message_bytes=1 << 20,
                            runner=runner, on_shutdown=lambda: None)  # type: ignore[arg-type]
    service.loop = loop
    batch = [pb.Request(request_id=2, command="echo", payload=codec.dumps({"x": 1}, "warm-up")),
             pb.Request(request_id=3, command="call",
                        payload=codec.dumps({"fn": os.getpid, "args": (), "kwargs": {}}, "warm-up")),
             pb.Request(request_id=4, command="no-such-command")]
    expected = 1 + len(batch)
    answered = asyncio.Event()
    written: list = []

    class Context:
        async def write(self, reply) -> None:  # type: ignore[no-untyped-def]
            written.extend(codec.unpack(reply.payload) if reply.request_id == 0 else [reply])
            if len(written) >= expected:
                answered.set()

    async def requests():  # type: ignore[no-untyped-def]
        yield pb.Request(request_id=1, command="ping", payload=codec.dumps({}, "warm-up"))
        yield codec.batch_request([r.SerializeToString() for r in batch])
        await answered.wait()

    task = asyncio.ensure_future(service.Dispatch(requests(), Context()))
    for _ in range(1000):
        await asyncio.sleep(0)
        while runner.queued:
            runner.queued.pop(0)()
        if answered.is_set() or task.done():
            break
    await service.Ping(pb.PingRequest(message="warm-up"), None)

    class PingContext:
        @staticmethod
        def time_remaining() -> float:
            return 1.0

    # The heartbeat with figures (imports snakepit.lifecycle, reads this process's memory).
    await service.Ping(pb.PingRequest(message="warm-up", want_metrics=True, memory_max_age_s=0.0), PingContext())
    service.metrics()
    await asyncio.wait_for(task, 1.0)


def _fill_free_blocks() -> list:
    """Use up the free blocks of pymalloc's partly used pools (sizes from
    ``sys._debugmallocstats``), and hold them. A forked worker's new small objects then go
    to fresh pools instead of into pages it shares with the zygote, each of which a single
    new object would copy (issue 7: ≈ 0.25 MB USS per worker)."""
    import re
    import tempfile

    try:
        with tempfile.TemporaryFile() as tmp:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(tmp.fileno(), 2)
            try:
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
    except (AttributeError, OSError):
        return []
    keep: list = []
    # "class size num-pools blocks-in-use avail-blocks"
    for m in re.finditer(r"^\s*\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s*$", text, re.M):
        size, avail = int(m.group(1)), int(m.group(2))
        if size <= 16:
            keep.extend(object() for _ in range(avail))  # 16 bytes
        elif size <= 32:
            keep.extend(2**40 + i for i in range(avail))  # a 32-byte int
        else:
            n = size - 33  # a bytes object of length n takes 33 + n bytes
            keep.extend(bytes(n) for _ in range(avail))
    return keep


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _fill_malloc_bins() -> list:
    """The same for glibc malloc's free chunks: hold them, so that what a forked worker
    mallocs (gRPC's core, large Python objects) extends the heap instead of writing into pages
    shared with the zygote (≈ 0.3 MB USS per worker). Best effort: glibc ≥ 2.33 only."""
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return []
    mallinfo2.restype = _MallInfo2
    malloc, free = libc.malloc, libc.free
    malloc.restype, malloc.argtypes, free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    held: list = [libc]  # kept, like the chunks: a dropped CDLL is cyclic garbage
    for size in (65536, 32768, 16384, 8192, 4096, 2048, 1024, 512, 256, 128, 64, 32, 16):
        for _ in range(20000):
            before = mallinfo2()
            ptr = malloc(size)
            after = mallinfo2()
            if not ptr or after.keepcost < before.keepcost or after.arena > before.arena:
                free(ptr)  # carved from the top of the heap: no free chunk of this size is left
                break
            held.append(ptr)
    return held


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

    from . import builtin, lane, server  # noqa: F401

    try:
        preload_modules()  # the pool's preload: imported once here, shared by every worker
    except Exception as exc:  # noqa: BLE001 - each worker imports it again and reports the error
        print(f"snakepit zygote: {exc}", file=sys.stderr)
    global _held
    try:
        for _ in range(2):  # more rounds measured no different (idle USS)
            _warm_up()
        _parser()  # built once, reused by every worker
        gc.collect()
        # The fills create no cyclic garbage: no collection runs after them (≈ 6 ms each).
        _held = (_fill_malloc_bins(), _fill_free_blocks())
    except Exception as exc:  # noqa: BLE001 - only memory and speed depend on it
        print(f"snakepit zygote: warm-up failed, workers will use more memory: {exc!r}", file=sys.stderr)
        gc.collect()
    gc.freeze()  # keep the collector from touching (and so copying) the inherited objects
    start_cwd = os.getcwd()
    # sys.path without what our own PYTHONPATH put there (but the interpreter's own paths, which
    # it may repeat): a worker puts its pool's PYTHONPATH in front instead (below).
    own_pythonpath = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    interpreter = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    import site

    user_site = getattr(site, "USER_SITE", None)
    base_path = [p for p in sys.path[1:] if p not in own_pythonpath or p.startswith(interpreter) or p == user_site]
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
            # Only what differs: rewriting every variable would copy the pages that hold them.
            env = req["env"]
            for name in [name for name in os.environ if name not in env]:
                del os.environ[name]
            for name, value in env.items():
                if os.environ.get(name) != value:
                    os.environ[name] = value
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


_held: tuple = ()  # what the zygote allocated to fill free memory (never freed)
_parser_cache: list[argparse.ArgumentParser] = []


def _parser() -> argparse.ArgumentParser:
    if _parser_cache:  # built in the zygote: a forked worker does not build it again
        return _parser_cache[0]
    parser = argparse.ArgumentParser(prog="python -m snakepit.worker")
    parser.add_argument("--socket", default="")
    # A cluster worker (the Dask backend): TCP instead of a Unix socket, every call
    # authenticated with the pool's secret, TLS optional, and a lease (see worker/lease.py).
    parser.add_argument("--listen", default="", help="HOST:PORT to serve on (port 0: any free one)")
    parser.add_argument("--secret-file", default="", help="owner-only file holding the pool's secret")
    parser.add_argument("--tls-cert", default="")
    parser.add_argument("--tls-key", default="")
    parser.add_argument("--tls-ca", default="")
    parser.add_argument("--lease", type=float, default=0.0, help="exit after this many seconds without renewal")
    parser.add_argument("--lease-first", type=float, default=0.0, help="the first renewal may take this long")
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--profile", choices=("process", "thread"), default="process")
    parser.add_argument("--capacity", type=int, default=1)
    parser.add_argument("--ready-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--options-file", default="")
    parser.add_argument("--max-message-bytes", type=int, default=256 * 2**20)
    _parser_cache.append(parser)
    return parser


PRELOAD_ENV = "SNAKEPIT_PRELOAD"


def preload_modules() -> None:
    """Import the modules of ``PoolConfig.preload`` (``$SNAKEPIT_PRELOAD``, comma-separated).

    In a forked worker they were imported once by the zygote, so this costs nothing and their
    pages stay shared; a spawned worker imports them here.

    Raises:
        RuntimeError: a module could not be imported (the worker's start fails with it).
    """
    for name in filter(None, (n.strip() for n in os.environ.get(PRELOAD_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise RuntimeError(f"cannot preload module {name!r}: {type(exc).__name__}: {exc}") from exc


def _tcp_options(args: argparse.Namespace) -> tuple:
    """``(listen, server credentials, interceptors)`` of a cluster worker; ``(None, None, ())``
    for a local one (Unix socket)."""
    if bool(args.listen) == bool(args.socket):
        raise RuntimeError("give exactly one of --socket and --listen")
    if not args.listen:
        return None, None, ()
    import grpc

    from .auth import SecretInterceptor, read_secret

    if not args.secret_file:
        raise RuntimeError("--listen needs --secret-file: no worker answers on TCP without authentication")
    secret = read_secret(args.secret_file)
    renew = None
    if args.lease > 0:
        from .lease import Lease

        lease = Lease(args.lease, args.lease_first or None)
        lease.start()
        renew = lease.renew
    credentials = None
    if args.tls_cert or args.tls_key:
        with open(args.tls_key, "rb") as fh:
            key = fh.read()
        with open(args.tls_cert, "rb") as fh:
            cert = fh.read()
        ca = None
        if args.tls_ca:
            with open(args.tls_ca, "rb") as fh:
                ca = fh.read()
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                                  require_client_auth=ca is not None)
    return args.listen, credentials, (SecretInterceptor(secret, renew),)


def _run_worker(args: argparse.Namespace) -> int:
    _watch_parent(args.parent_pid)
    try:
        from .builtin import install_output_routing
        from ..protocol.framing import lane_path
        from .lane import LaneServer
        from .runner import RequestRunner
        from .server import WorkerService, serve

        preload_modules()
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
        listen, credentials, interceptors = _tcp_options(args)
        server = holder["server"] = serve(service, args.socket or None, listen=listen,
                                          credentials=credentials, interceptors=interceptors)
        lane = LaneServer(service, lane_path(args.socket)) if args.socket else None
    except BaseException as exc:  # noqa: BLE001 - every start failure is reported
        _report(args.ready_fd, {"ok": False, "error": f"{exc}", "traceback": traceback.format_exc()})
        return 1

    runner.install_interrupt_handler(service)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    _report(args.ready_fd, {"ok": True, "pid": os.getpid(), "port": server.port})
    if runner.use_main_thread:
        runner.run_main_loop()
    else:
        while not server.stopped.wait(1.0):
            pass
    if lane is not None:
        lane.close()
    try:
        adapter.teardown()
    except Exception:
        traceback.print_exc()
    if args.socket:
        try:
            os.unlink(args.socket)
        except OSError:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
