"""Diagnostics on real pools: stats, capacity, memory, saturation, history, projection, docs."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import snakepit
from diag_workloads import _allocate, _cancel, _sleepers
from snakepit import PoolNotFoundError
from snakepit import diagnostics as dx
from snakepit.diagnostics import reports

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "diagnostics.md")


# ---------------------------------------------------------------------------------- levels
def test_utilization_level_boundaries():
    assert dx.utilization_level(100) == "CRITICAL"
    assert dx.utilization_level(90.01) == "CRITICAL"
    assert dx.utilization_level(90.0) == "HIGH"
    assert dx.utilization_level(80.01) == "HIGH"
    assert dx.utilization_level(80.0) == "GOOD"
    assert dx.utilization_level(60.0) == "GOOD"
    assert dx.utilization_level(59.99) == "LOW"
    assert dx.utilization_level(0) == "LOW"
    assert dx.utilization_badge(95) == "95.0% 🔴 CRITICAL"


# ---------------------------------------------------------------------------------- pool stats
def test_pool_stats_of_a_process_pool_under_load(wait_until):
    pool = snakepit.start_pool("dx-proc", profile="process", pool_size=2, history_interval=None)
    futs = []
    try:
        futs = _sleepers(pool, 2)
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 2, 10)
        assert wait_until(lambda: all(w.in_flight == 1 for w in dx.get_pool_stats(pool).workers), 10)
        stats = dx.get_pool_stats("dx-proc")  # by name
        assert (stats.pool_name, stats.profile, stats.worker_count) == ("dx-proc", "process", 2)
        assert (stats.capacity_total, stats.capacity_used, stats.capacity_available) == (2, 2, 0)
        assert stats.utilization_percent == 100.0 and stats.utilization_level == "CRITICAL"
        assert stats.threads_per_worker == 1
        for w in stats.workers:
            assert w.capacity == 1 and w.load == 1 and w.status == "busy"
            assert w.info_error is None, w.info_error
            assert w.in_flight in (0, 1)  # the worker's own count, over gRPC (may lag the pool's)
            assert w.threads >= 1 and w.gc_collections_gen0 is not None
            assert w.memory_mb > 5 and w.uss_mb is not None and w.pss_mb is not None
            assert w.cpu_time_s is not None and w.cpu_percent is not None
        df = stats.to_frame()
        assert list(df.columns) == list(dx.WorkerStats.COLUMNS)
        assert len(df) == 2 and (df["load"] > 0).all()
        assert set(df["pid"]) == {w.pid for w in pool.list_workers()}
        json.dumps(stats.to_dict())
        assert stats.to_dict()["workers"][0]["pid"] in set(df["pid"])
        quick = dx.get_pool_stats(pool, detailed=False)
        assert quick.capacity_used == 2 and quick.workers[0].memory_mb is None
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_pool_and_capacity_stats_of_a_thread_pool_under_load(wait_until):
    pool = snakepit.start_pool("dx-thr", profile="thread", pool_size=2, threads_per_worker=3, history_interval=None)
    futs = []
    try:
        futs = _sleepers(pool, 4)
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 4, 10)
        stats = dx.get_pool_stats(pool)
        assert (stats.capacity_total, stats.capacity_used, stats.capacity_available) == (6, 4, 2)
        assert stats.utilization_percent == 66.67 and stats.utilization_level == "GOOD"
        assert all(w.capacity == 3 and w.load > 0 for w in stats.workers)
        # the workers' own in-flight counts (gRPC Info) catch up with the pool's as requests arrive
        assert wait_until(lambda: sorted(w.in_flight or 0 for w in dx.get_pool_stats(pool).workers) == [2, 2], 10)
        cap = dx.get_capacity_stats(pool)
        assert (cap.total_capacity, cap.used_capacity, cap.available_capacity) == (6, 4, 2)
        assert cap.thread_info == dx.ThreadInfo(workers=2, threads_per_worker=3, total_threads=6,
                                                avg_load_per_worker=2.0)
        frame = cap.to_frame()
        assert list(frame.columns) == list(dx.CapacityStats.COLUMNS) and frame["load"].sum() == 4
        json.dumps(cap.to_dict())
        sat = dx.check_saturation(pool)
        assert sat.level == "healthy" and sat.status == "healthy" and sat and sat.utilization_percent == 66.67
        sat = dx.check_saturation(pool, threshold=50.0)
        assert sat.level == "warning" and sat.status == "approaching_saturation" and not sat
        assert list(sat.to_frame().columns) == list(dx.SaturationStatus.COLUMNS)
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_capacity_stats_of_a_process_pool_have_no_thread_info():
    with snakepit.start_pool("dx-cap", profile="process", pool_size=2, history_interval=None) as pool:
        cap = dx.get_capacity_stats(pool)
        assert cap.thread_info is None and cap.total_capacity == 2 and cap.utilization_level == "LOW"
        assert cap.to_dict()["thread_info"] is None


def test_unknown_pool_and_bad_argument():
    with pytest.raises(PoolNotFoundError):
        dx.get_pool_stats("no-such-pool")
    with pytest.raises(TypeError):
        dx.get_memory_stats(42)


def _wait_stopped(pid: int, timeout: float = 5.0) -> None:
    import psutil

    end = time.monotonic() + timeout
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < end, f"pid {pid} did not stop"
        time.sleep(0.01)


def test_a_stopped_worker_keeps_its_row_with_the_info_error():
    # A worker that cannot answer (SIGSTOP) must not hang the inspection: its Info call times out.
    pool = snakepit.start_pool("dx-stop", pool_size=2, history_interval=None, heartbeat_interval=None)
    victim = pool.list_workers()[0]
    try:
        os.kill(victim.pid, signal.SIGSTOP)
        _wait_stopped(victim.pid)  # kill() returns before the process has stopped
        stats = dx.ProfileInspector(info_timeout=0.3).get_pool_stats(pool)
        rows = {w.worker_id: w for w in stats.workers}
        assert rows[victim.worker_id].info_error == "DEADLINE_EXCEEDED"
        assert rows[victim.worker_id].memory_mb is not None  # psutil still reads its memory
        other = next(w for w in stats.workers if w.worker_id != victim.worker_id)
        assert other.info_error is None and other.threads
    finally:
        os.kill(victim.pid, signal.SIGCONT)
        snakepit.shutdown()


# ---------------------------------------------------------------------------------- memory
def test_a_worker_holding_200_mb_shows_200_mb_more():
    pool = snakepit.start_pool("dx-mem", pool_size=3, history_interval=None)
    try:
        with pool.session("big") as s:
            _allocate(s, 200)
            big = s.worker_id
            mem = dx.get_memory_stats(pool)
            rows = mem.by_worker()
            others = [w for wid, w in rows.items() if wid != big]
            assert len(rows) == 3 and len(others) == 2
            base_rss = sum(w.memory_mb for w in others) / 2
            base_uss = sum(w.uss_mb for w in others) / 2
            assert 180 <= rows[big].memory_mb - base_rss <= 225, (rows[big], others)
            assert 180 <= rows[big].uss_mb - base_uss <= 225
            assert mem.max_memory_worker_mb == rows[big].memory_mb
            assert mem.min_memory_worker_mb == min(w.memory_mb for w in others)
            assert mem.total_memory_mb == pytest.approx(sum(w.memory_mb for w in rows.values()), abs=0.05)
            assert mem.avg_memory_per_worker_mb == pytest.approx(mem.total_memory_mb / 3, abs=0.05)
            assert mem.basis == "uss"
            assert mem.footprint_mb == pytest.approx(mem.total_uss_mb + mem.shared_mb, abs=0.05)
            assert mem.footprint_mb < mem.total_memory_mb  # shared pages counted once
            df = mem.to_frame()
            assert list(df.columns) == list(dx.WorkerMemory.COLUMNS)
            assert df.set_index("worker_id").loc[big, "memory_mb"] == rows[big].memory_mb
            json.dumps(mem.to_dict())
    finally:
        snakepit.shutdown()


# ---------------------------------------------------------------------------------- all pools
class _FailingInspector(dx.ProfileInspector):
    """A fake of one pool's failure, to see it reported (the real inspector does the rest)."""

    def get_pool_stats(self, pool="default", *, detailed=True):
        if getattr(pool, "name", pool) == "dx-bad":
            raise RuntimeError("cannot read this pool")
        return super().get_pool_stats(pool, detailed=detailed)


