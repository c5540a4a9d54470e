"""Cluster pools on real loopback Dask clusters (see tests/cluster_fixtures.py): no mocks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import psutil
import pytest

import snakepit

pytest.importorskip("distributed")

from cluster_fixtures import cli_cluster, local_cluster, shared_cli_cluster  # noqa: E402,F401
from conftest import _wait_until  # noqa: E402 - the shared polling helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_every_call_style_on_a_cluster_pool(shared_cli_cluster):
    cluster = shared_cli_cluster
    pool = snakepit.start_pool("big", cluster=cluster.address, profile="process", pool_size=4)
    try:
        assert pool.backend == "dask"
        assert pool.execute("ping", {})["pong"] is True
        offset = 40
        assert pool.submit(lambda x: x + offset, 2).result(timeout=30) == 42  # a closure
        assert list(pool.map(lambda x: x * x, range(20), chunksize=3)) == [x * x for x in range(20)]
        assert list(pool.execute_stream("count", {"n": 3})) == [0, 1, 2]
        with pool.session("s1") as s:
            s.run_code("x = 41")
            assert s.run_code("x + 1").result == 42
            pids = {s.execute("ping", {})["pid"] for _ in range(5)}
            assert len(pids) == 1
        assert pool.run_code("y = 2\ny * 3").result == 6
        workers = pool.list_workers()
        assert len(workers) == 4
        dask_pids = cluster.worker_pids()
        for w in workers:
            assert w.dask_worker in dask_pids
            assert w.address.startswith("127.0.0.1:")
            assert w.host
            proc = psutil.Process(w.pid)
            ancestors = [p.pid for p in proc.parents()]
            assert dask_pids[w.dask_worker] in ancestors  # a child of its Dask worker process
            # not the kernel's: the kernel here is also the parent of the test's Dask CLI processes
            assert proc.ppid() != os.getpid()
            assert proc.ppid() == dask_pids[w.dask_worker]
        # spread over both Dask workers (2 threads each)
        assert len({w.dask_worker for w in workers}) == 2
        pids = [w.pid for w in workers]
    finally:
        snakepit.stop_pool("big")
    assert _wait_until(lambda: not any(_alive(p) for p in pids), 10), "stop_pool left workers running"


def test_thread_profile_streams_and_cancels(shared_cli_cluster):
    pool = snakepit.start_pool("stream", cluster=shared_cli_cluster.address, profile="thread",
                               pool_size=2, threads_per_worker=4)
    try:
        assert list(pool.execute_stream("count", {"n": 4, "delay": 0.01})) == [0, 1, 2, 3]
        futs = [pool.submit(time.sleep, 0.2) for _ in range(8)]
        for f in futs:
            f.result(timeout=30)
        with pytest.raises(snakepit.RequestTimeoutError):
            pool.execute("sleep", {"seconds": 5}, timeout=0.5)
        assert pool.execute("ping", {})["pong"]
    finally:
        snakepit.stop_pool("stream")


def test_raw_grpc_call_without_the_secret_is_refused(shared_cli_cluster):
    from snakepit.protocol import worker_pb2 as pb
    from snakepit.protocol import worker_pb2_grpc as pb_grpc

    pool = snakepit.start_pool("auth", cluster=shared_cli_cluster.address, pool_size=1)
    try:
        address = pool.list_workers()[0].address
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.WorkerStub(channel)
            for metadata in (None, (("snakepit-secret", "wrong" * 8),)):
                with pytest.raises(grpc.RpcError) as info:
                    stub.Ping(pb.PingRequest(message="x"), timeout=5, metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                with pytest.raises(grpc.RpcError) as info:
                    list(stub.ExecuteStream(pb.Request(request_id=1, command="ping"), timeout=5, metadata=metadata))
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert pool.execute("ping", {})["pong"] is True  # the pool's own calls carry it
    finally:
        snakepit.stop_pool("auth")


def test_unreachable_scheduler_is_a_cluster_error_naming_it():
    t0 = time.monotonic()
    with pytest.raises(snakepit.ClusterError) as info:
        snakepit.start_pool("nowhere", cluster="tcp://127.0.0.1:9", pool_size=1, cluster_connect_timeout=2)
    assert "tcp://127.0.0.1:9" in str(info.value)
    assert time.monotonic() - t0 < 15


def test_bad_cluster_values_are_config_errors():
    with pytest.raises(snakepit.ConfigError) as info:
        snakepit.PoolConfig(cluster=42)
    assert info.value.key == "cluster"
    with pytest.raises(snakepit.ConfigError) as info:
        snakepit.PoolConfig(cluster="tcp://h:1", cluster_lease=0)
    assert info.value.key == "cluster_lease"


def test_missing_distributed_is_a_config_error_saying_what_to_install():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "distributed" or name.startswith("distributed."):
                    raise ModuleNotFoundError("No module named 'distributed'")
                return None
        sys.meta_path.insert(0, Block())
        import snakepit
        try:
            snakepit.start_pool("x", cluster="tcp://127.0.0.1:8786", pool_size=1)
        except snakepit.ConfigError as exc:
            print("KEY", exc.key); print("MSG", exc)
        p = snakepit.start_pool("local", pool_size=1)   # the local pool never needs it
        assert p.backend == "local" and p.execute("ping", {})["pong"]
        snakepit.shutdown()
        print("DIST", "distributed" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert "KEY cluster" in out.stdout, out.stderr
    assert 'pip install "snakepit[dask]"' in out.stdout
    assert "DIST False" in out.stdout


def test_local_cluster_object(local_cluster):
    pool = snakepit.start_pool("lc", cluster=local_cluster, pool_size=2)
    try:
        assert pool.backend == "dask"
        assert pool.submit(pow, 2, 10).result(timeout=30) == 1024
        assert {w.dask_worker for w in pool.list_workers()} <= set(local_cluster.scheduler_info["workers"])
    finally:
        snakepit.stop_pool("lc")


def test_a_given_client_is_reused_and_left_open(shared_cli_cluster):
    client = shared_cli_cluster.client()
    try:
        pool = snakepit.start_pool("cl", cluster=client, pool_size=1)
        assert pool.execute("ping", {})["pong"]
        snakepit.stop_pool("cl")
        assert client.status == "running"
    finally:
        client.close()


def test_sigkill_a_dask_worker_under_load(cli_cluster, events):
    from snakepit.errors import WorkerCrashedError

    events.attach(("snakepit", "worker", "crashed"))
    pool = snakepit.start_pool("load", cluster=cli_cluster.address, pool_size=4, queue_timeout=None)
    try:
        workers = pool.list_workers()
        victim = workers[0].dask_worker
        dask_pid = cli_cluster.worker_pids()[victim]
        on_victim = [w.pid for w in workers if w.dask_worker == victim]
        assert on_victim
        futs = [pool.submit(time.sleep, 3) for _ in range(8)]
        time.sleep(0.5)
        os.kill(dask_pid, signal.SIGKILL)
        t0 = time.monotonic()
        crashed = ok = 0
        for f in futs:
            try:
                f.result(timeout=20)  # none hangs
                ok += 1
            except WorkerCrashedError:
                crashed += 1
        assert crashed >= 1 and crashed + ok == 8
        assert _wait_until(lambda: not any(_alive(p) for p in on_victim), 10), "its snakepit workers outlived it"
        assert _wait_until(lambda: len([w for w in pool.list_workers() if w.status in ("available", "busy")]) == 4,
                     10), pool.list_workers()
        assert time.monotonic() - t0 < 25
        crashes = events.of(("snakepit", "worker", "crashed"))
        assert crashes and all(meta["dask_worker"] == victim and meta["host"] for _, meta in crashes)
        assert {meta["pid"] for _, meta in crashes} <= set(on_victim)
        assert pool.execute("ping", {})["pong"]
    finally:
        snakepit.stop_pool("load")


def test_a_killed_kernel_leaves_nothing_after_the_lease(shared_cli_cluster):
    code = textwrap.dedent(f"""
        import snakepit, sys, time
        pool = snakepit.start_pool("k", cluster={shared_cli_cluster.address!r}, pool_size=2, cluster_lease=3)
        print("PIDS", " ".join(str(w.pid) for w in pool.list_workers()), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        line = ""
        deadline = time.monotonic() + 90
        while not line.startswith("PIDS") and time.monotonic() < deadline:
            line = proc.stdout.readline()
        pids = [int(p) for p in line.split()[1:]]
        assert len(pids) == 2
        time.sleep(4)  # renewed past the first lease
        assert all(_alive(p) for p in pids)
        proc.kill()
        proc.wait(10)
        t0 = time.monotonic()
        assert _wait_until(lambda: not any(_alive(p) for p in pids), 3 + 8), "workers outlived the lease"
        assert time.monotonic() - t0 >= 1.0  # it was the lease, not a parent watch
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_dask_retirement_drains_then_the_pool_refills_elsewhere(cli_cluster, events):
    events.attach(("snakepit", "worker", "crashed"), ("snakepit", "worker", "recycled"))
    pool = snakepit.start_pool("retire", cluster=cli_cluster.address, pool_size=2, queue_timeout=None,
                               cluster_drain_timeout=10)
    try:
        workers = pool.list_workers()
        assert len({w.dask_worker for w in workers}) == 2
        victim = workers[0]
        with pool.session("on-victim") as s:
            fut = s.submit(time.sleep, 2.0)  # runs on the victim's worker ... (session affinity)
            time.sleep(0.3)
            sess_worker = [w for w in pool.list_workers() if w.load][0]
            client = cli_cluster.client()
            try:
                client.retire_workers([sess_worker.dask_worker], close_workers=True)
            finally:
                client.close()
            assert fut.result(timeout=30) is None  # it finished what it held
        assert not _alive(sess_worker.pid) or _wait_until(lambda: not _alive(sess_worker.pid), 10)
        assert _wait_until(lambda: len([w for w in pool.list_workers() if w.status in ("available", "busy")]) == 2, 15)
        assert all(w.dask_worker != sess_worker.dask_worker for w in pool.list_workers())
        assert pool.execute("ping", {})["pong"]
        # a retirement, not a crash: counted and reported as a recycle with reason "retired"
        assert not events.of(("snakepit", "worker", "crashed"))
        assert pool.statistics()["crashes"] == 0
        retired = [meta for _, meta in events.of(("snakepit", "worker", "recycled")) if meta["reason"] == "retired"]
        assert {m["worker_id"] for m in retired} >= {sess_worker.worker_id}
        del victim
    finally:
        snakepit.stop_pool("retire")


def test_tls_cluster_uses_tls_channels():
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("cryptography")
    security = distributed.Security.temporary()
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0", security=security, protocol="tls://")
    try:
        pool = snakepit.start_pool("tls", cluster=cluster, pool_size=1)
        try:
            assert pool._backend.credentials is not None
            assert pool.execute("ping", {})["pong"]
            address = pool.list_workers()[0].address
            from snakepit.protocol import worker_pb2 as pb
            from snakepit.protocol import worker_pb2_grpc as pb_grpc

            with grpc.insecure_channel(address) as channel:  # plaintext is not served
                with pytest.raises(grpc.RpcError):
                    pb_grpc.WorkerStub(channel).Ping(pb.PingRequest(message="x"), timeout=3)
        finally:
            snakepit.stop_pool("tls")
    finally:
        cluster.close()


def test_diagnostics_and_a_later_dask_worker(cli_cluster):
    from snakepit import diagnostics as dx

    pool = snakepit.start_pool("diag", cluster=cli_cluster.address, pool_size=2, heartbeat_interval=0.5)
    try:
        before = {w.dask_worker for w in pool.list_workers()}
        stats = dx.get_pool_stats("diag")
        assert stats.worker_count == 2
        frame = stats.to_frame()
        assert len(frame) == 2
        by_id = {w.worker_id: w for w in pool.list_workers()}
        for row in frame.itertuples():
            assert row.dask_worker == by_id[row.worker_id].dask_worker and row.dask_worker.startswith("tcp://")
            assert row.host == by_id[row.worker_id].host and row.host
        mem = dx.get_memory_stats("diag")
        assert mem.total_memory_mb > 0
        assert set(mem.to_frame()["dask_worker"]) == before
        cli_cluster.add_worker(nthreads=8)
        cli_cluster.wait_for_workers(3)
        for w in pool.list_workers():  # replacements go where there is room: the newcomer
            pool.recycle_worker(w.worker_id)
        assert _wait_until(lambda: any(w.dask_worker not in before for w in pool.list_workers()
                                 if w.status in ("available", "busy")), 20), pool.list_workers()
        assert pool.execute("ping", {})["pong"]
    finally:
        snakepit.stop_pool("diag")


def test_a_remote_workers_memory_comes_from_its_own_report(shared_cli_cluster, wait_until):
    """A worker on another host has a pid that means nothing here: its memory (inspector,
    history, recycling) is what it measured on its own host, with that figure's age."""
    from snakepit import diagnostics as dx

    pool = snakepit.start_pool("remote-mem", cluster=shared_cli_cluster.address, pool_size=1,
                               heartbeat_interval=0.3)
    try:
        record = pool.worker_records()[0]
        assert record.is_local  # loopback: measured here, now
        assert dx.get_memory_stats("remote-mem").workers[0].memory_age_s == 0.0
        record.process.is_local = False  # as if its Dask worker ran on another machine
        assert wait_until(lambda: record.figures is not None and record.figures.metrics.HasField("rss_bytes"), 10)
        time.sleep(0.05)
        row = dx.get_memory_stats("remote-mem").workers[0]
        reported = record.figures.metrics
        assert row.memory_age_s > 0  # the worker's own figure, not a measurement made now
        assert abs(row.memory_mb - reported.rss_bytes / 2**20) < 0.02
        stats_row = dx.get_pool_stats("remote-mem", fresh=True).workers[0]
        assert stats_row.memory_mb is not None and stats_row.host == record.host
    finally:
        snakepit.stop_pool("remote-mem")


def test_recycling_cancel_and_scaling_on_a_cluster_pool(shared_cli_cluster, events, wait_until):
    """Recycling by request count and by memory (as the worker measures itself), cancelling a
    running call, and scale(): the same behaviour as locally, on remote workers."""
    events.attach(("snakepit", "worker", "recycled"))
    dask_pids = set(shared_cli_cluster.worker_pids().values())
    pool = snakepit.start_pool("life", cluster=shared_cli_cluster.address, pool_size=1, worker_max_requests=3,
                               recycle_jitter=0.0, memory_threshold_mb=400, heartbeat_interval=0.3,
                               queue_timeout=None)
    try:
        first = pool.list_workers()[0].pid
        for _ in range(3):
            pool.execute("ping", {})
        assert wait_until(lambda: {w.pid for w in pool.list_workers() if w.status == "available"} - {first}, 20)
        second = [w.pid for w in pool.list_workers() if w.status == "available"][0]
        assert psutil.Process(second).ppid() in dask_pids  # the replacement runs under a Dask worker too

        # memory: the worker grows past the threshold; its own report (heartbeat) triggers the recycle
        for record in pool.worker_records():  # as if on another host: only its own report counts
            record.process.is_local = False
        holder = pool.session("ballast")  # a session keeps its namespace (and so the memory)
        holder.run_code("ballast = b'x' * (450 * 2**20)")
        assert wait_until(lambda: any(m["reason"] == "memory" for _, m in events.of(("snakepit", "worker", "recycled"))), 20)
        assert wait_until(lambda: second not in {w.pid for w in pool.list_workers()}, 20)

        # cancel a running call: the call ends cancelled, the pool keeps serving
        fut = pool.submit(time.sleep, 30)
        assert wait_until(lambda: fut.running() or any(w.load for w in pool.list_workers()), 10)
        assert fut.cancel() or fut.cancelled()
        assert pool.execute("ping", {}, timeout=30)["pong"]

        # scale up and back down: new workers are placed on the Dask workers
        pool.scale(3, wait=True, timeout=60)
        live = [w for w in pool.list_workers() if w.status in ("available", "busy")]
        assert len(live) == 3 and all(psutil.Process(w.pid).ppid() in dask_pids for w in live)
        pool.scale(1, wait=True, timeout=60)
        assert wait_until(lambda: len([w for w in pool.list_workers() if w.status in ("available", "busy")]) == 1, 20)
        assert pool.statistics()["crashes"] == 0
    finally:
        snakepit.stop_pool("life")


def test_a_dask_worker_whose_python_cannot_run_snakepit_is_named_and_skipped(tmp_path):
    """One Dask worker's Python cannot import grpc: the pool runs on the other and says which
    host was skipped and why; a cluster of only such workers is a ClusterError saying so."""
    from cluster_fixtures import CliCluster

    broken = tmp_path / "broken"
    (broken / "grpc").mkdir(parents=True)
    (broken / "grpc" / "__init__.py").write_text("raise ImportError(\"No module named 'grpc' (this test)\")\n")
    env = {"PYTHONPATH": str(broken) + os.pathsep + ROOT}
    cluster = CliCluster(n_workers=0)
    try:
        cluster.add_worker(env=env)
        cluster.wait_for_workers(1)
        with pytest.raises(snakepit.ClusterError) as only_broken:
            snakepit.start_pool("nogrpc", cluster=cluster.address, pool_size=1, startup_timeout=20)
        message = str(only_broken.value)
        assert "cannot run snakepit" in message and "grpc" in message and "host" in message
        assert snakepit.list_pools() == []

        cluster.add_worker()
        cluster.wait_for_workers(2)
        pool = snakepit.start_pool("halfgrpc", cluster=cluster.address, pool_size=2)
        try:
            good = {w.dask_worker for w in pool.list_workers()}
            unusable = pool._backend.describe()["unusable_dask_workers"]
            assert len(good) == 1 and len(unusable) == 1 and not good & set(unusable)
            assert "install the same snakepit and grpcio there" in next(iter(unusable.values()))
            assert pool.execute("ping", {})["pong"]
        finally:
            snakepit.stop_pool("halfgrpc")
    finally:
        cluster.close()
