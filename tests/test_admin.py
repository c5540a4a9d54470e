"""The admin endpoint: attach to pools living in another process (real processes, no mocks)."""
from __future__ import annotations

import json
import os
import stat

import grpc
import pytest
from test_admin_helpers import ManagerProcess, run_cli, runtime_env  # noqa: F401 - runtime_env is a fixture

import snakepit
from snakepit import admin
from snakepit.protocol import admin_pb2, admin_pb2_grpc


def _discovery_files(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(admin.DISCOVERY_SUFFIX))


def test_inspector_json_matches_a_pool_in_another_process(runtime_env, wait_until):
    """A pool started in a separate process is inspected by `snakepit profile-inspector --format json`."""
    rt = runtime_env["SNAKEPIT_RUNTIME_DIR"]
    pools = [{"name": "default", "profile": "process", "pool_size": 2, "hold": 1},
             {"name": "hpc", "profile": "thread", "pool_size": 1, "threads_per_worker": 4, "hold": 2}]
    with ManagerProcess(pools, runtime_env) as manager:
        # The discovery file: private, names the process, its socket and a token.
        files = _discovery_files(rt)
        assert files == [f"{manager.pid}{admin.DISCOVERY_SUFFIX}"]
        path = os.path.join(rt, files[0])
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        data = json.load(open(path))
        assert data["pid"] == manager.pid and len(data["token"]) >= 32
        assert stat.S_ISSOCK(os.stat(data["socket"]).st_mode)
        assert stat.S_IMODE(os.stat(data["socket"]).st_mode) & 0o077 == 0
        assert stat.S_IMODE(os.stat(os.path.dirname(data["socket"])).st_mode) == 0o700

        result = run_cli(["profile-inspector", "--format", "json"], runtime_env)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert set(report) == {"default", "hpc"}

        default = report["default"]
        assert default["pool_name"] == "default" and default["profile"] == "process"
        assert default["worker_count"] == 2
        assert default["capacity_total"] == 2
        assert default["capacity_used"] == 1
        assert default["capacity_available"] == 1
        assert default["utilization_percent"] == pytest.approx(50.0)
        expected = manager.info["pools"]["default"]["workers"]
        assert {w["worker_id"]: w["pid"] for w in default["workers"]} == expected
        assert all(w["memory_mb"] and w["memory_mb"] > 1 for w in default["workers"])  # real RSS
        assert default["manager"]["pid"] == manager.pid

        hpc = report["hpc"]
        assert hpc["profile"] == "thread"
        assert (hpc["worker_count"], hpc["capacity_total"], hpc["capacity_used"]) == (1, 4, 2)
        assert hpc["utilization_percent"] == pytest.approx(50.0)
        assert hpc["capacity"]["thread_info"]["threads_per_worker"] == 4

        # --pool keeps the same shape (keyed by pool name).
        one = json.loads(run_cli(["profile-inspector", "--format", "json", "--pool", "hpc"], runtime_env).stdout)
        assert list(one) == ["hpc"]

        # `snakepit pools` lists the manager with its pools and workers.
        listed = json.loads(run_cli(["pools", "--format", "json"], runtime_env).stdout)
        assert [m["pid"] for m in listed] == [manager.pid]
        assert {p["name"]: p["workers"] for p in listed[0]["pools"]} == {"default": 2, "hpc": 1}

    # Stopped normally: it withdrew its endpoint, and the CLI no longer lists it.
    assert _discovery_files(rt) == []
    listed = json.loads(run_cli(["pools", "--format", "json"], runtime_env).stdout)
    assert listed == []


def test_wrong_or_missing_token_is_refused(runtime_env):
    with ManagerProcess([{"name": "default", "pool_size": 1}], runtime_env) as manager:
        (found,) = admin.discover()
        assert found.pid == manager.pid

        with admin.AdminClient(found, token="not-the-token") as client:
            with pytest.raises(admin.AdminError) as err:
                client.inspect()
            assert err.value.code == "UNAUTHENTICATED"
            with pytest.raises(admin.AdminError) as err:
                client.recycle_worker("default", "default-w1")
            assert err.value.code == "UNAUTHENTICATED"

        # No metadata at all, straight through grpc.
        with grpc.insecure_channel("unix:" + found.socket) as channel:
            stub = admin_pb2_grpc.AdminStub(channel)
            with pytest.raises(grpc.RpcError) as rpc_err:
                stub.Hello(admin_pb2.HelloRequest(), timeout=10)
            assert rpc_err.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The right token works.
        with admin.AdminClient(found) as client:
            hello = client.hello()
        assert hello["pid"] == manager.pid
        assert [p["name"] for p in hello["pools"]] == ["default"]


