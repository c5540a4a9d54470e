"""Each recommendation rule fires on a real pool built to trigger it, and stays quiet on a healthy pool."""
from __future__ import annotations

import dataclasses
import time

import pytest

import snakepit
from diag_workloads import _allocate, _cancel, _sleepers
from snakepit import PoolSaturatedError
from snakepit import diagnostics as dx


def _spin(seconds):
    def spin():  # pure-Python CPU loop: holds the GIL
        end = time.time() + seconds
        n = 0
        while time.time() < end:
            n += 1
        return n

    return spin


def _fires(pool, rule, wait_until, timeout=15.0):
    found = {}

    def check():
        recs = dx.get_recommendations(pool)
        found["recs"] = recs
        return rule in recs.rules()

    ok = wait_until(check, timeout, 0.25)
    return found["recs"] if ok else pytest.fail(f"{rule} did not fire: {found.get('recs')!s}")


# ---------------------------------------------------------------------------------- quiet
def test_healthy_pools_get_no_recommendations(wait_until):
    proc = snakepit.start_pool("dr-ok-p", profile="process", pool_size=2, history_interval=0.1)
    thr = snakepit.start_pool("dr-ok-t", profile="thread", pool_size=1, threads_per_worker=4, history_interval=0.1)
    try:
        for pool in (proc, thr):
            with pool.session() as s:
                for _ in range(6):  # some work, sampled as it goes
                    s.execute("ping")
                    pool.history.sample_once()
            assert wait_until(lambda: len(pool.history.samples) >= 10, 10)
        for pool in (proc, thr):
            recs = dx.get_recommendations(pool)
            assert len(recs) == 0, str(recs)
            assert list(recs.to_frame().columns) == list(dx.Recommendations.COLUMNS)
            assert recs.to_dict() == {"pool_name": pool.name, "recommendations": []}
    finally:
        snakepit.shutdown()


# ---------------------------------------------------------------------------------- seed rules
def test_utilization_critical(wait_until):
    pool = snakepit.start_pool("dr-crit", pool_size=1, history_interval=None)
    futs = []
    try:
        futs = _sleepers(pool, 1)
        assert wait_until(lambda: pool.list_workers()[0].load == 1, 10)
        recs = dx.get_recommendations(pool)
        rec = recs.by_rule("utilization_critical")
        assert rec is not None and rec.severity == "critical"
        assert str(rec) == "CRITICAL: Pool utilization is very high (100.0%). Add more workers immediately."
        assert rec.evidence["utilization_percent"] == 100.0 and rec.suggestion["pool_size"] >= 2
        assert recs.rules() == ["utilization_critical"]
        df = recs.to_frame()
        assert df.loc[0, "rule"] == "utilization_critical" and df.loc[0, "suggestion"]["pool_size"] >= 2
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_utilization_high(wait_until):
    pool = snakepit.start_pool("dr-high", profile="thread", pool_size=1, threads_per_worker=5, history_interval=None)
    futs = []
    try:
        futs = _sleepers(pool, 4)
        assert wait_until(lambda: pool.list_workers()[0].load == 4, 10)
        recs = dx.get_recommendations(pool)
        assert recs.rules() == ["utilization_high"]
        assert str(recs[0]) == "WARNING: Pool utilization is high (80.0%). Consider adding more workers."
        assert recs[0].severity == "warning" and recs[0].suggestion["pool_size"] >= 2
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_utilization_low_with_more_than_ten_workers():
    with snakepit.start_pool("dr-low", pool_size=11, history_interval=None) as pool:
        recs = dx.get_recommendations(pool)
        assert recs.rules() == ["utilization_low"]
        assert str(recs[0]) == ("INFO: Pool utilization is low (0.0%). Consider reducing worker count "
                                "to save resources.")
        assert recs[0].suggestion["pool_size"] < 11


def test_memory_average_high():
    with snakepit.start_pool("dr-avg", pool_size=1, history_interval=None) as pool:
        with pool.session("s") as s:
            _allocate(s, 120)
            recs = dx.get_recommendations(pool)
            rec = recs.by_rule("memory_average_high")
            assert rec is not None, str(recs)
            assert str(rec).startswith("WARNING: Average memory per worker is high (")
            assert str(rec).endswith("MB). Monitor for memory leaks.")
            assert rec.evidence["avg_memory_per_worker_mb"] >= 100
            assert rec.suggestion["memory_threshold_mb"] > rec.evidence["max_memory_worker_mb"]
            assert recs.by_rule("memory_peak_high") is None  # first match wins


