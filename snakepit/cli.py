"""The ``snakepit`` command line: inspect live pools from a terminal, measure, demo.

Commands (``snakepit COMMAND --help`` for each)::

    snakepit profile-inspector [--pool P] [--detailed] [--format text|json]
                               [--recommendations] [--target PID|FILE]
    snakepit pools [--format text|json]
    snakepit diagnose-scaling [--max-workers N] [--threads-per-worker T] [--format text|json]
    snakepit demo
    snakepit recycle-worker POOL WORKER_ID [--target PID|FILE]

``profile-inspector``, ``pools`` and ``recycle-worker`` attach to pools living in *other*
processes (a Jupyter kernel, a script) through their admin endpoint (see
:mod:`snakepit.admin`). Examples::

    $ snakepit pools
    $ snakepit profile-inspector --detailed --recommendations
    $ snakepit profile-inspector --format json | jq '.default.utilization_percent'

Exit codes: 0 success, 1 error (in JSON mode an ``{"error": "..."}`` object is printed),
2 usage error.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from typing import Any, Callable, Sequence

__all__ = ["analyse_pools", "get_cli", "main", "render_inspection", "render_pool", "utilization_badge"]

RULE = "=" * 80
THIN = "-" * 80

_LEVEL_BADGES = {
    "CRITICAL": ("🔴 CRITICAL", "bold red"),
    "HIGH": ("🟡 HIGH", "yellow"),
    "GOOD": ("🟢 GOOD", "green"),
    "LOW": ("⚪ LOW", "dim"),
}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}

# Thresholds of the original diagnose.scaling (TEST 0).
THREAD_POOL_WARN = 100
PROCESS_POOL_WARN = 250
SYSTEM_PROCESS_WORKERS_WARN = 300


class CLIError(Exception):
    """An error the CLI reports and exits 1 on (as ``{"error": ...}`` in JSON mode)."""


# ============================================================================ output helpers
def _console(stderr: bool = False) -> Any:
    from rich.console import Console  # noqa: PLC0415

    width = None
    if not sys.stdout.isatty():
        width = 110
    return Console(stderr=stderr, width=width, highlight=False, emoji=False, soft_wrap=False)


class _Out:
    """Prints lines through rich (colours on a terminal, plain text otherwise)."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def __call__(self, text: str = "", style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False, emoji=False)

    def print(self, renderable: Any) -> None:
        self.console.print(renderable)


