"""The admin service a pool manager publishes: a token-checked gRPC server on a private Unix socket.

:func:`publish` starts it (and writes the discovery file), :func:`withdraw` stops it;
:func:`on_pool_event` does both as the pool registry's listener (see :func:`install`).
"""
from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import os
import secrets
import sys
import threading
import time
from concurrent import futures
from typing import Any

from .. import runtime
from ..signals import signals_blocked
from . import discovery
from .discovery import DISCOVERY_SUFFIX, TOKEN_METADATA_KEY, process_start_time, snakepit_version
from .reports import collect_inspection, dumps, pool_listing, pool_summaries, run_report

log = logging.getLogger("snakepit.admin")

SOCKET_NAME = "admin.sock"
_MAX_UNIX_PATH = 107

_lock = threading.RLock()
_endpoint: "Endpoint | None" = None
_atexit_registered = False
_enabled: bool | None = None


def _command_line() -> str:
    try:
        import psutil  # noqa: PLC0415

        text = " ".join(psutil.Process().cmdline())
    except Exception:
        text = " ".join(sys.argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _make_servicer(endpoint: "Endpoint") -> Any:
    import grpc  # noqa: PLC0415

    from ..protocol import admin_pb2 as apb  # noqa: PLC0415
    from ..protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

    def find_pool(name: str, context: Any) -> Any:
        from .. import api  # noqa: PLC0415
        from ..errors import PoolNotFoundError  # noqa: PLC0415

        try:
            return api.get_pool(name)
        except PoolNotFoundError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    def guarded(method: Any) -> Any:
        import functools  # noqa: PLC0415

        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: Any) -> Any:
            try:
                return method(self, request, context)
            except Exception as exc:
                if context.code() is not None:  # context.abort() was called
                    raise
                log.warning("admin call %s failed: %s: %s", method.__name__, type(exc).__name__, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

        return wrapper

    class AdminServicer(apb_grpc.AdminServicer):
        @guarded
        def Hello(self, request: Any, context: Any) -> Any:
            from .. import api  # noqa: PLC0415

            summaries = pool_summaries(api.list_pools())
            names = [s["name"] for s in summaries]
            if names != endpoint.pool_names:  # a pool was stopped since: keep the discovery file current
                try:
                    endpoint.write_discovery(names)
                except OSError:
                    pass
            now = time.time()
            started = endpoint.process_started_at or endpoint.published_at
            return apb.HelloReply(
                pid=os.getpid(), version=snakepit_version(), started_at=started, uptime_s=max(0.0, now - started),
                pools=[apb.PoolSummary(**s) for s in summaries], command=_command_line(),
                python=sys.version.split()[0], published_at=endpoint.published_at,
            )

        @guarded
        def ListPools(self, request: Any, context: Any) -> Any:
            from .. import api  # noqa: PLC0415

            return apb.JsonReply(json=dumps({"pid": os.getpid(), "pools": pool_listing(api.list_pools())}))

        @guarded
        def Inspect(self, request: Any, context: Any) -> Any:
            from .. import api  # noqa: PLC0415

            pools = [find_pool(request.pool, context)] if request.pool else api.list_pools()
            try:
                report = collect_inspection(pools, detailed=request.detailed,
                                            recommendations=request.recommendations)
            except ImportError as exc:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"diagnostics are not available: {exc}")
            return apb.JsonReply(json=dumps(report))

        @guarded
        def Report(self, request: Any, context: Any) -> Any:
            pool = find_pool(request.pool, context) if request.pool else None
            try:
                params = json.loads(request.params_json) if request.params_json else {}
                if not isinstance(params, dict):
                    raise ValueError("params_json must be a JSON object")
                data = run_report(request.kind, pool, params)
            except (ValueError, TypeError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except ImportError as exc:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"diagnostics are not available: {exc}")
            return apb.JsonReply(json=dumps(data))

        @guarded
        def RecycleWorker(self, request: Any, context: Any) -> Any:
            pool = find_pool(request.pool, context)
            try:
                pool.recycle_worker(request.worker_id)
            except KeyError as exc:
                return apb.RecycleWorkerReply(accepted=False, message=str(exc.args[0] if exc.args else exc))
            except Exception as exc:
                return apb.RecycleWorkerReply(accepted=False, message=f"{type(exc).__name__}: {exc}")
            log.info("worker %s of pool %s recycled through the admin endpoint", request.worker_id, request.pool)
            return apb.RecycleWorkerReply(accepted=True, message=f"recycling {request.worker_id}")

    return AdminServicer()


