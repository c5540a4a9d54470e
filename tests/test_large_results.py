"""Large results (issue #18 item 7b): the kernel's memory while a 100 MB result arrives.

A result bigger than ``bulk.LARGE_BYTES`` travels in PART messages into preallocated buffers
(``snakepit/protocol/bulk.py``). Before, one 100 MB result made the manager (this process,
the "kernel") peak at ~5x its size and keep +1x resident after it was dropped. These are
memory figures, not timings: the bounds leave room for noise and fail clearly on the old path.
"""
from __future__ import annotations

import gc
import os
import pickle
import threading

import numpy as np
import psutil
import pytest

import snakepit
from snakepit.protocol import bulk, codec
from snakepit.protocol import worker_pb2 as pb

MB = 2**20
SIZE_MB = 100


def make_big(mb: int, kind: str = "bytes"):
    n = mb * MB
    if kind == "numpy":
        out = np.arange(n, dtype=np.uint8)  # 0..255 repeating: checkable content
        return out
    if kind == "strided":  # not contiguous: pickled in-band by NumPy
        return np.ones(2 * n, dtype=np.uint8)[::2]
    return b"\x07" * (n - 3) + b"end"


class PeakRSS:
    """Peak RSS growth of this process over a block: the kernel's VmHWM when it can be reset,
    and a psutil sampling thread (every ms) in any case; the larger of the two."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def _hwm() -> int | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        bulk.trim_memory()
        self.base = self.proc.memory_info().rss
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
            self.hwm_ok = True
        except OSError:
            self.hwm_ok = False
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, name="test-rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        hwm = self._hwm() if self.hwm_ok else None
        if hwm is not None:
            self.peak = max(self.peak, hwm)

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _rss_after_drop() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


@pytest.fixture
def pool():
    p = snakepit.start_pool("t-large", pool_size=1, max_message_mb=512)
    try:
        yield p
    finally:
        snakepit.shutdown()


def _warm(pool) -> None:
    # one large result first: gRPC's and the allocator's first-use growth is not what we measure
    assert len(pool.submit(make_big, 8).result(60)) == 8 * MB
    gc.collect()


@pytest.mark.parametrize("kind, peak_bound", [("bytes", 2.6), ("numpy", 1.6)])
def test_a_large_result_costs_the_kernel_little_memory(pool, kind, peak_bound):
    _warm(pool)
    size = SIZE_MB * MB
    with PeakRSS() as rss:
        value = pool.submit(make_big, SIZE_MB, kind).result(120)
    assert len(value) == size
    if kind == "numpy":
        assert value.dtype == np.uint8 and value[:512].tolist() == list(range(256)) * 2
        assert int(value[-1]) == (size - 1) % 256
        assert value.flags.writeable  # rebuilt on its own (writable) buffer, not a copy of a view
        value[0] = 9
    else:
        assert value[:3] == b"\x07\x07\x07" and value.endswith(b"end")
    # old path: ~5x (bytes) and ~4x (NumPy): gRPC's buffers, protobuf's, the payload, the value
    assert rss.growth < peak_bound * size, f"peak RSS grew {rss.growth / size:.2f}x the result's size"
    del value
    after = _rss_after_drop()
    # old path: +1x or more stayed resident (the reader thread held the last Reply)
    assert after - rss.base < 0.3 * size, f"{(after - rss.base) / MB:.0f} MB stayed resident"


def test_large_results_of_every_shape_arrive_intact(pool):
    strided = pool.submit(make_big, 5, "strided").result(60)
    assert strided.shape == (5 * MB,) and int(strided.sum()) == 5 * MB
    mixed = pool.submit(lambda: {"a": np.full(3 * MB, 2, dtype=np.int16), "b": b"x" * (5 * MB),
                                 "ro": np.frombuffer(b"y" * MB, dtype=np.uint8), "e": np.empty(0)}).result(60)
    assert int(mixed["a"].sum()) == 6 * MB and mixed["a"].dtype == np.int16
    assert mixed["b"] == b"x" * (5 * MB) and mixed["e"].size == 0
    assert bytes(mixed["ro"]) == b"y" * MB and not mixed["ro"].flags.writeable  # read-only stays so
    # just over and just under the threshold, with an out-of-band buffer each
    for n in (bulk.LARGE_BYTES - 1000, bulk.LARGE_BYTES + 1000, bulk.LARGE_BYTES + bulk.PART_BYTES):
        arr = pool.submit(np.arange, n, dtype=np.uint8).result(60)
        assert arr.size == n and arr[-1] == (n - 1) % 256
    assert pool.execute("echo", {"x": 1}) == {"x": 1}  # the stream still serves


def test_a_large_result_over_the_limit_still_fails_clearly():
    p = snakepit.start_pool("t-large-limit", pool_size=1, max_message_mb=16)
    try:
        with pytest.raises(snakepit.PayloadTooLargeError):
            p.submit(make_big, 20, "numpy").result(60)
        assert len(p.submit(make_big, 12, "numpy").result(60)) == 12 * MB
    finally:
        snakepit.shutdown()


def test_the_unary_execute_call_gets_a_large_result_in_one_message(pool):
    worker = next(iter(pool._workers.values()))
    payload = pickle.dumps({"fn": make_big, "args": (6, "numpy"), "kwargs": {}})
    reply = worker.conn.stub.Execute(pb.Request(request_id=99, command="call", payload=payload),
                                     timeout=60, metadata=worker.conn.metadata)
    assert reply.kind == pb.Reply.RESULT and not reply.in_parts
    arr = pickle.loads(reply.payload)
    assert arr.size == 6 * MB and arr[257] == 1


def test_parts_reassemble_across_segment_boundaries():
    """The split/assemble pair on its own: parts that straddle segments, empty buffers."""
    value = {"a": np.arange(10_000, dtype=np.int64), "z": np.empty(0), "b": b"q" * 7777,
             "c": np.ones((50, 70), dtype=np.float32)}
    reply = bulk.LargeReply(5, codec.dumps_segments(value, "v"))
    messages = list(reply.messages(part_bytes=1000))
    assert [m.kind for m in messages[:-1]] == [pb.Reply.PART] * (len(messages) - 1)
    assert messages[-1].kind == pb.Reply.RESULT and messages[-1].in_parts
    assembly = bulk.Assembly(messages[0].segments)
    for m in messages[:-1]:
        assembly.add(m.payload)
    out = assembly.loads()
    assert (out["a"] == value["a"]).all() and out["b"] == value["b"] and out["z"].size == 0
    assert (out["c"] == 1).all() and out["c"].shape == (50, 70)