def _fmt_num(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def _level_name(entry: dict[str, Any]) -> str | None:
    """CRITICAL/HIGH/GOOD/LOW from the report (computed by snakepit.diagnostics.utilization_level)."""
    level = entry.get("utilization_level")
    if isinstance(level, str):
        for name in _LEVEL_BADGES:
            if name in level.upper():
                return name
    pct = entry.get("utilization_percent")
    if isinstance(pct, (int, float)):
        try:
            from .diagnostics import utilization_level  # noqa: PLC0415

            level = utilization_level(float(pct))
            for name in _LEVEL_BADGES:
                if name in str(level).upper():
                    return name
        except Exception:
            return None
    return None


def utilization_badge(entry: dict[str, Any]) -> tuple[str, str | None]:
    """``("100.0% 🔴 CRITICAL", "bold red")`` for a pool entry of the inspector's report."""
    pct = entry.get("utilization_percent")
    text = f"{_fmt_num(float(pct))}%" if isinstance(pct, (int, float)) else "?"
    level = _level_name(entry)
    if level is None:
        return text, None
    badge, style = _LEVEL_BADGES[level]
    return f"{text} {badge}", style


# ============================================================================ inspector text
def render_pool(out: _Out, entry: dict[str, Any], *, detailed: bool = False, recommendations: bool = False) -> None:
    """Print one pool's block of the inspector report (the seed's text layout)."""
    name = entry.get("pool_name", "?")
    cfg = entry.get("config") or {}
    profile = entry.get("profile") or cfg.get("profile")
    out(f"📊 Pool: {name}", "bold")
    out(THIN)
    out()
    out("📋 Configuration:", "bold")
    out(f"  Profile:          {'Thread (multi-threaded)' if profile == 'thread' else 'Process (multi-process)'}")
    out(f"  Pool Size:        {cfg.get('pool_size', '-')}")
    if profile == "thread":
        tpw = cfg.get("threads_per_worker", 10)
        out(f"  Threads/Worker:   {tpw}")
        try:
            out(f"  Total Capacity:   {int(cfg.get('pool_size') or 0) * int(tpw)}")
        except (TypeError, ValueError):
            pass
    else:
        out("  Workers/Capacity: 1:1 (single-threaded)")
    if cfg.get("worker_ttl"):
        out(f"  Worker TTL:       {_fmt_num(cfg['worker_ttl'], 0)} seconds")
    if cfg.get("worker_max_requests"):
        out(f"  Max Requests:     {cfg['worker_max_requests']}")
    if cfg.get("memory_threshold_mb"):
        out(f"  Memory Limit:     {_fmt_num(cfg['memory_threshold_mb'], 0)} MB per worker")
    if "max_queue_size" in cfg:
        qt = cfg.get("queue_timeout")
        out(f"  Queue:            max {cfg['max_queue_size']} requests, "
            f"timeout {('%gs' % qt) if qt is not None else 'none'}")

    if "error" in entry and "worker_count" not in entry:
        out()
        out(f"❌ Error getting pool stats: {entry['error']}", "red")
        out()
        return

    stats = entry.get("statistics") if isinstance(entry.get("statistics"), dict) else {}
    out()
    out("📈 Statistics:", "bold")
    out(f"  Active Workers:   {entry.get('worker_count', '-')}")
    out(f"  Total Capacity:   {entry.get('capacity_total', '-')}")
    out(f"  Used Capacity:    {entry.get('capacity_used', '-')}")
    out(f"  Available:        {entry.get('capacity_available', '-')}")
    badge, style = utilization_badge(entry)
    out(f"  Utilization:      {badge}", style)
    if stats:
        out(f"  Queue Depth:      {stats.get('queue_depth', 0)} / {stats.get('max_queue_size', '-')}")
        out(f"  Requests:         {stats.get('completed', 0)} completed, {stats.get('failed', 0)} failed, "
            f"{stats.get('saturated', 0)} rejected (saturated)")

    cap_total = entry.get("capacity_total") or 0
    workers_n = entry.get("worker_count") or 0
    if profile == "thread" and cap_total and workers_n:
        tpw = cfg.get("threads_per_worker") or cap_total // workers_n
        thread_info = (entry.get("capacity") or {}).get("thread_info") if isinstance(entry.get("capacity"), dict) else None
        avg = thread_info.get("avg_load_per_worker") if isinstance(thread_info, dict) else None
        if avg is None:
            avg = (entry.get("capacity_used") or 0) / workers_n
        out()
        out("🧵 Thread Profile Details:", "bold")
        out(f"  Workers:          {workers_n} processes")
        out(f"  Threads/Worker:   {cap_total // workers_n}")
        out(f"  Total Threads:    {cap_total}")
        out(f"  Avg Load/Worker:  {_fmt_num(float(avg))}/{tpw} threads")
    elif profile != "thread":
        out()
        out("⚙️  Process Profile Details:", "bold")
        out("  Mode:             Single-threaded processes")
        out("  Isolation:        Full process isolation")
        out(f"  Concurrency:      {cap_total} concurrent requests")

    memory = entry.get("memory") if isinstance(entry.get("memory"), dict) else {}
    out()
    out("💾 Memory Usage:", "bold")
    if "error" in memory:
        out(f"  ❌ {memory['error']}", "red")
    else:
        out(f"  Total:            {_fmt_num(memory.get('total_memory_mb'))} MB")
        out(f"  Average/Worker:   {_fmt_num(memory.get('avg_memory_per_worker_mb'))} MB")
        out(f"  Max Worker:       {_fmt_num(memory.get('max_memory_worker_mb'))} MB")
        out(f"  Min Worker:       {_fmt_num(memory.get('min_memory_worker_mb'))} MB")

    if detailed:
        out()
        out("👷 Worker Details:", "bold")
        out.print(_worker_table(entry))

    if recommendations:
        _render_recommendations(out, entry.get("recommendations"))
    out()


def _worker_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for w in entry.get("workers") or []:
        if isinstance(w, dict) and "worker_id" in w:
            rows[str(w["worker_id"])] = dict(w)
    memory = entry.get("memory") if isinstance(entry.get("memory"), dict) else {}
    for w in memory.get("workers") or []:
        if isinstance(w, dict) and "worker_id" in w:
            row = rows.setdefault(str(w["worker_id"]), {"worker_id": w["worker_id"]})
            for key, value in w.items():
                row.setdefault(key, value)
    for w in entry.get("worker_info") or []:
        if isinstance(w, dict) and "worker_id" in w:
            row = rows.setdefault(str(w["worker_id"]), {"worker_id": w["worker_id"]})
            for key, value in w.items():
                row.setdefault(key, value)
    return list(rows.values())


def _worker_table(entry: dict[str, Any]) -> Any:
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col, justify in (("Worker ID", "left"), ("Status", "left"), ("Load/Cap", "right"),
                         ("Memory", "right"), ("USS", "right"), ("Requests", "right"),
                         ("Uptime", "right"), ("PID", "right")):
        table.add_column(col, justify=justify, no_wrap=True)
    for w in _worker_rows(entry):
        status = str(w.get("status", "unknown"))
        shown = {"available": ("✓ Available", "green"), "busy": ("● Busy", "yellow")}.get(
            status, (f"? {status.capitalize()}", "dim"))
        mem = w.get("memory_mb")
        uss = w.get("uss_mb")
        table.add_row(
            str(w.get("worker_id", "?"))[:28],
            Text(shown[0], style=shown[1]),
            f"{w.get('load', '-')}/{w.get('capacity', '-')}",
            f"{_fmt_num(mem)} MB" if isinstance(mem, (int, float)) else "-",
            f"{_fmt_num(uss)} MB" if isinstance(uss, (int, float)) else "-",
            str(w.get("requests_served", "-")),
            _fmt_duration(w.get("uptime_s")) if isinstance(w.get("uptime_s"), (int, float)) else "-",
            str(w.get("pid", "-")),
        )
    return table


def _render_recommendations(out: _Out, recs: Any) -> None:
    if isinstance(recs, dict) and "error" in recs:
        out()
        out(f"💡 Recommendations unavailable: {recs['error']}", "yellow")
        return
    if not recs:
        out()
        out("✅ No recommendations - pool is operating optimally", "green")
        return
    out()
    out("💡 Recommendations:", "bold")
    for rec in recs:
        if isinstance(rec, dict):
            text = rec.get("text") or rec.get("message") or str(rec)
            style = _SEVERITY_STYLE.get(str(rec.get("severity", "")).lower())
            out(f"  • {text}", style)
            suggestion = rec.get("suggestion")
            if isinstance(suggestion, dict) and suggestion:
                out("      → suggested: " + ", ".join(f"{k}={v}" for k, v in suggestion.items()), "dim")
            elif isinstance(suggestion, str) and suggestion and suggestion not in text:
                out(f"      → {suggestion}", "dim")
        else:
            out(f"  • {rec}")


def render_inspection(report: dict[str, Any], *, detailed: bool = False, recommendations: bool = False,
                      console: Any = None, header: bool = True) -> None:
    """Print an inspector report (``{pool_name: entry}``, see :func:`snakepit.admin.collect_inspection`).

    Example::

        from snakepit import admin, cli
        cli.render_inspection(admin.collect_inspection(snakepit.list_pools()), detailed=True)
    """
    out = _Out(console or _console())
    if header:
        _banner(out, "🔍 SNAKEPIT PROFILE INSPECTOR")
    for entry in report.values():
        render_pool(out, entry, detailed=detailed, recommendations=recommendations)
    if header:
        _banner(out, "✅ INSPECTION COMPLETE", before=False)


def _banner(out: _Out, title: str, before: bool = True) -> None:
    out()
    out(RULE)
    out(title, "bold")
    out(RULE)
    out()


# ============================================================================ attaching
def _managers(target: str | None) -> list[Any]:
    from . import admin  # noqa: PLC0415

    if target is None:
        return admin.discover()
    try:
        with admin.connect(target) as client:
            return [client.manager]
    except admin.AdminError as exc:
        raise CLIError(str(exc)) from None


def _manager_line(manager: Any, hello: dict[str, Any] | None) -> str:
    pools = ", ".join(p["name"] for p in hello["pools"]) if hello else ", ".join(manager.pools)
    command = _short_command((hello or {}).get("command", ""))
    up = _fmt_duration(hello.get("uptime_s") if hello else manager.uptime_s)
    return f"pid {manager.pid} · up {up} · pools: {pools or '(none)'}" + (f" · {command}" if command else "")


def _inspect_managers(managers: Sequence[Any], pool: str | None, detailed: bool,
                      recommendations: bool) -> list[tuple[Any, dict[str, Any] | None, dict[str, Any]]]:
    """[(manager, hello, report)] of the managers that hold ``pool`` (or all pools)."""
    from . import admin  # noqa: PLC0415

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
        _Out(_console(stderr=True))(f"⚠️  skipped manager {error}", "yellow")
    return results


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


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, allow_nan=False) + "\n")


