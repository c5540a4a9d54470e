"""``snakepit pools`` (the live pool managers) and ``snakepit recycle-worker``."""
from __future__ import annotations

from .managers import find_managers, runtime_dir
from .output import CLIError, Out, emit_json, make_console
from .render import pools_table


def cmd_pools(fmt: str) -> None:
    """``snakepit pools``: the live pool managers of this user (pid, pools, workers, uptime)."""
    from .. import admin  # noqa: PLC0415

    rows = []
    for manager in admin.discover():
        try:
            with admin.AdminClient(manager, timeout=5.0) as client:
                hello = client.hello()
        except admin.AdminError as exc:
            hello = {"pid": manager.pid, "error": str(exc), "pools": [], "uptime_s": manager.uptime_s}
        hello["discovery_file"] = manager.path
        rows.append(hello)
    if fmt == "json":
        emit_json(rows)
        return
    out = Out(make_console())
    if not rows:
        out(f"No live snakepit pool managers (runtime dir: {runtime_dir()}).")
        return
    out.print(pools_table(rows))


def cmd_recycle_worker(pool: str, worker_id: str, target: str | None) -> None:
    """``snakepit recycle-worker POOL WORKER_ID``: recycle one worker of a live pool."""
    from .. import admin  # noqa: PLC0415

    managers = find_managers(target)
    holders = []
    for manager in managers:
        try:
            with admin.AdminClient(manager) as client:
                if any(p["name"] == pool for p in client.hello()["pools"]):
                    holders.append(manager)
        except admin.AdminError:
            continue
    if not holders:
        raise CLIError(f"Pool '{pool}' not found")
    if len(holders) > 1:
        raise CLIError(f"pool '{pool}' runs in several managers ({', '.join(str(m.pid) for m in holders)}): "
                       "choose one with --target PID")
    try:
        with admin.AdminClient(holders[0]) as client:
            message = client.recycle_worker(pool, worker_id)
    except admin.AdminError as exc:
        raise CLIError(str(exc)) from None
    Out(make_console())(f"♻️  {message} (pool {pool}, manager pid {holders[0].pid})")
