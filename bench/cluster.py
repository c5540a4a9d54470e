"""``python -m bench.cluster [--quick] [--json PATH]``: the cluster row.

A loopback Dask cluster (``dask scheduler`` + 2 ``dask worker --nworkers 1 --nthreads 2``,
as in the tests), then on it: a snakepit cluster pool (process profile, 4 workers) and
Dask's own ``Client.submit``: no-op round trip (p50, p99) and submit throughput
(20k tasks for snakepit; Dask's figure from fewer tasks, it is ~100x slower). Part of
``python -m bench`` (group ``cluster``, run when the ``dask`` peer is), or alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


def _noop(x=None):  # noqa: ANN001
    return x


def _latency(fn, n: int) -> dict:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {"p50_ms": statistics.median(samples), "p99_ms": samples[int(0.99 * (len(samples) - 1))]}


def run(n_lat: int, n_tasks: int, n_dask_tasks: int) -> dict:
    """Start a loopback cluster, measure a snakepit cluster pool and Dask on it, tear it down."""
    import snakepit
    from cluster_fixtures import CliCluster

    cluster = CliCluster()
    out: dict = {"dask_workers": 2, "snakepit_workers": 4}
    try:
        pool = snakepit.start_pool("bench-cluster", cluster=cluster.address, pool_size=4, queue_timeout=None,
                                   max_queue_size=n_tasks + 10)
        try:
            for _ in range(20):
                pool.execute("ping", {})
            out["snakepit"] = _latency(lambda: pool.execute("ping", {}), n_lat)
            t = time.perf_counter()
            futs = [pool.submit(_noop, i) for i in range(n_tasks)]
            for f in futs:
                f.result()
            out["snakepit"]["tasks_per_s"] = n_tasks / (time.perf_counter() - t)
            out["snakepit"]["tasks"] = n_tasks
        finally:
            snakepit.stop_pool("bench-cluster")
        client = cluster.client()
        try:
            for i in range(10):
                client.submit(_noop, i, pure=False).result()
            out["dask"] = _latency(lambda: client.submit(_noop, pure=False).result(), max(20, n_lat // 5))
            t = time.perf_counter()
            futs = client.map(_noop, range(n_dask_tasks), pure=False)
            client.gather(futs)
            out["dask"]["tasks_per_s"] = n_dask_tasks / (time.perf_counter() - t)
            out["dask"]["tasks"] = n_dask_tasks
        finally:
            client.close()
    finally:
        cluster.close()
    out["p50_ratio"] = out["snakepit"]["p50_ms"] / out["dask"]["p50_ms"]
    out["throughput_ratio"] = out["snakepit"]["tasks_per_s"] / out["dask"]["tasks_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    out = run(*((50, 2000, 200) if args.quick else (500, 20_000, 2000)))
    s, d = out["snakepit"], out["dask"]
    print("| | p50 ms | p99 ms | tasks/s |\n|---|---|---|---|")
    for name in ("snakepit", "dask"):
        r = out[name]
        print(f"| {name} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['tasks_per_s']:.0f} |")
    print(f"p50 ratio snakepit/dask = {s['p50_ms'] / d['p50_ms']:.3f} (goal <= 0.1); "
          f"throughput ratio = {s['tasks_per_s'] / d['tasks_per_s']:.1f}x (goal >= 10x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