def test_dead_manager_is_forgotten_and_its_files_swept(runtime_env):
    rt = runtime_env["SNAKEPIT_RUNTIME_DIR"]
    manager = ManagerProcess([{"name": "default", "pool_size": 1}], runtime_env)
    try:
        assert [m["pid"] for m in json.loads(run_cli(["pools", "--format", "json"], runtime_env).stdout)] == [
            manager.pid]
    finally:
        manager.kill()  # SIGKILL: no chance to clean up
    assert _discovery_files(rt) == [f"{manager.pid}{admin.DISCOVERY_SUFFIX}"]  # stale, left behind

    result = run_cli(["pools", "--format", "json"], runtime_env)
    assert result.returncode == 0
    assert json.loads(result.stdout) == []
    assert os.listdir(rt) == []  # discovery file and the dead process's directory are gone

    result = run_cli(["profile-inspector", "--format", "json"], runtime_env)
    assert result.returncode == 1
    assert "no live snakepit pool manager" in json.loads(result.stdout)["error"]


def test_recycle_worker_through_the_cli(runtime_env, wait_until):
    with ManagerProcess([{"name": "default", "pool_size": 2}], runtime_env) as manager:
        result = run_cli(["recycle-worker", "default", "default-w1"], runtime_env)
        assert result.returncode == 0, result.stderr
        assert "default-w1" in result.stdout

        def recycled() -> bool:
            with admin.connect() as client:
                listed = client.list_pools()["pools"][0]["workers"]
            ids = {w["worker_id"] for w in listed}
            return "default-w1" not in ids and len(ids) == 2

        assert wait_until(recycled, 30.0)

        bad = run_cli(["recycle-worker", "default", "no-such-worker"], runtime_env)
        assert bad.returncode == 1
        assert "no-such-worker" in bad.stderr


def test_in_process_endpoint_published_and_withdrawn(runtime_env):
    rt = runtime_env["SNAKEPIT_RUNTIME_DIR"]
    pool = snakepit.start_pool("adm", pool_size=1, history_interval=None)
    ep = admin.current_endpoint()
    assert ep is not None and ep.pid == os.getpid()
    assert os.path.exists(ep.discovery_path) and ep.discovery_path.startswith(rt)
    (me,) = admin.discover()
    with admin.AdminClient(me) as client:
        assert [p["name"] for p in client.hello()["pools"]] == ["adm"]
        report = client.inspect("adm")
        assert report["adm"]["worker_count"] == 1
        with pytest.raises(admin.AdminError) as err:
            client.inspect("missing")
        assert err.value.code == "NOT_FOUND"
        projection = client.report("projection", "adm", worker_counts=[1, 2])
        assert projection
    assert pool.execute("ping") is not None
    snakepit.start_pool("adm2", pool_size=1, history_interval=None)
    assert admin.discover()[0].pools == ("adm", "adm2")
    snakepit.stop_pool("adm")
    with admin.AdminClient(admin.discover()[0]) as client:
        assert [p["name"] for p in client.hello()["pools"]] == ["adm2"]
    assert admin.discover()[0].pools == ("adm2",)  # the discovery file follows
    snakepit.shutdown()
    assert admin.current_endpoint() is None
    assert not os.path.exists(ep.discovery_path)
    assert not os.path.exists(ep.socket_path)


def test_discovery_files_that_others_could_read_are_not_trusted(runtime_env):
    snakepit.start_pool("adm", pool_size=1, history_interval=None)
    ep = admin.current_endpoint()
    assert [m.pid for m in admin.discover()] == [os.getpid()]
    os.chmod(ep.discovery_path, 0o644)
    try:
        assert admin.discover() == []
    finally:
        os.chmod(ep.discovery_path, 0o600)
    assert [m.pid for m in admin.discover()] == [os.getpid()]
    snakepit.shutdown()


def test_publishing_can_be_switched_off(runtime_env):
    admin.set_enabled(False)
    try:
        snakepit.start_pool("quiet", pool_size=1, history_interval=None)
        assert admin.current_endpoint() is None
        assert admin.discover() == []
    finally:
        snakepit.shutdown()
        admin.set_enabled(None)
