"""Endpoints are owner-only Unix sockets in a 0700 directory; nothing listens on the network."""
from __future__ import annotations

import os
import socket
import stat

import psutil

import snakepit
from snakepit import runtime


def test_worker_sockets_are_owner_only_and_not_on_the_network():
    pool = snakepit.start_pool("t-sec", pool_size=2)
    try:
        proc_dir = runtime.process_dir()
        assert stat.S_IMODE(os.stat(proc_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(runtime.base_dir()).st_mode) == 0o700
        sockets = [os.path.join(proc_dir, n) for n in os.listdir(proc_dir) if n.endswith(".sock")]
        assert len(sockets) >= 2
        for path in sockets:
            st = os.stat(path)
            assert stat.S_ISSOCK(st.st_mode)
            assert stat.S_IMODE(st.st_mode) & 0o077 == 0, f"{path} is accessible to others"
            assert st.st_uid == os.getuid()
        for worker in pool.list_workers():
            conns = psutil.Process(worker.pid).net_connections(kind="inet")
            listening = [c for c in conns if c.status == psutil.CONN_LISTEN]
            assert not listening, f"worker {worker.worker_id} listens on the network: {listening}"
    finally:
        snakepit.shutdown()


def test_stale_directories_of_dead_managers_are_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAKEPIT_RUNTIME_DIR", str(tmp_path))
    dead = tmp_path / "999999999-deadbeef"
    dead.mkdir()
    (dead / "w1.sock").write_text("")
    mine = tmp_path / f"{os.getpid()}-cafe"
    mine.mkdir()
    removed = runtime.sweep_stale()
    assert str(dead) in removed and not dead.exists() and mine.exists()


def test_runtime_dir_owned_by_someone_else_is_refused(tmp_path, monkeypatch):
    if os.getuid() != 0:
        return  # only root can create a directory owned by another user
    other = tmp_path / "foreign"
    other.mkdir()
    os.chown(other, 12345, 12345)
    monkeypatch.setenv("SNAKEPIT_RUNTIME_DIR", str(other))
    try:
        runtime.base_dir()
    except PermissionError as exc:
        assert "not a directory owned by you" in str(exc)
    else:
        raise AssertionError("a foreign runtime directory was accepted")