def test_comprehensive_report_keyed_by_pool_name_with_errors_shown():
    snakepit.start_pool("dx-a", pool_size=1, history_interval=None)
    snakepit.start_pool("dx-bad", pool_size=1, history_interval=None)
    try:
        report = dx.get_comprehensive_report()
        assert set(report) >= {"dx-a", "dx-bad"} and isinstance(report["dx-a"], dx.PoolStats)
        data = json.loads(json.dumps(report.to_dict()))
        assert data["dx-a"]["utilization_percent"] == 0.0  # jq '.default.utilization_percent'
        report = _FailingInspector().get_comprehensive_report()
        assert isinstance(report["dx-bad"], dx.PoolError)
        assert report.to_dict()["dx-bad"] == {"pool_name": "dx-bad", "error": "cannot read this pool",
                                              "error_type": "RuntimeError"}
        df = report.to_frame().set_index("pool_name")
        assert list(report.to_frame().columns) == list(dx.ComprehensiveReport.COLUMNS)
        assert df.loc["dx-bad", "error"] == "cannot read this pool" and df.loc["dx-a", "worker_count"] == 1
        assert list(report.errors) == ["dx-bad"]
    finally:
        snakepit.shutdown()


# ---------------------------------------------------------------------------------- history
def test_history_records_utilization_throughput_latency_and_memory(wait_until):
    pool = snakepit.start_pool("dx-hist", pool_size=2, history_interval=0.1, history_size=20)
    try:
        # keep requests flowing until samples saw some complete
        assert wait_until(lambda: pool.execute("ping") and any(s["latency_p50_ms"] for s in pool.history.samples), 10)
        assert wait_until(lambda: any(s["memory_total_mb"] for s in pool.history.samples), 10)
        assert wait_until(lambda: len(pool.history.samples) >= 3, 10)
        hist = dx.get_history(pool)
        assert hist.interval_s == 0.1 and len(hist) >= 2
        df = hist.to_frame()
        wids = [w.worker_id for w in pool.list_workers()]
        assert list(df.columns[: len(dx.History.COLUMNS)]) == list(dx.History.COLUMNS)
        assert {f"memory_mb[{w}]" for w in wids} <= set(df.columns)
        assert str(df["time"].dtype).startswith("datetime64")
        assert df["throughput_rps"].max() > 0 and df["latency_p99_ms"].max() >= df["latency_p50_ms"].max() > 0
        assert df["memory_total_mb"].max() > 10 and (df["workers"] == 2).all()
        wf = hist.workers_frame()
        assert list(wf.columns) == list(dx.History.WORKER_COLUMNS) and set(wf["worker_id"]) == set(wids)
        json.dumps(hist.to_dict())
        # bounded: a ring buffer of history_size samples
        assert wait_until(lambda: len(pool.history.samples) == 20, 15)
        assert len(pool.history.samples) == 20
        assert len(dx.get_history(pool, last_s=0.35)) <= 6
    finally:
        snakepit.shutdown()


