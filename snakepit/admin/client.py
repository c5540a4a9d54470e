"""The client side: attach to another process's admin endpoint (see :mod:`snakepit.admin`)."""
from __future__ import annotations

import json
import os
from typing import Any

from .discovery import TOKEN_METADATA_KEY, Manager, alive, discover, read_discovery


class AdminError(Exception):
    """An admin call failed: the manager is gone, refused the token, or answered an error.

    ``code`` is the gRPC status name (``"UNAUTHENTICATED"``, ``"NOT_FOUND"``,
    ``"UNAVAILABLE"``, …) when there is one.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


def connect(target: str | int | None = None) -> "AdminClient":
    """A client for one manager: by pid, by discovery-file path, or the only live one.

    Raises:
        AdminError: no live manager matches, or several do and ``target`` is None.
    """
    if target is not None and (os.sep in str(target) or str(target).endswith(".json")):
        manager = read_discovery(str(target))
        if manager is None:
            raise AdminError(f"{target} is not a readable snakepit discovery file", "NOT_FOUND")
        if not alive(manager):
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

        from ..protocol import admin_pb2_grpc as apb_grpc  # noqa: PLC0415

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
        from ..protocol import admin_pb2 as apb  # noqa: PLC0415

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
        from ..protocol import admin_pb2 as apb  # noqa: PLC0415

        return json.loads(self._call("ListPools", apb.ListPoolsRequest()).json)

    def inspect(self, pool: str | None = None, *, detailed: bool = False,
                recommendations: bool = False) -> dict[str, Any]:
        """The inspector's report keyed by pool name (see :func:`collect_inspection`)."""
        from ..protocol import admin_pb2 as apb  # noqa: PLC0415

        request = apb.InspectRequest(pool=pool or "", detailed=detailed, recommendations=recommendations)
        return json.loads(self._call("Inspect", request, timeout=max(self.timeout, 30.0)).json)

    def report(self, kind: str, pool: str | None = None, **params: Any) -> Any:
        """One diagnostics report by name: ``client.report("projection", "default", worker_counts=[2, 4])``."""
        from ..protocol import admin_pb2 as apb  # noqa: PLC0415

        request = apb.ReportRequest(kind=kind, pool=pool or "", params_json=json.dumps(params) if params else "")
        return json.loads(self._call("Report", request).json)

    def recycle_worker(self, pool: str, worker_id: str) -> str:
        """Recycle a worker of ``pool``; raises :class:`AdminError` if it was refused."""
        from ..protocol import admin_pb2 as apb  # noqa: PLC0415

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
