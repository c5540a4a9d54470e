"""The live panel, in process: widget state follows the pool under load; the thread stops on close."""
from __future__ import annotations

import threading
import time

import pytest

import snakepit
from conftest import _wait_until
from snakepit_nb import Panel
from snakepit_nb._diag import LEVEL_COLOURS


def panel_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("snakepit-panel")]


@pytest.fixture
def pool():
    p = snakepit.start_pool("default", profile="process", pool_size=2, history_interval=0.25)
    yield p
    snakepit.shutdown()


def wait_for(predicate, timeout=30.0, interval=0.05):
    return _wait_until(predicate, timeout, interval)


def test_widgets_follow_the_pool_under_load(pool):
    panel = Panel(interval=0.2)
    try:
        gauge, table, fig = panel.gauge("default"), panel.worker_table("default"), panel.figure("default")
        assert gauge.value == 0.0
        for w in pool.list_workers():
            assert w.worker_id in table.value and str(w.pid) in table.value
        assert wait_for(lambda: any(t.name.startswith("default-w") and t.y for t in fig.data))  # memory lines
        refreshes_idle, util_points_idle = panel.refreshes, len(fig.data[0].y or ())

        futures = [pool.submit(time.sleep, 4) for _ in range(3)]  # 2 busy, 1 queued
        try:
            assert wait_for(lambda: gauge.value == 100.0)
            assert gauge.style.bar_color == LEVEL_COLOURS["CRITICAL"]
            assert wait_for(lambda: "Busy" in table.value and "1 / 1" in table.value)
            assert wait_for(lambda: 100.0 in (fig.data[0].y or ()) and 1 in (fig.data[1].y or ()))  # util, queue
            assert panel.refreshes > refreshes_idle
            assert len(fig.data[0].y) > util_points_idle
        finally:
            for f in futures:
                f.result()
        assert wait_for(lambda: gauge.value == 0.0)
        assert gauge.style.bar_color == LEVEL_COLOURS["LOW"]
        assert panel.last_error is None
    finally:
        panel.close()
    assert panel.thread is None
    assert not panel_threads()


def test_pause_resume_interval_and_close(pool):
    panel = Panel(["default"], interval=0.1)
    try:
        assert wait_for(lambda: panel.refreshes >= 3)
        panel.pause()
        time.sleep(0.3)  # let a refresh already under way finish
        frozen = panel.refreshes
        time.sleep(0.6)
        assert panel.refreshes == frozen and panel.paused
        assert panel._pause.description == "Resume"
        panel.resume()
        assert wait_for(lambda: panel.refreshes > frozen)
        panel.set_interval(0.5)
        assert panel.interval == 0.5
    finally:
        panel.close()
    panel.close()  # idempotent
    assert not panel_threads()


def test_recycle_button_replaces_the_worker(pool):
    panel = Panel(interval=0.2)
    try:
        assert wait_for(lambda: len(panel._worker.options) == 2)
        old = panel._worker.options[0][1]
        panel._worker.value = old
        panel._recycle.click()
        assert "recycling" in panel._status.value
        assert wait_for(lambda: old[1] not in {w.worker_id for w in pool.list_workers()}
                        and len(pool.list_workers()) == 2, 60)
        assert wait_for(lambda: old[1] not in panel.worker_table("default").value)
    finally:
        panel.close()


def test_static_fallback_and_repr(pool):
    panel = Panel(autostart=False)
    try:
        assert panel.thread is None
        bundle = panel._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
        assert "snakepit-workers" in bundle["text/html"] and "default-w1" in bundle["text/html"]
        assert bundle["text/plain"].startswith("<snakepit_nb.Panel [default]")
    finally:
        panel.close()
    assert "closed" in repr(panel)
    assert "application/vnd.jupyter.widget-view+json" not in panel._repr_mimebundle_()


def test_panel_without_pools_and_pools_appearing_later():
    panel = Panel(interval=0.1)
    try:
        assert "No snakepit pool is running" in panel._repr_mimebundle_()["text/html"]
        assert panel._pools_box.children == (panel._empty,)
        snakepit.start_pool("later", pool_size=1)
        assert wait_for(lambda: "later" in panel._sections)
        snakepit.stop_pool("later")
        assert wait_for(lambda: "later" not in panel._sections)
    finally:
        panel.close()


def test_close_all_stops_every_panel(pool):
    panels = [Panel(interval=0.2) for _ in range(2)]
    assert len(panel_threads()) == 2
    Panel.close_all()
    assert all(p.closed for p in panels)
    assert not panel_threads()


def test_panel_shows_running_maps_and_adaptive_sizing(pool):
    panel = Panel(interval=0.1)
    try:
        assert panel.activity("default").value == ""  # fixed size, nothing running: nothing said
        items = pool.map(time.sleep, [0.1] * 40, chunksize=2)
        first = next(items)
        assert wait_for(lambda: "snakepit-map" in panel.activity("default").value
                        and "/40 items" in panel.activity("default").value)
        assert first is None and len(list(items)) == 39
        assert wait_for(lambda: "snakepit-map" not in panel.activity("default").value)

        adaptive = pool.adapt(minimum=1, maximum=3, interval=0.2, wait_count=2)
        try:
            futures = [pool.submit(time.sleep, 0.4) for _ in range(12)]
            assert wait_for(lambda: "adaptive 1–3" in panel.activity("default").value
                            and "adapt_up" in panel.activity("default").value)
            [f.result() for f in futures]
        finally:
            adaptive.stop()
    finally:
        panel.close()