def cmd_profile_inspector(pool: str | None, detailed: bool, fmt: str, recommendations: bool,
                          target: str | None) -> None:
    """``snakepit profile-inspector``: attach to the live pool managers and print their pools."""
    managers = _managers(target)
    if not managers:
        raise CLIError("no live snakepit pool manager found (start a pool with snakepit.start_pool; "
                       "runtime dir: " + _runtime_dir() + ")")
    results = _inspect_managers(managers, pool, detailed, recommendations)
    if pool is not None and not results:
        raise CLIError(f"Pool '{pool}' not found")
    if fmt == "json":
        _emit_json(_merge_reports(results))
        return
    out = _Out(_console())
    _banner(out, "🔍 SNAKEPIT PROFILE INSPECTOR")
    if len(managers) > 1 and target is None:
        out(f"🖥  {len(managers)} live pool managers:", "bold")
        for manager, hello, _ in results:
            out(f"   • {_manager_line(manager, hello)}")
        out("   (choose one with --target PID)", "dim")
        out()
    for manager, hello, report in results:
        if len(results) > 1 or target is not None:
            out(f"🖥  Manager {_manager_line(manager, hello)}", "bold cyan")
            out()
        if not report:
            out("⚠️  No pools are running in this manager", "yellow")
            out()
        for entry in report.values():
            render_pool(out, entry, detailed=detailed, recommendations=recommendations)
    _banner(out, "✅ INSPECTION COMPLETE", before=False)


def _runtime_dir() -> str:
    from . import runtime  # noqa: PLC0415

    try:
        return runtime.base_dir()
    except OSError as exc:
        return f"? ({exc})"


def cmd_pools(fmt: str) -> None:
    """``snakepit pools``: the live pool managers of this user (pid, pools, workers, uptime)."""
    from . import admin  # noqa: PLC0415

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
        _emit_json(rows)
        return
    out = _Out(_console())
    if not rows:
        out(f"No live snakepit pool managers (runtime dir: {_runtime_dir()}).")
        return
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title="Live snakepit pool managers", box=box.SIMPLE_HEAD, title_justify="left")
    for col, justify in (("PID", "right"), ("Pools", "left"), ("Workers", "right"), ("Capacity", "right"),
                         ("Load", "right"), ("Queue", "right"), ("Uptime", "right")):
        table.add_column(col, justify=justify, overflow="fold", min_width=20 if col == "Pools" else None)
    table.add_column("Command", overflow="ellipsis", no_wrap=True, max_width=40)
    for row in rows:
        pools = row.get("pools") or []
        table.add_row(
            str(row["pid"]),
            Text(", ".join(f"{p['name']} ({p['profile']})" for p in pools) or row.get("error", "-"),
                 style=None if pools or "error" not in row else "red"),
            str(sum(p["workers"] for p in pools)),
            str(sum(p["capacity"] for p in pools)),
            str(sum(p["load"] for p in pools)),
            str(sum(p["queue_depth"] for p in pools)),
            _fmt_duration(row.get("uptime_s")),
            _short_command(row.get("command", "")),
        )
    out.print(table)


def _short_command(command: str) -> str:
    """``/usr/bin/python3 /home/me/app.py -x`` → ``python3 app.py -x``."""
    parts = command.split(" ")
    if "-c" in parts:  # python -c '<a whole script>'
        parts = parts[: parts.index("-c") + 1] + ["…"]
    return " ".join(os.path.basename(p) if os.sep in p and "\n" not in p else p for p in parts)


def cmd_recycle_worker(pool: str, worker_id: str, target: str | None) -> None:
    """``snakepit recycle-worker POOL WORKER_ID``: recycle one worker of a live pool."""
    from . import admin  # noqa: PLC0415

    managers = _managers(target)
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
    _Out(_console())(f"♻️  {message} (pool {pool}, manager pid {holders[0].pid})")


# ============================================================================ diagnose-scaling
def _growing_sizes(max_workers: int) -> list[int]:
    sizes, n = [], 1
    while n < max_workers:
        sizes.append(n)
        n *= 2
    sizes.append(max_workers)
    return sizes


def _open_fds() -> int:
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/fd"))
    except OSError:
        import psutil  # noqa: PLC0415

        return psutil.Process().num_fds()


def _user_threads() -> int:
    """Threads (Linux: tasks, what RLIMIT_NPROC counts) of this user's processes."""
    import psutil  # noqa: PLC0415

    uid = os.getuid()
    total = 0
    for proc in psutil.process_iter(["uids", "num_threads"]):
        try:
            if proc.info["uids"] and proc.info["uids"].real == uid:
                total += proc.info["num_threads"] or 0
        except psutil.Error:
            pass
    return total


