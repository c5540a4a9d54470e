"""``python -m bench [--quick] [--out DIR] [--peers a,b] [--groups g,h] [--load N]``.

Runs every (peer, group) job of the plan in its own subprocess (``python -m bench.child``),
checks that each left no process behind, and writes ``<out>/<stamp>.json``,
``<out>/latest.json`` and ``<out>/latest.md`` (tables with ratios to ProcessPoolExecutor).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from . import report
from .child import DUEL_PEERS, _alive

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FULL = dict(
    n_latency=2000, warmup=200, budget_s=10.0, n_tasks=20_000, p16_workers=16, p100_workers=100,
    threads=8, sleep_s=0.05, n_sleep=64, numpy_n=256, n_numpy=32, idle_s=1.0,
    n_telemetry=200_000, overhead_rounds=5, n_stats=50, n_memstats=5, ready_budget_s=90.0,
    large_mb=200, duel_rounds=9,
)
QUICK = dict(
    n_latency=40, warmup=5, budget_s=3.0, n_tasks=200, p16_workers=3, p100_workers=4,
    threads=2, sleep_s=0.01, n_sleep=6, numpy_n=32, n_numpy=4, idle_s=0.2,
    n_telemetry=2_000, overhead_rounds=1, n_stats=3, n_memstats=1, ready_budget_s=30.0,
    large_mb=8, duel_rounds=5,
)

ALL_PEERS = ["snakepit-process", "snakepit-thread", "ProcessPoolExecutor", "multiprocessing.Pool",
             "loky", "ipyparallel", "dask"]
EXTRA_PEERS = ["snakepit-process-spawn", "snakepit-process-grpc"]  # added by plan(), not selectable
SLOW_PEERS = {"ipyparallel", "dask"}  # seconds per start, milliseconds per task
LARGE_PEERS = ("snakepit-process", "ProcessPoolExecutor", "multiprocessing.Pool")


def plan(peers: list[str], groups: list[str] | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(peer, group, param overrides) of one run, cheapest first."""
    jobs: list[tuple[str, str, dict[str, Any]]] = [("none", "floor", {})]
    for peer in peers:
        extra: dict[str, Any] = {"threads": 8} if peer == "snakepit-thread" else {}
        if peer in SLOW_PEERS:
            extra["budget_s"] = 4.0  # their rates are measured on fewer calls (see the notes)
        jobs.append((peer, "calls", extra))
    if all(name in peers for name in DUEL_PEERS):  # the goals' peers side by side, in turns
        jobs.append(("none", "duel", {}))
    if "snakepit-process" in peers:  # the transport's share: the gRPC stream instead of the lane
        jobs.append(("snakepit-process-grpc", "calls", {}))
    for peer in peers:
        if peer != "snakepit-thread":
            jobs.append((peer, "p16", {}))
    if "snakepit-process" in peers:  # the start method's share: spawned workers, for comparison
        jobs.append(("snakepit-process-spawn", "p16", {}))
    for peer in ("snakepit-thread", "dask"):
        if peer in peers:
            jobs.append((peer, "t2x8", {}))
    for peer in peers:
        if peer not in SLOW_PEERS and peer != "snakepit-thread":
            jobs.append((peer, "p100", {"diagnostics": peer == "snakepit-process"}))
    for peer in peers:  # one big result (issue #18 item 7b)
        if peer in LARGE_PEERS:
            jobs.append((peer, "large", {}))
    if "snakepit-process" in peers:
        jobs.append(("snakepit-process", "overhead", {}))
    if "dask" in peers:  # a snakepit cluster pool next to Dask's Client.submit, same cluster
        jobs.append(("none", "cluster", {}))
    if groups:
        jobs = [j for j in jobs if j[1] in groups]
    return jobs


