"""``snakepit demo``: two pools, a mixed workload with progress bars, the inspector report."""
from __future__ import annotations

import time
from typing import Any, Callable

from .output import Out, make_console
from .render import render_inspection, utilization_badge

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

    from .. import admin  # noqa: PLC0415

    console = make_console()
    out = Out(console)
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
