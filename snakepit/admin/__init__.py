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
nothing. :func:`snakepit.start_pool` registers :func:`on_pool_event` with the pool registry
(:func:`snakepit.api.add_listener`); the registry itself never imports this package.

Client side, from any process of the same user::

    from snakepit import admin

    for manager in admin.discover():                 # live managers on this machine
        with admin.AdminClient(manager) as client:
            print(client.hello()["pools"])
            report = client.inspect()                # {"default": {...pool stats...}, ...}
            print(report["default"]["utilization_percent"])
            client.recycle_worker("default", "default-w1")

The package: :mod:`~snakepit.admin.server` (the service this process publishes),
:mod:`~snakepit.admin.reports` (what it answers), :mod:`~snakepit.admin.discovery` (the
discovery files) and :mod:`~snakepit.admin.client` (attaching from another process).
"""
from __future__ import annotations

from .client import AdminClient, AdminError, connect
from .discovery import DISCOVERY_SUFFIX, TOKEN_METADATA_KEY, Manager, discover
from .reports import collect_inspection, pool_config_dict, run_report
from .server import (
    SOCKET_NAME,
    Endpoint,
    current_endpoint,
    install,
    on_pool_event,
    publish,
    set_enabled,
    withdraw,
)

__all__ = [
    "AdminClient",
    "AdminError",
    "DISCOVERY_SUFFIX",
    "Endpoint",
    "Manager",
    "SOCKET_NAME",
    "TOKEN_METADATA_KEY",
    "collect_inspection",
    "connect",
    "current_endpoint",
    "discover",
    "install",
    "on_pool_event",
    "pool_config_dict",
    "publish",
    "run_report",
    "set_enabled",
    "withdraw",
]
