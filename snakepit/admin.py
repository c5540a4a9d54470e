"""The admin endpoint: look at (and act on) the pools of another process.

A pool usually lives inside a Jupyter kernel; an operator looks at it from a terminal with
``snakepit profile-inspector``. To make that possible every pool manager process publishes,
when its first pool starts (:func:`snakepit.start_pool`), a small gRPC service
(``snakepit/protocol/admin.proto``) and a discovery file, the way Jupyter publishes its
kernels' connection files:

* the service listens on an **owner-only Unix domain socket** in the process's private
  runtime directory (:func:`snakepit.runtime.process_dir`, mode 0700; the socket is 0600).
  It never binds a network address.
* the discovery file ``<runtime dir>/<pid>.admin.json`` (mode 0600) holds the pid, the
  socket path, a random **token**, the process start time and the pool names.
* every call must carry the token in the ``x-snakepit-token`` metadata entry; without it,
  or with a wrong one, the call is refused with ``UNAUTHENTICATED``.
* discovery files of dead processes are removed by :func:`discover` (and by
  :func:`snakepit.runtime.sweep_stale`); the endpoint is withdrawn by
  :func:`snakepit.shutdown` and at interpreter exit.

The service runs on its own small thread pool and only reads the pools through their
public surface and :mod:`snakepit.diagnostics`: an inspection never blocks requests.

Set ``SNAKEPIT_ADMIN=0`` in the environment (or call :func:`set_enabled(False)`) to publish
nothing.

Client side, from any process of the same user::

    from snakepit import admin

    for manager in admin.discover():                 # live managers on this machine
        with admin.AdminClient(manager) as client:
            print(client.hello()["pools"])
            report = client.inspect()                # {"default": {...pool stats...}, ...}
            print(report["default"]["utilization_percent"])
            client.recycle_worker("default", "default-w1")
"""
from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import math
import os
import secrets
import sys
import threading
import time
from concurrent import futures
from typing import Any, Iterable, Mapping

from . import runtime
from .signals import signals_blocked

log = logging.getLogger("snakepit.admin")

__all__ = [
    "AdminClient",
    "AdminError",
    "Endpoint",
    "Manager",
    "TOKEN_METADATA_KEY",
    "collect_inspection",
    "connect",
    "current_endpoint",
    "discover",
    "install",
    "pool_config_dict",
    "publish",
    "run_report",
    "set_enabled",
    "withdraw",
]

TOKEN_METADATA_KEY = "x-snakepit-token"
DISCOVERY_SUFFIX = ".admin.json"
SOCKET_NAME = "admin.sock"
_MAX_UNIX_PATH = 107

_lock = threading.RLock()
_endpoint: "Endpoint | None" = None
_installed = False
_enabled: bool | None = None


