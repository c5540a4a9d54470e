"""The text report of ``snakepit diagnose-scaling`` (TEST 0 to 3, analysis, recommendation)."""
from __future__ import annotations

from typing import Any

from .output import THIN, Out, fmt_num

def print_test0(out: Out, analysis: dict[str, Any]) -> None:
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
        out(f"  Utilization:     {fmt_num(p['utilization_percent'])}%")
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


def print_limits(out: Out, limits: dict[str, Any], analysis: dict[str, Any]) -> None:
    out()
    out("📊 TEST 1: FILE DESCRIPTOR LIMITS", "bold")
    out(THIN)
    soft, hard = limits["nofile_soft"], limits["nofile_hard"]
    out(f"  Open files limit:  {soft if soft is not None else 'unlimited'} (hard {hard if hard is not None else 'unlimited'})")
    out(f"  Open in this process: {limits['open_fds']}")
    for profile, a in (analysis.get("profiles") or {}).items():
        cap = a["limits"].get("file descriptors")
        line = f"  {profile:<8} {fmt_num(a['fds_per_worker'], 2)} descriptors per worker → max {cap} workers"
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
        out(f"  {profile:<8} {fmt_num(a['threads_per_worker'])} threads per worker (worker + manager side, "
            f"busy) → max {cap} workers",
            "yellow" if cap is not None and cap < 110 else None)
    usage = (limits["user_threads"] / ns * 100) if ns else 0.0
    if usage > 80:
        out(f"  ⚠️  {usage:.0f}% of the process limit is in use", "yellow")
    else:
        out("  ✅ Process limit is healthy", "green")
    out()


def print_measurements(out: Out, measurements: list[dict[str, Any]], threads_per_worker: int) -> None:
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
            f"{fmt_num(m['worker_startup_ms_avg'], 0)} ms", f"{fmt_num(m['rss_mb_per_worker'])} MB",
            f"{fmt_num(m['uss_mb_per_worker'])} MB", fmt_num(m["threads_per_process"]),
            str(m["manager_fds"]),
        )
    out.print(table)


def print_analysis(out: Out, analysis: dict[str, Any]) -> None:
    out()
    out("📈 ANALYSIS", "bold")
    out(THIN)
    for profile, a in analysis.get("profiles", {}).items():
        out(f"  {profile:<8} max {a['max_workers']} workers = {a['max_concurrent_requests']} concurrent requests "
            f"(bound: {a['limited_by']}); {fmt_num(a['memory_mb_per_slot'], 2)} MB per request slot")
    out()
    out("💡 RECOMMENDATION", "bold")
    for rec in analysis.get("recommendations", []):
        out(f"  • {rec}", "cyan")