def test_history_of_a_pool_without_sampler_is_empty():
    with snakepit.start_pool("dx-nohist", pool_size=1, history_interval=None) as pool:
        hist = dx.get_history(pool)
        assert len(hist) == 0 and hist.interval_s is None
        assert list(hist.to_frame().columns) == list(dx.History.COLUMNS)


def test_starting_a_pool_does_not_import_pandas():
    code = (
        "import sys, snakepit\n"
        "p = snakepit.start_pool('np', pool_size=1, history_interval=0.05)\n"
        "p.history.sample_once()\n"
        "bad = [m for m in ('pandas', 'IPython', 'snakepit_nb') if m in sys.modules]\n"
        "snakepit.shutdown()\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------- projection
def _footprint(name, n):
    pool = snakepit.start_pool(name, pool_size=n, history_interval=None)
    try:
        return dx.get_memory_stats(pool)
    finally:
        snakepit.stop_pool(name)


def test_project_memory_matches_really_started_pools():
    with snakepit.start_pool("dx-proj2", pool_size=2, history_interval=None) as pool:
        proj = dx.project_memory(pool, [2, 4, 8])
    assert list(proj.columns) == list(dx.PROJECTION_COLUMNS)
    assert proj.loc[0, "measured_total_mb"] == pytest.approx(proj.loc[0, "projected_total_mb"], rel=0.01)
    assert (proj["basis"] == "uss").all()
    projected = dict(zip(proj["workers"], proj["projected_total_mb"]))
    naive = dict(zip(proj["workers"], proj["naive_rss_total_mb"]))
    for n in (4, 8):
        measured = _footprint(f"dx-proj{n}", n)
        assert measured.basis == "uss" and len(measured.workers) == n
        assert projected[n] == pytest.approx(measured.footprint_mb, rel=0.15), (n, projected[n], measured)
        # the seed's avg RSS × N counts shared pages N times: much further off
        assert abs(naive[n] - measured.footprint_mb) > abs(projected[n] - measured.footprint_mb)


def test_compare_profiles_for_the_same_capacity():
    with snakepit.start_pool("dx-cmp", pool_size=4, history_interval=None) as pool:
        df = dx.compare_profiles(pool)
        assert list(df.columns) == list(dx.COMPARISON_COLUMNS)
        proc, thr = df.iloc[0], df.iloc[1]
        assert (proc["profile"], proc["workers"], proc["capacity"], bool(proc["current"])) == ("process", 4, 4, True)
        assert thr["profile"] == "thread" and thr["workers"] == 1 and thr["capacity"] >= 4
        assert thr["projected_total_mb"] < proc["projected_total_mb"]
        assert thr["saving_mb"] == pytest.approx(proc["projected_total_mb"] - thr["projected_total_mb"], abs=0.02)
        df = dx.compare_profiles(pool, capacity=32, threads_per_worker=8)
        assert list(df["workers"]) == [32, 4] and list(df["capacity"]) == [32, 32]


# ---------------------------------------------------------------------------------- docs
def _documented_columns() -> set[str]:
    text = open(DOCS, encoding="utf-8").read()
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))


