"""Turn the jobs' raw results into a summary, the goals of issue 7, and markdown tables."""
from __future__ import annotations

from typing import Any

BASE = "ProcessPoolExecutor"

# (key, label, which way is better, format)
METRICS: list[tuple[str, str, str, str]] = [
    ("noop_p50_us", "no-op round trip p50 (µs), submit(fn)", "lower", "{:.0f}"),
    ("noop_p99_us", "no-op round trip p99 (µs), submit(fn)", "lower", "{:.0f}"),
    ("execute_p50_us", "no-op round trip p50 (µs), execute('echo')", "lower", "{:.0f}"),
    ("execute_p99_us", "no-op round trip p99 (µs), execute('echo')", "lower", "{:.0f}"),
    ("submit_tasks_per_s", "no-op tasks/s, one submit per task (2 workers)", "higher", "{:.0f}"),
    ("main_p50_us", "no-op round trip p50 (µs), submit(fn), fn defined in __main__", "lower", "{:.0f}"),
    ("main_p99_us", "no-op round trip p99 (µs), submit(fn), fn defined in __main__", "lower", "{:.0f}"),
    ("main_tasks_per_s", "no-op tasks/s, one submit per task, fn defined in __main__", "higher", "{:.0f}"),
    ("map_tasks_per_s", "no-op tasks/s, map default chunking (2 workers)", "higher", "{:.0f}"),
    ("ready16_s", "16 workers: s until each answered a first call", "lower", "{:.2f}"),
    ("ready100_s", "100 workers: s until each answered a first call", "lower", "{:.2f}"),
    ("idle_worker_uss_mb", "idle worker USS (MB, median)", "lower", "{:.1f}"),
    ("idle_worker_rss_mb", "idle worker RSS (MB, median)", "lower", "{:.1f}"),
    ("pool16_total_uss_mb", "16-worker pool incl. manager, total USS (MB)", "lower", "{:.0f}"),
    ("pool16_total_rss_mb", "16-worker pool incl. manager, total RSS (MB)", "lower", "{:.0f}"),
    ("pool100_total_uss_mb", "100-worker pool incl. manager, total USS (MB)", "lower", "{:.0f}"),
    ("large_bytes_s", "large result, bytes: seconds", "lower", "{:.2f}"),
    ("large_bytes_peak_x", "large result, bytes: kernel's peak RSS growth / size", "lower", "{:.2f}"),
    ("large_bytes_left_mb", "large result, bytes: MB still resident after it is dropped", "lower", "{:.0f}"),
    ("large_numpy_s", "large result, NumPy array: seconds", "lower", "{:.2f}"),
    ("large_numpy_peak_x", "large result, NumPy array: kernel's peak RSS growth / size", "lower", "{:.2f}"),
    ("large_numpy_left_mb", "large result, NumPy array: MB still resident after it is dropped", "lower", "{:.0f}"),
]


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def summarize(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    peers: dict[str, dict[str, Any]] = {}
    gil: list[dict[str, Any]] = []
    out: dict[str, Any] = {"peers": peers, "gil": gil, "failures": [], "notes": []}
    for job in jobs:
        peer, group, m = job.get("peer"), job.get("group"), job.get("metrics") or {}
        if not job.get("ok") or not job.get("cleanup_ok", True):
            out["failures"].append({"peer": peer, "group": group, "error": job.get("error"),
                                    "leftover_pids": job.get("leftover_pids")})
        if not m:
            continue
        row = peers.setdefault(peer, {}) if peer != "none" else {}
        if group == "calls":
            row["noop_p50_us"] = _get(m, "latency_submit", "p50_us")
            row["noop_p99_us"] = _get(m, "latency_submit", "p99_us")
            row["execute_p50_us"] = _get(m, "latency_execute", "p50_us")
            row["execute_p99_us"] = _get(m, "latency_execute", "p99_us")
            row["submit_tasks_per_s"] = _get(m, "throughput_submit", "tasks_per_s")
            row["submit_tasks"] = _get(m, "throughput_submit", "tasks")
            row["map_tasks_per_s"] = _get(m, "throughput_map", "tasks_per_s")
            row["main_p50_us"] = _get(m, "latency_submit_main", "p50_us")
            row["main_p99_us"] = _get(m, "latency_submit_main", "p99_us")
            row["main_tasks_per_s"] = _get(m, "throughput_submit_main", "tasks_per_s")
            row["map_tasks"] = _get(m, "throughput_map", "tasks")
            row["map_note"] = m.get("map_note")
        elif group in ("p16", "t2x8", "p100"):
            idle = m.get("idle_memory") or {}
            if group == "p16" or (group == "t2x8" and "idle_worker_uss_mb" not in row):
                row["idle_worker_uss_mb"] = idle.get("worker_uss_mb")
                row["idle_worker_rss_mb"] = idle.get("worker_rss_mb")
            if group == "p16":
                row["ready16_s"] = m.get("ready_s")
                row["pool16_total_uss_mb"] = idle.get("total_uss_mb")
                row["pool16_total_rss_mb"] = idle.get("total_rss_mb")
            if group == "p100":
                row["ready100_s"] = m.get("ready_s")
                row["pool100_total_uss_mb"] = idle.get("total_uss_mb")
                if m.get("diagnostics"):
                    out["diagnostics"] = m["diagnostics"]
            if "gil_sleep" in m:
                shape = f"{m['workers']} workers x {m['threads']} threads" if m["threads"] > 1 \
                    else f"{m['workers']} processes"
                gil.append({
                    "peer": peer, "shape": shape,
                    "sleep_wall_s": _get(m, "gil_sleep", "wall_s"),
                    "sleep_tasks": _get(m, "gil_sleep", "tasks"), "sleep_arg": _get(m, "gil_sleep", "arg"),
                    "numpy_wall_s": _get(m, "gil_numpy", "wall_s"),
                    "numpy_tasks": _get(m, "gil_numpy", "tasks"), "numpy_arg": _get(m, "gil_numpy", "arg"),
                    "peak_total_uss_mb": _get(m, "gil_memory", "peak_total_uss_mb"),
                    "peak_total_rss_mb": _get(m, "gil_memory", "peak_total_rss_mb"),
                })
        elif group == "large":
            row["large_mb"] = m.get("mb")
            for kind in ("bytes", "numpy"):
                row[f"large_{kind}_s"] = _get(m, kind, "seconds")
                row[f"large_{kind}_peak_x"] = _get(m, kind, "peak_x")
                row[f"large_{kind}_left_mb"] = _get(m, kind, "left_mb")
        elif group == "overhead":
            out["overhead"] = m
        elif group == "floor":
            out["floor"] = m
        elif group == "cluster":
            out["cluster"] = m
        elif group == "duel":
            out["duel"] = m
    return out


def _ratio(value: Any, base: Any) -> float | None:
    if value is None or base in (None, 0):
        return None
    return value / base


def goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    p = summary["peers"]
    sp = p.get("snakepit-process", {})
    ppe = p.get(BASE, {})
    mp = p.get("multiprocessing.Pool", {})
    loky = p.get("loky", {})
    ov = summary.get("overhead") or {}
    diag = summary.get("diagnostics") or {}
    th = p.get("snakepit-thread", {})
    # goal -> the same ratio measured with the peers side by side (group "duel"), if it ran
    duel = (summary.get("duel") or {}).get("ratios") or {}
    side_by_side = {
        "no-op submit(fn) p50 vs ProcessPoolExecutor": duel.get("submit_p50_vs_ppe"),
        "no-op submit(fn) p50, fn in __main__, vs ProcessPoolExecutor": duel.get("main_p50_vs_ppe"),
        "thread profile submit(fn) p50 vs process profile": duel.get("thread_p50_vs_process"),
        "20k no-ops, one submit each, fn in __main__, vs multiprocessing.Pool.apply_async": duel.get("main_tasks_vs_mp"),
        "20k no-ops, one submit each, vs multiprocessing.Pool.apply_async": duel.get("submit_tasks_vs_mp"),
        "20k no-ops, map default chunking, vs multiprocessing.Pool.map": duel.get("map_tasks_vs_mp"),
        "thread profile 20k submits, tasks/s vs process profile": duel.get("thread_tasks_vs_process"),
    }
    rows = [
        ("no-op execute p50 vs ProcessPoolExecutor", "<= 1.0x",
         _ratio(sp.get("execute_p50_us"), ppe.get("noop_p50_us")), lambda r: r <= 1.0),
        ("no-op submit(fn) p50 vs ProcessPoolExecutor", "<= 1.0x",
         _ratio(sp.get("noop_p50_us"), ppe.get("noop_p50_us")), lambda r: r <= 1.0),
        ("no-op submit(fn) p50, fn in __main__, vs ProcessPoolExecutor", "<= 1.0x",
         _ratio(sp.get("main_p50_us"), ppe.get("main_p50_us")), lambda r: r <= 1.0),
        ("no-op execute p99 vs ProcessPoolExecutor", "<= 1.5x",
         _ratio(sp.get("execute_p99_us"), ppe.get("noop_p99_us")), lambda r: r <= 1.5),
        ("no-op submit(fn) p99 vs ProcessPoolExecutor", "<= 1.5x",
         _ratio(sp.get("noop_p99_us"), ppe.get("noop_p99_us")), lambda r: r <= 1.5),
        ("thread profile submit(fn) p50 vs process profile", "<= 1.2x",
         _ratio(th.get("noop_p50_us"), sp.get("noop_p50_us")), lambda r: r <= 1.2),
        ("thread profile 20k submits, tasks/s vs process profile", ">= 0.83x (within 1.2x)",
         _ratio(th.get("submit_tasks_per_s"), sp.get("submit_tasks_per_s")), lambda r: r >= 1 / 1.2),
        ("20k no-ops, one submit each, fn in __main__, vs multiprocessing.Pool.apply_async", ">= 1.0x",
         _ratio(sp.get("main_tasks_per_s"), mp.get("main_tasks_per_s")), lambda r: r >= 1.0),
        ("20k no-ops, one submit each, vs multiprocessing.Pool.apply_async", ">= 1.0x",
         _ratio(sp.get("submit_tasks_per_s"), mp.get("submit_tasks_per_s")), lambda r: r >= 1.0),
        ("20k no-ops, map default chunking, vs multiprocessing.Pool.map", ">= 1.0x",
         _ratio(sp.get("map_tasks_per_s"), mp.get("map_tasks_per_s")), lambda r: r >= 1.0),
        ("16 workers ready vs loky", "<= 0.5x", _ratio(sp.get("ready16_s"), loky.get("ready16_s")),
         lambda r: r <= 0.5),
        ("100 workers ready (s)", "<= 3 s", sp.get("ready100_s"), lambda r: r <= 3.0),
        ("idle process-worker USS (MB)", "<= 5 MB", sp.get("idle_worker_uss_mb"), lambda r: r <= 5.0),
        ("telemetry per request, 0 handlers (µs)", "<= 2 µs", ov.get("emit_0_handlers_us"), lambda r: r <= 2.0),
        ("telemetry per request, 1 handler (µs)", "<= 2 µs", ov.get("emit_1_handler_us"), lambda r: r <= 2.0),
        ("get_pool_stats at 100 workers (ms)", "<= 2 ms", _get(diag, "get_pool_stats", "median_ms"),
         lambda r: r <= 2.0),
        ("get_memory_stats at 100 workers (ms)", "<= 10 ms", _get(diag, "get_memory_stats", "median_ms"),
         lambda r: r <= 10.0),
        ("cluster pool no-op p50 vs Dask Client.submit", "<= 0.1x",
         _get(summary.get("cluster") or {}, "p50_ratio"), lambda r: r <= 0.1),
        ("cluster pool submit throughput vs Dask", ">= 10x",
         _get(summary.get("cluster") or {}, "throughput_ratio"), lambda r: r >= 10.0),
    ]
    out = []
    for name, target, value, ok in rows:
        row = {"goal": name, "target": target, "measured": value,
               "met": None if value is None else bool(ok(value))}
        pair = side_by_side.get(name)
        if pair:
            row["side_by_side"] = dict(pair, met=bool(ok(pair["median"])))
        out.append(row)
    return out


def _fmt(fmt: str, v: Any) -> str:
    return "–" if v is None else fmt.format(v)


def markdown(doc: dict[str, Any]) -> str:
    meta, summary = doc["meta"], doc["summary"]
    peers = [p for p in ["snakepit-process", "snakepit-process-grpc", "snakepit-process-spawn", "snakepit-thread", BASE,
                         "multiprocessing.Pool", "loky", "ipyparallel", "dask"] if p in summary["peers"]]
    base = summary["peers"].get(BASE, {})
    lines = [
        f"## Benchmark results ({'quick' if meta.get('quick') else 'full'} run)",
        "",
        f"{meta['date']} · {meta['machine']} · Python {meta['python']} · commit {meta.get('commit') or '?'}"
        f" · snakepit start_method={meta.get('start_method')}, pipeline_depth={meta.get('pipeline_depth') or 'automatic'}"
        f" · run took {meta.get('total_s', 0):.0f} s"
        + (f" · loaded: {meta['load']} busy process(es) beside the run" if meta.get("load") else ""),
        "",
        "Each cell: value (ratio to ProcessPoolExecutor). Times: lower is better; tasks/s: higher "
        "is better. Shared, noisy 2-core box: read the ratios, not the absolute numbers.",
        "",
        "| metric | " + " | ".join(peers) + " |",
        "|---|" + "---|" * len(peers),
    ]
    for key, label, _better, fmt in METRICS:
        cells = []
        base_key = "noop_p50_us" if key == "execute_p50_us" else "noop_p99_us" if key == "execute_p99_us" else key
        for peer in peers:
            v = summary["peers"][peer].get(key)
            r = _ratio(v, base.get(base_key))
            cells.append(_fmt(fmt, v) + (f" ({r:.2f}x)" if r is not None else ""))
        if all(c == "–" for c in cells):
            continue
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    notes = [f"{p}: {summary['peers'][p].get('map_note')}" for p in peers if summary["peers"][p].get("map_note")]
    partial = [f"{p} ran {summary['peers'][p].get(k)} tasks ({k.split('_')[0]})" for p in peers
               for k in ("submit_tasks", "map_tasks")
               if summary["peers"][p].get(k) and summary["peers"][p][k] < meta["params"]["n_tasks"]]
    lines += ["", "map: " + "; ".join(notes) + "."]
    if partial:
        lines += ["", "Time-bounded (rate measured on fewer tasks): " + "; ".join(partial) + "."]
    if "snakepit-process-grpc" in peers:
        lines += ["", "snakepit-process-grpc: the same pool with transport=\"grpc\" (the gRPC Dispatch stream; the "
                  "local lane is the default), for the call rows."]
    if "snakepit-process-spawn" in peers:
        lines += ["", "snakepit-process-spawn: the same pool with start_method=\"spawn\" (forkserver is the default), "
                  "for the start-up and memory rows."]
    large = next((summary["peers"][p]["large_mb"] for p in peers if summary["peers"][p].get("large_mb")), None)
    if large:
        lines += ["", f"large result rows: one {large} MiB result from 1 worker (`b'\\x07' * n`, then a NumPy "
                  "uint8 array), into the bench process; peak RSS growth over the result's size (VmHWM and a "
                  "2 ms psutil sampler) and what stayed resident after `del` + `gc.collect()`."]
    lines += ["", "100-worker rows skip ipyparallel and Dask (a 16-worker start already takes them "
              "10–20 s here; 100 would not fit the run's time bound)."]
    if summary["gil"]:
        base_gil = next((g for g in summary["gil"] if g["peer"] == BASE), {})
        g0 = summary["gil"][0]
        lines += [
            "",
            f"### GIL-releasing work ({g0['sleep_tasks']} × sleep({g0['sleep_arg']}) and "
            f"{g0['numpy_tasks']} × NumPy {g0['numpy_arg']}² matmul)",
            "",
            "| pool | shape | sleep wall s | NumPy wall s | peak total USS MB | peak total RSS MB |",
            "|---|---|---|---|---|---|",
        ]
        for g in summary["gil"]:
            cells = []
            for k, fmt in (("sleep_wall_s", "{:.2f}"), ("numpy_wall_s", "{:.2f}"),
                           ("peak_total_uss_mb", "{:.0f}"), ("peak_total_rss_mb", "{:.0f}")):
                r = _ratio(g.get(k), base_gil.get(k))
                cells.append(_fmt(fmt, g.get(k)) + (f" ({r:.2f}x)" if r is not None else ""))
            lines.append(f"| {g['peer']} | {g['shape']} | " + " | ".join(cells) + " |")
    cl = summary.get("cluster")
    if cl:
        sp, dk = cl["snakepit"], cl["dask"]
        lines += [
            "", f"### Cluster pool ({cl.get('dask_workers', 2)} Dask workers on loopback, "
            f"{cl.get('snakepit_workers', 4)} snakepit workers)", "",
            "| | no-op p50 ms | p99 ms | tasks/s (one submit each) |", "|---|---|---|---|",
            f"| snakepit cluster pool, execute / submit | {sp['p50_ms']:.3f} ({cl['p50_ratio']:.3f}x) | "
            f"{sp['p99_ms']:.3f} | {sp['tasks_per_s']:.0f} ({cl['throughput_ratio']:.1f}x) |",
            f"| Dask Client.submit | {dk['p50_ms']:.3f} (1.00x) | {dk['p99_ms']:.3f} | {dk['tasks_per_s']:.0f} (1.0x) |",
            "", f"Ratios to Dask on the same cluster; snakepit ran {sp.get('tasks')} tasks, Dask {dk.get('tasks')}.",
        ]
    ov = summary.get("overhead")
    if ov:
        lines += [
            "", "### snakepit overheads", "",
            "| what | value |", "|---|---|",
            f"| telemetry emit per request, 0 handlers | {ov.get('emit_0_handlers_us', 0):.2f} µs |",
            f"| telemetry emit per request, 1 handler | {ov.get('emit_1_handler_us', 0):.2f} µs |",
            f"| execute p50, 0 handlers / 1 handler (end to end) | {ov.get('e2e_0_handlers_p50_us', 0):.0f} µs"
            f" / {ov.get('e2e_1_handler_p50_us', 0):.0f} µs |",
        ]
        diag = summary.get("diagnostics") or {}
        for name in ("get_pool_stats", "get_memory_stats"):
            d = diag.get(name)
            if d is None:
                continue
            val = d.get("skipped") or f"{d['median_ms']:.2f} ms (median of {d['n']})"
            lines.append(f"| `{name}` at 100 workers | {val} |")
    fl = summary.get("floor")
    if fl:
        lines += ["", "### Transport floor (raw round trips, no pool)", "",
                  "| transport | p50 µs | p99 µs |", "|---|---|---|"]
        for srv in ("grpc_sync_server", "grpc_aio_server"):
            for k, v in (fl.get(srv) or {}).items():
                lines.append(f"| {srv.replace('_', ' ')}: {k.replace('_', ' ')} | {v['p50_us']:.0f} | {v['p99_us']:.0f} |")
        if fl.get("pipe"):
            lines.append(f"| multiprocessing pipe ping-pong | {fl['pipe']['p50_us']:.0f} | {fl['pipe']['p99_us']:.0f} |")
    duel = summary.get("duel")
    lines += ["", "### Goals (issue 7)", ""]
    if duel:
        lines += [f"\"side by side\": the same ratio from the `duel` job, where the goals' peers ran in one "
                  f"process, pools alive together, measured in turns ({len(duel['rounds'])} rounds, order "
                  f"rotating; {duel['n_latency']} calls per latency, {duel['tasks']} tasks per burst): median of "
                  "the per-round ratios [lowest–highest]. The separate jobs' ratio compares figures taken "
                  "minutes apart.", ""]
    lines += ["| goal | target | measured | met | side by side | met |", "|---|---|---|---|---|---|"]
    for g in doc["goals"]:
        v = g["measured"]
        pair = g.get("side_by_side")
        pair_cell = (f"{pair['median']:.2f} [{pair['min']:.2f}–{pair['max']:.2f}] | {'yes' if pair['met'] else 'NO'}"
                     if pair else "– | –")
        lines.append(f"| {g['goal']} | {g['target']} | {_fmt('{:.2f}', v)} | "
                     f"{'–' if g['met'] is None else ('yes' if g['met'] else 'NO')} | {pair_cell} |")
    if summary["failures"]:
        lines += ["", "### Failures", ""]
        for f in summary["failures"]:
            lines.append(f"* {f['peer']} / {f['group']}: {f['error']} leftovers={f['leftover_pids']}")
    return "\n".join(lines) + "\n"
