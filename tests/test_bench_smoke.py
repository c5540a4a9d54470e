"""Smoke test of the benchmark harness (issue 7): ``python -m bench --quick`` with tiny sizes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAST_PEERS = "snakepit-process,snakepit-thread,ProcessPoolExecutor,multiprocessing.Pool"


def _run(tmp_path, *extra: str, timeout: float) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    with open(tmp_path / "latest-quick.json") as fh:
        doc = json.load(fh)
    assert (tmp_path / "latest-quick.md").read_text().startswith("## Benchmark results")
    return doc


def _check_common(doc: dict) -> None:
    assert doc["meta"]["quick"] is True
    for job in doc["jobs"]:
        assert job["ok"], job
        assert job["cleanup_ok"], job  # no process of the job outlived it
    peers = doc["summary"]["peers"]
    base = peers["ProcessPoolExecutor"]
    for key in ("noop_p50_us", "noop_p99_us", "submit_tasks_per_s", "map_tasks_per_s", "ready16_s",
                "idle_worker_uss_mb"):
        assert base[key] > 0, key
    sp = peers["snakepit-process"]
    for key in ("noop_p50_us", "execute_p50_us", "submit_tasks_per_s", "map_tasks_per_s", "ready16_s",
                "ready100_s", "idle_worker_uss_mb", "idle_worker_rss_mb", "pool16_total_uss_mb"):
        assert sp[key] > 0, key
    assert peers["snakepit-thread"]["execute_p50_us"] > 0
    ov = doc["summary"]["overhead"]
    assert ov["emit_0_handlers_us"] > 0 and ov["emit_1_handler_us"] > 0
    assert {g["goal"] for g in doc["goals"]} >= {"idle process-worker USS (MB)", "100 workers ready (s)"}
    assert any(g["peer"] == "snakepit-thread" for g in doc["summary"]["gil"])
    assert doc["summary"]["floor"]["pipe"]["p50_us"] > 0
    duel = doc["summary"]["duel"]  # the goals' peers side by side, in turns
    assert len(duel["rounds"]) == 5 and all(set(r) == set(duel["rounds"][0]) for r in duel["rounds"])
    thread_vs_process = next(g for g in doc["goals"] if g["goal"] == "thread profile submit(fn) p50 vs process profile")
    assert thread_vs_process["side_by_side"]["rounds"] == 5
    assert thread_vs_process["side_by_side"]["min"] <= thread_vs_process["side_by_side"]["median"]


def test_quick_bench_writes_results(tmp_path):
    doc = _run(tmp_path, "--peers", FAST_PEERS, timeout=240)
    _check_common(doc)
    groups = {(j["peer"], j["group"]) for j in doc["jobs"]}
    assert ("snakepit-process", "p100") in groups and ("snakepit-thread", "t2x8") in groups


@pytest.mark.slow
def test_quick_bench_all_peers(tmp_path):
    doc = _run(tmp_path, timeout=290)
    _check_common(doc)
    peers = doc["summary"]["peers"]
    for name in ("loky", "ipyparallel", "dask"):
        assert peers[name]["noop_p50_us"] > 0, name
    cluster = doc["summary"]["cluster"]  # the cluster row runs with the dask peer
    assert cluster["snakepit"]["tasks_per_s"] > 0 and cluster["dask"]["p50_ms"] > 0
    assert "### Cluster pool" in (tmp_path / "latest-quick.md").read_text()
