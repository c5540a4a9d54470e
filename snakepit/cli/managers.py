"""Finding the live pool managers and asking them for their pools (through :mod:`snakepit.admin`)."""
from __future__ import annotations

from typing import Any, Sequence

from .output import CLIError, Out, fmt_duration, make_console, short_command

def find_managers(target: str | None) -> list[Any]:
    from .. import admin  # noqa: PLC0415

    if target is None:
        return admin.discover()
    try:
        with admin.connect(target) as client:
            return [client.manager]
    except admin.AdminError as exc:
        raise CLIError(str(exc)) from None


def manager_line(manager: Any, hello: dict[str, Any] | None) -> str:
    pools = ", ".join(p["name"] for p in hello["pools"]) if hello else ", ".join(manager.pools)
    command = short_command((hello or {}).get("command", ""))
    up = fmt_duration(hello.get("uptime_s") if hello else manager.uptime_s)
    return f"pid {manager.pid} · up {up} · pools: {pools or '(none)'}" + (f" · {command}" if command else "")


def inspect_managers(managers: Sequence[Any], pool: str | None, detailed: bool,
                      recommendations: bool) -> list[tuple[Any, dict[str, Any] | None, dict[str, Any]]]:
    """[(manager, hello, report)] of the managers that hold ``pool`` (or all pools)."""
    from .. import admin  # noqa: PLC0415

    results = []
    errors = []
    for manager in managers:
        try:
            with admin.AdminClient(manager) as client:
                hello = client.hello()
                names = [p["name"] for p in hello["pools"]]
                if pool is not None and pool not in names:
                    continue
                report = client.inspect(pool, detailed=detailed, recommendations=recommendations)
        except admin.AdminError as exc:
            if exc.code == "NOT_FOUND" and pool is not None:
                continue
            errors.append(f"pid {manager.pid}: {exc}")
            continue
        results.append((manager, hello, report))
    if not results and errors:
        raise CLIError("; ".join(errors))
    for error in errors:  # some managers answered, others did not: say so, on stderr
        Out(make_console(stderr=True))(f"⚠️  skipped manager {error}", "yellow")
    return results


def runtime_dir() -> str:
    from .. import runtime  # noqa: PLC0415

    try:
        return runtime.base_dir()
    except OSError as exc:
        return f"? ({exc})"
