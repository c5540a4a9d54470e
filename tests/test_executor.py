"""pool.executor(): a real concurrent.futures.Executor; the joblib backend on a real pool."""
from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor

import pytest

import snakepit
from snakepit.executor import SnakepitExecutor


def test_executor_submit_map_shutdown_and_asyncio():
    pool = snakepit.start_pool("ex", pool_size=2)
    ex = pool.executor()
    assert isinstance(ex, Executor)
    assert ex.submit(pow, 2, 10).result(30) == 1024
    assert list(ex.map(abs, [-1, -2, -3], timeout=30)) == [1, 2, 3]
    pids = set(ex.map(lambda _: os.getpid(), range(6), chunksize=1))
    assert os.getpid() not in pids

    async def go():
        return await asyncio.get_running_loop().run_in_executor(ex, sum, [1, 2, 3])

    assert asyncio.run(go()) == 6
    with ex:
        pass
    with pytest.raises(RuntimeError):
        ex.submit(abs, 1)
    assert not pool.closed  # the view ended, the pool did not
    with pool.session("s") as s:
        sex = s.executor()
        a = {sex.submit(os.getpid).result(30) for _ in range(3)}
        assert len(a) == 1
    snakepit.stop_pool("ex")


def test_owned_executor_stops_its_pool():
    with SnakepitExecutor.start_pool("owned", pool_size=1) as ex:
        assert ex.submit(pow, 3, 2).result(30) == 9
    assert ex.pool.closed


def test_joblib_gridsearch_on_pool(events):
    joblib = pytest.importorskip("joblib")
    pytest.importorskip("sklearn")
    import snakepit.joblib  # noqa: F401
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    X, y = load_digits(return_X_y=True)
    X, y = X[:300], y[:300]
    grid = {"C": [1, 10], "gamma": [0.001, 0.01]}
    serial = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    snakepit.start_pool("default", pool_size=2)
    events.attach(("snakepit", "request", "executed"))
    with joblib.parallel_config(backend="snakepit", pool="default"):
        par = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
    assert par.best_score_ == serial.best_score_
    assert par.best_params_ == serial.best_params_
    ran = [m for ev, _, m in events.seen if m.get("pool") == "default" and m.get("command") == "call"]
    assert ran, "no batch ran on the pool"
    snakepit.stop_pool("default")


def test_map_progress_bar_and_registry(capsys):
    pytest.importorskip("tqdm")
    from snakepit import progress as prog

    pool = snakepit.start_pool("prog", pool_size=2)
    import time as _t
    it = pool.map(_t.sleep, [0.05] * 20, chunksize=2, progress=True)
    seen = prog.running_maps("prog")
    assert seen and seen[0].total == 20
    assert len(list(it)) == 20
    assert prog.running_maps("prog") == []
    err = capsys.readouterr().err
    assert "20/20" in err
    snakepit.stop_pool("prog")


def test_default_progress_in_jupyter_waits_before_showing_a_bar(capsys, monkeypatch):
    """progress=None in a notebook: a quick map prints nothing; a map still running after
    AUTO_BAR_AFTER_S gets a bar that starts from the items already done."""
    pytest.importorskip("tqdm")
    import time as _t

    from snakepit import progress as prog

    monkeypatch.setattr(prog, "_in_jupyter", lambda: True)  # tqdm.auto then writes text to stderr
    monkeypatch.setattr(prog, "AUTO_BAR_AFTER_S", 0.6)
    pool = snakepit.start_pool("autoprog", pool_size=2)
    try:
        assert list(pool.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
        assert "snakepit map" not in capsys.readouterr().err
        assert len(list(pool.map(_t.sleep, [0.15] * 16, chunksize=1))) == 16
        err = capsys.readouterr().err
        assert "snakepit map [autoprog]" in err and "16/16" in err
        assert " 0/16" not in err  # the bar appeared late, with the finished items counted
    finally:
        snakepit.stop_pool("autoprog")