def test_memory_peak_high():
    with snakepit.start_pool("dr-peak", pool_size=5, history_interval=None) as pool:
        with pool.session("s") as s:
            _allocate(s, 210)
            recs = dx.get_recommendations(pool)
            rec = recs.by_rule("memory_peak_high")
            assert rec is not None and recs.by_rule("memory_average_high") is None, str(recs)
            assert str(rec).startswith("WARNING: Peak worker memory usage is ")
            assert str(rec).endswith("MB. Consider worker recycling.")
            assert rec.evidence["worker_id"] == s.worker_id


@pytest.mark.parametrize("tpw, rule, text", [
    (2, "threads_per_worker_low", "INFO: Thread pool has 2 threads per worker. Consider increasing for better "
                                  "CPU utilization."),
    (33, "threads_per_worker_high", "INFO: Thread pool has 33 threads per worker. Consider reducing to avoid "
                                    "context switching overhead."),
])
def test_threads_per_worker_out_of_range(tpw, rule, text):
    with snakepit.start_pool(f"dr-tpw{tpw}", profile="thread", pool_size=1, threads_per_worker=tpw,
                             history_interval=None) as pool:
        recs = dx.get_recommendations(pool)
        assert recs.rules() == [rule]
        assert str(recs[0]) == text


def test_many_process_workers():
    # 201 real workers do not fit on a test machine: the rule runs on a real 2-worker pool's
    # snapshot with only the worker count changed.
    with snakepit.start_pool("dr-many", pool_size=2, history_interval=None) as pool:
        insp = dx.ProfileInspector()
        snap = insp.snapshot(pool)
        from snakepit.diagnostics.recommendations import evaluate

        assert evaluate(snap) == []
        busy = dict(capacity_used=100, utilization_percent=49.75)  # mid-range: no utilization rule
        recs = evaluate(dataclasses.replace(snap, worker_count=201, capacity_total=201, **busy))
        assert [r.rule for r in recs] == ["process_workers_many"]
        assert str(recs[0]) == ("INFO: Large number of process workers (201). Consider using thread profile for "
                                "better resource efficiency.")
        assert recs[0].suggestion == {"profile": "thread", "pool_size": 13, "threads_per_worker": 16}
        assert evaluate(dataclasses.replace(snap, worker_count=200, capacity_total=200, **busy)) == []


# ---------------------------------------------------------------------------------- measured rules
def test_gil_bound_thread_pool(wait_until):
    from snakepit.diagnostics.recommendations import available_cpus

    if available_cpus() < 2:
        pytest.skip("the GIL rule needs 2 CPUs to tell one core from parallel work")
    pool = snakepit.start_pool("dr-gil", profile="thread", pool_size=1, threads_per_worker=4,
                               history_interval=0.25, max_queue_size=100)
    futs = []
    try:
        futs = [pool.submit(_spin(12.0)) for _ in range(4)]
        recs = _fires(pool, "gil_bound", wait_until, timeout=15)
        rec = recs.by_rule("gil_bound")
        assert rec.severity == "warning" and rec.suggestion["profile"] == "process"
        hit = rec.evidence["workers"][0]
        assert 0.25 <= hit["cpu_cores"] <= 1.3 and hit["busy_threads"] >= 2
        if hit["runnable_threads"] is not None:  # Linux: few threads even wanted to run
            assert hit["runnable_threads"] <= 0.6 * hit["busy_threads"]
        assert str(rec).startswith("WARNING: Thread pool looks GIL-bound")
        assert "io_idle_process_pool" not in recs.rules()
    finally:
        _cancel(futs)
        snakepit.shutdown()


def _hash(seconds):
    def digest_loop():  # hashlib releases the GIL on large buffers: threads really run in parallel
        import hashlib

        data = b"x" * (4 << 20)
        end = time.time() + seconds
        n = 0
        while time.time() < end:
            hashlib.sha256(data).digest()
            n += 1
        return n

    return digest_loop


