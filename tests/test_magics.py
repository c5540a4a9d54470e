"""The magics in a real (in-process) IPython shell: %snakepit_inspect and %%snakepit_run.

The kernel-level proofs (streaming over iopub, interrupting the kernel) are in
tests/test_magics_kernel.py.
"""
from __future__ import annotations

import io
import sys
import threading
import time

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import snakepit


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "snakepit_nb")
    return ip


@pytest.fixture
def pool():
    p = snakepit.start_pool("default", profile="process", pool_size=2)
    yield p
    snakepit.shutdown()


def run(shell, line: str, cell: str):
    with capture_output() as cap:
        result = shell.run_cell(f"%%snakepit_run {line}\n{cell}", store_history=False)
    return result, cap


def test_help_shows_the_options(shell):
    for name, flags in (("%snakepit_inspect", ["--detailed", "--recommendations", "--format", "--live", "--frame"]),
                        ("%%snakepit_run", ["--pool", "--session", "--all", "--timeout", "--push", "--pull"])):
        with capture_output() as cap:
            shell.run_cell(f"{name}?", store_history=False)
        text = cap.stdout
        for flag in flags:
            assert flag in text, (name, flag, text[:2000])
    with capture_output() as cap:
        shell.run_cell("%%snakepit_run?", store_history=False)
    assert "streams into the cell" in cap.stdout


def test_inspect_without_a_pool_says_how_to_start_one(shell):
    assert not snakepit.list_pools()
    with capture_output() as cap:
        out = shell.run_line_magic("snakepit_inspect", "")
    assert out is None
    assert "No snakepit pool is running" in cap.stdout
    assert 'snakepit.start_pool("default"' in cap.stdout


def test_run_starts_the_default_pool_and_returns_the_last_value(shell):
    assert not snakepit.list_pools()
    result, cap = run(shell, "", "x = 6\nx * 7")
    assert result.success, result.error_in_exec
    assert result.result == 42
    assert "started pool 'default'" in cap.stdout
    assert [p.name for p in snakepit.list_pools()] == ["default"]
    snakepit.shutdown()


def test_output_streams_while_the_cell_runs(shell, pool, tmp_path):
    """The first print reaches sys.stdout before the worker is allowed to go on."""
    flag = tmp_path / "go"
    seen: list[tuple[float, str]] = []

    class Recorder(io.StringIO):
        def write(self, text: str) -> int:
            seen.append((time.monotonic(), text))
            if "first" in text:
                flag.write_text("go")  # only now may the worker print "second"
            return super().write(text)

    cell = (
        "import os, time\n"
        "print('first')\n"
        f"while not os.path.exists({str(flag)!r}):\n"
        "    time.sleep(0.02)\n"
        "print('second')\n"
    )
    old = sys.stdout
    sys.stdout = Recorder()
    try:
        shell.run_cell_magic("snakepit_run", "--timeout 60", cell)
    finally:
        sys.stdout = old
    text = "".join(t for _, t in seen)
    assert text.index("first") < text.index("second")


def test_push_pull_session_and_out(shell, pool):
    shell.user_ns["data"] = [1, 2, 3, 4]
    shell.user_ns.pop("total", None)
    result, cap = run(shell, "--push data --pull total,nothere --out res", "total = sum(data)\nsquares = [d * d for d in data]")
    assert result.success, result.error_in_exec
    assert shell.user_ns["total"] == 10
    assert "nothere" in cap.stderr
    res = shell.user_ns["res"]
    assert isinstance(res, snakepit.RunResult) and "squares" in res.changed

    run(shell, "--session s1", "counter = 41")
    result, _ = run(shell, "--session s1", "counter + 1")
    assert result.result == 42
    result, _ = run(shell, "", "'counter' in dir()")
    assert result.result is False  # no session: a fresh namespace


def test_remote_exception_shows_the_worker_traceback(shell, pool):
    result, cap = run(shell, "", "x = 1\ny = x / 0\n")
    err = result.error_in_exec
    assert isinstance(err, snakepit.RemoteError)
    assert err.remote_type == "builtins.ZeroDivisionError"
    assert err.worker_id in {w.worker_id for w in pool.list_workers()}
    shown = cap.stdout + cap.stderr
    assert "Remote exception on worker" in shown
    assert "ZeroDivisionError: division by zero" in shown
    assert "y = x / 0" in shown                      # the failing line of the cell
    assert "snakepit/worker/" not in shown           # snakepit's own frames are hidden
    assert "run_cell_magic" not in shown             # not the magic's local traceback


def test_timeout_cancels_the_cell(shell, pool, wait_until):
    started = time.monotonic()
    result, cap = run(shell, "--timeout 1", "import time\ntime.sleep(20)")
    assert not result.success
    assert "RequestTimeoutError" in cap.stdout + cap.stderr
    assert time.monotonic() - started < 18  # the 20 s sleep did not run to the end
    assert wait_until(lambda: pool.statistics()["in_flight"] == 0, 15)


def test_all_runs_on_every_worker_with_labelled_output(shell, pool):
    result, cap = run(shell, "--all --pull me", "import os\nme = os.getpid()\nprint('hello', me)\nme")
    assert result.success, result.error_in_exec
    workers = {w.worker_id: w.pid for w in pool.list_workers()}
    shown = "".join(o.data.get("text/plain", "") for o in cap.outputs)
    for wid, pid in workers.items():
        assert f"[stdout:{wid}] hello {pid}" in cap.stdout
        assert f"Out[{wid}]: {pid}" in shown
    assert shell.user_ns["me"] == workers


