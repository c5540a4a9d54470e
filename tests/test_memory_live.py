"""get_memory_stats stays a live measurement: real processes, real allocations, no timing asserts.

The manager reuses a worker's last ``smaps_rollup`` walk only while nothing in its process
tree changed (procmem.RollupCache); these tests change the tree between two back-to-back
calls and check that the very next call shows it.
"""
from __future__ import annotations

import sys

import psutil
import pytest

import snakepit
from diag_workloads import _allocate
from snakepit import diagnostics as dx
from snakepit import lifecycle, procmem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc signatures are Linux-only")

# A child (holding 80 MB) that starts a grandchild (`sleep`); both end when its stdin closes.
_CHILD = (
    "import subprocess, sys\n"
    "x = b'1' * (80 * 2**20)\n"
    "g = subprocess.Popen(['sleep', '120'])\n"
    "print(g.pid, flush=True)\n"
    "sys.stdin.read()\n"
    "g.kill(); g.wait()\n"
)


def _tree_psutil_mb(pid: int) -> tuple[float, int]:
    """RSS in MiB of a process and its descendants as psutil reads them, and the descendant count."""
    proc = psutil.Process(pid)
    kids = proc.children(recursive=True)
    return sum(p.memory_info().rss for p in [proc, *kids]) / 2**20, len(kids)


def test_live_memory_counts_a_workers_child_and_grandchild_and_drops_them_at_once():
    pool = snakepit.start_pool("mem-kids", pool_size=1, history_interval=None)
    try:
        with pool.session("kids") as s:
            dx.get_memory_stats(pool)
            before = dx.get_memory_stats(pool).workers[0]  # the second call may reuse the first walk
            s.run_code("import subprocess, sys\n"
                       f"child = subprocess.Popen([sys.executable, '-c', {_CHILD!r}], "
                       "stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
                       "grandchild = int(child.stdout.readline())\n")
            try:
                live = dx.get_memory_stats(pool).workers[0]
                psutil_mb, kids = _tree_psutil_mb(live.pid)
                assert kids == 2  # the child and its `sleep`
                assert live.memory_mb - before.memory_mb >= 75, (before, live)
                assert live.uss_mb - before.uss_mb >= 75  # the child's 80 MB are its own
                assert abs(live.memory_mb - psutil_mb) < 5, (live.memory_mb, psutil_mb)
            finally:
                s.run_code("child.stdin.close(); child.wait(10)")
            gone = dx.get_memory_stats(pool).workers[0]  # right away: the tree changed, nothing reused
            assert gone.memory_mb - before.memory_mb < 20, (before, gone)
            assert _tree_psutil_mb(gone.pid)[1] == 0
    finally:
        snakepit.shutdown()


def test_back_to_back_calls_show_memory_allocated_and_freed_in_between():
    pool = snakepit.start_pool("mem-alloc", pool_size=2, history_interval=None)
    try:
        with pool.session("alloc") as s:
            s.run_code("pass")
            wid = s.worker_id
            dx.get_memory_stats(pool)
            before = dx.get_memory_stats(pool).by_worker()
            _allocate(s, 120)
            grown = dx.get_memory_stats(pool).by_worker()
            assert grown[wid].memory_mb - before[wid].memory_mb >= 110, (before[wid], grown[wid])
            assert grown[wid].uss_mb - before[wid].uss_mb >= 110
            other = next(w for w in grown if w != wid)
            assert abs(grown[other].memory_mb - before[other].memory_mb) < 20
            s.run_code("import builtins\nbuiltins._keep.clear()")
            freed = dx.get_memory_stats(pool).by_worker()
            assert grown[wid].memory_mb - freed[wid].memory_mb >= 110, (grown[wid], freed[wid])
    finally:
        snakepit.shutdown()


def test_a_forked_childs_copy_on_write_shows_in_the_workers_uss():
    """The child writes pages it shares with the worker: the worker itself takes no page fault,
    yet the tree's USS grows by twice the pages (both copies become private). The next call shows it."""
    pool = snakepit.start_pool("mem-cow", pool_size=1, history_interval=None)
    code = (
        "import os\n"
        "buf = bytearray(b'\\x01' * (60 * 2**20))\n"
        "go_r, go_w = os.pipe(); done_r, done_w = os.pipe()\n"
        "cow_child = os.fork()\n"
        "if cow_child == 0:\n"
        "    try:\n"
        "        os.read(go_r, 1)\n"
        "        for i in range(0, len(buf), 4096):\n"
        "            buf[i] = 2\n"
        "        os.write(done_w, b'1')\n"
        "        os.read(go_r, 1)\n"
        "    finally:\n"
        "        os._exit(0)\n"
    )
    try:
        with pool.session("cow") as s:
            s.run_code(code)
            try:
                dx.get_memory_stats(pool)
                shared = dx.get_memory_stats(pool).workers[0]
                s.run_code("os.write(go_w, b'1'); os.read(done_r, 1)")
                broken = dx.get_memory_stats(pool).workers[0]
                assert broken.uss_mb - shared.uss_mb >= 100, (shared, broken)
                assert abs(broken.memory_mb - shared.memory_mb) < 20  # RSS barely moves
            finally:
                s.run_code("os.write(go_w, b'1'); os.waitpid(cow_child, 0)")
    finally:
        snakepit.shutdown()


def test_reused_figures_are_the_ones_a_fresh_walk_gives():
    pool = snakepit.start_pool("mem-reuse", pool_size=3, history_interval=None, heartbeat_interval=None)
    try:
        pids = [w.pid for w in pool.list_workers()]
        lifecycle.workers_memory(pids)
        for _ in range(50):  # idle workers (no heartbeat): some call reuses the previous walks
            before = procmem._CACHE.reused
            reused = lifecycle.workers_memory(pids)
            if procmem._CACHE.reused > before:
                break
        assert procmem._CACHE.reused > before, "no walk was ever reused"
        fresh = lifecycle.workers_memory(pids, reuse=False)
        assert set(reused) == set(fresh) == set(pids)
        for pid in pids:
            for key in ("rss_mb", "uss_mb", "pss_mb", "swap_mb"):
                assert reused[pid][key] == pytest.approx(fresh[pid][key], abs=1.0), (pid, key)
            full = psutil.Process(pid).memory_full_info()
            assert reused[pid]["uss_mb"] == pytest.approx(full.uss / 2**20, abs=1.0)
            assert reused[pid]["pss_mb"] == pytest.approx(full.pss / 2**20, abs=1.0)
    finally:
        snakepit.shutdown()