def _token_interceptor(token: str) -> Any:
    import grpc  # noqa: PLC0415

    expected = token.encode()

    def deny(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong snakepit admin token")

    deny_handler = grpc.unary_unary_rpc_method_handler(deny)

    class TokenInterceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
            given = ""
            for key, value in handler_call_details.invocation_metadata or ():
                if key == TOKEN_METADATA_KEY:
                    given = value if isinstance(value, str) else value.decode(errors="replace")
                    break
            if given and hmac.compare_digest(given.encode(), expected):
                return continuation(handler_call_details)
            return deny_handler

    return TokenInterceptor()


@dataclasses.dataclass
class Endpoint:
    """This process's published admin endpoint (see :func:`publish`)."""

    pid: int
    socket_path: str
    token: str = dataclasses.field(repr=False)
    discovery_path: str = ""
    published_at: float = 0.0
    process_started_at: float | None = None
    pool_names: list[str] = dataclasses.field(default_factory=list)
    _server: Any = dataclasses.field(repr=False, default=None)
    _executor: Any = dataclasses.field(repr=False, default=None)

    def address(self) -> str:
        return "unix:" + self.socket_path

    def write_discovery(self, pool_names: list[str]) -> None:
        """(Re)write the discovery file atomically, mode 0600."""
        data = {
            "pid": self.pid,
            "socket": self.socket_path,
            "transport": "unix",
            "token": self.token,
            "started_at": self.process_started_at,
            "published_at": self.published_at,
            "pools": pool_names,
            "version": snakepit_version(),
            "python": sys.executable,
        }
        self.pool_names = list(pool_names)
        discovery.write_discovery(self.discovery_path, data)


def set_enabled(enabled: bool | None) -> None:
    """Turn publishing on or off for this process (``None``: follow ``$SNAKEPIT_ADMIN``).

    Turning it off withdraws a published endpoint.
    """
    global _enabled
    _enabled = enabled
    if enabled is False:
        withdraw()


def _is_enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get("SNAKEPIT_ADMIN", "1").strip().lower() not in ("0", "false", "no", "off")


def current_endpoint() -> Endpoint | None:
    """The endpoint this process publishes, or None."""
    with _lock:
        if _endpoint is not None and _endpoint.pid == os.getpid():
            return _endpoint
        return None


def publish() -> Endpoint:
    """Publish this process's admin endpoint (idempotent) and return it.

    Called for you when the first pool starts. The discovery file lists the pools running now.

    Example::

        >>> ep = snakepit.admin.publish()            # doctest: +SKIP
        >>> ep.discovery_path
        '/run/user/1000/snakepit/12345.admin.json'
    """
    global _endpoint
    from .. import api  # noqa: PLC0415

    with _lock:
        ep = current_endpoint()
        if ep is None:
            if _endpoint is not None:  # inherited through fork: not ours to serve or delete
                _endpoint = None
            ep = _endpoint = _start_endpoint()
        ep.write_discovery([p.name for p in api.list_pools()])
        return ep


def _start_endpoint() -> Endpoint:
    global _atexit_registered
    import grpc  # noqa: PLC0415

    from ..protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

    pid = os.getpid()
    socket_path = os.path.join(runtime.process_dir(), SOCKET_NAME)
    if len(socket_path) > _MAX_UNIX_PATH:
        raise OSError(f"admin socket path is too long for a Unix socket: {socket_path!r} "
                      "(set SNAKEPIT_RUNTIME_DIR to a shorter directory)")
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    ep = Endpoint(
        pid=pid, socket_path=socket_path, token=secrets.token_urlsafe(32),
        discovery_path=os.path.join(runtime.base_dir(), f"{pid}{DISCOVERY_SUFFIX}"),
        published_at=time.time(), process_started_at=process_start_time(pid),
    )
    executor = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="snakepit-admin")
    server = grpc.server(
        executor, interceptors=[_token_interceptor(ep.token)], maximum_concurrent_rpcs=16,
        options=[("grpc.max_send_message_length", 64 << 20)],
    )
    apb_grpc.add_AdminServicer_to_server(_make_servicer(ep), server)
    address = ep.address()
    assert address.startswith("unix:"), "the admin endpoint only listens on Unix sockets"
    # The socket's directory is private (0700) from the start; the socket itself is made 0600
    # too (no process-wide umask change: other threads may be creating files right now).
    server.add_insecure_port(address)
    with signals_blocked():  # gRPC's serving threads must leave Ctrl-C to the main thread
        server.start()
    try:
        os.chmod(socket_path, 0o600)
    except OSError:
        pass
    ep._server = server
    ep._executor = executor
    if not _atexit_registered:
        import atexit  # noqa: PLC0415

        atexit.register(withdraw)
        _atexit_registered = True
    log.debug("admin endpoint published at %s", socket_path)
    return ep


def withdraw() -> None:
    """Stop serving the admin endpoint and remove its discovery file and socket. Idempotent."""
    global _endpoint
    with _lock:
        ep = _endpoint
        _endpoint = None
    if ep is None or ep.pid != os.getpid():
        return
    for path in (ep.discovery_path, ep.socket_path):
        try:
            os.unlink(path)
        except OSError:
            pass
    if ep._server is not None:
        ep._server.stop(grace=0.5).wait(5.0)
    if ep._executor is not None:
        ep._executor.shutdown(wait=True, cancel_futures=True)


def on_pool_event(kind: str, pool: Any) -> None:
    """The pool registry's listener (see :func:`install`): publish when a pool starts, withdraw
    at shutdown."""
    if kind == "started":
        if not _is_enabled():
            return
        try:
            publish()
        except Exception as exc:  # never fail start_pool because of the admin endpoint
            log.warning("could not publish the snakepit admin endpoint: %s", exc)
    elif kind == "shutdown":
        withdraw()


def install() -> None:
    """Register :func:`on_pool_event` with the pool registry (:func:`snakepit.api.add_listener`;
    idempotent). :func:`snakepit.start_pool` does it for you."""
    from .. import api  # noqa: PLC0415

    api.add_listener("admin", on_pool_event)
