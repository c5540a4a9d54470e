"""The notebook tools and the CLI on a cluster pool (real loopback Dask cluster, no mocks):
the magics run cells remotely, the panel and the inspector show where each worker runs, and
the CLI's profile-inspector reads a cluster pool living in another process."""
from __future__ import annotations

import json

import psutil
import pytest

import snakepit

pytest.importorskip("distributed")
pytest.importorskip("IPython")

from IPython.core.interactiveshell import InteractiveShell  # noqa: E402
from IPython.utils.capture import capture_output  # noqa: E402

from cluster_fixtures import shared_cli_cluster  # noqa: E402,F401
from test_admin_helpers import ManagerProcess, run_cli, runtime_env  # noqa: E402,F401


def _dask_worker_descendants(cluster) -> set[int]:
    out: set[int] = set()
    for pid in cluster.worker_pids().values():
        out |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
    return out


@pytest.fixture
def big(shared_cli_cluster):
    pool = snakepit.start_pool("big", cluster=shared_cli_cluster.address, pool_size=2, history_interval=0.25)
    yield pool
    snakepit.stop_pool("big")


@pytest.fixture(scope="module")
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "snakepit_nb")
    return ip


def test_snakepit_run_runs_the_cell_on_a_remote_worker(shell, big, shared_cli_cluster):
    with capture_output() as cap:
        shell.run_cell("%%snakepit_run --pool big --pull where\nimport os\nwhere = os.getpid()\nprint('ran', where)",
                       store_history=False)
    where = shell.user_ns["where"]
    assert f"ran {where}" in cap.stdout
    assert where in {w.pid for w in big.list_workers()}
    assert where in _dask_worker_descendants(shared_cli_cluster)  # under a Dask worker, not the kernel

    with capture_output() as cap:
        shell.run_cell("%%snakepit_run --pool big --all\nimport os\nprint('pid', os.getpid())", store_history=False)
    assert all(f"pid {w.pid}" in cap.stdout for w in big.list_workers())


def test_inspect_magic_and_frames_show_the_hosts(shell, big):
    with capture_output() as cap:
        shell.run_cell("%snakepit_inspect big --detailed --format text", store_history=False)
    assert "Host" in cap.stdout
    for w in big.list_workers():
        assert w.worker_id in cap.stdout
    frame = shell.run_line_magic("snakepit_inspect", "big --frame workers")
    assert {"host", "dask_worker"} <= set(frame.columns)
    assert set(frame["dask_worker"]) == {w.dask_worker for w in big.list_workers()}


def test_panel_worker_table_has_a_host_column(big):
    from snakepit_nb import Panel

    panel = Panel(interval=0.2)
    try:
        table = panel.worker_table("big").value
        assert "<th" in table and ">host</th>" in table
        for w in big.list_workers():
            assert w.worker_id in table and w.host in table and (w.dask_worker or "") in table
    finally:
        panel.close()
    local = snakepit.start_pool("local-next-to-it", pool_size=1)
    try:
        panel = Panel(interval=0.2)
        try:
            assert ">host</th>" not in panel.worker_table("local-next-to-it").value  # no column for local pools
        finally:
            panel.close()
    finally:
        snakepit.stop_pool("local-next-to-it")


def test_cli_profile_inspector_reads_a_cluster_pool_in_another_process(runtime_env, shared_cli_cluster):
    spec = [{"name": "big", "pool_size": 2, "cluster": shared_cli_cluster.address}]
    with ManagerProcess(spec, runtime_env, timeout=120) as manager:
        result = run_cli(["profile-inspector", "--format", "json", "--detailed"], runtime_env)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        workers = report["big"]["workers"]
        assert len(workers) == 2
        assert all(w["dask_worker"].startswith("tcp://") and w["host"] for w in workers)
        assert {w["pid"] for w in workers} <= _dask_worker_descendants(shared_cli_cluster)
        assert not ({w["pid"] for w in workers} & {p.pid for p in psutil.Process(manager.pid).children(recursive=True)})
        text = run_cli(["profile-inspector", "--detailed"], runtime_env)
        assert text.returncode == 0 and "Host" in text.stdout
