"""One peer, one group of scenarios, in a process of its own.

``python -m bench.child --peer NAME --group GROUP --params JSON --out FILE``

Groups (each starts one pool and reuses it for its scenarios):

* ``calls``    2 workers: no-op round trip p50/p99, throughput of per-task submit and of ``map``.
* ``p16``      16 single-threaded workers: time until each answered a first call, idle memory,
               GIL-releasing work (sleep, NumPy) and the memory while it runs.
* ``t2x8``     2 workers × 8 threads (snakepit ``thread``, Dask): the same work and memory.
* ``p100``     100 workers: start-up time, idle memory, and for snakepit the cost of
               ``get_pool_stats`` / ``get_memory_stats`` on a pool that size.
* ``overhead`` snakepit only: telemetry cost per request with 0 and 1 handler.
* ``large``    1 worker: one big result (``large_mb`` MiB of bytes, then a NumPy array of that
               size): seconds, and the peak RSS growth of this process (the kernel) over the
               result's size, and what stayed resident after it was dropped.
* ``floor``    no pool: raw transports (gRPC bidi/unary over a Unix socket, a pipe), the floor
               under any gRPC-based design.

Every loop is bounded in count and in time. Worker processes are this process's
descendants: their pids are recorded, and the parent checks they are gone after we exit.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
import traceback
from typing import Any, Callable

import psutil

from .peers import make_peer
from .tasks import make_big, noop, numpy_task, sleep_task

MB = 2**20


# ---------------------------------------------------------------------------- helpers
class Tracker:
    """Remembers every descendant process seen, to check they are all gone at the end."""

    def __init__(self, pid_log: str | None = None) -> None:
        self.me = psutil.Process()
        self.seen: dict[int, float] = {}
        self._log = open(pid_log, "a") if pid_log else None  # read by the parent after a timeout

    def scan(self) -> list[psutil.Process]:
        kids = []
        for p in self.me.children(recursive=True):
            try:
                if p.pid not in self.seen:
                    self.seen[p.pid] = p.create_time()
                    if self._log is not None:
                        self._log.write(f"{p.pid} {self.seen[p.pid]}\n")
                        self._log.flush()
                kids.append(p)
            except psutil.Error:
                pass
        return kids

    def leftovers(self, timeout: float) -> list[int]:
        end = time.monotonic() + timeout
        while True:
            alive = [pid for pid, ct in self.seen.items() if _alive(pid, ct)]
            if not alive or time.monotonic() > end:
                return alive
            time.sleep(0.05)


def _alive(pid: int, create_time: float) -> bool:
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - create_time) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _mem(p: psutil.Process) -> tuple[float, float]:
    try:
        m = p.memory_full_info()
        return m.uss / MB, m.rss / MB
    except psutil.Error:
        return 0.0, 0.0


def memory_report(tracker: Tracker, worker_pids: set[int]) -> dict[str, Any]:
    kids = tracker.scan()
    by_pid = {p.pid: _mem(p) for p in kids}
    manager_uss, manager_rss = _mem(tracker.me)
    workers = [by_pid[pid] for pid in worker_pids if pid in by_pid]
    out: dict[str, Any] = {
        "manager_uss_mb": manager_uss,
        "manager_rss_mb": manager_rss,
        "processes": len(kids),
        "descendants_uss_mb": sum(u for u, _ in by_pid.values()),
        "total_uss_mb": manager_uss + sum(u for u, _ in by_pid.values()),
        "total_rss_mb": manager_rss + sum(r for _, r in by_pid.values()),
    }
    if workers:
        out["worker_uss_mb"] = statistics.median(u for u, _ in workers)
        out["worker_rss_mb"] = statistics.median(r for _, r in workers)
        out["workers_measured"] = len(workers)
    return out


def percentiles(samples_s: list[float]) -> dict[str, float]:
    xs = sorted(samples_s)
    n = len(xs)
    return {
        "n": n,
        "p50_us": xs[n // 2] * 1e6,
        "p99_us": xs[min(n - 1, int(n * 0.99))] * 1e6,
        "mean_us": sum(xs) / n * 1e6,
    }


def latency(fn: Callable[[], Any], n: int, warmup: int, budget_s: float) -> dict[str, float]:
    end = time.monotonic() + budget_s
    for _ in range(warmup):
        fn()
    samples = []
    perf = time.perf_counter
    for _ in range(n):
        t0 = perf()
        fn()
        samples.append(perf() - t0)
        if time.monotonic() > end and len(samples) >= 20:
            break
    out = percentiles(samples)
    out["requested"] = n
    return out


def throughput(run: Callable[[int], Any], n: int, budget_s: float) -> dict[str, float]:
    """Rate of ``run(k)``: k = n, or fewer when a calibration says n would not fit ``budget_s``.

    A run that takes milliseconds (``map`` of no-ops) is repeated, up to 7 times within the
    budget, and the median rate is reported.
    """
    calib = max(1, min(n, 200))
    t0 = time.perf_counter()
    run(calib)
    rate = calib / max(1e-9, time.perf_counter() - t0)
    k = n if n / rate <= budget_s else max(calib, int(rate * budget_s))
    end = time.monotonic() + budget_s
    times: list[float] = []
    while len(times) < 7:
        t0 = time.perf_counter()
        run(k)
        times.append(time.perf_counter() - t0)
        if time.monotonic() + times[-1] > end:
            break
    elapsed = statistics.median(times)
    return {"tasks": k, "requested": n, "seconds": elapsed, "tasks_per_s": k / elapsed, "repeats": len(times)}


# ---------------------------------------------------------------------------- groups
def group_calls(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    peer.start(2, threads=p.get("threads", 1))
    out["start_s"] = time.perf_counter() - t0
    peer.first_calls(2, time.monotonic() + 60)
    tracker.scan()
    out["latency_submit"] = latency(peer.call_noop, p["n_latency"], p["warmup"], p["budget_s"])
    if hasattr(peer, "execute_echo"):
        out["latency_execute"] = latency(peer.execute_echo, p["n_latency"], p["warmup"], p["budget_s"])

    def submit_many(k: int) -> None:
        futs = [peer.submit(noop) for _ in range(k)]
        for f in futs:
            f.result()

    def map_many(k: int) -> None:
        res = peer.map(noop, list(range(k)))
        assert len(res) == k

    out["throughput_submit"] = throughput(submit_many, p["n_tasks"], p["budget_s"])
    # The notebook case: a function defined in __main__ (pickled by value by cloudpickle).
    out["latency_submit_main"] = latency(lambda: peer.submit(main_noop).result(), p["n_latency"], p["warmup"],
                                         p["budget_s"])

    def submit_many_main(k: int) -> None:
        futs = [peer.submit(main_noop) for _ in range(k)]
        for f in futs:
            f.result()

    out["throughput_submit_main"] = throughput(submit_many_main, p["n_tasks"], p["budget_s"])
    out["throughput_map"] = throughput(map_many, p["n_tasks"], p["budget_s"])
    out["map_note"] = peer.map_note
    return out


def _gil_work(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    out: dict[str, Any] = {}
    peak = {"uss": 0.0, "rss": 0.0}
    stop = threading.Event()

    def sample() -> None:
        while True:
            m = memory_report(tracker, set())
            peak["uss"] = max(peak["uss"], m["total_uss_mb"])
            peak["rss"] = max(peak["rss"], m["total_rss_mb"])
            if stop.wait(0.1):
                return

    sampler = threading.Thread(target=sample, name="bench-mem-sampler", daemon=True)
    sampler.start()
    try:
        for label, fn, arg, count in (
            ("gil_sleep", sleep_task, p["sleep_s"], p["n_sleep"]),
            ("gil_numpy", numpy_task, p["numpy_n"], p["n_numpy"]),
        ):
            peer.submit(fn, arg).result()  # warm (imports NumPy in one worker at least)
            t0 = time.perf_counter()
            futs = [peer.submit(fn, arg) for _ in range(count)]
            for f in futs:
                f.result()
            out[label] = {"tasks": count, "arg": arg, "wall_s": time.perf_counter() - t0}
    finally:
        stop.set()
        sampler.join()
    m = memory_report(tracker, set())
    peak["uss"] = max(peak["uss"], m["total_uss_mb"])
    peak["rss"] = max(peak["rss"], m["total_rss_mb"])
    out["gil_memory"] = {"peak_total_uss_mb": peak["uss"], "peak_total_rss_mb": peak["rss"],
                         **memory_report(tracker, set())}
    return out


def group_workers(peer: Any, p: dict, tracker: Tracker, workers: int, threads: int, gil: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"workers": workers, "threads": threads}
    t0 = time.perf_counter()
    peer.start(workers, threads=threads)
    started = time.perf_counter() - t0
    pids = peer.first_calls(workers, time.monotonic() + p.get("ready_budget_s", 90))
    out["ready_s"] = time.perf_counter() - t0
    out["start_returned_s"] = started
    out["answered"] = len(pids)
    time.sleep(p.get("idle_s", 1.0))
    out["idle_memory"] = memory_report(tracker, pids)
    if gil:
        out.update(_gil_work(peer, p, tracker))
    if p.get("diagnostics") and hasattr(peer, "pool"):
        out["diagnostics"] = diagnostics_cost(peer.pool, p)
    return out


def diagnostics_cost(pool: Any, p: dict) -> dict[str, Any]:
    try:
        from snakepit import diagnostics
    except Exception as exc:  # noqa: BLE001
        return {"skipped": f"snakepit.diagnostics not importable: {exc}"}
    out: dict[str, Any] = {}
    for name, reps in (("get_pool_stats", p.get("n_stats", 50)), ("get_memory_stats", p.get("n_memstats", 5))):
        fn = getattr(diagnostics, name, None)
        if fn is None:
            inspector = getattr(diagnostics, "ProfileInspector", None)
            fn = getattr(inspector, name, None) if inspector is not None else None
        if fn is None:
            out[name] = {"skipped": f"snakepit.diagnostics has no {name} yet"}
            continue
        try:
            fn(pool)
            samples = []
            end = time.monotonic() + 10
            for _ in range(reps):
                t0 = time.perf_counter()
                fn(pool)
                samples.append(time.perf_counter() - t0)
                if time.monotonic() > end:
                    break
            out[name] = {"n": len(samples), "median_ms": statistics.median(samples) * 1e3,
                         "min_ms": min(samples) * 1e3}
        except Exception as exc:  # noqa: BLE001 - a colleague's module in progress
            out[name] = {"skipped": f"{type(exc).__name__}: {exc}"}
    return out


def group_overhead(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    """Telemetry cost per request: the emit call as the pool makes it, and end to end."""
    from snakepit import telemetry

    out: dict[str, Any] = {}
    event = telemetry.REQUEST_EXECUTED
    n = p["n_telemetry"]

    def emit_loop() -> float:
        execute = telemetry.execute
        t0 = time.perf_counter()
        for i in range(n):
            # What Pool._finish builds and emits for every request.
            execute(event, {"duration_us": i},
                    {"pool": "bench", "worker_id": "bench-w1", "command": "echo", "success": True})
        return (time.perf_counter() - t0) / n * 1e6

    def handler(ev: Any, measurements: Any, metadata: Any, config: Any) -> None:
        pass

    out["emit_0_handlers_us"] = min(emit_loop() for _ in range(3))
    telemetry.attach("bench-handler", event, handler)
    try:
        out["emit_1_handler_us"] = min(emit_loop() for _ in range(3))
    finally:
        telemetry.detach("bench-handler")
    # End to end: the same pool, handler detached / attached, interleaved to share the noise.
    peer.start(2)
    peer.first_calls(2, time.monotonic() + 60)
    rounds = {"e2e_0_handlers": [], "e2e_1_handler": []}
    for _ in range(p["overhead_rounds"]):
        for key in rounds:
            if key == "e2e_1_handler":
                telemetry.attach("bench-handler", event, handler)
            try:
                res = latency(peer.execute_echo, p["n_latency"] // 4 or 10, 10, p["budget_s"] / 4)
            finally:
                telemetry.detach("bench-handler")
            rounds[key].append(res["p50_us"])
    for key, vals in rounds.items():
        out[key + "_p50_us"] = statistics.median(vals)
    return out


class PeakRSS:
    """Peak RSS of this process over a block: the kernel's VmHWM (reset first, where
    /proc/self/clear_refs takes it) and a psutil sampling thread; the larger of the two."""

    def __enter__(self) -> "PeakRSS":
        import gc

        gc.collect()
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        if self.hwm:
            with open("/proc/self/status") as fh:
                hwm = next((int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM:")), 0)
            self.peak = max(self.peak, hwm)


def group_large(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    """One big result into this process (the kernel): time, peak memory, memory left after."""
    import gc

    mb = p.get("large_mb", 200)
    if hasattr(peer, "pool"):
        peer.start(1, max_message_mb=max(80, 2 * mb))
    else:
        peer.start(1)
    peer.first_calls(1, time.monotonic() + 60)
    out: dict[str, Any] = {"mb": mb}
    for kind in ("bytes", "numpy"):
        assert len(peer.submit(make_big, 1, kind).result()) == MB  # warm (imports NumPy)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            value = peer.submit(make_big, mb, kind).result()
            seconds = time.perf_counter() - t0
        assert len(value) == mb * MB
        del value
        gc.collect()
        time.sleep(0.1)
        left = psutil.Process().memory_info().rss - rss.base
        out[kind] = {"seconds": seconds, "peak_growth_mb": (rss.peak - rss.base) / MB,
                     "peak_x": (rss.peak - rss.base) / (mb * MB), "left_mb": left / MB}
    return out


def group_floor(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    from . import floor

    return floor.run(p)


def group_cluster(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    from . import cluster

    quick = p["n_tasks"] < 20_000
    return cluster.run(50 if quick else 500, p["n_tasks"] * (10 if quick else 1), 200 if quick else 2000)


# The goals compare peers whose jobs run one after another, each at its own minute: on a
# shared box a peer's rate moves by ±30 % between minutes. ``duel`` runs the goals' peers in
# one process, their pools alive side by side, and measures them in turns (the order
# rotating each round), so each ratio compares two figures of the same few seconds.
DUEL_PEERS = ("snakepit-process", "snakepit-thread", "ProcessPoolExecutor", "multiprocessing.Pool")
DUEL_LATENCY = ("snakepit-process", "snakepit-thread", "ProcessPoolExecutor")
DUEL_THROUGHPUT = ("snakepit-process", "snakepit-thread", "multiprocessing.Pool")


def group_duel(peer: Any, p: dict, tracker: Tracker) -> dict[str, Any]:
    """Rounds of the call metrics over every goal peer in turn; per round each figure, and
    the goals' ratios as the median over rounds of the ratio within a round."""
    rounds = p.get("duel_rounds", 5)
    n_lat = max(20, p["n_latency"] // 4)
    k = p["n_tasks"]
    peers: dict[str, Any] = {}
    try:
        for name in DUEL_PEERS:
            peers[name] = make_peer(name)
            peers[name].start(2, threads=p["threads"] if name == "snakepit-thread" else 1)
            peers[name].first_calls(2, time.monotonic() + 60)
        tracker.scan()

        def burst(pr: Any, fn: Callable[..., Any]) -> float:
            t0 = time.perf_counter()
            futs = [pr.submit(fn) for _ in range(k)]
            for f in futs:
                f.result()
            return k / (time.perf_counter() - t0)

        def mapped(pr: Any) -> float:
            t0 = time.perf_counter()
            assert len(pr.map(noop, list(range(k)))) == k
            return k / (time.perf_counter() - t0)

        per_round: list[dict[str, dict[str, float]]] = []
        for r in range(rounds):
            figures: dict[str, dict[str, float]] = {}
            order = list(DUEL_PEERS[r % len(DUEL_PEERS):] + DUEL_PEERS[:r % len(DUEL_PEERS)])
            for name in order:
                pr, f = peers[name], figures.setdefault(name, {})
                if name in DUEL_LATENCY:
                    f["noop_p50_us"] = latency(pr.call_noop, n_lat, 50, 5.0)["p50_us"]
                    f["main_p50_us"] = latency(lambda: pr.submit(main_noop).result(), n_lat, 50, 5.0)["p50_us"]
                if name in DUEL_THROUGHPUT:
                    f["submit_tasks_per_s"] = burst(pr, noop)
                    f["main_tasks_per_s"] = burst(pr, main_noop)
                    f["map_tasks_per_s"] = max(mapped(pr) for _ in range(3))
            per_round.append(figures)
            tracker.scan()
    finally:
        for pr in peers.values():
            pr.stop()

    def ratio(metric: str, a: str, b: str) -> dict[str, Any]:
        rs = [fig[a][metric] / fig[b][metric] for fig in per_round if fig[b].get(metric)]
        return {"median": statistics.median(rs), "min": min(rs), "max": max(rs), "rounds": len(rs)}

    sp, th, ppe, mp = DUEL_PEERS
    return {
        "rounds": per_round,
        "n_latency": n_lat,
        "tasks": k,
        "ratios": {
            "submit_p50_vs_ppe": ratio("noop_p50_us", sp, ppe),
            "main_p50_vs_ppe": ratio("main_p50_us", sp, ppe),
            "thread_p50_vs_process": ratio("noop_p50_us", th, sp),
            "thread_main_p50_vs_process": ratio("main_p50_us", th, sp),
            "submit_tasks_vs_mp": ratio("submit_tasks_per_s", sp, mp),
            "main_tasks_vs_mp": ratio("main_tasks_per_s", sp, mp),
            "map_tasks_vs_mp": ratio("map_tasks_per_s", sp, mp),
            "thread_tasks_vs_process": ratio("submit_tasks_per_s", th, sp),
        },
    }


GROUPS: dict[str, Callable[..., dict[str, Any]]] = {
    "calls": group_calls,
    "p16": lambda peer, p, t: group_workers(peer, p, t, p["p16_workers"], 1, gil=True),
    "t2x8": lambda peer, p, t: group_workers(peer, p, t, 2, p["threads"], gil=True),
    "p100": lambda peer, p, t: group_workers(peer, p, t, p["p100_workers"], 1, gil=False),
    "overhead": group_overhead,
    "floor": group_floor,
    "large": group_large,
    "cluster": group_cluster,
    "duel": group_duel,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.child")
    ap.add_argument("--peer", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--params", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    params = json.loads(args.params)
    tracker = Tracker(args.out + ".pids")
    stop_scanning = threading.Event()

    def scan_loop() -> None:  # workers that come and go between scenarios are seen too
        while not stop_scanning.wait(0.5):
            tracker.scan()

    threading.Thread(target=scan_loop, name="bench-scan", daemon=True).start()
    result: dict[str, Any] = {"peer": args.peer, "group": args.group, "pid": os.getpid()}
    peer = make_peer(args.peer) if args.peer != "none" else None
    t0 = time.perf_counter()
    try:
        result["metrics"] = GROUPS[args.group](peer, params, tracker)
        result["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - reported in the results
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        tracker.scan()
        stop_scanning.set()
        t_stop = time.perf_counter()
        if peer is not None:
            try:
                peer.stop()
            except BaseException as exc:  # noqa: BLE001
                result["stop_error"] = f"{type(exc).__name__}: {exc}"
        result["stop_s"] = time.perf_counter() - t_stop
        # Helpers that live until their parent exits (loky's resource tracker, Dask's
        # spawn server) may still be here; the parent checks again after we exit.
        result["alive_after_stop"] = tracker.leftovers(3.0)
        result["descendants_seen"] = [[pid, ct] for pid, ct in tracker.seen.items()]
        result["elapsed_s"] = time.perf_counter() - t0
        with open(args.out, "w") as fh:
            json.dump(result, fh)
    sys.stdout.flush()
    # Interpreter teardown (dask/ipyparallel atexit hooks) may hang on a loaded 2-core box:
    # every worker was already stopped and checked above, so bound it.
    threading.Thread(target=lambda: (time.sleep(15), os._exit(0)), daemon=True).start()
    return 0


def main_noop(*args: Any) -> Any:
    """A no-op defined in ``__main__`` when this file runs as the job (``python -m bench.child``),
    as every notebook function is."""
    return args[0] if args else None


if __name__ == "__main__":
    sys.exit(main())
