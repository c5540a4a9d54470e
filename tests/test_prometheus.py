"""The Prometheus exporter, scraped over real HTTP."""
from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

import snakepit

prometheus = pytest.importorskip("snakepit.telemetry.prometheus")
pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_exporter_serves_pool_gauges_and_request_metrics(wait_until):
    pool = snakepit.start_pool("prom", profile="thread", pool_size=1, threads_per_worker=4, history_interval=None)
    exporter = prometheus.start_exporter(port=0)
    try:
        assert exporter.port > 0 and exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
        for i in range(3):
            pool.execute("echo", {"i": i})
        with pytest.raises(snakepit.RemoteError):
            pool.execute("no_such_command")
        held = [pool.submit_command("sleep", {"seconds": 30}) for _ in range(3)]
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 3, 20.0)

        m = _scrape(exporter.url)
        labels = (("pool", "prom"), ("profile", "thread"))
        assert m[("snakepit_pool_workers", labels)] == 1
        assert m[("snakepit_pool_capacity", labels)] == 4
        assert m[("snakepit_pool_load", labels)] == 3
        assert m[("snakepit_pool_utilization_ratio", labels)] == pytest.approx(0.75)
        assert m[("snakepit_pool_queue_depth", labels)] == 0
        (worker,) = pool.list_workers()
        wl = (("pool", "prom"), ("profile", "thread"), ("worker_id", worker.worker_id))
        assert m[("snakepit_worker_memory_bytes", wl)] > 5 * 2**20  # the worker's real RSS
        assert m[("snakepit_worker_load", wl)] == 3

        echo = (("command", "echo"), ("pool", "prom"), ("success", "true"))
        assert m[("snakepit_requests_total", echo)] == 3
        failed = (("command", "no_such_command"), ("pool", "prom"), ("success", "false"))
        assert m[("snakepit_requests_total", failed)] == 1
        hist = (("command", "echo"), ("pool", "prom"))
        assert m[("snakepit_request_duration_seconds_count", hist)] == 3
        assert m[("snakepit_request_duration_seconds_sum", hist)] > 0
        for fut in held:
            fut.cancel()
    finally:
        exporter.stop()
        snakepit.shutdown()
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(exporter.url, timeout=2)


def test_saturation_and_worker_events_are_counted(wait_until):
    exporter = prometheus.start_exporter(pools=["tiny"])
    try:
        pool = snakepit.start_pool("tiny", pool_size=1, max_queue_size=0, history_interval=None)
        busy = pool.submit_command("sleep", {"seconds": 30})
        assert wait_until(lambda: sum(w.load for w in pool.list_workers()) == 1, 20.0)
        with pytest.raises(snakepit.PoolSaturatedError):
            pool.execute("ping")
        m = _scrape(exporter.url)
        assert m[("snakepit_pool_saturated_total", (("pool", "tiny"),))] == 1
        assert m[("snakepit_worker_started_total", (("pool", "tiny"),))] == 1
        assert m[("snakepit_worker_startup_seconds_count", (("pool", "tiny"),))] == 1
        busy.cancel()
    finally:
        exporter.stop()
        snakepit.shutdown()


def test_exporter_only_listens_on_loopback():
    with pytest.raises(ValueError):
        prometheus.start_exporter(addr="0.0.0.0")
    with pytest.raises(ValueError):
        prometheus.start_exporter(addr=socket.gethostname())
    with prometheus.start_exporter() as exporter:
        assert exporter.addr == "127.0.0.1"
        assert _scrape(exporter.url) is not None  # no pools: still a valid exposition


def test_two_exporters_do_not_collide():
    with prometheus.start_exporter() as a, prometheus.start_exporter() as b:
        assert a.port != b.port
        assert _scrape(a.url) is not None and _scrape(b.url) is not None
