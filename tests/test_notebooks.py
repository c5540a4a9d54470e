"""The example notebooks run top to bottom on a real kernel (nbclient), and say what they should."""
from __future__ import annotations

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, "notebooks")

pytestmark = pytest.mark.slow


def execute(name: str, *, widgets: dict | None = None):
    """Run the notebook; its tagged code cells by tag. ``widgets``, when given, receives the
    final state of every widget model (by model id) the kernel left."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    env_before = os.environ.get("PYTHONPATH")
    # The kernel must import this checkout's snakepit_nb (an editable install made before the
    # package existed maps it to a namespace package).
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + env_before if env_before else "")
    try:
        NotebookClient(nb, timeout=180, kernel_name="python3", startup_timeout=120,
                       resources={"metadata": {"path": NOTEBOOKS}}).execute()
    finally:
        if env_before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = env_before
    if widgets is not None:
        state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        widgets.update({mid: m.get("state", {}) for mid, m in state.get("state", {}).items()})
    return {tag: cell for cell in nb.cells if cell.cell_type == "code" for tag in cell.metadata.get("tags", [])}


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def text_of(cell) -> str:
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type == "error":
            parts.append("\n".join(out.traceback))
        elif WIDGET_MIME not in out.data:  # a widget (a progress bar) is not the cell's text
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def data_of(cell, mime: str) -> list:
    return [out.data[mime] for out in cell.outputs if "data" in out and mime in out.data]


def test_quickstart():
    widgets: dict = {}
    cells = execute("01-quickstart.ipynb", widgets=widgets)
    hello = cells["hello"]
    streams = [o.text for o in hello.outputs if o.output_type == "stream"]
    joined = "".join(streams)
    assert joined.index("hello from worker pid") < joined.index("still working")
    assert text_of(hello).rstrip().endswith("45")
    assert text_of(cells["pulled"]).strip() == "(5.5, 9)"
    assert text_of(cells["session2"]).strip() == "1"
    pids = re.findall(r"\[stdout:default-w\d\] pid (\d+)", text_of(cells["all"]))
    assert len(set(pids)) == 2
    bar = cells["progress"]
    assert data_of(bar, "application/vnd.jupyter.widget-view+json"), bar.outputs  # tqdm's widget
    bars = [w for w in widgets.values() if w.get("_model_name") in ("FloatProgressModel", "IntProgressModel")
            and w.get("max") == 40]
    assert bars and bars[0]["value"] == 40, bars  # the bar reached 40/40 in the kernel
    assert text_of(bar).strip().endswith("40")
    error = cells["error"].outputs[-1]
    assert error.output_type == "error" and error.ename == "RemoteCellError"
    assert "ratios = [10 / v for v in values]" in "\n".join(error.traceback)
    html = data_of(cells["inspect"], "text/html")[0]
    assert "snakepit-workers" in html and "default-w1" in html and "LOW" in html
    assert "worker_id" in data_of(cells["frame"], "text/html")[0]
    assert data_of(cells["panel"], "application/vnd.jupyter.widget-view+json")
    assert "snakepit-workers" in data_of(cells["panel"], "text/html")[0]  # static fallback
    assert float(text_of(cells["load"])) == 100.0  # the panel saw the pool fully busy
    assert text_of(cells["cleanup"]).strip() == "[]"


def test_capacity_planning():
    cells = execute("02-capacity-planning.ipynb")
    seed = text_of(cells["seed"])
    assert "the seed's estimate for 200 workers" in seed
    proj_html = data_of(cells["projection"], "text/html")[0]
    assert "projected_total_mb" in proj_html and "naive_rss_total_mb" in proj_html
    check = data_of(cells["check"], "text/plain")[0]
    assert "model_error_%" in check
    figure = data_of(cells["chart"], "application/vnd.plotly.v1+json")[0]
    names = [trace.get("name") for trace in figure["data"]]
    assert "measured" in names and any(n and n.startswith("projected") for n in names)
    measured = next(t for t in figure["data"] if t.get("name") == "measured")
    assert sorted(measured["x"]) == [1, 2, 3, 4]
    fit = text_of(cells["fit"])
    m = re.search(r"200 workers: ([\d,]+) MB projected \(the seed said ([\d,]+) MB", fit)
    assert m, fit
    projected, naive = (int(g.replace(",", "")) for g in m.groups())
    assert 0 < projected <= naive  # shared memory is counted once, not 200 times
    assert "warm workers fit" in fit
    assert text_of(cells["cleanup"]).strip() == "[]"


def test_process_vs_thread():
    cells = execute("03-process-vs-thread.ipynb")
    table = text_of(cells["measure"])
    for workload in ("GIL-bound", "GIL-releasing CPU", "GIL-releasing wait"):
        assert workload in table
    ratio = text_of(cells["ratio"])
    assert ratio.count("the thread profile reaches") == 3
    figure = data_of(cells["chart"], "application/vnd.plotly.v1+json")[0]
    assert {t.get("name") for t in figure["data"]} >= {"process", "thread"}
    memory = data_of(cells["memory"], "text/plain")[0]
    assert "footprint_mb" in memory
    assert data_of(cells["timeline"], "application/vnd.plotly.v1+json")
    assert text_of(cells["cleanup"]).strip() == "[]"


SUMMARY_COLUMNS = {"workload", "per_task_ms", "cpu_fraction", "process_speedup", "thread_speedup", "gil_bound",
                   "profile", "workers", "threads_per_worker", "capacity", "target_throughput",
                   "projected_throughput", "meets_throughput", "meets_latency", "projected_memory_mb",
                   "memory_budget_mb", "fits_memory", "notes"}


def execute_worksheet(workload: str):
    """Runs notebook 04 with its parameters cell overridden through the environment."""
    os.environ["WORKSHEET_WORKLOAD"] = workload
    try:
        cells = execute("04-capacity-planning-worksheet.ipynb")
    finally:
        os.environ.pop("WORKSHEET_WORKLOAD", None)
    table = text_of(cells["summary"])
    values = {}
    for line in table.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in SUMMARY_COLUMNS:
            values[parts[0]] = parts[1].strip()
    return cells, values


@pytest.mark.parametrize("workload, profile", [("cpu", "process"), ("sleep", "thread"), ("example", "process")])
def test_capacity_worksheet(workload, profile):
    cells, summary = execute_worksheet(workload)
    assert set(summary) >= SUMMARY_COLUMNS - {"notes"}, summary
    assert summary["workload"] == workload
    assert summary["profile"] == profile, summary
    assert float(summary["per_task_ms"]) > 0
    assert int(summary["workers"]) >= 1 and int(summary["capacity"]) >= 1
    assert 0 < float(summary["projected_memory_mb"]) < 100_000
    assert float(summary["projected_throughput"]) > 0
    assert summary["gil_bound"] == str(profile == "process")
    figures = data_of(cells["charts"], "application/vnd.plotly.v1+json")
    assert len(figures) == 2
    for fig in figures:
        names = {t.get("name") for t in fig["data"]}
        assert "measured" in names and any(n and n.startswith("projected") for n in names)
    assert f'profile="{profile}"' in text_of(cells["summary"])
    assert text_of(cells["cleanup"]).strip() == "[]"


def test_laptop_to_cluster():
    pytest.importorskip("distributed")
    cells = execute("05-laptop-to-cluster.ipynb")
    assert text_of(cells["local-backend"]).strip() == "'local'"
    assert text_of(cells["cluster-backend"]).strip() == "'dask'"
    local, remote = text_of(cells["local-result"]).strip(), text_of(cells["cluster-result"]).strip()
    assert local == remote == "{'total': 20540, 'streamed': [0, 1, 2], 'session_kept': 4}"
    local_where = data_of(cells["local-where"], "text/html")[0]
    cluster_where = data_of(cells["cluster-where"], "text/html")[0]
    assert "dask_worker" in local_where and "None" in local_where and "a child of this kernel" in local_where
    assert cluster_where.count("tcp://127.0.0.1:") == 2 and cluster_where.count("Dask worker (pid") == 2
    for tag in ("local-run", "cluster-run"):
        assert len(re.findall(r"\[stdout:work-w\d\] running on \S+ pid \d+", text_of(cells[tag]))) == 2
    assert text_of(cells["compare"]).strip() == "(True, True)"
    assert text_of(cells["cleanup"]).strip() == "[]"
