"""No orphan processes, ever: the manager exits, is interrupted or is SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

SCRIPT = r"""
import json, sys, time, snakepit
profile, ending = sys.argv[1], sys.argv[2]
pool = snakepit.start_pool("orphans", profile=profile, pool_size=4, threads_per_worker=2)
pool.execute("ping")
print(json.dumps([w.pid for w in pool.list_workers()]), flush=True)
if ending == "shutdown":
    snakepit.shutdown()
    print("stopped", flush=True)
    time.sleep(30)
elif ending == "exit":
    sys.exit(0)                     # no shutdown(): atexit must clean up
else:
    pool.submit_command("sleep", {"seconds": 60})   # busy workers too
    # Wait for SIGKILL / SIGINT / SIGTERM. Short sleeps: CPython can miss a signal that lands
    # between its last check and the start of a sleep, until that sleep ends.
    for _ in range(600):
        time.sleep(0.1)
"""


def _start(profile: str, ending: str, start_method: str | None = None) -> tuple[subprocess.Popen, list[int]]:
    """Start a manager; return it and the pids of its workers and every other descendant
    (the forkserver zygote, the default start method's template process, included)."""
    env = dict(os.environ)
    if start_method:
        env["SNAKEPIT_START_METHOD"] = start_method
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, profile, ending], stdout=subprocess.PIPE, text=True,
                            env=env)
    line = proc.stdout.readline()
    assert line, "the manager did not start"
    pids = json.loads(line)
    try:
        pids += [c.pid for c in psutil.Process(proc.pid).children(recursive=True) if c.pid not in pids]
    except psutil.NoSuchProcess:
        pass
    return proc, pids


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not _alive(pids):
            return []
        time.sleep(0.05)
    return _alive(pids)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
@pytest.mark.parametrize("profile", ["process", "thread"])
def test_sigkill_of_the_manager_leaves_no_worker(profile, start_method):
    proc, pids = _start(profile, "wait", start_method)
    # 4 workers, and with forkserver their template process (the zygote)
    assert len(pids) == (5 if start_method == "forkserver" else 4) and len(_alive(pids)) == len(pids)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    left = _gone_within(pids, 3.0)
    for pid in left:  # never leak from the test itself
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers outlived a SIGKILLed manager: {left}"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_manager_leaves_no_worker(sig):
    proc, pids = _start("process", "wait")
    os.kill(proc.pid, sig)
    proc.wait(10)
    left = _gone_within(pids, 3.0)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_normal_exit_without_shutdown_leaves_no_worker():
    proc, pids = _start("process", "exit")
    assert proc.wait(10) == 0
    assert not _gone_within(pids, 3.0)


def test_shutdown_stops_every_worker():
    proc, pids = _start("thread", "shutdown")
    try:
        assert proc.stdout.readline().strip() == "stopped"
        assert not _gone_within(pids, 3.0)
        assert proc.poll() is None  # the manager is still alive; only its workers are gone
    finally:
        proc.kill()
        proc.wait(10)


def test_terminal_ctrl_c_reaches_the_manager_not_the_workers():
    """Workers run in their own session: a Ctrl-C to the terminal's process group spares them,
    the manager decides (here: it exits, and its workers go with it)."""
    proc, pids = _start("process", "wait")
    try:
        for pid in pids:
            assert os.getsid(pid) != os.getsid(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
    assert not _gone_within(pids, 3.0)


def _worker_children(me: psutil.Process) -> list[int]:
    """Worker processes below ``me``, an exited one not yet reaped (a zombie) included."""
    pids = []
    for child in me.children(True):
        try:
            if "snakepit.worker" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.ZombieProcess:
            pids.append(child.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def test_ctrl_c_during_start_pool_leaves_nothing_running():
    """An interrupt while workers start (the notebook's stop button) stops them and every thread."""
    import snakepit

    before = {t.name for t in __import__("threading").enumerate()}
    timer = __import__("threading").Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        snakepit.start_pool("t-interrupted", pool_size=4, startup_timeout=30)
        time.sleep(5)  # the interrupt lands during start-up or here
    except KeyboardInterrupt:
        pass
    timer.join()
    snakepit.shutdown()
    me = psutil.Process()
    end = time.monotonic() + 5
    while time.monotonic() < end and _worker_children(me):
        time.sleep(0.05)
    assert not _worker_children(me)
    assert "t-interrupted" not in {p.name for p in snakepit.list_pools()}
    extra = {t.name for t in __import__("threading").enumerate()} - before
    assert not {n for n in extra if n.startswith("snakepit-") and n not in ("snakepit-spawner", "snakepit-reaper")}


def test_only_the_main_thread_takes_ctrl_c():
    """Linux gives a process-directed SIGINT to any thread that does not block it; if a pool or
    gRPC thread took it, a main thread asleep in a system call would not see Ctrl-C."""
    import glob
    import threading

    import snakepit

    pool = snakepit.start_pool("t-sigmask", pool_size=1)
    try:
        pool.execute("ping")
        main_tid = threading.main_thread().native_id
        sigint_bit = 1 << (signal.SIGINT - 1)
        takers = []
        for task in glob.glob("/proc/self/task/*"):
            tid = int(task.rsplit("/", 1)[1])
            fields = dict(line.split(":\t", 1) for line in open(f"{task}/status").read().splitlines() if ":\t" in line)
            blocked = int(fields["SigBlk"], 16) & sigint_bit
            if tid != main_tid and not blocked and fields["Name"].strip() != "pytest-timeout":
                takers.append((tid, fields["Name"].strip()))
        # pytest's own helper threads (if any) are not ours; every snakepit/gRPC thread must block it.
        ours = {t.native_id for t in threading.enumerate() if t.name.startswith("snakepit")}
        assert not [t for t in takers if t[0] in ours or t[1] in ("grpc_global_tim", "event_engine", "lifeguard")], takers
        worker_status = open(f"/proc/{pool.list_workers()[0].pid}/status").read()
        worker_blk = int(next(l for l in worker_status.splitlines() if l.startswith("SigBlk")).split()[1], 16)
        assert not worker_blk & sigint_bit, "workers must receive SIGINT (cancellation uses it)"
    finally:
        snakepit.shutdown()
