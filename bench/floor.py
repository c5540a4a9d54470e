"""The floor under any design: raw round trips of the transports, with no pool around them.

* gRPC bidi stream ping-pong over a Unix socket, sync client (request iterator fed from a
  queue, as snakepit's connection does) against a sync and an asyncio server;
* gRPC unary over a Unix socket;
* asyncio client and server in the same loop style (the best case for grpc.aio);
* a ``multiprocessing`` pipe ping-pong (what ProcessPoolExecutor's transport costs).

The servers run in a child process started with ``subprocess`` (Unix socket in a private
temporary directory); everything is stopped before returning.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc

SERVER = r'''
import asyncio, os, sys, grpc
from concurrent import futures
path, mode = sys.argv[1], sys.argv[2]
def bidi(it, ctx):
    for m in it:
        yield m
def unary(m, ctx):
    return m
async def abidi(it, ctx):
    async for m in it:
        yield m
async def aunary(m, ctx):
    return m
def handlers(b, u):
    return grpc.method_handlers_generic_handler("bench.Echo", {
        "Bidi": grpc.stream_stream_rpc_method_handler(b),
        "Unary": grpc.unary_unary_rpc_method_handler(u)})
if mode == "sync":
    s = grpc.server(futures.ThreadPoolExecutor(4))
    s.add_generic_rpc_handlers((handlers(bidi, unary),))
    s.add_insecure_port("unix://" + path)
    s.start()
    print("ready", flush=True)
    sys.stdin.read()
    s.stop(0)
else:
    async def main():
        s = grpc.aio.server()
        s.add_generic_rpc_handlers((handlers(abidi, aunary),))
        s.add_insecure_port("unix://" + path)
        await s.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await s.stop(0)
    asyncio.run(main())
'''


def _pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"n": len(xs), "p50_us": xs[len(xs) // 2] * 1e6, "p99_us": xs[min(len(xs) - 1, int(len(xs) * .99))] * 1e6}


def _time(fn: Any, n: int, warmup: int, budget_s: float) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    out, end, perf = [], time.monotonic() + budget_s, time.perf_counter
    for _ in range(n):
        t0 = perf()
        fn()
        out.append(perf() - t0)
        if time.monotonic() > end and len(out) >= 20:
            break
    return _pct(out)


def _grpc(mode: str, n: int, warmup: int, budget_s: float) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as d:
        os.chmod(d, 0o700)
        path = os.path.join(d, "s.sock")
        proc = subprocess.Popen([sys.executable, "-c", SERVER, path, mode], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            ch = grpc.insecure_channel("unix://" + path)
            unary = ch.unary_unary("/bench.Echo/Unary")
            res["unary"] = _time(lambda: unary(b"x"), n, warmup, budget_s)
            q: queue.SimpleQueue = queue.SimpleQueue()
            replies = ch.stream_stream("/bench.Echo/Bidi")(iter(q.get, None))

            def ping() -> None:
                q.put(b"x")
                next(replies)

            res["bidi_sync_client"] = _time(ping, n, warmup, budget_s)
            q.put(None)
            replies.cancel()
            ch.close()

            async def aio() -> dict[str, float]:
                async with grpc.aio.insecure_channel("unix://" + path) as ach:
                    call = ach.stream_stream("/bench.Echo/Bidi")()
                    samples = []
                    for i in range(warmup + n):
                        t0 = time.perf_counter()
                        await call.write(b"x")
                        await call.read()
                        if i >= warmup:
                            samples.append(time.perf_counter() - t0)
                    await call.done_writing()
                    return _pct(samples)

            res["bidi_aio_client_in_loop"] = asyncio.run(aio())
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return res


def _echo(conn: Any) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except EOFError:
            return


def _pipe(n: int, warmup: int, budget_s: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("fork")
    a, b = ctx.Pipe()
    proc = ctx.Process(target=_echo, args=(b,), daemon=True)
    proc.start()
    b.close()

    def ping() -> None:
        a.send_bytes(b"x")
        a.recv_bytes()

    try:
        return _time(ping, n, warmup, budget_s)
    finally:
        a.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()


def run(p: dict) -> dict[str, Any]:
    n, warmup, budget = p["n_latency"], p["warmup"], p["budget_s"]
    return {
        "grpc_sync_server": _grpc("sync", n, warmup, budget),
        "grpc_aio_server": _grpc("aio", n, warmup, budget),
        "pipe": _pipe(n, warmup, budget),
    }