def test_all_reports_remote_errors(shell, pool):
    result, cap = run(shell, "--all", "1/0")
    assert isinstance(result.error_in_exec, snakepit.RemoteError)
    assert "ZeroDivisionError" in cap.stdout + cap.stderr


def test_usage_errors(shell, pool):
    shell.user_ns.pop("missing_var", None)
    with pytest.raises(UsageError, match="missing_var"):
        shell.run_cell_magic("snakepit_run", "--push missing_var", "1")
    with pytest.raises(UsageError, match="no pool named 'nope'"):
        shell.run_cell_magic("snakepit_run", "--pool nope", "1")
    with pytest.raises(UsageError, match="no pool named 'nope'"):
        shell.run_line_magic("snakepit_inspect", "nope")
    with pytest.raises(UsageError):
        shell.run_line_magic("snakepit_inspect", "--format yaml")


def test_inspect_html_text_and_json(shell, pool):
    futures = [pool.submit(time.sleep, 3) for _ in range(2)]  # 100 % busy: CRITICAL
    try:
        deadline = time.monotonic() + 10
        while pool.statistics()["in_flight"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        with capture_output() as cap:
            shell.run_line_magic("snakepit_inspect", "--detailed --recommendations")
        bundle = cap.outputs[0].data
        html, text = bundle["text/html"], bundle["text/plain"]
        assert "default" in html and "snakepit-workers" in html
        from snakepit_nb._diag import LEVEL_COLOURS

        assert LEVEL_COLOURS["CRITICAL"] in html       # the level colour of 100 %
        assert "100.0%" in html and "CRITICAL" in html
        for w in pool.list_workers():
            assert w.worker_id in html and w.worker_id in text
        assert "🔴 CRITICAL" in text
        assert "Recommendations" in html
    finally:
        for f in futures:
            f.result()
    with capture_output() as cap:
        shell.run_line_magic("snakepit_inspect", "--format json")
    import json

    data = json.loads(cap.stdout)
    assert set(data) == {"default"} and "utilization_percent" in data["default"]
    with capture_output() as cap:
        shell.run_line_magic("snakepit_inspect", "default --format text")
    assert "SNAKEPIT PROFILE INSPECTOR" in cap.stdout and not cap.outputs


@pytest.mark.parametrize("kind", ["pools", "workers", "memory", "history", "recommendations"])
def test_inspect_frame_returns_a_dataframe(shell, pool, kind):
    import pandas as pd

    pool.execute("ping")
    df = shell.run_line_magic("snakepit_inspect", f"--frame {kind}")
    assert isinstance(df, pd.DataFrame)
    if kind == "workers":
        assert set(df["worker_id"]) == {w.worker_id for w in pool.list_workers()}
        assert {"pid", "status", "load", "capacity"} <= set(df.columns)
    if kind == "memory":
        assert (df["memory_mb"] > 0).all()
    if kind == "pools":
        assert list(df["pool_name"]) == ["default"]


def test_inspect_frame_adaptive_shows_the_sizing_decisions(shell, pool):
    from snakepit.adaptive import LOG_COLUMNS

    columns = ["pool", *LOG_COLUMNS]
    assert list(shell.run_line_magic("snakepit_inspect", "--frame adaptive").columns) == columns
    adaptive = pool.adapt(minimum=1, maximum=3, interval=0.2, wait_count=2)
    try:
        futures = [pool.submit(time.sleep, 0.4) for _ in range(12)]
        [f.result() for f in futures]
        df = shell.run_line_magic("snakepit_inspect", "--frame adaptive")
        assert list(df.columns) == columns and set(df["pool"]) == {"default"}
        grew = df[df["reason"] == "adapt_up"]
        assert len(grew) >= 1 and (grew["to_size"] > grew["from_size"]).all()
        assert len(df) == len(adaptive.log)
    finally:
        adaptive.stop()


def test_inspect_live_shows_a_panel_and_out_keeps_it(shell, pool):
    from snakepit_nb import Panel

    with capture_output() as cap:
        shell.run_line_magic("snakepit_inspect", "--live --interval 0.5 --out live")
    panel = shell.user_ns.pop("live")
    try:
        assert isinstance(panel, Panel)
        assert panel.thread is not None and panel.thread.is_alive()
        assert cap.outputs  # displayed
        with capture_output():
            shell.run_line_magic("snakepit_inspect", "default --live --out live")
        assert panel.closed  # the second --live replaced the first
        panel = shell.user_ns.pop("live")
        assert panel.pools() == [pool]
    finally:
        panel.close()
    assert not any(t.name.startswith("snakepit-panel") for t in threading.enumerate())


def test_run_all_progress_bar(shell, pool):
    pytest.importorskip("tqdm")
    result, cap = run(shell, "--all --progress", "import os\nos.getpid()")
    assert result.success and "2/2" in cap.stderr and "snakepit_run --all [default]" in cap.stderr
    result, cap = run(shell, "--all", "x = 1")  # a quick cell: no bar by default
    assert result.success and "snakepit_run --all" not in cap.stderr
    result, cap = run(shell, "--all", "import time\ntime.sleep(2.6)")  # longer work: the bar appears
    assert result.success and "2/2" in cap.stderr
    result, cap = run(shell, "--all --no-progress", "import time\ntime.sleep(2.6)")
    assert result.success and "snakepit_run --all" not in cap.stderr
