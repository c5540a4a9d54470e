"""Recommendation rules: the seed's thresholds, plus rules from measurement.

Every rule is a function of one :class:`Snapshot` (what the inspector collected: the pool's
figures now, its memory, the history window, its settings) and the :class:`Thresholds`;
it returns a :class:`Recommendation` or None. The order is the seed's (profile, memory,
utilization) followed by the measured rules.

| rule | severity | fires when |
|---|---|---|
| ``threads_per_worker_low`` / ``_high`` | info | thread profile, < 4 or > 32 threads per worker |
| ``process_workers_many`` | info | process profile, > 200 workers |
| ``memory_average_high`` | warning | average worker RSS ≥ 100 MB |
| ``memory_peak_high`` | warning | else largest worker RSS ≥ 200 MB |
| ``utilization_critical`` | critical | utilization ≥ 90 % |
| ``utilization_high`` | warning | else ≥ 80 % |
| ``utilization_low`` | info | else < 20 % with > 10 workers |
| ``gil_bound`` | warning | a thread worker uses about one core while ≥ 2 threads are busy, and few of them are runnable |
| ``io_idle_process_pool`` | info | process workers mostly busy but neither running nor waiting for a CPU |
| ``memory_growth`` | warning | a worker's memory grows steadily across requests |
| ``frequent_saturation`` | warning | ≥ 3 rejections (queue full) in the window |
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .history import NAN, iter_workers
from .projection import comparison_rows
from .reports import MemoryStats, Recommendation

__all__ = ["Thresholds", "Snapshot", "evaluate", "RULES", "available_cpus"]


def available_cpus() -> int:
    """CPUs this process may run on (affinity / cgroup cpuset), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the rules (defaults: the seed's, and the measured rules' own)."""

    utilization_critical: float = 90.0
    utilization_high: float = 80.0
    utilization_low: float = 20.0
    low_min_workers: int = 10  # "low" needs more than this many workers
    memory_avg_mb: float = 100.0
    memory_peak_mb: float = 200.0
    threads_min: int = 4
    threads_max: int = 32
    process_workers_max: int = 200
    #: Seconds of history the measured rules look at.
    window_s: float = 60.0
    # GIL-bound thread pool
    gil_min_busy_threads: float = 2.0
    gil_min_busy_s: float = 1.5
    gil_cpu_cores_low: float = 0.25
    gil_cpu_cores_high: float = 1.3
    #: GIL-bound only if the threads that wanted to run (CPU + run-queue wait, in cores) stay
    #: below this fraction of the busy threads.
    gil_max_runnable_ratio: float = 0.6
    # I/O-idle process pool
    io_min_utilization: float = 50.0
    io_max_cpu_per_busy_worker: float = 0.15
    io_min_busy_s: float = 1.5
    io_min_workers: int = 2
    # Memory growth (leak suspect)
    leak_min_growth_mb: float = 16.0
    leak_min_points: int = 4
    leak_monotonic_fraction: float = 0.75
    # Frequent saturation
    saturation_min_events: int = 3


@dataclass(frozen=True)
class Snapshot:
    """What the rules look at (built by the inspector; tests may build their own)."""

    pool_name: str
    profile: str
    worker_count: int
    capacity_total: int
    capacity_used: int
    utilization_percent: float
    threads_per_worker: int
    memory: MemoryStats
    samples: Sequence[Mapping[str, Any]] = ()
    saturation_times: Sequence[float] = ()
    now: float = 0.0
    settings: Mapping[str, Any] = field(default_factory=dict)
    cpu_count: int = field(default_factory=available_cpus)


Rule = Callable[[Snapshot, Thresholds], "Recommendation | None"]


# ---------------------------------------------------------------------------------- seed rules
def _target_pool_size(used: int, per_worker: int, target_percent: float) -> int:
    return max(1, math.ceil(used / (target_percent / 100.0) / max(1, per_worker)))


def rule_profile(s: Snapshot, t: Thresholds) -> Recommendation | None:
    if s.profile == "thread" and s.worker_count > 0:
        tpw = s.capacity_total // s.worker_count
        ev = {"threads_per_worker": tpw, "workers": s.worker_count}
        if tpw < t.threads_min:
            return Recommendation(
                "info", "threads_per_worker_low",
                f"Thread pool has {tpw} threads per worker. Consider increasing for better CPU utilization.",
                ev, {"threads_per_worker": t.threads_min})
        if tpw > t.threads_max:
            return Recommendation(
                "info", "threads_per_worker_high",
                f"Thread pool has {tpw} threads per worker. Consider reducing to avoid context switching overhead.",
                ev, {"threads_per_worker": t.threads_max})
    if s.profile == "process" and s.worker_count > t.process_workers_max:
        tpw = 16
        return Recommendation(
            "info", "process_workers_many",
            f"Large number of process workers ({s.worker_count}). Consider using thread profile for "
            "better resource efficiency.",
            {"workers": s.worker_count},
            {"profile": "thread", "pool_size": math.ceil(s.worker_count / tpw), "threads_per_worker": tpw})
    return None


def rule_memory(s: Snapshot, t: Thresholds) -> Recommendation | None:
    m = s.memory
    if not m.workers:
        return None
    ev = {"avg_memory_per_worker_mb": m.avg_memory_per_worker_mb, "max_memory_worker_mb": m.max_memory_worker_mb}
    threshold = max(64, math.ceil(m.max_memory_worker_mb * 1.5 / 64) * 64)
    if m.avg_memory_per_worker_mb >= t.memory_avg_mb:
        return Recommendation(
            "warning", "memory_average_high",
            f"Average memory per worker is high ({m.avg_memory_per_worker_mb}MB). Monitor for memory leaks.",
            ev, {"memory_threshold_mb": threshold})
    if m.max_memory_worker_mb >= t.memory_peak_mb:
        top = max(m.workers, key=lambda w: w.memory_mb or 0.0)
        return Recommendation(
            "warning", "memory_peak_high",
            f"Peak worker memory usage is {m.max_memory_worker_mb}MB. Consider worker recycling.",
            {**ev, "worker_id": top.worker_id}, {"memory_threshold_mb": threshold})
    return None


def rule_utilization(s: Snapshot, t: Thresholds) -> Recommendation | None:
    pct = s.utilization_percent
    per_worker = s.capacity_total // s.worker_count if s.worker_count else 1
    ev = {"utilization_percent": pct, "capacity_used": s.capacity_used, "capacity_total": s.capacity_total,
          "workers": s.worker_count}
    if pct >= t.utilization_critical:
        return Recommendation(
            "critical", "utilization_critical",
            f"Pool utilization is very high ({pct}%). Add more workers immediately.",
            ev, {"pool_size": max(s.worker_count + 1, _target_pool_size(s.capacity_used, per_worker, 70.0))})
    if pct >= t.utilization_high:
        return Recommendation(
            "warning", "utilization_high",
            f"Pool utilization is high ({pct}%). Consider adding more workers.",
            ev, {"pool_size": max(s.worker_count + 1, _target_pool_size(s.capacity_used, per_worker, 70.0))})
    if pct < t.utilization_low and s.worker_count > t.low_min_workers:
        return Recommendation(
            "info", "utilization_low",
            f"Pool utilization is low ({pct}%). Consider reducing worker count to save resources.",
            ev, {"pool_size": min(s.worker_count - 1,
                                  max(1, _target_pool_size(s.capacity_used, per_worker, 60.0)))})
    return None


# ---------------------------------------------------------------------------------- measured rules
def _window(s: Snapshot, t: Thresholds) -> list[Mapping[str, Any]]:
    cutoff = s.now - t.window_s
    return [x for x in s.samples if x["time"] >= cutoff]


def _worker_intervals(samples: Sequence[Mapping[str, Any]]):  # type: ignore[no-untyped-def]
    """Yield ``(worker_id, dt, cpu_delta, wait_delta, load_a, load_b)`` for consecutive samples of one process.

    ``wait_delta`` (run-queue wait) is NaN where it was not measured.
    """
    last: dict[tuple[str, int], tuple[float, float, float, float]] = {}
    for sample in samples:
        now = sample["time"]
        for w in iter_workers(sample):  # type: ignore[arg-type]
            key = (w["worker_id"], int(w["pid"]))
            prev = last.get(key)
            cpu = w["cpu_time_s"]
            wait = w.get("run_wait_s", NAN)
            if prev is not None and cpu == cpu and prev[1] == prev[1] and now > prev[0]:
                wait_delta = max(0.0, wait - prev[3]) if wait == wait and prev[3] == prev[3] else NAN
                yield w["worker_id"], now - prev[0], max(0.0, cpu - prev[1]), wait_delta, prev[2], w["load"]
            last[key] = (now, cpu, w["load"], wait)


def rule_gil_bound(s: Snapshot, t: Thresholds) -> Recommendation | None:
    # Busy threads of a GIL-bound worker take turns: one runs Python, the others sleep waiting
    # for the GIL. So its CPU stays near one core, and -- what tells it apart from GIL-releasing
    # work on a crowded machine, which can also get about one core -- few of its threads are even
    # *runnable*: "demand" = (CPU time + run-queue wait) / wall time stays well below the number of
    # busy threads. Without run-queue figures (not Linux) only the CPU test is made, and only with
    # 2 CPUs or more.
    if s.profile != "thread" or s.threads_per_worker < 2:
        return None
    per: dict[str, list[float]] = {}
    for wid, dt, cpu, wait, load_a, load_b in _worker_intervals(_window(s, t)):
        if min(load_a, load_b) >= t.gil_min_busy_threads:
            acc = per.setdefault(wid, [0.0, 0.0, 0.0, 0.0, 0.0])
            acc[0] += dt
            acc[1] += cpu
            acc[2] += dt * (load_a + load_b) / 2
            if wait == wait:
                acc[3] += wait
                acc[4] += dt
    hits = []
    for wid, (busy_s, cpu_s, thread_s, wait_s, wait_dt) in per.items():
        if busy_s < t.gil_min_busy_s:
            continue
        cores = cpu_s / busy_s
        busy_threads = thread_s / busy_s
        if not t.gil_cpu_cores_low <= cores <= t.gil_cpu_cores_high:
            continue
        demand = None
        if wait_dt >= 0.9 * busy_s:
            demand = (cpu_s + wait_s) / busy_s
            if demand > t.gil_max_runnable_ratio * busy_threads:
                continue  # as many threads wanted to run as were busy: not the GIL, the machine
        elif s.cpu_count < 2:
            continue  # one CPU and no run-queue figures: cannot tell
        hits.append({"worker_id": wid, "cpu_cores": round(cores, 2), "busy_threads": round(busy_threads, 2),
                     "runnable_threads": round(demand, 2) if demand is not None else None,
                     "busy_seconds": round(busy_s, 2)})
    if not hits:
        return None
    first = hits[0]
    return Recommendation(
        "warning", "gil_bound",
        f"Thread pool looks GIL-bound: worker {first['worker_id']} used {first['cpu_cores']} CPU cores while "
        f"{first['busy_threads']} threads were busy. Consider the process profile for CPU-bound pure-Python work.",
        {"workers": hits, "cpu_count": s.cpu_count},
        {"profile": "process", "pool_size": max(1, min(s.capacity_total, s.cpu_count))})


def rule_io_idle(s: Snapshot, t: Thresholds) -> Recommendation | None:
    if s.profile != "process" or s.worker_count < t.io_min_workers:
        return None
    window = _window(s, t)
    if len(window) < 2:
        return None
    mean_util = sum(x["utilization_percent"] for x in window) / len(window)
    if mean_util < t.io_min_utilization:
        return None
    # Busy workers that neither ran nor waited for a CPU were waiting for something else (I/O).
    # Counting run-queue wait (Linux) keeps CPU-bound workers starved by a crowded machine out.
    busy_s = cpu_s = wait_s = 0.0
    for _wid, dt, cpu, wait, load_a, load_b in _worker_intervals(window):
        if min(load_a, load_b) >= 1:
            busy_s += dt
            cpu_s += cpu
            wait_s += wait if wait == wait else 0.0
    if busy_s < t.io_min_busy_s:
        return None
    per_busy = cpu_s / busy_s
    if (cpu_s + wait_s) / busy_s > t.io_max_cpu_per_busy_worker:
        return None
    capacity = max(1, s.capacity_total)
    tpw = max(t.threads_min, min(t.threads_max, capacity))
    rows = comparison_rows(s.memory, profile="process", threads_per_worker=1, capacity=capacity,
                           target_threads_per_worker=tpw)
    thread_row = rows[1]
    saving = thread_row["saving_mb"]
    return Recommendation(
        "info", "io_idle_process_pool",
        f"Process workers are busy {mean_util:.0f}% of the time but use {per_busy:.2f} CPU cores each while busy: "
        f"they mostly wait (I/O). The thread profile ({thread_row['workers']} x {tpw} threads) would serve the "
        f"same capacity with about {saving:.0f} MB less memory.",
        {"mean_utilization_percent": round(mean_util, 2), "cpu_cores_per_busy_worker": round(per_busy, 3),
         "busy_worker_seconds": round(busy_s, 2), "process_total_mb": rows[0]["projected_total_mb"],
         "thread_total_mb": thread_row["projected_total_mb"], "saving_mb": saving},
        {"profile": "thread", "pool_size": thread_row["workers"], "threads_per_worker": tpw})


def rule_memory_growth(s: Snapshot, t: Thresholds) -> Recommendation | None:
    # Per process: memory at each distinct requests_served value; steady growth across requests
    # (not one allocation at start-up) is what a leak looks like.
    series: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for sample in _window(s, t):
        for w in iter_workers(sample):  # type: ignore[arg-type]
            mem = w["uss_mb"] if w["uss_mb"] == w["uss_mb"] else w["rss_mb"]
            if mem != mem:
                continue
            pts = series.setdefault((w["worker_id"], int(w["pid"])), [])
            served = w["requests_served"]
            if pts and pts[-1][0] == served:
                pts[-1] = (served, mem, w["rss_mb"])
            else:
                pts.append((served, mem, w["rss_mb"]))
    hits = []
    for (wid, _pid), pts in series.items():
        if len(pts) < t.leak_min_points:
            continue
        growth = pts[-1][1] - pts[0][1]
        if growth < t.leak_min_growth_mb:
            continue
        steps = [b[1] - a[1] for a, b in zip(pts, pts[1:])]
        rising = sum(1 for d in steps if d >= -0.5) / len(steps)
        if rising < t.leak_monotonic_fraction:
            continue
        requests = pts[-1][0] - pts[0][0]
        hits.append({"worker_id": wid, "growth_mb": round(growth, 2), "requests": int(requests),
                     "mb_per_request": round(growth / requests, 3) if requests else None,
                     "memory_mb": round(pts[-1][2], 2) if pts[-1][2] == pts[-1][2] else None,
                     "baseline_mb": round(pts[0][1], 2)})
    if not hits:
        return None
    worst = max(hits, key=lambda h: h["growth_mb"])
    current = worst["memory_mb"] or worst["baseline_mb"]
    suggestion: dict[str, Any] = {"memory_threshold_mb": int(math.ceil((current + max(64.0, worst["growth_mb"])) / 64) * 64)}
    if worst["mb_per_request"]:
        suggestion["worker_max_requests"] = int(max(10, min(100_000, worst["baseline_mb"] / worst["mb_per_request"])))
    return Recommendation(
        "warning", "memory_growth",
        f"Worker {worst['worker_id']} memory grew {worst['growth_mb']} MB over {worst['requests']} requests "
        "and keeps growing: possible leak. Recycle workers with memory_threshold_mb or worker_max_requests.",
        {"workers": hits}, suggestion)


def rule_saturation(s: Snapshot, t: Thresholds) -> Recommendation | None:
    cutoff = s.now - t.window_s
    events = [x for x in s.saturation_times if x >= cutoff]
    if len(events) < t.saturation_min_events:
        return None
    window = _window(s, t)
    timeouts = (window[-1]["queue_timeouts"] - window[0]["queue_timeouts"]) if len(window) >= 2 else 0
    max_queue = int(s.settings.get("max_queue_size", 0) or 0)
    return Recommendation(
        "warning", "frequent_saturation",
        f"Pool rejected {len(events)} requests in the last {t.window_s:.0f} s because its queue was full "
        f"(max_queue_size={max_queue}). Add workers or raise max_queue_size.",
        {"rejections": len(events), "window_s": t.window_s, "queue_timeouts": timeouts,
         "max_queue_size": max_queue, "workers": s.worker_count},
        {"pool_size": max(s.worker_count + 1, math.ceil(s.worker_count * 1.5)),
         "max_queue_size": max(10, 2 * max_queue)})


def rule_adaptive(s: Snapshot, t: Thresholds) -> Recommendation | None:
    """Adaptive sizing is on: say so, and what it last did (it acts on the same signals)."""
    state = s.settings.get("adaptive") if s.settings else None
    if not state:
        return None
    last = state.get("last_decision")
    did = (f"last decision: {last['reason']} {last['from_size']} → {last['to_size']} workers"
           if last else "no decision yet")
    return Recommendation(
        "info", "adaptive_sizing",
        f"Adaptive sizing is on ({state['minimum']}–{state['maximum']} workers); {did}. "
        "It adds and removes workers by load, so size recommendations are applied automatically.",
        dict(state), {})


#: The rules, in the order their recommendations are listed.
RULES: tuple[Rule, ...] = (
    rule_profile, rule_memory, rule_utilization,
    rule_gil_bound, rule_io_idle, rule_memory_growth, rule_saturation, rule_adaptive,
)


def evaluate(snapshot: Snapshot, thresholds: Thresholds | None = None) -> list[Recommendation]:
    """Run every rule on a snapshot; the recommendations that fired, in :data:`RULES` order."""
    t = thresholds or Thresholds()
    out = []
    for rule in RULES:
        rec = rule(snapshot, t)
        if rec is not None:
            out.append(rec)
    return out