@pytest.mark.parametrize("columns", [
    dx.WorkerStats.COLUMNS, dx.PoolStats.COLUMNS, dx.CapacityStats.COLUMNS, dx.WorkerMemory.COLUMNS,
    dx.MemoryStats.COLUMNS, dx.SaturationStatus.COLUMNS, dx.Recommendations.COLUMNS, dx.History.COLUMNS,
    dx.History.WORKER_COLUMNS, dx.PROJECTION_COLUMNS, dx.COMPARISON_COLUMNS, dx.ComprehensiveReport.COLUMNS,
], ids=lambda c: c[0] + "…")
def test_every_frame_column_is_documented(columns):
    missing = [c for c in columns if c not in _documented_columns()]
    assert not missing, f"columns missing from docs/diagnostics.md: {missing}"


def test_reports_are_frozen_and_exports_sorted():
    stats = dx.SaturationStatus("p", "healthy", 1.0, 80.0, "healthy", "LOW")
    with pytest.raises(Exception):
        stats.level = "warning"  # type: ignore[misc]
    assert dx.__all__ == sorted(dx.__all__)
    assert reports.jsonable({"a": float("nan"), "b": (1, 2)}) == {"a": None, "b": [1, 2]}


def test_memory_stats_can_reuse_a_fresh_history_sample(wait_until):
    pool = snakepit.start_pool("dx-fresh", pool_size=2, history_interval=60)
    try:
        sample = pool.history.sample_once()
        cached = dx.get_memory_stats(pool, max_age_s=30)
        from snakepit.diagnostics.history import iter_workers

        by_pid = {int(w["pid"]): w for w in iter_workers(sample)}
        assert {w.pid for w in cached.workers} == set(by_pid)
        for w in cached.workers:
            assert w.memory_mb == round(by_pid[w.pid]["rss_mb"], 2)
            assert w.pss_mb == round(by_pid[w.pid]["pss_mb"], 2)
        assert cached.footprint_mb is not None and cached.basis == "uss"
        stats = dx.get_pool_stats(pool, max_age_s=30)
        assert {w.pid: w.memory_mb for w in stats.workers} == {w.pid: w.memory_mb for w in cached.workers}
        # a stale sample is not used: measured now instead (still a full report)
        assert wait_until(lambda: time.time() - sample["time"] > 0.05, 5)
        live = dx.get_memory_stats(pool, max_age_s=0.01)
        assert len(live.workers) == 2 and live.collected_at > sample["time"]
    finally:
        snakepit.shutdown()