def _read_int(path: str) -> int | None:
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _limit(value: int) -> int | None:
    return None if value == resource.RLIM_INFINITY else int(value)


def _measure_pool(profile: str, size: int, threads_per_worker: int) -> dict[str, Any]:
    """Start a pool of ``size`` workers, measure it, stop it."""
    import psutil  # noqa: PLC0415

    import snakepit  # noqa: PLC0415

    startup_ms: list[float] = []

    def on_started(event: Any, measurements: Any, metadata: Any, config: Any) -> None:
        startup_ms.append(float(measurements.get("startup_ms", 0.0)))

    handler_id = f"snakepit-cli-diagnose-{os.getpid()}"
    snakepit.telemetry.attach(handler_id, snakepit.telemetry.WORKER_STARTED, on_started)
    fds_before = _open_fds()
    threads_before = threading.active_count()
    name = f"diagnose-{profile}-{size}"
    start = time.monotonic()
    try:
        pool = snakepit.start_pool(name, profile=profile, pool_size=size, threads_per_worker=threads_per_worker,
                                   history_interval=None)
        try:
            ready_s = time.monotonic() - start
            fds_after = _open_fds()
            threads_after = threading.active_count()
            rss, uss, threads = [], [], []
            for w in pool.list_workers():
                try:
                    proc = psutil.Process(w.pid)
                    with proc.oneshot():
                        procs = [proc] + proc.children(recursive=True)
                        rss.append(sum(p.memory_info().rss for p in procs) / 2**20)
                        try:
                            uss.append(sum(p.memory_full_info().uss for p in procs) / 2**20)
                        except (psutil.Error, AttributeError):
                            pass
                        threads.append(sum(p.num_threads() for p in procs))
                except psutil.Error:
                    pass
            capacity = pool.capacity
        finally:
            snakepit.stop_pool(name)
    finally:
        snakepit.telemetry.detach(handler_id)
    n = max(len(rss), 1)
    return {
        "profile": profile,
        "workers": size,
        "threads_per_worker": threads_per_worker if profile == "thread" else 1,
        "capacity": capacity,
        "ready_s": round(ready_s, 3),
        "worker_startup_ms_avg": round(sum(startup_ms) / len(startup_ms), 1) if startup_ms else None,
        "worker_startup_ms_max": round(max(startup_ms), 1) if startup_ms else None,
        "rss_mb_per_worker": round(sum(rss) / n, 1) if rss else None,
        "uss_mb_per_worker": round(sum(uss) / len(uss), 1) if uss else None,
        "threads_per_process": round(sum(threads) / len(threads), 1) if threads else None,
        "manager_fds": max(0, fds_after - fds_before),
        "manager_fds_per_worker": round(max(0, fds_after - fds_before) / size, 2),
        "manager_threads": max(0, threads_after - threads_before),
    }


def _profile_analysis(managers: Sequence[Any]) -> dict[str, Any]:
    """TEST 0 of the original diagnose.scaling, over the live pools of every manager."""
    entries = [(manager.pid, name, entry)
               for manager, _, report in _inspect_managers(managers, None, False, False)
               for name, entry in report.items()]
    return analyse_pools(entries)


def analyse_pools(entries: Sequence[tuple[int, str, dict[str, Any]]]) -> dict[str, Any]:
    """TEST 0 from inspector entries ``(manager_pid, pool_name, entry)``: per-pool warnings and
    recommendations with the original's thresholds, and the system overview.

    Example::

        >>> analyse_pools([(1, "big", {"profile": "process", "config": {"pool_size": 300},
        ...                             "utilization_percent": 10.0})])["pools"][0]["warnings"][0][:20]
        'Large process pool ('
    """
    pools = []
    for manager_pid, name, entry in entries:
        cfg = entry.get("config") or {}
        profile = entry.get("profile") or cfg.get("profile")
        size = int(cfg.get("pool_size") or entry.get("worker_count") or 0)
        item = {
            "manager_pid": manager_pid,
            "pool": name,
            "profile": profile,
            "pool_size": size,
            "threads_per_worker": cfg.get("threads_per_worker") if profile == "thread" else 1,
            "capacity": entry.get("capacity_total"),
            "active_workers": entry.get("worker_count"),
            "utilization_percent": entry.get("utilization_percent"),
            "available": entry.get("capacity_available"),
            "warnings": [],
            "recommendations": [],
        }
        if profile == "thread" and size > THREAD_POOL_WARN:
            item["warnings"].append(
                f"Large pool size ({size}) with thread profile may not be optimal: prefer fewer workers "
                "with more threads (e.g. 16 workers x 64 threads = 1024 capacity)")
        if profile != "thread" and size > PROCESS_POOL_WARN:
            item["warnings"].append(
                f"Large process pool ({size} workers): consider the thread profile for GIL-releasing work "
                "(fewer processes, shared memory, lower start-up cost)")
        pct = entry.get("utilization_percent")
        if isinstance(pct, (int, float)) and pct > 80:
            if profile == "thread":
                item["recommendations"].append("Increase threads_per_worker or pool_size")
            else:
                item["recommendations"].append("Add more workers (pool_size)")
                if size > 100:
                    item["recommendations"].append("Or consider switching to the thread profile")
        pools.append(item)
    process_pools = [p for p in pools if p["profile"] != "thread"]
    thread_pools = [p for p in pools if p["profile"] == "thread"]
    total = sum(p["pool_size"] for p in pools)
    overview = {"process_pools": len(process_pools), "thread_pools": len(thread_pools), "total_workers": total,
                "opportunities": []}
    if sum(p["pool_size"] for p in process_pools) > SYSTEM_PROCESS_WORKERS_WARN and not thread_pools:
        overview["opportunities"].append(
            "Replace 300 process workers with 10 thread workers (30 threads each): far less memory "
            "for GIL-releasing workloads")
    return {"pools": pools, "overview": overview}