def test_no_gil_rule_for_gil_releasing_threads(wait_until):
    pool = snakepit.start_pool("dr-nogil", profile="thread", pool_size=1, threads_per_worker=4,
                               history_interval=0.25)
    futs = []
    try:
        futs = [pool.submit(_hash(5.0)) for _ in range(4)]
        # enough busy history for the rule to decide (it needs 1.5 s of it)
        assert wait_until(lambda: len(dx.get_history(pool).to_frame().query("capacity_used >= 4")) >= 10, 15)
        assert "gil_bound" not in dx.get_recommendations(pool).rules()
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_io_idle_process_pool_and_no_gil_rule_for_sleeping_threads(wait_until):
    proc = snakepit.start_pool("dr-io", profile="process", pool_size=2, history_interval=0.2)
    thr = snakepit.start_pool("dr-io-t", profile="thread", pool_size=1, threads_per_worker=4, history_interval=0.2)
    futs = []
    try:
        futs = _sleepers(proc, 2, 10.0) + _sleepers(thr, 4, 10.0)
        recs = _fires(proc, "io_idle_process_pool", wait_until, timeout=15)
        rec = recs.by_rule("io_idle_process_pool")
        assert rec.severity == "info"
        assert rec.suggestion["profile"] == "thread" and rec.suggestion["pool_size"] == 1
        assert rec.suggestion["threads_per_worker"] >= 2
        # one process fewer: about one worker's private memory (≈ 4–5 MB forked, ≈ 19 MB spawned)
        assert rec.evidence["saving_mb"] > 2 and rec.evidence["cpu_cores_per_busy_worker"] <= 0.15
        assert "MB less memory" in rec.message
        # the thread pool waits too: its CPU is near zero, not near one core, so it is not GIL-bound
        assert "gil_bound" not in dx.get_recommendations(thr).rules()
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_memory_growth_across_requests():
    # history_interval is long: the test takes the samples itself, one after each request.
    with snakepit.start_pool("dr-leak", pool_size=1, history_interval=60) as pool:
        with pool.session("s") as s:
            pool.history.sample_once()
            for _ in range(6):
                _allocate(s, 8)
                pool.history.sample_once()
            recs = dx.get_recommendations(pool)
            rec = recs.by_rule("memory_growth")
            assert rec is not None, str(recs)
            hit = rec.evidence["workers"][0]
            assert hit["worker_id"] == s.worker_id and 40 <= hit["growth_mb"] <= 60
            assert rec.suggestion["memory_threshold_mb"] > hit["memory_mb"]
            assert rec.suggestion["worker_max_requests"] >= 10
            assert str(rec).startswith("WARNING: Worker ")


def test_no_memory_growth_for_steady_requests():
    with snakepit.start_pool("dr-steady", pool_size=1, history_interval=60) as pool:
        with pool.session("s") as s:
            pool.history.sample_once()
            for _ in range(6):
                s.run_code("x = b'\\x01' * (8 * 2**20)\ndel x")
                pool.history.sample_once()
            assert dx.get_recommendations(pool).by_rule("memory_growth") is None


def test_frequent_saturation(events):
    events.attach(("snakepit", "pool", "saturated"))
    pool = snakepit.start_pool("dr-sat", pool_size=1, max_queue_size=0, history_interval=None)
    futs = []
    try:
        futs = _sleepers(pool, 1)
        rejected = 0
        for _ in range(4):
            try:
                futs.append(pool.submit_command("ping"))
            except PoolSaturatedError:
                rejected += 1
        assert rejected >= 3 and len(events.of(("snakepit", "pool", "saturated"))) == rejected
        recs = dx.get_recommendations(pool)
        rec = recs.by_rule("frequent_saturation")
        assert rec is not None, str(recs)
        assert rec.evidence["rejections"] == rejected
        assert rec.suggestion["pool_size"] >= 2 and rec.suggestion["max_queue_size"] >= 10
        assert dx.check_saturation(pool).rejections_last_minute == rejected
    finally:
        _cancel(futs)
        snakepit.shutdown()


def test_thresholds_are_settings():
    with snakepit.start_pool("dr-thr", pool_size=1, history_interval=None) as pool:
        insp = dx.ProfileInspector(thresholds=dx.Thresholds(memory_avg_mb=1.0))
        assert insp.get_recommendations(pool).rules() == ["memory_average_high"]


def test_no_io_idle_rule_for_cpu_bound_process_workers(wait_until):
    pool = snakepit.start_pool("dr-cpu", profile="process", pool_size=2, history_interval=0.25)
    futs = []
    try:
        futs = [pool.submit(_spin(5.0)) for _ in range(2)]
        assert wait_until(lambda: len(dx.get_history(pool).to_frame().query("capacity_used >= 2")) >= 10, 15)
        assert "io_idle_process_pool" not in dx.get_recommendations(pool).rules()
    finally:
        _cancel(futs)
        snakepit.shutdown()
