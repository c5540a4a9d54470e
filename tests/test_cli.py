"""The `snakepit` command line, run as a real subprocess against pools in other processes."""
from __future__ import annotations

import json
import os
import re

import psutil
from click.testing import CliRunner
from test_admin_helpers import ManagerProcess, run_cli, runtime_env  # noqa: F401 - runtime_env is a fixture

from snakepit import admin, cli


def _blocks(text: str) -> dict[str, str]:
    """The inspector's text split into per-pool blocks."""
    parts = re.split(r"📊 Pool: (\S+)\n", text)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _invoke(args: list[str]):
    """The CLI in this process (click's CliRunner): same code, no interpreter start-up."""
    result = CliRunner().invoke(cli.get_cli(), args, catch_exceptions=False)
    return result


def test_utilization_levels_in_text_output(runtime_env):
    """Pools held at 50/70/80/90/100 % show LOW/GOOD/GOOD/HIGH/CRITICAL (CRITICAL > 90, HIGH > 80)."""
    thread = {"profile": "thread", "pool_size": 1, "threads_per_worker": 10}
    pools = [
        {"name": "low", **thread, "hold": 5},
        {"name": "good", **thread, "hold": 7},
        {"name": "edge80", **thread, "hold": 8},
        {"name": "high", **thread, "hold": 9},
        {"name": "full", "profile": "process", "pool_size": 2, "hold": 2},  # saturated with `sleep`
    ]
    with ManagerProcess(pools, runtime_env) as manager:
        assert {n: p["load"] for n, p in manager.info["pools"].items()} == {
            "low": 5, "good": 7, "edge80": 8, "high": 9, "full": 2}
        result = run_cli(["profile-inspector", "--detailed", "--recommendations"], runtime_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "🔍 SNAKEPIT PROFILE INSPECTOR" in out and "✅ INSPECTION COMPLETE" in out
    blocks = _blocks(out)
    assert set(blocks) == {"low", "good", "edge80", "high", "full"}
    expected = {"low": "50.0% ⚪ LOW", "good": "70.0% 🟢 GOOD", "edge80": "80.0% 🟢 GOOD",
                "high": "90.0% 🟡 HIGH", "full": "100.0% 🔴 CRITICAL"}
    for name, badge in expected.items():
        assert f"Utilization:      {badge}" in blocks[name], blocks[name]

    full = blocks["full"]
    assert "Profile:          Process (multi-process)" in full
    assert "⚙️  Process Profile Details:" in full and "Concurrency:      2 concurrent requests" in full
    assert "💾 Memory Usage:" in full and "Average/Worker:" in full
    assert "👷 Worker Details:" in full and full.count("● Busy") == 2
    assert "💡 Recommendations:" in full and "CRITICAL:" in full

    high = blocks["high"]
    assert "Profile:          Thread (multi-threaded)" in high
    assert "🧵 Thread Profile Details:" in high and "Avg Load/Worker:  9.0/10 threads" in high
    assert "Threads/Worker:   10" in high


def test_exit_codes_and_json_errors(runtime_env):
    # No live manager at all.
    result = run_cli(["profile-inspector", "--format", "json"], runtime_env)
    assert result.returncode == 1
    assert "error" in json.loads(result.stdout)
    result = _invoke(["profile-inspector"])
    assert result.exit_code == 1 and "❌ Error:" in result.stderr
    result = _invoke(["pools"])
    assert result.exit_code == 0 and "No live snakepit pool managers" in result.stdout
    # Usage errors exit 2.
    assert run_cli(["profile-inspector", "--format", "xml"], runtime_env).returncode == 2
    assert _invoke(["profile-inspector", "--no-such-flag"]).exit_code == 2
    assert _invoke(["no-such-command"]).exit_code == 2
    assert _invoke(["profile-inspector", "--target", "not-a-pid"]).exit_code == 2

    with ManagerProcess([{"name": "default", "pool_size": 1}], runtime_env):
        result = run_cli(["profile-inspector", "--pool", "nope", "--format", "json"], runtime_env)
        assert result.returncode == 1
        assert json.loads(result.stdout) == {"error": "Pool 'nope' not found"}
        result = _invoke(["profile-inspector", "--target", "1"])
        assert result.exit_code == 1 and "pid 1" in result.stderr


def test_several_managers_listed_and_one_chosen(runtime_env):
    one = ManagerProcess([{"name": "default", "pool_size": 1}], runtime_env)
    try:
        with ManagerProcess([{"name": "default", "pool_size": 1}, {"name": "etl", "pool_size": 1}],
                            runtime_env) as two:
            result = run_cli(["profile-inspector", "--format", "json"], runtime_env)  # a real subprocess
            assert result.returncode == 0, result.stderr
            report = json.loads(result.stdout)
            # A name held by both managers is qualified with the pid; a unique name is not.
            assert set(report) == {f"default@{one.pid}", f"default@{two.pid}", "etl"}
            assert report[f"default@{two.pid}"]["manager"]["pid"] == two.pid

            text = _invoke(["profile-inspector"]).stdout
            assert "2 live pool managers" in text
            assert f"pid {one.pid}" in text and f"pid {two.pid}" in text

            chosen = json.loads(_invoke(["profile-inspector", "--format", "json", "--target", str(two.pid)]).stdout)
            assert set(chosen) == {"default", "etl"}
            assert chosen["default"]["manager"]["pid"] == two.pid

            by_file = os.path.join(runtime_env["SNAKEPIT_RUNTIME_DIR"], f"{one.pid}{admin.DISCOVERY_SUFFIX}")
            chosen = json.loads(_invoke(["profile-inspector", "--format", "json", "--target", by_file]).stdout)
            assert list(chosen) == ["default"] and chosen["default"]["manager"]["pid"] == one.pid

            listed = json.loads(_invoke(["pools", "--format", "json"]).stdout)
            assert sorted(m["pid"] for m in listed) == sorted([one.pid, two.pid])
            table = _invoke(["pools"]).stdout
            assert str(one.pid) in table and str(two.pid) in table and "etl (process)" in table
    finally:
        one.stop()


def _processes_using(runtime_dir: str) -> list[int]:
    """Live processes started for this runtime dir: it is in their command line or environment
    (workers, zygotes and anything else the demo could have spawned inherit the environment)."""
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if runtime_dir in " ".join(proc.info["cmdline"] or ()) or \
                    proc.environ().get("SNAKEPIT_RUNTIME_DIR") == runtime_dir:
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return pids


def test_demo_exits_0_and_leaves_nothing_behind(runtime_env, wait_until):
    rt = runtime_env["SNAKEPIT_RUNTIME_DIR"]
    result = run_cli(["demo"], runtime_env, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "Mixed workload" in out and "0 failed" in out
    assert "📊 Pool: default" in out and "📊 Pool: hpc" in out
    assert "💡 Recommendations:" in out or "✅ No recommendations" in out
    assert "✅ INSPECTION COMPLETE" in out
    # No worker survives and the runtime directory is empty again.
    assert wait_until(lambda: not _processes_using(rt), 10.0), _processes_using(rt)
    assert os.listdir(rt) == []


def test_diagnose_scaling_json_measures_both_profiles(runtime_env):
    with ManagerProcess([{"name": "default", "pool_size": 1}], runtime_env) as manager:
        result = run_cli(["diagnose-scaling", "--max-workers", "2", "--threads-per-worker", "4", "--format", "json"],
                         runtime_env, timeout=180)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    (pool,) = data["profile_analysis"]["pools"]
    assert (pool["pool"], pool["profile"], pool["manager_pid"], pool["pool_size"]) == (
        "default", "process", manager.pid, 1)
    limits = data["limits"]
    assert limits["nofile_soft"] is None or limits["nofile_soft"] > 0
    assert limits["open_fds"] > 0 and limits["cpu_count"] >= 1
    rows = [(m["profile"], m["workers"], m["capacity"]) for m in data["measurements"]]
    assert rows == [("process", 1, 1), ("process", 2, 2), ("thread", 1, 4), ("thread", 2, 8)]
    for m in data["measurements"]:
        assert m["rss_mb_per_worker"] > 1 and m["ready_s"] > 0
    analysis = data["analysis"]
    assert set(analysis["profiles"]) == {"process", "thread"}
    assert analysis["profiles"]["thread"]["capacity_per_worker"] == 4
    assert analysis["profiles"]["process"]["max_workers"] > 0
    assert analysis["recommendations"]


def test_diagnose_scaling_text_without_measuring(runtime_env):
    result = run_cli(["diagnose-scaling", "--no-measure"], runtime_env)
    assert result.returncode == 0, result.stderr
    for title in ("🔬 SNAKEPIT SCALING DIAGNOSTICS", "TEST 0: POOL PROFILE ANALYSIS", "TEST 1: FILE DESCRIPTOR",
                  "TEST 2: PROCESS AND THREAD LIMITS", "✅ DIAGNOSTICS COMPLETE"):
        assert title in result.stdout


def test_profile_analysis_thresholds_of_the_original():
    entry = lambda profile, size, pct: {  # noqa: E731
        "profile": profile, "config": {"pool_size": size, "threads_per_worker": 8}, "utilization_percent": pct,
        "capacity_total": size, "worker_count": size, "capacity_available": 0}
    result = cli.analyse_pools([
        (1, "t100", entry("thread", 100, 10.0)), (1, "t101", entry("thread", 101, 10.0)),
        (1, "p250", entry("process", 250, 85.0)), (1, "p251", entry("process", 251, 10.0)),
    ])
    warned = {p["pool"]: bool(p["warnings"]) for p in result["pools"]}
    assert warned == {"t100": False, "t101": True, "p250": False, "p251": True}
    p250 = next(p for p in result["pools"] if p["pool"] == "p250")
    assert p250["recommendations"] == ["Add more workers (pool_size)", "Or consider switching to the thread profile"]
    assert result["overview"]["total_workers"] == 702
    assert result["overview"]["opportunities"] == []  # there are thread pools
    only_process = cli.analyse_pools([(1, "p", entry("process", 301, 10.0))])
    assert only_process["overview"]["opportunities"]


def test_help_and_version_with_clirunner():
    runner = CliRunner()
    result = runner.invoke(cli.get_cli(), ["--help"])
    assert result.exit_code == 0
    for command in ("profile-inspector", "pools", "diagnose-scaling", "demo", "recycle-worker"):
        assert command in result.output
    result = runner.invoke(cli.get_cli(), ["profile-inspector", "--help"])
    assert result.exit_code == 0 and "--target" in result.output and "--recommendations" in result.output
    assert runner.invoke(cli.get_cli(), ["--version"]).exit_code == 0


def test_profile_inspector_shows_the_adaptive_state(runtime_env):
    """A pool that sizes itself says so, with its bounds and last decision (text and JSON)."""
    pools = [{"name": "adaptive", "profile": "thread", "pool_size": 1, "threads_per_worker": 2, "hold": 2,
              "adapt": {"minimum": 1, "maximum": 3, "interval": 0.5}}]
    with ManagerProcess(pools, runtime_env) as manager:
        assert manager.info["pools"]["adaptive"]["load"] == 2
        for _ in range(20):  # its first decision comes within an interval (0.5 s)
            text = run_cli(["profile-inspector", "--pool", "adaptive"], runtime_env)
            if "adapt_up" in text.stdout:
                break
        data = run_cli(["profile-inspector", "--pool", "adaptive", "--format", "json"], runtime_env)
    assert text.returncode == 0, text.stderr
    assert "Adaptive:         on, 1–3 workers" in text.stdout
    assert "last: adapt_up 1→2" in text.stdout  # 2 busy threads of 2 → 100 % → grows to 2 at once
    entry = json.loads(data.stdout)["adaptive"]
    assert entry["config"]["adaptive"]["maximum"] == 3
    assert entry["config"]["target_size"] == 2
