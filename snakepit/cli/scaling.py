"""``snakepit diagnose-scaling``: live pool analysis, OS limits, measured start time and memory,
and the recommendation that follows."""
from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any, Sequence

from .managers import inspect_managers
from .output import Out, banner, emit_json, fmt_num, make_console
from .render_scaling import print_analysis, print_limits, print_measurements, print_test0

# Thresholds of the original diagnose.scaling (TEST 0).
THREAD_POOL_WARN = 100
PROCESS_POOL_WARN = 250
SYSTEM_PROCESS_WORKERS_WARN = 300


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
               for manager, _, report in inspect_managers(managers, None, False, False)
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
            f"workers than CPUs only queue. A worker costs ~{fmt_num(proc['memory_mb_per_worker'])} MB of "
            f"its own memory; a pool of 1 is ready in {one}, of {proc['largest_pool_measured']} in "
            f"{proc['ready_s_largest_pool']:.2f} s (workers start in parallel).")
    if proc and thr:
        ratio = proc["memory_mb_per_slot"] / thr["memory_mb_per_slot"] if thr["memory_mb_per_slot"] else 0.0
        recs.append(
            f"I/O-bound or GIL-releasing work (NumPy, network, subprocesses): the thread profile with "
            f"{threads_per_worker} threads per worker costs ~{fmt_num(thr['memory_mb_per_slot'], 2)} MB per "
            f"concurrent request, {fmt_num(ratio)}x less than the process profile.")
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
    from .. import admin  # noqa: PLC0415

    admin.set_enabled(False)  # the measurement pools are not for other processes to see
    json_mode = fmt == "json"
    out = Out(make_console(stderr=json_mode))
    if not json_mode:
        banner(out, "🔬 SNAKEPIT SCALING DIAGNOSTICS")

    result: dict[str, Any] = {}
    managers = admin.discover(include_self=False)
    result["profile_analysis"] = _profile_analysis(managers)
    if not json_mode:
        print_test0(out, result["profile_analysis"])

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
        emit_json(result)
        return
    print_limits(out, limits, result["analysis"])
    if measurements:
        print_measurements(out, measurements, threads_per_worker)
        print_analysis(out, result["analysis"])
    banner(out, "✅ DIAGNOSTICS COMPLETE", before=False)
