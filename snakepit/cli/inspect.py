"""``snakepit profile-inspector``: the pools of the live pool managers."""
from __future__ import annotations

from typing import Any, Sequence

from .managers import find_managers, inspect_managers, manager_line, runtime_dir
from .output import CLIError, Out, banner, emit_json, make_console
from .render import render_pool

def _merge_reports(results: Sequence[tuple[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    """One object keyed by pool name; a name held by several managers becomes ``name@pid``."""
    counts: dict[str, int] = {}
    for _, _, report in results:
        for name in report:
            counts[name] = counts.get(name, 0) + 1
    merged: dict[str, Any] = {}
    for manager, _, report in results:
        for name, entry in report.items():
            key = name if counts[name] == 1 else f"{name}@{manager.pid}"
            merged[key] = entry
    return merged


def cmd_profile_inspector(pool: str | None, detailed: bool, fmt: str, recommendations: bool,
                          target: str | None) -> None:
    """``snakepit profile-inspector``: attach to the live pool managers and print their pools."""
    managers = find_managers(target)
    if not managers:
        raise CLIError("no live snakepit pool manager found (start a pool with snakepit.start_pool; "
                       "runtime dir: " + runtime_dir() + ")")
    results = inspect_managers(managers, pool, detailed, recommendations)
    if pool is not None and not results:
        raise CLIError(f"Pool '{pool}' not found")
    if fmt == "json":
        emit_json(_merge_reports(results))
        return
    out = Out(make_console())
    banner(out, "🔍 SNAKEPIT PROFILE INSPECTOR")
    if len(managers) > 1 and target is None:
        out(f"🖥  {len(managers)} live pool managers:", "bold")
        for manager, hello, _ in results:
            out(f"   • {manager_line(manager, hello)}")
        out("   (choose one with --target PID)", "dim")
        out()
    for manager, hello, report in results:
        if len(results) > 1 or target is not None:
            out(f"🖥  Manager {manager_line(manager, hello)}", "bold cyan")
            out()
        if not report:
            out("⚠️  No pools are running in this manager", "yellow")
            out()
        for entry in report.values():
            render_pool(out, entry, detailed=detailed, recommendations=recommendations)
    banner(out, "✅ INSPECTION COMPLETE", before=False)