def _limits() -> dict[str, Any]:
    import psutil  # noqa: PLC0415

    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    vm = psutil.virtual_memory()
    return {
        "nofile_soft": _limit(nofile[0]),
        "nofile_hard": _limit(nofile[1]),
        "open_fds": _open_fds(),
        "nproc_soft": _limit(nproc[0]),
        "nproc_hard": _limit(nproc[1]),
        "user_threads": _user_threads(),
        "pid_max": _read_int("/proc/sys/kernel/pid_max"),
        "threads_max": _read_int("/proc/sys/kernel/threads-max"),
        "cpu_count": os.cpu_count(),
        "memory_total_mb": round(vm.total / 2**20, 1),
        "memory_available_mb": round(vm.available / 2**20, 1),
    }


def _marginal(rows: list[dict[str, Any]], key: str) -> float:
    """Cost of one more worker: the slope between the smallest and the largest pool measured."""
    rows = sorted(rows, key=lambda m: m["workers"])
    small, large = rows[0], rows[-1]
    if large["workers"] > small["workers"]:
        slope = (large[key] - small[key]) / (large["workers"] - small["workers"])
    else:
        slope = small[key] / max(small["workers"], 1)
    return max(slope, 0.0)


def _analysis(limits: dict[str, Any], measurements: list[dict[str, Any]], threads_per_worker: int) -> dict[str, Any]:
    """What the limits allow per profile, and the recommendation that follows.

    Per worker: manager-side file descriptors and threads (the slope over the measured pool
    sizes), the worker process's own threads, and its USS (memory it does not share).
    """
    out: dict[str, Any] = {"profiles": {}, "recommendations": []}
    for profile in ("process", "thread"):
        rows = [m for m in measurements if m["profile"] == profile]
        if not rows:
            continue
        largest = max(rows, key=lambda m: m["workers"])
        fds_per_worker = max(_marginal(rows, "manager_fds"), 1.0)
        manager_threads = _marginal(rows, "manager_threads")
        threads = (largest.get("threads_per_process") or 1.0) + manager_threads
        if profile == "thread":  # measured idle; a busy worker adds up to threads_per_worker threads
            threads += largest["capacity"] / max(largest["workers"], 1)
        mem = largest.get("uss_mb_per_worker") or largest.get("rss_mb_per_worker") or 1.0
        caps: dict[str, int] = {}
        if limits["nofile_soft"]:
            caps["file descriptors"] = int(max(0, limits["nofile_soft"] - limits["open_fds"]) // fds_per_worker)
        room = None
        if limits["nproc_soft"]:
            room = max(0, limits["nproc_soft"] - limits["user_threads"])
        system = [v for v in (limits.get("threads_max"), limits.get("pid_max")) if v]  # every thread takes a pid
        if system:
            sys_room = max(0, min(system) - limits["user_threads"])
            room = sys_room if room is None else min(room, sys_room)
        if room is not None:
            caps["processes/threads"] = int(room // threads)
        caps["memory"] = int(limits["memory_available_mb"] // mem)
        limiting = min(caps, key=lambda k: caps[k])
        max_workers = caps[limiting]
        per_slot = largest["capacity"] / max(largest["workers"], 1)
        smallest = min(rows, key=lambda m: m["workers"])
        out["profiles"][profile] = {
            "max_workers": max_workers,
            "limited_by": limiting,
            "limits": caps,
            "capacity_per_worker": per_slot,
            "max_concurrent_requests": int(max_workers * per_slot),
            "memory_mb_per_worker": mem,
            "memory_mb_per_slot": round(mem / per_slot, 2),
            "ready_s_one_worker": smallest["ready_s"] if smallest["workers"] == 1 else None,
            "ready_s_largest_pool": largest["ready_s"],
            "largest_pool_measured": largest["workers"],
            "fds_per_worker": round(fds_per_worker, 2),
            "threads_per_worker": round(threads, 1),
        }
    recs = out["recommendations"]
    proc = out["profiles"].get("process")
    thr = out["profiles"].get("thread")
    cpus = limits.get("cpu_count") or 1
    if proc:
        one = f"~{proc['ready_s_one_worker']:.2f} s" if proc["ready_s_one_worker"] else "?"
        recs.append(
            f"CPU-bound pure-Python work: the process profile with pool_size = {cpus} (the CPU count); more "
            f"workers than CPUs only queue. A worker costs ~{_fmt_num(proc['memory_mb_per_worker'])} MB of "
            f"its own memory; a pool of 1 is ready in {one}, of {proc['largest_pool_measured']} in "
            f"{proc['ready_s_largest_pool']:.2f} s (workers start in parallel).")
    if proc and thr:
        ratio = proc["memory_mb_per_slot"] / thr["memory_mb_per_slot"] if thr["memory_mb_per_slot"] else 0.0
        recs.append(
            f"I/O-bound or GIL-releasing work (NumPy, network, subprocesses): the thread profile with "
            f"{threads_per_worker} threads per worker costs ~{_fmt_num(thr['memory_mb_per_slot'], 2)} MB per "
            f"concurrent request, {_fmt_num(ratio)}x less than the process profile.")
        recs.append(
            f"The process profile tops out at ~{proc['max_concurrent_requests']} concurrent requests on this "
            f"machine (limited by {proc['limited_by']}); the thread profile reaches "
            f"~{thr['max_concurrent_requests']} (limited by {thr['limited_by']}). Above "
            f"{min(proc['max_concurrent_requests'], PROCESS_POOL_WARN)} concurrent requests use the thread profile.")
    if limits["nofile_soft"] and limits["nofile_soft"] < 4096:
        recs.append(f"The open-file limit is low ({limits['nofile_soft']}): raise it (ulimit -n) before "
                    "running large pools.")
    return out


def cmd_diagnose_scaling(max_workers: int, threads_per_worker: int, fmt: str, measure: bool) -> None:
    """``snakepit diagnose-scaling``: live pool analysis, OS limits, measured scaling, recommendation."""
    from . import admin  # noqa: PLC0415

    admin.set_enabled(False)  # the measurement pools are not for other processes to see
    json_mode = fmt == "json"
    out = _Out(_console(stderr=json_mode))
    if not json_mode:
        _banner(out, "🔬 SNAKEPIT SCALING DIAGNOSTICS")

    result: dict[str, Any] = {}
    managers = admin.discover(include_self=False)
    result["profile_analysis"] = _profile_analysis(managers)
    if not json_mode:
        _print_test0(out, result["profile_analysis"])

    limits = _limits()
    result["limits"] = limits
    measurements: list[dict[str, Any]] = []
    if measure:
        sizes = _growing_sizes(max_workers)
        status = out.console.status("measuring...") if not json_mode else None
        if status is not None:
            status.start()
        try:
            for profile in ("process", "thread"):
                for size in sizes:
                    if status is not None:
                        status.update(f"measuring: starting a {profile} pool of {size} workers "
                                      f"(sizes {', '.join(map(str, sizes))})")
                    measurements.append(_measure_pool(profile, size, threads_per_worker))
        finally:
            if status is not None:
                status.stop()
    result["measurements"] = measurements
    result["analysis"] = _analysis(limits, measurements, threads_per_worker) if measurements else {}
    if json_mode:
        _emit_json(result)
        return
    _print_limits(out, limits, result["analysis"])
    if measurements:
        _print_measurements(out, measurements, threads_per_worker)
        _print_analysis(out, result["analysis"])
    _banner(out, "✅ DIAGNOSTICS COMPLETE", before=False)


def _print_test0(out: _Out, analysis: dict[str, Any]) -> None:
    out("📊 TEST 0: POOL PROFILE ANALYSIS", "bold")
    out(THIN)
    pools = analysis["pools"]
    out(f"Configured pools: {len(pools)}" + ("  (no live pool manager found)" if not pools else ""))
    for p in pools:
        out()
        out(f"Pool: {p['pool']}  (manager pid {p['manager_pid']})", "bold")
        out(f"  Profile:    {p['profile']}")
        out(f"  Pool Size:  {p['pool_size']}")
        if p["profile"] == "thread":
            out(f"  Threads/Worker: {p['threads_per_worker']}")
            out(f"  Total Capacity: {p['capacity']}")
        else:
            out(f"  Capacity:   {p['capacity']} (1:1 with workers)")
        for w in p["warnings"]:
            out(f"  ⚠️  WARNING: {w}", "yellow")
        out()
        out("Current Status:")
        out(f"  Active Workers:  {p['active_workers']}")
        out(f"  Utilization:     {_fmt_num(p['utilization_percent'])}%")
        if p["available"]:
            out(f"  Available:       {p['available']}")
        for r in p["recommendations"]:
            out(f"  💡 RECOMMENDATION: {r}", "cyan")
    ov = analysis["overview"]
    out()
    out("System Overview:", "bold")
    out(f"  Process Pools: {ov['process_pools']}")
    out(f"  Thread Pools:  {ov['thread_pools']}")
    out(f"  Total Workers: {ov['total_workers']}")
    for o in ov["opportunities"]:
        out(f"  💡 OPTIMIZATION OPPORTUNITY: {o}", "cyan")
    out()


def _print_limits(out: _Out, limits: dict[str, Any], analysis: dict[str, Any]) -> None:
    out()
    out("📊 TEST 1: FILE DESCRIPTOR LIMITS", "bold")
    out(THIN)
    soft, hard = limits["nofile_soft"], limits["nofile_hard"]
    out(f"  Open files limit:  {soft if soft is not None else 'unlimited'} (hard {hard if hard is not None else 'unlimited'})")
    out(f"  Open in this process: {limits['open_fds']}")
    for profile, a in (analysis.get("profiles") or {}).items():
        cap = a["limits"].get("file descriptors")
        line = f"  {profile:<8} {_fmt_num(a['fds_per_worker'], 2)} descriptors per worker → max {cap} workers"
        out(line, "yellow" if cap is not None and cap < 110 else None)
    if soft is not None and soft - limits["open_fds"] < 1000:
        out("  🔴 CRITICAL: fewer than 1000 file descriptors available", "bold red")
    else:
        out("  ✅ File descriptor limit is healthy", "green")
    out()
    out("📊 TEST 2: PROCESS AND THREAD LIMITS", "bold")
    out(THIN)
    ns, nh = limits["nproc_soft"], limits["nproc_hard"]
    out(f"  Max user processes: {ns if ns is not None else 'unlimited'} (hard {nh if nh is not None else 'unlimited'}; "
        "Linux counts threads)")
    out(f"  Threads of your processes now: {limits['user_threads']}")
    if limits.get("threads_max"):
        out(f"  System threads-max: {limits['threads_max']}, pid_max: {limits.get('pid_max')}")
    for profile, a in (analysis.get("profiles") or {}).items():
        cap = a["limits"].get("processes/threads")
        out(f"  {profile:<8} {_fmt_num(a['threads_per_worker'])} threads per worker (worker + manager side, "
            f"busy) → max {cap} workers",
            "yellow" if cap is not None and cap < 110 else None)
    usage = (limits["user_threads"] / ns * 100) if ns else 0.0
    if usage > 80:
        out(f"  ⚠️  {usage:.0f}% of the process limit is in use", "yellow")
    else:
        out("  ✅ Process limit is healthy", "green")
    out()


def _print_measurements(out: _Out, measurements: list[dict[str, Any]], threads_per_worker: int) -> None:
    from rich import box  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    out("📊 TEST 3: WORKER START TIME AND MEMORY (measured)", "bold")
    out(THIN)
    out(f"Pools of growing size started and stopped for each profile (thread profile: {threads_per_worker} "
        "threads per worker). Memory is per worker process, children included; USS is what it does not share.")
    table = Table(box=box.SIMPLE_HEAD)
    for col in ("Profile", "Workers", "Capacity", "Ready", "Start/worker", "RSS/worker", "USS/worker", "Threads",
                "Fds"):
        table.add_column(col, justify="left" if col == "Profile" else "right", no_wrap=True)
    for m in measurements:
        table.add_row(
            m["profile"], str(m["workers"]), str(m["capacity"]), f"{m['ready_s']:.2f} s",
            f"{_fmt_num(m['worker_startup_ms_avg'], 0)} ms", f"{_fmt_num(m['rss_mb_per_worker'])} MB",
            f"{_fmt_num(m['uss_mb_per_worker'])} MB", _fmt_num(m["threads_per_process"]),
            str(m["manager_fds"]),
        )
    out.print(table)


def _print_analysis(out: _Out, analysis: dict[str, Any]) -> None:
    out()
    out("📈 ANALYSIS", "bold")
    out(THIN)
    for profile, a in analysis.get("profiles", {}).items():
        out(f"  {profile:<8} max {a['max_workers']} workers = {a['max_concurrent_requests']} concurrent requests "
            f"(bound: {a['limited_by']}); {_fmt_num(a['memory_mb_per_slot'], 2)} MB per request slot")
    out()
    out("💡 RECOMMENDATION", "bold")
    for rec in analysis.get("recommendations", []):
        out(f"  • {rec}", "cyan")


# ============================================================================ demo
def cmd_demo(tasks: int, snapshot: bool = True) -> None:
    """``snakepit demo``: two pools, a mixed workload with progress bars, the inspector report.

    Starts ``default`` (process profile) and ``hpc`` (thread profile) with the embedded
    defaults, runs CPU-bound functions and commands on the first and I/O-like ``sleep``
    commands and functions on the second, keeps the process pool at 100 % for a moment,
    prints the inspector's report of the busiest moment with recommendations, and stops
    everything (also on Ctrl-C).
    """
    import operator  # noqa: PLC0415

    from rich import box  # noqa: PLC0415
    from rich.panel import Panel  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    import snakepit  # noqa: PLC0415

    from . import admin  # noqa: PLC0415

    console = _console()
    out = _Out(console)
    console.print(Panel.fit(
        "A [bold]process[/] pool and a [bold]thread[/] pool next to this program, a mixed workload,\n"
        "and what [bold]snakepit profile-inspector[/] sees while it runs.",
        title="🐍 snakepit demo", border_style="cyan"))
    t0 = time.monotonic()
    try:
        out("Starting pools", "bold")
        started = time.monotonic()
        with console.status("starting 'default' (process profile)..."):
            default = snakepit.start_pool("default", profile="process")
        out(f"  ✓ default  process  {default.config.pool_size} workers x 1 thread   = capacity {default.capacity:<3}"
            f"  ready in {time.monotonic() - started:.1f} s", "green")
        started = time.monotonic()
        with console.status("starting 'hpc' (thread profile)..."):
            hpc = snakepit.start_pool("hpc", profile="thread")
        out(f"  ✓ hpc      thread   {hpc.config.pool_size} workers x {hpc.config.threads_per_worker} threads"
            f" = capacity {hpc.capacity:<3}  ready in {time.monotonic() - started:.1f} s", "green")
        ep = admin.current_endpoint()
        if ep is not None:
            out(f"    (attachable: `snakepit pools` in another terminal lists pid {ep.pid})", "dim")
        out()

        n = max(tasks, 8)
        per_kind = n // 4
        kinds = [
            ("cpu", "CPU-bound functions  → default", lambda i: default.submit(sum, range(300_000 + 1000 * i))),
            ("cmd", "echo commands        → default", lambda i: default.submit_command("echo", {"i": i})),
            ("io", "sleep (I/O-like)     → hpc    ",
             lambda i: hpc.submit_command("sleep", {"seconds": 0.15 + 0.05 * (i % 6)})),
            ("fn", "functions            → hpc    ", lambda i: hpc.submit(operator.mul, i, i)),
        ]
        snapshots: list[dict[str, Any]] = []
        failures: list[str] = []
        out(f"Mixed workload: {per_kind * 4} tasks, then a burst that fills the process pool", "bold")
        with Progress(TextColumn("  {task.description}"), BarColumn(bar_width=32), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            bars = {kind: progress.add_task(label, total=per_kind) for kind, label, _ in kinds}

            def done(kind: str) -> Callable[[Any], None]:
                def callback(fut: Any) -> None:
                    if fut.cancelled() or fut.exception() is not None:
                        failures.append(kind)
                    progress.advance(bars[kind])
                return callback

            futures = []
            for i in range(per_kind):
                for kind, _, submit in kinds:
                    fut = submit(i)
                    fut.add_done_callback(done(kind))
                    futures.append(fut)
            time.sleep(0.05)
            if snapshot:  # what `snakepit profile-inspector` would show right now
                snapshots.append(admin.collect_inspection([default, hpc], detailed=True, recommendations=True))
            for fut in futures:
                try:
                    fut.result(timeout=60)
                except Exception:
                    pass
            burst_bar = progress.add_task("burst of sleeps      → default", total=default.capacity * 3)
            burst = [default.submit_command("sleep", {"seconds": 0.3}) for _ in range(default.capacity * 3)]
            for fut in burst:
                fut.add_done_callback(lambda _f: progress.advance(burst_bar))
            time.sleep(0.1)
            snapshots.append(admin.collect_inspection([default, hpc], detailed=True, recommendations=True))
            for fut in burst:
                fut.result(timeout=60)
        elapsed = time.monotonic() - t0

        out()
        table = Table(title="Results", box=box.SIMPLE_HEAD, title_justify="left", title_style="bold")
        for col in ("Pool", "Profile", "Capacity", "Requests", "Failed", "p50", "p95", "Peak utilization"):
            table.add_column(col, justify="left" if col in ("Pool", "Profile") else "right")
        for pool in (default, hpc):
            stats = pool.statistics()
            lat = sorted(pool.recent_latencies_us)
            p50 = f"{lat[len(lat) // 2] / 1000:.1f} ms" if lat else "-"
            p95 = f"{lat[min(len(lat) - 1, int(len(lat) * 0.95))] / 1000:.1f} ms" if lat else "-"
            peak = max(snapshots, key=lambda r: r.get(pool.name, {}).get("utilization_percent") or 0)
            badge, style = utilization_badge(peak.get(pool.name, {}))
            table.add_row(pool.name, pool.profile.name, str(pool.capacity), str(stats.get("completed", 0)),
                          str(stats.get("failed", 0)), p50, p95, Text(badge, style=style or ""))
        console.print(table)
        if failures:
            out(f"  {len(failures)} tasks failed", "bold red")

        busiest = {name: max((r[name] for r in snapshots if name in r),
                             key=lambda e: e.get("utilization_percent") or 0)
                   for name in ("default", "hpc")}
        out("The inspector at the busiest moment:", "bold")
        render_inspection(busiest, detailed=True, recommendations=True, console=console)
        out(f"Demo finished in {elapsed:.1f} s; stopping the pools. Next: `snakepit profile-inspector` "
            "attaches to the pools of a running kernel or script.", "dim")
    finally:
        snakepit.shutdown()


# ============================================================================ click wiring
_CLI: Any = None


def get_cli() -> Any:
    """The click group (built on first use; ``click.testing.CliRunner().invoke(get_cli(), [...])``)."""
    global _CLI
    if _CLI is not None:
        return _CLI
    import click  # noqa: PLC0415

    from .errors import SnakepitError  # noqa: PLC0415

    def run(fn: Callable[..., None], fmt: str, *args: Any) -> None:
        """Call a command; report CLIError/SnakepitError once, as text or JSON, exit 1."""
        try:
            fn(*args)
        except (CLIError, SnakepitError, OSError) as exc:
            message = str(exc)
            if fmt == "json":
                _emit_json({"error": message})
                raise SystemExit(1) from None
            raise _Failure(message) from None

    class _Failure(click.ClickException):
        """Exit 1 with the seed's ``❌ Error: ...`` line on stderr."""

        def show(self, file: Any = None) -> None:
            click.echo(f"❌ Error: {self.format_message()}", err=True)

    fmt_option = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                              show_default=True, help="Output format.")
    def check_target(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None or value.isdigit() or os.sep in value or value.endswith(".json"):
            return value
        raise click.BadParameter("give a pid or the path of a discovery file (see `snakepit pools`)")

    target_option = click.option("--target", metavar="PID|FILE", default=None, callback=check_target,
                                 help="The pool manager to attach to: its pid or its discovery file.")

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="snakepit", prog_name="snakepit")
    @click.option("--runtime-dir", type=click.Path(file_okay=False), default=None, envvar="SNAKEPIT_RUNTIME_DIR",
                  help="The runtime directory where pool managers publish their discovery files "
                       "(default: $SNAKEPIT_RUNTIME_DIR, $XDG_RUNTIME_DIR/snakepit or /tmp/snakepit-UID).")
    @click.pass_context
    def cli(ctx: click.Context, runtime_dir: str | None) -> None:
        """snakepit: inspect live worker pools, measure scaling, run the demo.

        \b
        snakepit demo
        snakepit pools
        snakepit profile-inspector --detailed --recommendations
        snakepit profile-inspector --format json | jq '.default.utilization_percent'
        """
        if runtime_dir:
            os.environ["SNAKEPIT_RUNTIME_DIR"] = runtime_dir
        ctx.obj = {"runtime_dir": runtime_dir}

    @cli.command("profile-inspector")
    @click.option("--pool", default=None, metavar="NAME", help="Inspect only this pool.")
    @click.option("--detailed", is_flag=True, help="Add the per-worker table.")
    @fmt_option
    @click.option("--recommendations", is_flag=True, help="Add each pool's recommendations.")
    @target_option
    def profile_inspector(pool: str | None, detailed: bool, fmt: str, recommendations: bool,
                          target: str | None) -> None:
        """Inspect the pools of the live pool managers (kernels, scripts).

        \b
        snakepit profile-inspector --detailed --recommendations
        snakepit profile-inspector --format json | jq '.default.utilization_percent'
        """
        run(cmd_profile_inspector, fmt, pool, detailed, fmt, recommendations, target)

    @cli.command("pools")
    @fmt_option
    def pools(fmt: str) -> None:
        """List the live pool managers: pid, pools, workers, uptime."""
        run(cmd_pools, fmt, fmt)

    @cli.command("diagnose-scaling")
    @click.option("--max-workers", type=click.IntRange(1, 1024), default=16, show_default=True,
                  help="Largest pool to start when measuring (sizes 1, 2, 4, ... up to it).")
    @click.option("--threads-per-worker", type=click.IntRange(1, 1024), default=10, show_default=True,
                  help="threads_per_worker of the measured thread-profile pools.")
    @click.option("--no-measure", is_flag=True, help="Skip starting measurement pools.")
    @fmt_option
    def diagnose_scaling(max_workers: int, threads_per_worker: int, no_measure: bool, fmt: str) -> None:
        """Profile analysis of live pools, OS limits, measured start time and memory, recommendation."""
        run(cmd_diagnose_scaling, fmt, max_workers, threads_per_worker, fmt, not no_measure)

    @cli.command("demo")
    @click.option("--tasks", type=click.IntRange(8, 10000), default=48, show_default=True,
                  help="Number of tasks in the mixed workload.")
    def demo(tasks: int) -> None:
        """Start a process pool and a thread pool, run a mixed workload, show the inspector."""
        run(cmd_demo, "text", tasks)

    @cli.command("recycle-worker")
    @click.argument("pool")
    @click.argument("worker_id")
    @target_option
    def recycle_worker(pool: str, worker_id: str, target: str | None) -> None:
        """Recycle one worker of a live pool (a replacement starts first)."""
        run(cmd_recycle_worker, "text", pool, worker_id, target)

    _CLI = cli
    return cli


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``snakepit`` console script."""
    try:
        import click  # noqa: F401, PLC0415
        import rich  # noqa: F401, PLC0415
    except ImportError as exc:  # pragma: no cover - both are dependencies of snakepit
        sys.stderr.write(f"snakepit: the command line needs click and rich ({exc}); "
                         "install them with: pip install 'snakepit' click rich\n")
        return 1
    return get_cli().main(args=list(argv) if argv is not None else None, prog_name="snakepit")


if __name__ == "__main__":  # pragma: no cover
    main()