class AdminError(Exception):
    """An admin call failed: the manager is gone, refused the token, or answered an error.

    ``code`` is the gRPC status name (``"UNAUTHENTICATED"``, ``"NOT_FOUND"``,
    ``"UNAVAILABLE"``, …) when there is one.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- JSON helpers
def _jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value`` (NaN/inf become None; unknown objects become str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        to_dict = getattr(value, "to_dict", None)
        return _jsonable(to_dict() if callable(to_dict) else dataclasses.asdict(value))
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return _jsonable(to_dict())
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return _jsonable(item())
        except Exception:
            pass
    return str(value)


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), allow_nan=False)


# ---------------------------------------------------------------------------- reports
_CONFIG_KEYS = (
    "profile", "pool_size", "threads_per_worker", "adapter", "worker_ttl", "worker_max_requests",
    "memory_threshold_mb", "recycle_jitter", "recycle_grace", "max_queue_size", "queue_timeout",
    "request_timeout", "startup_timeout", "heartbeat_interval", "heartbeat_max_missed",
    "max_message_mb", "history_interval", "history_size", "python", "cwd",
)


def pool_config_dict(pool: Any) -> dict[str, Any]:
    """The pool's settings that are safe to show (``env`` values and adapter options are left out).

    Example::

        >>> pool_config_dict(snakepit.get_pool("default"))["pool_size"]   # doctest: +SKIP
        2
    """
    cfg = pool.config
    out = {key: getattr(cfg, key, None) for key in _CONFIG_KEYS}
    out["capacity_per_worker"] = cfg.threads_per_worker if cfg.profile == "thread" else 1
    out["env_keys"] = sorted(getattr(cfg, "env", {}) or {})
    return out


def _section(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return _jsonable(fn(*args, **kwargs))
    except Exception as exc:  # one failing report must not hide the others
        log.debug("diagnostics call %s failed", getattr(fn, "__name__", fn), exc_info=True)
        return {"error": f"{type(exc).__name__}: {exc}"}


_DIAGNOSTICS_API = (
    "get_pool_stats", "get_capacity_stats", "get_memory_stats", "get_comprehensive_report",
    "check_saturation", "get_recommendations", "get_history", "project_memory", "utilization_level",
)


def _diagnostics() -> Any:
    """:mod:`snakepit.diagnostics` (imported on first use: it pulls in pandas)."""
    from . import diagnostics  # noqa: PLC0415

    missing = [name for name in _DIAGNOSTICS_API if not hasattr(diagnostics, name)]
    if missing:
        raise ImportError(f"snakepit.diagnostics lacks {', '.join(missing)}")
    return diagnostics


def collect_inspection(pools: Iterable[Any], *, detailed: bool = False,
                       recommendations: bool = False) -> dict[str, Any]:
    """The inspector's report of ``pools``, as JSON-ready data keyed by pool name.

    Each value is the pool's ``PoolStats.to_dict()`` (``pool_name, profile, worker_count,
    capacity_total, capacity_used, capacity_available, utilization_percent, workers``) plus:
    ``utilization_level`` (CRITICAL/HIGH/GOOD/LOW), ``config`` (the pool's settings),
    ``statistics`` (counters and queue depth), ``capacity``, ``memory`` and ``saturation``
    reports, ``recommendations`` (when asked; a list of dicts with ``severity, rule, message,
    evidence, suggestion, text``) and ``manager`` (pid of the process holding the pool).
    This runs in the process that owns the pools (the admin service, ``snakepit demo``).

    Example::

        >>> report = collect_inspection(snakepit.list_pools())     # doctest: +SKIP
        >>> report["default"]["utilization_percent"]
        0.0
    """
    diag = _diagnostics()
    out: dict[str, Any] = {}
    for pool in pools:
        stats = _section(diag.get_pool_stats, pool)
        entry: dict[str, Any] = dict(stats) if isinstance(stats, dict) else {"error": str(stats)}
        entry.setdefault("pool_name", pool.name)
        entry.setdefault("profile", pool.profile.name)
        pct = entry.get("utilization_percent")
        if isinstance(pct, (int, float)):
            entry["utilization_level"] = _section(diag.utilization_level, pct)
        entry["config"] = _jsonable(pool_config_dict(pool))
        entry["statistics"] = _section(pool.statistics)
        entry["capacity"] = _section(diag.get_capacity_stats, pool)
        entry["memory"] = _section(diag.get_memory_stats, pool)
        entry["saturation"] = _section(diag.check_saturation, pool)
        if detailed:
            entry["worker_info"] = _section(lambda: [dataclasses.asdict(w) for w in pool.list_workers()])
        if recommendations:
            entry["recommendations"] = _section(_recommendations, diag, pool)
        entry["manager"] = {"pid": os.getpid()}
        out[pool.name] = entry
    return out


def _recommendations(diag: Any, pool: Any) -> list[dict[str, Any]]:
    recs = diag.get_recommendations(pool)
    items = []
    for rec in recs:
        data = _jsonable(rec)
        if not isinstance(data, dict):
            data = {"message": str(rec)}
        data["text"] = str(rec)
        items.append(data)
    return items


_REPORTS = {
    "pool_stats": "get_pool_stats",
    "capacity": "get_capacity_stats",
    "memory": "get_memory_stats",
    "saturation": "check_saturation",
    "recommendations": "get_recommendations",
    "history": "get_history",
    "projection": "project_memory",
}


def run_report(kind: str, pool: Any | None, params: Mapping[str, Any]) -> Any:
    """One diagnostics report by name, as JSON-ready data (see ``ReportRequest`` in admin.proto)."""
    diag = _diagnostics()
    if kind == "comprehensive":
        return _jsonable(diag.get_comprehensive_report())
    if kind not in _REPORTS:
        raise ValueError(f"unknown report {kind!r}; one of {sorted(_REPORTS) + ['comprehensive']}")
    if pool is None:
        raise ValueError(f"report {kind!r} needs a pool")
    fn = getattr(diag, _REPORTS[kind])
    if kind == "recommendations":
        return _recommendations(diag, pool)
    return _jsonable(fn(pool, **dict(params)))


# ---------------------------------------------------------------------------- the service
def _pool_summaries() -> list[dict[str, Any]]:
    from . import api  # noqa: PLC0415

    out = []
    for pool in api.list_pools():
        try:
            workers = pool.list_workers()
        except Exception:
            workers = []
        out.append({
            "name": pool.name,
            "profile": pool.profile.name,
            "workers": len(workers),
            "capacity": sum(w.capacity for w in workers),
            "load": sum(w.load for w in workers),
            "queue_depth": pool.queue_depth(),
        })
    return out


def _process_start_time(pid: int) -> float | None:
    try:
        import psutil  # noqa: PLC0415

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _command_line() -> str:
    try:
        import psutil  # noqa: PLC0415

        text = " ".join(psutil.Process().cmdline())
    except Exception:
        text = " ".join(sys.argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _make_servicer(endpoint: "Endpoint") -> Any:
    import grpc  # noqa: PLC0415

    from .protocol import admin_pb2 as apb  # noqa: PLC0415
    from .protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

    def find_pool(name: str, context: Any) -> Any:
        from . import api  # noqa: PLC0415
        from .errors import PoolNotFoundError  # noqa: PLC0415

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
            summaries = _pool_summaries()
            names = [s["name"] for s in summaries]
            if names != endpoint.pool_names:  # a pool was stopped since: keep the discovery file current
                try:
                    endpoint.write_discovery(names)
                except OSError:
                    pass
            now = time.time()
            started = endpoint.process_started_at or endpoint.published_at
            return apb.HelloReply(
                pid=os.getpid(), version=_version(), started_at=started, uptime_s=max(0.0, now - started),
                pools=[apb.PoolSummary(**s) for s in summaries], command=_command_line(),
                python=sys.version.split()[0], published_at=endpoint.published_at,
            )

        @guarded
        def ListPools(self, request: Any, context: Any) -> Any:
            from . import api  # noqa: PLC0415

            pools = []
            for pool in api.list_pools():
                pools.append({
                    "name": pool.name,
                    "profile": pool.profile.name,
                    "config": pool_config_dict(pool),
                    "statistics": _section(pool.statistics),
                    "workers": [dataclasses.asdict(w) for w in pool.list_workers()],
                })
            return apb.JsonReply(json=_dumps({"pid": os.getpid(), "pools": pools}))

        @guarded
        def Inspect(self, request: Any, context: Any) -> Any:
            from . import api  # noqa: PLC0415

            pools = [find_pool(request.pool, context)] if request.pool else api.list_pools()
            try:
                report = collect_inspection(pools, detailed=request.detailed,
                                            recommendations=request.recommendations)
            except ImportError as exc:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, f"diagnostics are not available: {exc}")
            return apb.JsonReply(json=_dumps(report))

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
            return apb.JsonReply(json=_dumps(data))

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


def _version() -> str:
    try:
        from . import __version__  # noqa: PLC0415

        return str(__version__)
    except Exception:
        return "?"


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
            "version": _version(),
            "python": sys.executable,
        }
        self.pool_names = list(pool_names)
        tmp = f"{self.discovery_path}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1)
            os.replace(tmp, self.discovery_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


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
    from . import api  # noqa: PLC0415

    with _lock:
        ep = current_endpoint()
        if ep is None:
            if _endpoint is not None:  # inherited through fork: not ours to serve or delete
                _endpoint = None
            ep = _endpoint = _start_endpoint()
        ep.write_discovery([p.name for p in api.list_pools()])
        return ep


def _start_endpoint() -> Endpoint:
    import grpc  # noqa: PLC0415

    from .protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

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
        published_at=time.time(), process_started_at=_process_start_time(pid),
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


def _on_pool_event(kind: str, pool: Any) -> None:
    """Listener registered in :mod:`snakepit.api`: publish on the first pool, withdraw at shutdown."""
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
    """Register the admin hooks with :mod:`snakepit.api` (idempotent; done by ``start_pool``)."""
    global _installed
    from . import api  # noqa: PLC0415

    with _lock:
        if _installed and _on_pool_event in api._listeners:
            return
        if _on_pool_event not in api._listeners:
            api._listeners.append(_on_pool_event)
        _installed = True
    import atexit  # noqa: PLC0415

    atexit.register(withdraw)


# ---------------------------------------------------------------------------- client side
@dataclasses.dataclass(frozen=True)
class Manager:
    """A live pool manager process found by :func:`discover` (its discovery file's content)."""

    pid: int
    socket: str
    token: str = dataclasses.field(repr=False)
    path: str = ""
    started_at: float | None = None
    published_at: float | None = None
    pools: tuple[str, ...] = ()
    version: str = ""
    python: str = ""

    @property
    def uptime_s(self) -> float | None:
        return time.time() - self.started_at if self.started_at else None


def _read_discovery(path: str) -> Manager | None:
    """Parse one discovery file; None if it is not ours, not private, or malformed."""
    try:
        st = os.stat(path)
        if st.st_uid != os.getuid() or st.st_mode & 0o077:
            log.warning("ignoring %s: not a private file of this user", path)
            return None
        with open(path) as fh:
            data = json.load(fh)
        return Manager(
            pid=int(data["pid"]), socket=str(data["socket"]), token=str(data["token"]), path=path,
            started_at=data.get("started_at"), published_at=data.get("published_at"),
            pools=tuple(data.get("pools") or ()), version=str(data.get("version", "")),
            python=str(data.get("python", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(manager: Manager) -> bool:
    if not runtime._pid_alive(manager.pid):
        return False
    if manager.started_at is not None:  # the pid may have been reused by another process
        started = _process_start_time(manager.pid)
        if started is not None and abs(started - manager.started_at) > 2.0:
            return False
    return os.path.exists(manager.socket)


def discover(*, include_self: bool = True, cleanup: bool = True) -> list[Manager]:
    """The live pool managers of this user on this machine, oldest first.

    Discovery files of dead processes are removed (with ``cleanup``), together with the
    runtime directories those processes left behind.

    Example::

        >>> [(m.pid, m.pools) for m in snakepit.admin.discover()]     # doctest: +SKIP
        [(4242, ('default', 'hpc'))]
    """
    base = runtime.base_dir()
    found: list[Manager] = []
    stale = False
    for name in sorted(os.listdir(base)):
        if not name.endswith(DISCOVERY_SUFFIX):
            continue
        path = os.path.join(base, name)
        manager = _read_discovery(path)
        if manager is None:
            continue
        if not _alive(manager):
            stale = True
            if cleanup:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            continue
        if not include_self and manager.pid == os.getpid():
            continue
        found.append(manager)
    if stale and cleanup:
        try:
            runtime.sweep_stale()
        except OSError:
            pass
    found.sort(key=lambda m: (m.started_at or 0.0, m.pid))
    return found


def connect(target: str | int | None = None) -> "AdminClient":
    """A client for one manager: by pid, by discovery-file path, or the only live one.

    Raises:
        AdminError: no live manager matches, or several do and ``target`` is None.
    """
    if target is not None and (os.sep in str(target) or str(target).endswith(".json")):
        manager = _read_discovery(str(target))
        if manager is None:
            raise AdminError(f"{target} is not a readable snakepit discovery file", "NOT_FOUND")
        if not _alive(manager):
            raise AdminError(f"the manager of {target} (pid {manager.pid}) is not running", "UNAVAILABLE")
        return AdminClient(manager)
    managers = discover()
    if target is not None:
        try:
            pid = int(target)
        except (TypeError, ValueError):
            raise AdminError(f"--target must be a pid or a discovery file, got {target!r}") from None
        managers = [m for m in managers if m.pid == pid]
        if not managers:
            raise AdminError(f"no live snakepit pool manager with pid {pid}", "NOT_FOUND")
    if not managers:
        raise AdminError("no live snakepit pool manager found", "NOT_FOUND")
    if len(managers) > 1:
        raise AdminError("several live pool managers: choose one with a pid ("
                         + ", ".join(str(m.pid) for m in managers) + ")", "FAILED_PRECONDITION")
    return AdminClient(managers[0])


class AdminClient:
    """Talks to one manager's admin endpoint. Use it as a context manager.

    Every method raises :class:`AdminError` (with ``.code``) when the call fails.

    Example::

        with AdminClient(snakepit.admin.discover()[0]) as client:
            client.hello()             # {"pid": ..., "pools": [{"name": "default", ...}], ...}
            client.inspect("default")  # {"default": {"utilization_percent": 0.0, ...}}
    """

    def __init__(self, manager: Manager, *, token: str | None = None, timeout: float = 15.0) -> None:
        import grpc  # noqa: PLC0415

        from .protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

        self.manager = manager
        self.timeout = timeout
        self._metadata = ((TOKEN_METADATA_KEY, manager.token if token is None else token),)
        self._channel = grpc.insecure_channel("unix:" + manager.socket)
        self._stub = apb_grpc.AdminStub(self._channel)

    def _call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        import grpc  # noqa: PLC0415

        try:
            return getattr(self._stub, method)(request, metadata=self._metadata,
                                               timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else None
            detail = exc.details() or str(exc)
            if code == "UNAVAILABLE":
                detail = f"the manager (pid {self.manager.pid}) does not answer: {detail}"
            raise AdminError(detail, code) from None

    def hello(self) -> dict[str, Any]:
        """pid, version, started_at, uptime_s, command, python and ``pools`` (name, profile,
        workers, capacity, load, queue_depth)."""
        from .protocol import admin_pb2 as apb  # noqa: PLC0415

        reply = self._call("Hello", apb.HelloRequest())
        return {
            "pid": reply.pid, "version": reply.version, "started_at": reply.started_at,
            "uptime_s": reply.uptime_s, "command": reply.command, "python": reply.python,
            "published_at": reply.published_at,
            "pools": [
                {"name": p.name, "profile": p.profile, "workers": p.workers, "capacity": p.capacity,
                 "load": p.load, "queue_depth": p.queue_depth}
                for p in reply.pools
            ],
        }

    def list_pools(self) -> dict[str, Any]:
        """``{"pid": ..., "pools": [{"name", "profile", "config", "statistics", "workers": [...]}]}``."""
        from .protocol import admin_pb2 as apb  # noqa: PLC0415

        return json.loads(self._call("ListPools", apb.ListPoolsRequest()).json)

    def inspect(self, pool: str | None = None, *, detailed: bool = False,
                recommendations: bool = False) -> dict[str, Any]:
        """The inspector's report keyed by pool name (see :func:`collect_inspection`)."""
        from .protocol import admin_pb2 as apb  # noqa: PLC0415

        request = apb.InspectRequest(pool=pool or "", detailed=detailed, recommendations=recommendations)
        return json.loads(self._call("Inspect", request, timeout=max(self.timeout, 30.0)).json)

    def report(self, kind: str, pool: str | None = None, **params: Any) -> Any:
        """One diagnostics report by name: ``client.report("projection", "default", worker_counts=[2, 4])``."""
        from .protocol import admin_pb2 as apb  # noqa: PLC0415

        request = apb.ReportRequest(kind=kind, pool=pool or "", params_json=json.dumps(params) if params else "")
        return json.loads(self._call("Report", request).json)

    def recycle_worker(self, pool: str, worker_id: str) -> str:
        """Recycle a worker of ``pool``; raises :class:`AdminError` if it was refused."""
        from .protocol import admin_pb2 as apb  # noqa: PLC0415

        reply = self._call("RecycleWorker", apb.RecycleWorkerRequest(pool=pool, worker_id=worker_id))
        if not reply.accepted:
            raise AdminError(reply.message, "NOT_FOUND")
        return reply.message

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<snakepit.admin.AdminClient pid={self.manager.pid} socket={self.manager.socket!r}>"