def test_docstring_examples_run():
    import doctest

    from snakepit.diagnostics import history, levels

    for fn in (levels.utilization_level, levels.utilization_badge, history.percentile):
        runner = doctest.DocTestRunner()
        for test in doctest.DocTestFinder().find(fn):
            runner.run(test)
        assert runner.failures == 0 and runner.tries > 0, fn.__name__


def test_history_reads_like_its_frame():
    pool = snakepit.start_pool("t-hist-frame", pool_size=1, history_interval=0.1)
    try:
        deadline = time.monotonic() + 10
        while len(dx.get_history(pool)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        history = dx.get_history(pool)
        assert not history.empty and len(history) >= 3
        assert "utilization_percent" in history.columns
        assert list(history["utilization_percent"]) == list(history.to_frame()["utilization_percent"])
    finally:
        snakepit.shutdown()


# ---------------------------------------------------------------------------------- heartbeat figures
def _heartbeat_rows(pool):
    """The default get_pool_stats rows, once every worker has heartbeat figures with memory (else None)."""
    rows = dx.get_pool_stats(pool).workers
    ok = all(w.metrics_source == "heartbeat" and w.memory_mb is not None and w.threads for w in rows)
    return rows if ok and len(rows) == pool.config.pool_size else None


def test_default_pool_stats_reads_cached_heartbeat_figures_without_asking_the_workers(wait_until):
    # Every worker SIGSTOPped: a call that asked them anything would wait for its deadline
    # (info_timeout=10 here) and report DEADLINE_EXCEEDED. The default call must not.
    pool = snakepit.start_pool("dx-hb-stop", pool_size=3, history_interval=None, heartbeat_interval=0.3,
                               heartbeat_max_missed=100)
    stopped = []
    try:
        assert wait_until(lambda: _heartbeat_rows(pool) is not None, 15)
        for w in pool.list_workers():
            os.kill(w.pid, signal.SIGSTOP)
            stopped.append(w.pid)
        for pid in stopped:
            _wait_stopped(pid)
        inspector = dx.ProfileInspector(info_timeout=10.0)
        t0 = time.monotonic()
        stats = inspector.get_pool_stats(pool)
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0, f"the default call waited for the stopped workers ({elapsed:.1f} s)"
        assert stats.worker_count == 3
        for w in stats.workers:
            assert w.metrics_source == "heartbeat" and w.info_error is None, w
            assert w.threads >= 1 and w.gc_collections_gen0 is not None and w.in_flight == 0
            assert w.memory_mb > 5 and w.uss_mb is not None and w.pss_mb is not None
            assert w.cpu_time_s is not None and w.cpu_percent is not None
            assert w.metrics_age_s is not None and 0 <= w.metrics_age_s < 60
            assert w.memory_age_s is not None and w.memory_age_s >= w.metrics_age_s
        df = stats.to_frame()
        assert list(df.columns) == list(dx.WorkerStats.COLUMNS) and (df["metrics_source"] == "heartbeat").all()
        json.dumps(stats.to_dict())
        # the figures are not refreshed while the workers cannot answer: they age
        time.sleep(0.5)
        later = {w.worker_id: w for w in inspector.get_pool_stats(pool).workers}
        for w in stats.workers:
            assert later[w.worker_id].metrics_age_s > w.metrics_age_s
            assert later[w.worker_id].memory_mb == w.memory_mb
        # get_memory_stats(max_age_s) may reuse them; the default still measures the processes now
        reused = dx.get_memory_stats(pool, max_age_s=60).by_worker()
        assert {wid: m.memory_mb for wid, m in reused.items()} == {w.worker_id: w.memory_mb for w in stats.workers}
        assert all(m.memory_age_s > 0 for m in reused.values())
        live = dx.get_memory_stats(pool)
        assert len(live.workers) == 3 and all(m.memory_age_s == 0 for m in live.workers)
        # fresh=True asks the workers now: stopped ones time out, and say so
        fresh = dx.ProfileInspector(info_timeout=0.3).get_pool_stats(pool, fresh=True)
        assert all(w.metrics_source == "live" and w.info_error == "DEADLINE_EXCEEDED" for w in fresh.workers)
        assert all(w.memory_mb is not None for w in fresh.workers)  # the manager still reads their memory
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        snakepit.shutdown()


def test_heartbeat_figures_follow_the_worker(wait_until):
    # 200 MB allocated in one worker shows in the default get_pool_stats after a heartbeat or two.
    pool = snakepit.start_pool("dx-hb-mem", pool_size=2, history_interval=None, heartbeat_interval=0.3)
    try:
        assert wait_until(lambda: _heartbeat_rows(pool) is not None, 15)
        before = {w.worker_id: w for w in _heartbeat_rows(pool)}
        with pool.session("big") as s:
            _allocate(s, 200)
            big = s.worker_id
            other = next(wid for wid in before if wid != big)

            seen = {}

            def grown():
                seen.update((w.worker_id, w) for w in dx.get_pool_stats(pool).workers)
                row = seen[big]
                return (row.metrics_source == "heartbeat" and row.memory_mb - before[big].memory_mb >= 180
                        and row.uss_mb - before[big].uss_mb >= 180)

            assert wait_until(grown, 15), {wid: (w.memory_mb, w.memory_age_s) for wid, w in seen.items()}
            rows = seen
            assert rows[big].memory_mb - before[big].memory_mb <= 230
            assert abs(rows[other].memory_mb - before[other].memory_mb) < 50
            assert rows[big].requests_served > before[big].requests_served  # bookkeeping is always current
            assert rows[big].gc_collections_gen0 >= before[big].gc_collections_gen0
            assert rows[big].cpu_time_s >= before[big].cpu_time_s
    finally:
        snakepit.shutdown()


def test_without_heartbeat_figures_rows_are_measured_live_and_say_so():
    pool = snakepit.start_pool("dx-hb-off", pool_size=2, history_interval=None, heartbeat_interval=None)
    try:
        stats = dx.get_pool_stats(pool)
        for w in stats.workers:
            assert w.metrics_source == "live" and w.info_error is None and w.threads >= 1
            assert w.memory_mb > 5 and w.metrics_age_s == 0 and w.memory_age_s == 0
        quick = dx.get_pool_stats(pool, detailed=False)
        assert all(w.metrics_source is None and w.memory_mb is None and w.metrics_age_s is None
                   for w in quick.workers)
    finally:
        snakepit.shutdown()


def test_ping_carries_figures_only_when_asked(wait_until):
    from snakepit.protocol import worker_pb2 as pb

    pool = snakepit.start_pool("dx-hb-ping", pool_size=1, history_interval=None, heartbeat_interval=None)
    try:
        handle = pool.worker_records()[0]
        plain = handle.conn.stub.Ping(pb.PingRequest(message="x"), timeout=5)
        assert plain.message == "x" and not plain.HasField("metrics")  # liveness stays cheap
        assert handle.figures is None  # no heartbeat, nothing cached
        asked = handle.conn.stub.Ping(pb.PingRequest(message="y", want_metrics=True), timeout=5)
        m = asked.metrics
        assert m.pid == handle.pid and m.worker_id == handle.worker_id and m.thread_count >= 1
        assert m.HasField("rss_bytes") and m.rss_bytes > 5 * 2**20 and m.uss_bytes > 0 and m.child_processes == 0
        # Info reports the latest memory measurement too, with its age
        info = handle.conn.stub.Info(pb.InfoRequest(), timeout=5)
        assert info.HasField("rss_bytes") and info.memory_age_s >= 0
    finally:
        snakepit.shutdown()


def test_heartbeat_memory_includes_the_workers_child_processes(wait_until):
    # A child process holding 100 MB: the worker counts it in its own figures (children included).
    pool = snakepit.start_pool("dx-hb-kids", pool_size=1, history_interval=None, heartbeat_interval=0.3)
    try:
        assert wait_until(lambda: _heartbeat_rows(pool) is not None, 15)
        before = _heartbeat_rows(pool)[0]
        code = ("import subprocess, sys\n"
                "child = subprocess.Popen([sys.executable, '-c', "
                "\"import sys, time; x = b'1' * (100 * 2**20); print('ok', flush=True); sys.stdin.read()\"], "
                "stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
                "child.stdout.readline()\n")
        with pool.session("kids") as s:
            s.run_code(code)
            try:
                assert wait_until(lambda: dx.get_pool_stats(pool).workers[0].memory_mb - before.memory_mb >= 90, 15)
                handle = pool.worker_records()[0]
                assert handle.figures.metrics.child_processes == 1
                live = dx.get_memory_stats(pool).workers[0]
                assert live.memory_mb - before.memory_mb >= 90  # the live measurement agrees
            finally:
                s.run_code("child.stdin.close(); child.wait(10)")
    finally:
        snakepit.shutdown()


def test_every_inspector_method_works_on_the_class_and_on_an_instance():
    """The seed's form ``ProfileInspector.get_pool_stats("default")`` (issue 18, item 1)."""
    from snakepit.diagnostics import ProfileInspector

    pool = snakepit.start_pool("default", pool_size=2)
    try:
        custom = ProfileInspector(info_timeout=1.0)
        for insp in (ProfileInspector, custom):
            assert insp.get_pool_stats("default").worker_count == 2
            assert insp.get_capacity_stats("default").total_capacity == 2
            assert insp.get_memory_stats("default").total_memory_mb > 0
            assert "default" in insp.get_comprehensive_report()
            assert insp.check_saturation("default").level == "healthy"
            assert isinstance(list(insp.get_recommendations("default")), list)
            assert insp.get_history("default") is not None
            frame = insp.project_memory("default", [4, 50, 200])
            assert list(frame["workers"]) == [4, 50, 200]
            assert insp.compare_profiles("default") is not None
            assert insp.snapshot("default").worker_count == 2
    finally:
        snakepit.stop_pool("default")
