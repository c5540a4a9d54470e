"""One small adapter per pool implementation, so every scenario drives them the same way.

A peer runs in the benchmark's child process (see :mod:`bench.child`); its workers are that
process's descendants, which is how their memory is measured and their cleanup checked.
Every network address is loopback or a Unix socket.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable

from .tasks import noop, pid_after

__all__ = ["PEERS", "make_peer", "Peer"]


class _Done:
    """A finished future-like (for peers whose handles lack ``result()``)."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def result(self, timeout: float | None = None) -> Any:
        return self._get()


class Peer:
    """Base class: ``start`` / ``submit`` / ``map`` / ``first_calls`` / ``stop``."""

    name = ""
    kind = "process"  # "process" workers or "thread" slots inside few processes
    #: whether ``map`` uses the library's own default chunking (else notes say what it does)
    map_note = ""

    def start(self, workers: int, threads: int = 1) -> None:
        raise NotImplementedError

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def call_noop(self) -> Any:
        return self.submit(noop).result()

    def map(self, fn: Callable[..., Any], items: list) -> list:
        raise NotImplementedError

    def first_calls(self, workers: int, deadline: float) -> set[int]:
        """Run calls until each of ``workers`` worker processes answered one; their pids."""
        seen: set[int] = set()
        while len(seen) < workers and time.monotonic() < deadline:
            futs = [self.submit(pid_after, 0.02) for _ in range(workers)]
            seen.update(f.result() for f in futs)
        return seen

    def stop(self) -> None:
        raise NotImplementedError


class SnakepitPeer(Peer):
    def __init__(self, profile: str, start_method: str | None = None, transport: str | None = None) -> None:
        self.profile = profile
        self.transport = transport
        self.name = (f"snakepit-{profile}" + (f"-{start_method}" if start_method else "")
                     + (f"-{transport}" if transport else ""))
        self.kind = profile
        self.pool: Any = None
        self.map_note = "default chunking: ceil(n / (4 x capacity))"
        # The pool reads $SNAKEPIT_START_METHOD (its config key is the same setting); the
        # orchestrator sets it for every snakepit job (--start-method), a peer may override.
        if start_method:
            os.environ["SNAKEPIT_START_METHOD"] = start_method

    def start(self, workers: int, threads: int = 1, **options: Any) -> None:
        import snakepit

        opts: dict[str, Any] = dict(
            profile=self.profile,
            pool_size=workers,
            max_queue_size=1_000_000,  # 20k tasks are submitted at once; the default 1000 would refuse them
            queue_timeout=None,
            startup_timeout=120.0,
            # The tasks' module, imported once by the template process (forkserver): the
            # fork-based peers inherit it from the manager the same way.
            preload=["bench.tasks"],
        )
        if self.profile == "thread":
            opts["threads_per_worker"] = threads
        if self.transport:
            opts["transport"] = self.transport  # PoolConfig.transport (issue 16)
        depth = int(os.environ.get("SNAKEPIT_BENCH_PIPELINE_DEPTH", "0") or 0)
        if depth:
            opts["pipeline_depth"] = depth  # PoolConfig.pipeline_depth (issue 7)
        opts.update(options)
        self.pool = snakepit.start_pool(f"bench-{self.profile}-{os.getpid()}", **opts)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    def execute_echo(self) -> Any:
        return self.pool.execute("echo")

    def map(self, fn: Callable[..., Any], items: list) -> list:
        return list(self.pool.map(fn, items))

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None


class ProcessPoolPeer(Peer):
    name = "ProcessPoolExecutor"
    map_note = "Executor.map default chunksize=1"

    def start(self, workers: int, threads: int = 1) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.ex.submit(fn, *args)

    def map(self, fn: Callable[..., Any], items: list) -> list:
        return list(self.ex.map(fn, items))

    def stop(self) -> None:
        self.ex.shutdown(wait=True)


class LokyPeer(ProcessPoolPeer):
    name = "loky"
    map_note = "Executor.map default chunksize=1"

    def start(self, workers: int, threads: int = 1) -> None:
        from loky import ProcessPoolExecutor

        self.ex = ProcessPoolExecutor(max_workers=workers)


class MultiprocessingPeer(Peer):
    name = "multiprocessing.Pool"
    map_note = "Pool.map default chunksize: ceil(n / (4 x processes))"

    def start(self, workers: int, threads: int = 1) -> None:
        import multiprocessing

        self.pool = multiprocessing.Pool(workers)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        res = self.pool.apply_async(fn, args)
        return _Done(res.get)

    def map(self, fn: Callable[..., Any], items: list) -> list:
        return self.pool.map(fn, items)

    def stop(self) -> None:
        self.pool.close()
        self.pool.join()


class IPyParallelPeer(Peer):
    name = "ipyparallel"
    map_note = "DirectView.map: one even chunk per engine"

    def start(self, workers: int, threads: int = 1) -> None:
        import ipyparallel as ipp

        self.cluster = ipp.Cluster(n=workers, controller_ip="127.0.0.1", log_level=40)
        self.rc = self.cluster.start_and_connect_sync(activate=False)
        self.rc.wait_for_engines(workers, timeout=120)
        self.view = self.rc.load_balanced_view()
        self.direct = self.rc[:]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.view.apply_async(fn, *args)

    def map(self, fn: Callable[..., Any], items: list) -> list:
        return list(self.direct.map_sync(fn, items))

    def first_calls(self, workers: int, deadline: float) -> set[int]:
        return set(self.direct.apply_sync(os.getpid))

    def stop(self) -> None:
        try:
            self.rc.close()
        finally:
            self.cluster.stop_cluster_sync()


class DaskPeer(Peer):
    name = "dask"
    map_note = "Client.map: one task per item (no chunking)"

    def start(self, workers: int, threads: int = 1) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
            dashboard_address=":0", silence_logs=50,
        )
        self.client = Client(self.cluster)
        self.client.wait_for_workers(workers, timeout=120)
        self.kind = "thread" if threads > 1 else "process"

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn: Callable[..., Any], items: list) -> list:
        return self.client.gather(self.client.map(fn, items, pure=False))

    def first_calls(self, workers: int, deadline: float) -> set[int]:
        return set(self.client.run(os.getpid).values())

    def stop(self) -> None:
        try:
            self.client.close()
        finally:
            self.cluster.close()


PEERS: dict[str, Callable[[], Peer]] = {
    "snakepit-process": lambda: SnakepitPeer("process"),
    "snakepit-thread": lambda: SnakepitPeer("thread"),
    "snakepit-process-spawn": lambda: SnakepitPeer("process", start_method="spawn"),
    "snakepit-process-grpc": lambda: SnakepitPeer("process", transport="grpc"),
    "ProcessPoolExecutor": ProcessPoolPeer,
    "multiprocessing.Pool": MultiprocessingPeer,
    "loky": LokyPeer,
    "ipyparallel": IPyParallelPeer,
    "dask": DaskPeer,
}


def make_peer(name: str) -> Peer:
    return PEERS[name]()


def chunks(items: Iterable[Any], size: int) -> list[list[Any]]:
    items = list(items)
    return [items[i:i + size] for i in range(0, len(items), max(1, size))]


def default_chunksize(n: int, workers: int) -> int:
    return max(1, math.ceil(n / (4 * workers)))
