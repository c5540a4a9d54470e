"""``python -m bench.sizing``: a bursty workload (idle / burst / idle / burst / idle) on

* a snakepit pool that sizes itself (``pool.adapt(1, 4)``),
* a snakepit pool fixed at the maximum (4 workers),
* Dask's own ``LocalCluster(...).adapt(minimum=1, maximum=4)`` with ``Client.submit``,

reporting the bursts' wall time, the worker-seconds spent (the integral of live workers over
the run, sampled every 50 ms) and the time from a burst's start to full size — as ratios, in
one run (the machine is shared: read ratios, not seconds). Results: ``bench/results/sizing.{json,md}``.

Goals (issue 13): bursts within 1.2× of the fixed maximum pool, ≤ 0.5× its worker-seconds,
time to full size ≤ 0.5× Dask Adaptive's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from typing import Any, Callable

TASK_S = 0.25
BURST = 40
MAXIMUM = 4
IDLE_S = 4.0
INTERVAL_S = 0.5


class Sampler:
    """Samples a worker count every 50 ms: worker-seconds and time to full size."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count = count
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append((time.monotonic(), self.count()))
            except Exception:  # noqa: BLE001 - a sample lost while the pool changes
                pass

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def worker_seconds(self) -> float:
        return sum((b[0] - a[0]) * a[1] for a, b in zip(self.samples, self.samples[1:]))

    def time_to(self, size: int, since: float) -> float | None:
        for t, n in self.samples:
            if t >= since and n >= size:
                return t - since
        return None


def run_bursts(submit_burst: Callable[[], None], sampler: Sampler) -> dict[str, Any]:
    bursts, to_full = [], []
    time.sleep(IDLE_S)
    for _ in range(2):
        t0 = time.monotonic()
        submit_burst()
        bursts.append(time.monotonic() - t0)
        to_full.append(sampler.time_to(MAXIMUM, t0))
        time.sleep(IDLE_S)
    return {"burst_wall_s": sum(bursts), "bursts_s": bursts, "time_to_full_s": to_full}


def snakepit_case(adaptive: bool) -> dict[str, Any]:
    import snakepit

    pool = snakepit.start_pool(f"bench-{'adapt' if adaptive else 'fixed'}",
                               pool_size=1 if adaptive else MAXIMUM, queue_timeout=120)
    try:
        if adaptive:
            pool.adapt(minimum=1, maximum=MAXIMUM, interval=INTERVAL_S, wait_count=3)

        def burst() -> None:
            futures = [pool.submit_command("sleep", {"seconds": TASK_S}) for _ in range(BURST)]
            for f in futures:
                f.result()

        def count() -> int:
            return sum(1 for w in pool.list_workers() if w.status in ("available", "busy", "recycling"))

        with Sampler(count) as sampler:
            out = run_bursts(burst, sampler)
        out["worker_seconds"] = sampler.worker_seconds()
        return out
    finally:
        snakepit.shutdown()


def dask_case() -> dict[str, Any]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        cluster.adapt(minimum=1, maximum=MAXIMUM, interval=f"{int(INTERVAL_S * 1000)}ms", wait_count=3)
        with Client(cluster) as client:
            def burst() -> None:
                futures = [client.submit(time.sleep, TASK_S, pure=False) for _ in range(BURST)]
                client.gather(futures)

            def count() -> int:
                return len(client.scheduler_info(n_workers=-1)["workers"])

            with Sampler(count) as sampler:
                out = run_bursts(burst, sampler)
            out["worker_seconds"] = sampler.worker_seconds()
            return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    results = {"adapt": snakepit_case(True), "fixed": snakepit_case(False)}
    if not args.no_dask:
        results["dask_adapt"] = dask_case()
    a, f, d = results["adapt"], results["fixed"], results.get("dask_adapt")
    ratios = {
        "burst_wall_adapt_vs_fixed": a["burst_wall_s"] / f["burst_wall_s"],
        "worker_seconds_adapt_vs_fixed": a["worker_seconds"] / f["worker_seconds"],
    }
    if d is not None and all(a["time_to_full_s"]) and all(d["time_to_full_s"]):
        ratios["time_to_full_adapt_vs_dask"] = (sum(a["time_to_full_s"]) / sum(d["time_to_full_s"]))
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "processor": platform.processor() or platform.machine()},
              "time": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results, "ratios": ratios,
              "goals": {"burst_wall_adapt_vs_fixed": "≤ 1.2", "worker_seconds_adapt_vs_fixed": "≤ 0.5",
                        "time_to_full_adapt_vs_dask": "≤ 0.5"}}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sizing.json"), "w") as fh:
        json.dump(report, fh, indent=2)
    lines = [f"# Sizing bench ({report['time']}, {report['machine']['cpus']} CPUs, Python "
             f"{report['machine']['python']})", "",
             f"{BURST} × sleep({TASK_S}) bursts, twice, {IDLE_S:g} s idle around them; max {MAXIMUM} workers.", "",
             "| | bursts wall (s) | worker-seconds | time to full size (s) |", "|---|---|---|---|"]
    for name, r in results.items():
        ttf = ", ".join("-" if v is None else f"{v:.2f}" for v in r["time_to_full_s"])
        lines.append(f"| {name} | {r['burst_wall_s']:.2f} | {r['worker_seconds']:.1f} | {ttf} |")
    lines += ["", "| ratio | measured | goal |", "|---|---|---|"]
    for key, value in ratios.items():
        lines.append(f"| {key} | {value:.2f}× | {report['goals'][key]} |")
    with open(os.path.join(args.out, "sizing.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