def run_job(peer: str, group: str, params: dict[str, Any], timeout: float, workdir: str,
            start_method: str = "", pipeline_depth: int = 0) -> dict[str, Any]:
    out = os.path.join(workdir, f"{peer}-{group}.json".replace("/", "_"))
    env = dict(os.environ)
    if pipeline_depth:
        env["SNAKEPIT_BENCH_PIPELINE_DEPTH"] = str(pipeline_depth)
    if start_method:
        env["SNAKEPIT_START_METHOD"] = start_method
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "bench.child", "--peer", peer, "--group", group,
           "--params", json.dumps(params), "--out", out]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    timed_out = False
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    try:
        with open(out) as fh:
            result = json.load(fh)
    except (OSError, ValueError):
        result = {"peer": peer, "group": group, "ok": False,
                  "error": "timed out" if timed_out else f"no result (exit code {proc.returncode})"}
    result["wall_s"] = wall
    result["exit_code"] = proc.returncode
    if not result.get("ok"):
        result["stderr_tail"] = (stderr or "")[-3000:]
    # Cleanup check: every process the job ever saw must be gone now.
    seen: dict[int, float] = {}
    for pid, ct in result.get("descendants_seen", []):
        seen[int(pid)] = float(ct)
    try:
        with open(out + ".pids") as fh:
            for line in fh:
                pid, ct = line.split()
                seen[int(pid)] = float(ct)
    except OSError:
        pass
    leftovers = []
    end = time.monotonic() + 5.0
    for pid, ct in seen.items():
        while _alive(pid, ct) and time.monotonic() < end:
            time.sleep(0.05)
        if _alive(pid, ct):
            leftovers.append(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    result["processes_seen"] = len(seen)
    result["leftover_pids"] = leftovers
    result["cleanup_ok"] = not leftovers
    result.pop("descendants_seen", None)
    return result


def _meta(quick: bool, params: dict[str, Any]) -> dict[str, Any]:
    versions = {}
    for mod in ("snakepit", "grpc", "loky", "ipyparallel", "distributed", "numpy", "cloudpickle"):
        try:
            versions[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception:  # noqa: BLE001
            versions[mod] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        commit = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
        "python": platform.python_version(),
        "versions": versions,
        "commit": commit,
        "quick": quick,
        "params": params,
        "start_method": os.environ.get("SNAKEPIT_START_METHOD", "(default)"),
    }


def _byte_compile() -> None:
    """Write the .pyc files of snakepit and bench, as installing a package does: a checkout
    installed in editable mode, run with PYTHONDONTWRITEBYTECODE=1 (as here), would otherwise
    compile snakepit from source in every zygote and worker, which the installed peers never do."""
    import compileall

    import snakepit

    for path in (os.path.dirname(snakepit.__file__), HERE):
        compileall.compile_dir(path, quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the smoke test)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--peers", default="", help="comma-separated subset of: " + ", ".join(ALL_PEERS))
    ap.add_argument("--groups", default="", help="comma-separated subset of: floor, calls, duel, p16, t2x8, p100, large, overhead, cluster")
    ap.add_argument("--timeout", type=float, default=0.0, help="seconds per job (default 240, quick 120)")
    ap.add_argument("--start-method", default="forkserver", choices=("forkserver", "spawn", "default"),
                    help="snakepit's worker start method in this run (PoolConfig.start_method)")
    ap.add_argument("--pipeline-depth", type=int, default=0,
                    help="PoolConfig.pipeline_depth of the snakepit pools (default: unset, i.e. the pool's automatic pipelining)")
    ap.add_argument("--load", type=int, default=0, metavar="N",
                    help="run N busy-looping processes beside the run (the box loaded, as by another user)")
    args = ap.parse_args(argv)
    if args.load < 0:
        ap.error("--load must be 0 or more")
    _byte_compile()
    params = dict(QUICK if args.quick else FULL)
    peers = [p for p in args.peers.split(",") if p] or ALL_PEERS
    unknown = set(peers) - set(ALL_PEERS)
    if unknown:
        ap.error(f"unknown peers: {sorted(unknown)}")
    groups = [g for g in args.groups.split(",") if g] or None
    timeout = args.timeout or (120.0 if args.quick else 240.0)
    os.makedirs(args.out, exist_ok=True)
    meta = _meta(args.quick, params)
    meta["start_method"] = args.start_method
    meta["pipeline_depth"] = args.pipeline_depth
    meta["load"] = args.load
    jobs = []
    t0 = time.perf_counter()
    loaders = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
            for peer, group, extra in plan(peers, groups):
                print(f"[{time.perf_counter() - t0:6.1f}s] {peer:22s} {group:8s} ...", end=" ", flush=True)
                res = run_job(peer, group, {**params, **extra}, timeout, workdir,
                              "" if args.start_method == "default" else args.start_method, args.pipeline_depth)
                status = "ok" if res.get("ok") else f"FAILED ({res.get('error')})"
                clean = "" if res["cleanup_ok"] else f" LEFTOVER {res['leftover_pids']}"
                print(f"{res['wall_s']:.1f}s {status}{clean}", flush=True)
                jobs.append(res)
    finally:
        for loader in loaders:
            loader.kill()
            loader.wait()
    meta["total_s"] = time.perf_counter() - t0
    doc = {"meta": meta, "jobs": jobs}
    doc["summary"] = report.summarize(jobs)
    doc["goals"] = report.goals(doc["summary"])
    md = report.markdown(doc)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    for name in (f"{stamp}.json", "latest.json" if not args.quick else "latest-quick.json"):
        with open(os.path.join(args.out, name), "w") as fh:
            json.dump(doc, fh, indent=1, default=str)
    with open(os.path.join(args.out, "latest.md" if not args.quick else "latest-quick.md"), "w") as fh:
        fh.write(md)
    print(md)
    ok = all(j.get("ok") and j.get("cleanup_ok") for j in jobs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
