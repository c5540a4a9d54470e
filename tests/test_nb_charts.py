"""snakepit_nb.charts draws the inspector's frames; snakepit_nb helpers behave."""
from __future__ import annotations

import doctest
import time

import pytest

import snakepit
from snakepit import diagnostics as dx


@pytest.fixture
def pool():
    p = snakepit.start_pool("default", profile="process", pool_size=2, history_interval=0.2)
    yield p
    snakepit.shutdown()


def test_memory_projection_from_a_pool(pool):
    from snakepit_nb import charts

    fig = charts.memory_projection(pool, [1, 2, 4, 200], memory_limit_mb=4096)
    names = [t.name for t in fig.data]
    assert names[0].startswith("naive") and names[1].startswith("projected") and "measured" in names
    projected = fig.data[1]
    assert list(projected.x) == [1, 2, 4, 200]
    naive = fig.data[0]
    assert projected.y[-1] <= naive.y[-1]  # shared memory counted once
    measured = next(t for t in fig.data if t.name == "measured")
    assert list(measured.x) == [2]  # the pool's own size is measured
    assert any("limit" in (a.text or "") for a in fig.layout.annotations)


def test_memory_projection_with_extra_measurements(pool):
    from snakepit_nb import charts

    frame = dx.project_memory(pool, [1, 2, 3])
    fig = charts.memory_projection(frame=frame, measured=[{"workers": 1, "total_mb": 40.0},
                                                          {"workers": 2, "total_mb": 61.0}])
    measured = next(t for t in fig.data if t.name == "measured")
    assert dict(zip(measured.x, measured.y)) == {1: 40.0, 2: 61.0}  # explicit points win, no duplicates
    with pytest.raises(ValueError):
        charts.memory_projection()


def test_process_vs_thread(pool):
    from snakepit_nb import charts

    fig = charts.process_vs_thread(pool, threads_per_worker=4)
    bar = fig.data[0]
    assert len(bar.x) == 2 and bar.x[0].startswith("process") and bar.x[1].startswith("thread")
    fig = charts.process_vs_thread(throughput=[
        {"profile": "process", "workload": "GIL-bound", "tasks_per_s": 8.0},
        {"profile": "thread", "workload": "GIL-bound", "tasks_per_s": 4.0}])
    assert {t.name for t in fig.data} == {"process", "thread"}
    with pytest.raises(ValueError):
        charts.process_vs_thread()


def test_utilization_timeline(pool, wait_until):
    from snakepit_nb import charts
    from snakepit_nb._diag import LEVEL_COLOURS

    futures = [pool.submit(time.sleep, 1.0) for _ in range(3)]
    for f in futures:
        f.result()
    assert wait_until(lambda: len(dx.get_history(pool)) >= 5, 20)
    fig = charts.utilization_timeline(pool, window=60)
    util = next(t for t in fig.data if t.name == "utilization %")
    queue = next(t for t in fig.data if t.name == "queue depth")
    assert max(util.y) == 100.0 and max(queue.y) >= 1
    assert LEVEL_COLOURS["CRITICAL"] in util.marker.color  # coloured by utilization level
    assert charts.utilization_timeline(dx.get_history(pool).to_frame()).data


def test_helpers_doctests():
    from snakepit_nb import _diag, magics

    for module in (magics, _diag):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__


def test_levels_come_from_the_inspector():
    from snakepit_nb._diag import level_colour, level_of

    for pct in (0, 59.9, 60, 80, 80.1, 90, 90.1, 100):
        assert level_of(pct) == dx.utilization_level(pct)
    assert level_colour("CRITICAL") != level_colour("LOW")


def test_extension_entry_points():
    import snakepit_nb

    assert callable(snakepit_nb.load_ipython_extension)
    assert snakepit_nb.Panel.__name__ == "Panel"
    assert hasattr(snakepit_nb.charts, "memory_projection")
    assert sorted(snakepit_nb.__all__) == snakepit_nb.__all__
    with pytest.raises(AttributeError):
        snakepit_nb.nothing_here  # noqa: B018
