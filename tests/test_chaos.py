"""Chaos: 1,000 requests while workers are SIGKILLed at random. Nothing hangs, nothing is lost."""
from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import wait

import pytest

import snakepit
from snakepit import WorkerCrashedError

N_REQUESTS = 1000
N_KILLS = 10


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["process", "thread"])
def test_random_kills_under_load(profile, wait_until):
    pool = snakepit.start_pool(
        f"t-chaos-{profile}", profile=profile, pool_size=4, threads_per_worker=4,
        max_queue_size=N_REQUESTS, queue_timeout=60,
    )
    try:
        rng = random.Random(1234)
        last_kill = [0.0]
        killed = []
        stop = threading.Event()

        def killer():
            for _ in range(N_KILLS):
                if stop.wait(rng.uniform(0.05, 0.25)):
                    return
                workers = [w for w in pool.list_workers() if w.status in ("available", "busy")]
                if not workers:
                    continue
                victim = rng.choice(workers)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    killed.append(victim.pid)
                    last_kill[0] = time.monotonic()
                except ProcessLookupError:
                    pass

        chaos = threading.Thread(target=killer, name="chaos-killer")
        chaos.start()
        futures = []
        # At least N_REQUESTS, and the load keeps running until every kill has landed
        # (fast replacements must not let the load finish before the chaos does).
        deadline = time.monotonic() + 60
        while (len(futures) < N_REQUESTS or chaos.is_alive()) and time.monotonic() < deadline:
            if pool.queue_depth() > 200:
                time.sleep(0.005)
                continue
            futures.append(pool.submit_command("sleep", {"seconds": rng.uniform(0.0, 0.01)}))
        done, not_done = wait(futures, timeout=120)
        stop.set()
        chaos.join()
        assert not not_done, f"{len(not_done)} requests hung"
        ok = crashed = 0
        for fut in done:
            exc = fut.exception()
            if exc is None:
                ok += 1
            else:
                assert isinstance(exc, WorkerCrashedError), f"unexpected {type(exc).__name__}: {exc}"
                crashed += 1
        assert ok + crashed == len(futures) >= N_REQUESTS and ok > 0
        assert len(killed) >= N_KILLS // 2
        # Back to 4 live workers within 2 s of the last kill.
        assert wait_until(
            lambda: len([w for w in pool.list_workers() if w.status in ("available", "busy")]) == 4,
            max(0.5, 2.0 - (time.monotonic() - last_kill[0])) + 0.5,
        ), f"pool has {len(pool.list_workers())} workers after the chaos"
        assert all(pid not in {w.pid for w in pool.list_workers()} for pid in killed)
        assert pool.execute("ping", timeout=10)["pong"]
        assert pool.statistics()["crashes"] == len(killed)
    finally:
        snakepit.shutdown()
