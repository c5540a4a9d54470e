"""The inspector report as text: one block per pool, the worker table, recommendations; the
``snakepit pools`` table."""
from __future__ import annotations

from typing import Any

from .output import THIN, Out, banner, fmt_duration, fmt_num, make_console, short_command

_LEVEL_BADGES = {
    "CRITICAL": ("🔴 CRITICAL", "bold red"),
    "HIGH": ("🟡 HIGH", "yellow"),
    "GOOD": ("🟢 GOOD", "green"),
    "LOW": ("⚪ LOW", "dim"),
}
_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


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
            from ..diagnostics import utilization_level  # noqa: PLC0415

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
    text = f"{fmt_num(float(pct))}%" if isinstance(pct, (int, float)) else "?"
    level = _level_name(entry)
    if level is None:
        return text, None
    badge, style = _LEVEL_BADGES[level]
    return f"{text} {badge}", style


def render_pool(out: Out, entry: dict[str, Any], *, detailed: bool = False, recommendations: bool = False) -> None:
    """Print one pool's block of the inspector report (the seed's text layout)."""
    name = entry.get("pool_name", "?")
    cfg = entry.get("config") or {}
    profile = entry.get("profile") or cfg.get("profile")
    out(f"📊 Pool: {name}", "bold")
    out(THIN)
    out()
    out("📋 Configuration:", "bold")
    out(f"  Profile:          {'Thread (multi-threaded)' if profile == 'thread' else 'Process (multi-process)'}")
    target = cfg.get("target_size")
    if target is not None and target != cfg.get("pool_size"):
        out(f"  Pool Size:        {target} (target; started with {cfg.get('pool_size', '-')})")
    else:
        out(f"  Pool Size:        {cfg.get('pool_size', '-')}")
    adaptive = cfg.get("adaptive")
    if adaptive:
        last = adaptive.get("last_decision")
        did = (f"last: {last['reason']} {last['from_size']}→{last['to_size']}" if last else "no decision yet")
        out(f"  Adaptive:         on, {adaptive['minimum']}–{adaptive['maximum']} workers, "
            f"every {fmt_num(adaptive['interval'], 1)}s ({did})")
    if cfg.get("backend") not in (None, "local"):
        out(f"  Backend:          {cfg['backend']}")
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
        out(f"  Worker TTL:       {fmt_num(cfg['worker_ttl'], 0)} seconds")
    if cfg.get("worker_max_requests"):
        out(f"  Max Requests:     {cfg['worker_max_requests']}")
    if cfg.get("memory_threshold_mb"):
        out(f"  Memory Limit:     {fmt_num(cfg['memory_threshold_mb'], 0)} MB per worker")
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
        out(f"  Avg Load/Worker:  {fmt_num(float(avg))}/{tpw} threads")
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
        out(f"  Total:            {fmt_num(memory.get('total_memory_mb'))} MB")
        out(f"  Average/Worker:   {fmt_num(memory.get('avg_memory_per_worker_mb'))} MB")
        out(f"  Max Worker:       {fmt_num(memory.get('max_memory_worker_mb'))} MB")
        out(f"  Min Worker:       {fmt_num(memory.get('min_memory_worker_mb'))} MB")

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
    rows = _worker_rows(entry)
    on_cluster = any(w.get("dask_worker") for w in rows)  # a cluster pool: say where each runs
    columns = [("Worker ID", "left")] + ([("Host", "left")] if on_cluster else []) + [
        ("Status", "left"), ("Load/Cap", "right"), ("Memory", "right"), ("USS", "right"),
        ("Requests", "right"), ("Uptime", "right"), ("PID", "right")]
    for col, justify in columns:
        table.add_column(col, justify=justify, no_wrap=True)
    for w in rows:
        status = str(w.get("status", "unknown"))
        shown = {"available": ("✓ Available", "green"), "busy": ("● Busy", "yellow")}.get(
            status, (f"? {status.capitalize()}", "dim"))
        mem = w.get("memory_mb")
        uss = w.get("uss_mb")
        host = [str(w.get("host") or "-")] if on_cluster else []
        table.add_row(
            str(w.get("worker_id", "?"))[:28],
            *host,
            Text(shown[0], style=shown[1]),
            f"{w.get('load', '-')}/{w.get('capacity', '-')}",
            f"{fmt_num(mem)} MB" if isinstance(mem, (int, float)) else "-",
            f"{fmt_num(uss)} MB" if isinstance(uss, (int, float)) else "-",
            str(w.get("requests_served", "-")),
            fmt_duration(w.get("uptime_s")) if isinstance(w.get("uptime_s"), (int, float)) else "-",
            str(w.get("pid", "-")),
        )
    return table


def _render_recommendations(out: Out, recs: Any) -> None:
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
    out = Out(console or make_console())
    if header:
        banner(out, "🔍 SNAKEPIT PROFILE INSPECTOR")
    for entry in report.values():
        render_pool(out, entry, detailed=detailed, recommendations=recommendations)
    if header:
        banner(out, "✅ INSPECTION COMPLETE", before=False)


def pools_table(rows: list[dict[str, Any]]) -> Any:
    """The ``snakepit pools`` table of the managers' ``hello`` answers (rich)."""
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
            fmt_duration(row.get("uptime_s")),
            short_command(row.get("command", "")),
        )
    return table
