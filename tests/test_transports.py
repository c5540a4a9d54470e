"""The two transports of local workers (issue 16): the lane (default) and the gRPC stream.

The whole core suite runs on the default transport; ``test_core_suite_on_grpc`` runs it
again with ``SNAKEPIT_TRANSPORT=grpc``, so every feature is proven on each lane.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

import snakepit
from snakepit.config import PoolConfig
from snakepit.connection import WorkerConnection
from snakepit.errors import ConfigError, WorkerCrashedError
from snakepit.lane import LaneConnection
from snakepit.protocol import framing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CORE_SUITE = [
    "tests/test_pool.py",
    "tests/test_queue.py",
    "tests/test_profiles.py",
    "tests/test_bad_input.py",
    "tests/test_lifecycle.py",
    "tests/test_timers.py",
    "tests/test_large_results.py",
    "tests/test_function_cache.py",
    "tests/test_sizing.py",
    "tests/test_telemetry.py",
]


@pytest.fixture
def pools():
    started = []

    def start(name: str, **kw):
        started.append(name)
        return snakepit.start_pool(name, **kw)

    yield start
    for name in started:
        snakepit.stop_pool(name)


def _connections(pool):
    return [w.conn for w in pool.worker_records()]


def test_local_workers_use_the_lane_by_default_and_grpc_on_request(pools):
    lane = pools("tr-lane", pool_size=2)
    grpc_pool = pools("tr-grpc", pool_size=2, transport="grpc")
    assert all(type(c) is LaneConnection for c in _connections(lane))
    assert all(type(c) is WorkerConnection for c in _connections(grpc_pool))
    for pool in (lane, grpc_pool):
        assert pool.execute("echo", {"x": 41}) == {"x": 41}
        assert list(pool.execute_stream("count", {"n": 3})) == [0, 1, 2]


def test_environment_variable_chooses_the_transport(pools, monkeypatch):
    monkeypatch.setenv("SNAKEPIT_TRANSPORT", "grpc")
    pool = pools("tr-env", pool_size=1)
    assert type(_connections(pool)[0]) is WorkerConnection
    monkeypatch.setenv("SNAKEPIT_TRANSPORT", "pigeons")
    with pytest.raises(ConfigError, match="SNAKEPIT_TRANSPORT"):
        PoolConfig(name="x")


def test_bad_transport_settings_are_refused():
    with pytest.raises(ConfigError, match="transport"):
        PoolConfig(name="x", transport="udp")
    with pytest.raises(ConfigError, match="local-only"):
        PoolConfig(name="x", transport="lane", cluster="tcp://127.0.0.1:1")


def test_lane_socket_is_owner_only_and_serves_one_manager(pools):
    pool = pools("tr-sock", pool_size=1)
    conn = _connections(pool)[0]
    path = conn._lane_path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    # A second connection (another process of the same user) is closed at once and does not
    # disturb the pool's own lane.
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    intruder.connect(path)
    intruder.settimeout(5)
    assert intruder.recv(1) == b""
    intruder.close()
    assert pool.execute("echo", {"still": True}) == {"still": True}


def test_cancel_and_timeout_on_the_lane_keep_the_worker_serving(pools):
    pool = pools("tr-cancel", pool_size=1, transport="lane")
    with pytest.raises(snakepit.RequestTimeoutError):
        pool.execute("sleep", {"seconds": 30}, timeout=0.5)
    fut = pool.submit(time.sleep, 30)
    time.sleep(0.3)
    fut.cancel()
    assert pool.execute("echo", {"after": 1}) == {"after": 1}


def test_worker_killed_mid_call_ends_the_call_on_the_lane(pools):
    pool = pools("tr-crash", pool_size=1, transport="lane")
    pid = pool.list_workers()[0].pid
    fut = pool.submit(time.sleep, 30)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerCrashedError):
        fut.result(timeout=10)
    assert pool.execute("echo", {"ok": 1}) == {"ok": 1}


def test_concurrent_callers_share_one_lane(pools):
    pool = pools("tr-threads", profile="thread", pool_size=1, threads_per_worker=4)
    results: list[int] = []
    lock = threading.Lock()

    def caller(k: int) -> None:
        for i in range(200):
            value = pool.execute("echo", {"v": k * 1000 + i})["v"]
            with lock:
                results.append(value)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(k * 1000 + i for k in range(4) for i in range(200))


# -- framing ------------------------------------------------------------------------------
def _pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a, b


def test_frames_many_small_one_large_in_order():
    a, b = _pair()
    messages = [bytes([i % 256]) * (i % 50) for i in range(500)] + [os.urandom(3 * 2**20)] + [b"end"]

    def write() -> None:
        for m in messages:
            framing.write_frame(a, m)
        a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=write)
    t.start()
    got = [bytes(f) for f in framing.read_frames(b, max_bytes=8 * 2**20)]
    t.join()
    a.close()
    b.close()
    assert got == messages


def test_frames_that_straddle_the_read_buffer_arrive_whole_and_has_frame_tells_what_is_buffered():
    a, b = _pair()
    rng = random.Random(16)
    messages = [os.urandom(rng.randrange(1, 200_000)) for _ in range(60)]
    payload = b"".join(framing.frame(m) for m in messages)

    def write() -> None:
        a.sendall(payload)  # one stream: messages cross the reader's 256 KiB buffer end
        a.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=write)
    t.start()
    reader = framing.FrameReader(b, 8 * 2**20)
    got = []
    with pytest.raises(EOFError):
        while True:
            got.append(bytes(reader.next()))
    t.join(60)
    a.close()
    b.close()
    assert got == messages
    a, b = _pair()
    a.sendall(framing.frame(b"x") + framing.frame(b"y") + framing.HEADER.pack(5) + b"ab")
    reader = framing.FrameReader(b, 1000)
    assert not reader.has_frame()  # nothing read yet
    assert bytes(reader.next()) == b"x"
    assert reader.has_frame()  # "y" came with it
    assert bytes(reader.next()) == b"y"
    assert not reader.has_frame()  # a message begun, not whole
    a.sendall(b"cde")
    assert bytes(reader.next()) == b"abcde"
    a.close()
    b.close()


def test_frame_over_the_limit_or_cut_short_is_an_error():
    a, b = _pair()
    a.sendall(framing.HEADER.pack(10_000) + b"x" * 10)
    with pytest.raises(framing.FrameTooLargeError):
        list(framing.read_frames(b, max_bytes=1000))
    a.close()
    b.close()
    a, b = _pair()
    a.sendall(framing.HEADER.pack(1_000_000) + b"x" * 10)
    a.close()
    with pytest.raises(ConnectionResetError):
        list(framing.read_frames(b, max_bytes=2_000_000))
    b.close()


def test_a_garbage_frame_closes_the_lane_and_the_pool_replaces_the_worker(pools, wait_until):
    pool = pools("tr-garbage", pool_size=1)
    conn = _connections(pool)[0]
    old_pid = pool.list_workers()[0].pid
    with conn._write_lock:
        framing.write_frame(conn._sock, b"\xff\xff\xff not a protobuf message")
    assert wait_until(lambda: [w.pid for w in pool.list_workers()] not in ([], [old_pid]), timeout=15)
    assert pool.execute("echo", {"fresh": 1}) == {"fresh": 1}


def _touch(path: str) -> str:
    with open(path, "w") as fh:
        fh.write("ran")
    return path


def test_a_cancel_that_overtakes_its_request_is_answered_on_arrival(pools, tmp_path):
    """The worker's main thread reads the lane only between requests, so the cancel of a
    call sent ahead (waiting unread behind a running one) travels on gRPC, reaches the
    worker first, and the call is answered cancelled when read, without running."""
    pool = pools("tr-overtake", pool_size=1, pipeline_depth=4)
    busy = pool.submit(time.sleep, 1.0)
    marker = tmp_path / "ran"
    waiting = pool.submit(_touch, str(marker))
    time.sleep(0.2)  # both sent: the second waits in the worker's socket
    assert pool.worker_records()[0].waiting, "the second call should be pipelined to the worker"
    assert waiting.cancel()
    busy.result(30)
    assert pool.execute("echo", {"x": 1}) == {"x": 1}
    assert not marker.exists(), "a cancelled call ran"
    assert pool.worker_records()[0].load == 0


def test_a_cancel_of_a_request_another_thread_overtook_is_still_answered_on_arrival(tmp_path):
    """Two request threads take requests 7 and 8 off a thread worker's queue; 8 is admitted
    first. A cancel of 7 arriving then must not be taken for one of a finished request."""
    from snakepit.protocol import codec
    from snakepit.protocol import worker_pb2 as pb
    from snakepit.worker.__main__ import _InlineRunner
    from snakepit.worker.builtin import DefaultAdapter
    from snakepit.worker.server import WorkerService

    service = WorkerService(DefaultAdapter(), worker_id="t-overtaken", capacity=2, max_message_bytes=1 << 20,
                            runner=_InlineRunner(), on_shutdown=lambda: None)  # type: ignore[arg-type]
    replies: list = []
    marker = tmp_path / "ran"
    touch = {"fn": _touch, "args": (str(marker),), "kwargs": {}}
    service.run_request(pb.Request(request_id=8, command="echo", payload=codec.dumps({"x": 8}, "args")), replies.append)
    assert not service.cancel(7)
    service.run_request(pb.Request(request_id=7, command="call", payload=codec.dumps(touch, "args")), replies.append)
    assert [r.request_id for r in replies] == [8, 7]
    assert replies[1].kind == pb.Reply.ERROR and replies[1].error.code == codec.CANCELLED
    assert not marker.exists(), "a cancelled request ran"


def _timed_sleep(seconds: float) -> tuple[float, float]:
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def test_requests_read_together_by_a_thread_worker_still_run_at_once(pools):
    """Calls sent ahead to a thread worker whose threads are all busy arrive together and
    are read by the first thread to come back: each of the others is woken for one of them,
    so they still run side by side."""
    pool = pools("tr-together", pool_size=1, profile="thread", threads_per_worker=4, pipeline_depth=4)
    running = [pool.submit(_timed_sleep, 0.5) for _ in range(4)]
    time.sleep(0.1)
    ahead = [pool.submit(_timed_sleep, 0.5) for _ in range(4)]
    assert len(pool.worker_records()[0].waiting) == 4, "the second four should wait in the worker"
    spans = [f.result(30) for f in ahead]
    assert all(f.result(30) for f in running)
    assert max(start for start, _ in spans) < min(end for _, end in spans), f"they ran one after another: {spans}"


def test_the_execute_stream_rpc_streams_whatever_the_request_says(pools):
    """ExecuteStream is a streaming call by its own name: a command's output comes back as
    chunks even when the request does not set ``stream`` (the worker honours the RPC)."""
    from snakepit.protocol import codec
    from snakepit.protocol import worker_pb2 as pb

    pool = pools("tr-execstream", pool_size=1)
    conn = pool.worker_records()[0].conn
    args = {"source": "print('hi')", "session_id": None, "push": {}, "pull": []}
    request = pb.Request(request_id=10**9, command="run_code", payload=codec.dumps(args, "args"))
    replies = list(conn.stub.ExecuteStream(request, metadata=conn.metadata, timeout=30))
    chunks = [codec.loads(r.payload, "chunk") for r in replies if r.kind == pb.Reply.CHUNK]
    printed = "".join(c[1] for c in chunks if isinstance(c, tuple) and c[0] == "stdout")
    assert printed == "hi\n", chunks
    assert replies[-1].kind == pb.Reply.END


def _blob_back(blob: bytes) -> bytes:
    return blob[::-1]


@pytest.mark.parametrize("profile", ["process", "thread"])
def test_large_requests_and_replies_both_ways_at_once_never_deadlock(pools, profile):
    """Big arguments sent ahead while the worker writes big results: the manager never
    blocks on a write (what the socket does not take waits for the writer thread), so
    neither side can wait for the other forever."""
    opts = {"threads_per_worker": 2} if profile == "thread" else {}
    pool = pools(f"tr-bothways-{profile}", pool_size=1, profile=profile, pipeline_depth=3, **opts)
    blobs = [bytes([i]) * (6 * 2**20) for i in range(10)]
    futures = [pool.submit(_blob_back, b) for b in blobs]
    assert [f.result(120) for f in futures] == blobs  # palindromes: equal when reversed


# -- the thread profile's request queue ------------------------------------------------------
def test_thread_workers_take_requests_on_a_queue_and_process_workers_on_the_stream(pools):
    threads = pools("tr-q-thread", pool_size=1, profile="thread", threads_per_worker=3)
    process = pools("tr-q-process", pool_size=1)
    queue = _connections(threads)[0]._queue
    assert queue is not None and queue.type == socket.SOCK_SEQPACKET
    assert _connections(process)[0]._queue is None
    assert threads.execute("echo", {"q": 1}) == {"q": 1}


def test_requests_either_side_of_the_queue_message_limit_arrive_whole(pools):
    """Up to QUEUE_MESSAGE_BYTES a request is one queue message; above it, it goes on the
    stream with a notice on the queue; both kinds, sent together, come back intact."""
    pool = pools("tr-q-sizes", pool_size=1, profile="thread", threads_per_worker=4, pipeline_depth=4)
    limit = framing.QUEUE_MESSAGE_BYTES
    blobs = [os.urandom(n) for n in (1, limit - 200, limit - 60, limit, limit + 1, 3 * limit, 10)]
    futures = [pool.submit(_blob_back, b) for b in blobs for _ in range(3)]
    assert [f.result(60) for f in futures] == [b[::-1] for b in blobs for _ in range(3)]


def test_work_arriving_on_grpc_runs_while_a_thread_workers_threads_wait_on_the_queue(pools):
    """The request threads sleep in the queue's recv, where only a queue message wakes one:
    a request that comes on gRPC meanwhile (a unary Execute) runs on a thread of its own."""
    from snakepit.protocol import codec
    from snakepit.protocol import worker_pb2 as pb

    pool = pools("tr-q-grpc", pool_size=1, profile="thread", threads_per_worker=2)
    conn = pool.worker_records()[0].conn
    assert conn._queue is not None
    request = pb.Request(request_id=10**9, command="echo", payload=codec.dumps({"via": "grpc"}, "args"))
    reply = conn.stub.Execute(request, metadata=conn.metadata, timeout=20)
    assert codec.loads(reply.payload, "result") == {"via": "grpc"}
    assert pool.execute("echo", {"via": "lane"}) == {"via": "lane"}


def test_a_garbage_queue_message_closes_the_lane_and_the_pool_replaces_the_worker(pools, wait_until):
    pool = pools("tr-q-garbage", pool_size=1, profile="thread", threads_per_worker=2)
    conn = _connections(pool)[0]
    old_pid = pool.list_workers()[0].pid
    with conn._write_lock:
        conn._queue.send(b"\xff\xfe not a protobuf message")
    assert wait_until(lambda: [w.pid for w in pool.list_workers()] not in ([], [old_pid]), timeout=15)
    assert pool.execute("echo", {"fresh": 1}) == {"fresh": 1}


def test_a_thread_worker_under_mixed_traffic_answers_every_call_and_keeps_serving(pools):
    """Callers on several threads at once: small and queue-limit-sized arguments, sleeps
    that are cancelled or time out, all pipelined to one thread worker; every call ends as
    it should and no descriptor piles up in the worker."""
    import psutil

    pool = pools("tr-q-mixed", pool_size=1, profile="thread", threads_per_worker=4, pipeline_depth=4)
    worker = psutil.Process(pool.list_workers()[0].pid)
    fds_before = worker.num_fds()
    limit = framing.QUEUE_MESSAGE_BYTES
    failures: list[str] = []

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        for i in range(40):
            kind = rng.choice(["small", "big", "cancel", "timeout"])
            try:
                if kind == "small":
                    assert pool.execute("echo", {"k": seed, "i": i}) == {"k": seed, "i": i}
                elif kind == "big":
                    blob = os.urandom(rng.choice([limit - 100, limit + 100, 2 * limit]))
                    assert pool.submit(_blob_back, blob).result(30) == blob[::-1]
                elif kind == "cancel":
                    fut = pool.submit_command("sleep", {"seconds": 5})  # cancellable in a thread
                    time.sleep(rng.random() * 0.02)
                    fut.cancel()
                    try:
                        fut.result(30)
                    except Exception:  # noqa: BLE001 - cancelled (or interrupted in the worker)
                        pass
                else:
                    with pytest.raises(snakepit.RequestTimeoutError):
                        pool.execute("sleep", {"seconds": 5}, timeout=0.05)
            except BaseException as exc:  # noqa: BLE001
                failures.append(f"{kind}: {exc!r}")

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not failures, failures[:5]
    assert [w.pid for w in pool.list_workers()] == [worker.pid], "the worker was replaced"
    assert pool.execute("echo", {"after": True}) == {"after": True}
    assert worker.num_fds() <= fds_before + 2


def _nap(seconds: float, marker: str | None = None) -> tuple[int, float, float]:
    start = time.time()
    if marker:
        _touch(marker)
    time.sleep(seconds)
    return threading.get_ident(), start, time.time()


def _corked_calls(pool, calls: list[tuple]) -> list:
    """Submit ``calls`` while the worker's lane is corked (as when the pool's reader sends the
    calls that replies read together set free), then let them leave."""
    conn = _connections(pool)[0]
    with conn._write_lock:
        conn._corked = []
    try:
        return [pool.submit(_nap, *args) for args in calls]
    finally:
        conn._uncork()


def _busy_thread_worker(pools, name: str, learn: bool):
    """One thread worker with both threads asleep for 0.5 s, ``_nap`` learnt fast or not."""
    pool = pools(name, pool_size=1, profile="thread", threads_per_worker=2, pipeline_depth=8)
    if learn:  # the first call imports this module in the worker: its time fades from the average
        for _ in range(60):
            pool.submit(_nap, 0).result(30)
    blockers = [pool.submit_command("sleep", {"seconds": 0.5}) for _ in range(2)]
    time.sleep(0.1)
    return pool, blockers


def test_quick_pipelined_calls_corked_together_reach_a_thread_worker_as_one_batch(pools, tmp_path):
    """Calls the pool sent ahead to a busy thread worker, of a kind seen to finish fast, leave
    together as one batch message: one request thread takes it and runs them in turn (one
    wake, not one a call). A cancel reaches one still waiting in the batch, even after a
    later request has run on another thread."""
    pool, blockers = _busy_thread_worker(pools, "tr-q-batch", learn=True)
    marker = tmp_path / "cancelled-one-ran"
    futures = _corked_calls(pool, [(0.4,), (0,), (0, str(marker)), (0,)])
    assert all(c.waiting for c in pool.worker_records()[0].waiting) and len(pool.worker_records()[0].waiting) == 4
    time.sleep(0.6)  # the blockers are done: the batch's first call runs, the others wait behind it
    assert pool.execute("echo", {"beside": 1}) == {"beside": 1}  # on the other thread, a later request id
    assert futures[2].cancel()
    spans = [futures[i].result(30) for i in (0, 1, 3)]
    for blocker in blockers:
        blocker.result(30)
    assert len({ident for ident, _, _ in spans}) == 1, f"the batch was split over threads: {spans}"
    assert spans[0][2] <= spans[1][1] <= spans[2][1], f"not run in turn: {spans}"
    assert not marker.exists(), "a call cancelled while waiting in its batch ran"
    assert pool.execute("echo", {"after": 1}) == {"after": 1}
    assert pool.worker_records()[0].load == 0


def test_pipelined_calls_not_known_to_be_quick_are_never_batched(pools):
    """The same corked send of calls the pool has not seen finish fast: one message each, so
    a thread worker still runs them side by side."""
    pool, blockers = _busy_thread_worker(pools, "tr-q-nobatch", learn=False)
    futures = _corked_calls(pool, [(0.4,), (0.4,)])
    spans = [f.result(30) for f in futures]
    for blocker in blockers:
        blocker.result(30)
    assert max(start for _, start, _ in spans) < min(end for _, _, end in spans), f"they ran one after another: {spans}"


def test_batches_fit_the_queue_and_keep_every_request_in_order():
    from snakepit.lane import _batches
    from snakepit.protocol import codec
    from snakepit.protocol import worker_pb2 as pb

    assert _batches([]) == []
    one = pb.Request(request_id=7, command="echo").SerializeToString()
    assert _batches([one]) == [one]  # a lone request travels as itself
    sizes = [10, 16 * 1024, 30, 16 * 1024, 16 * 1024, 16 * 1024, 5] + [1] * 300
    requests = [pb.Request(request_id=i + 1, command="echo", payload=b"x" * n).SerializeToString()
                for i, n in enumerate(sizes)]
    messages = _batches(requests)
    assert len(messages) > 2
    assert all(len(m) <= framing.QUEUE_MESSAGE_BYTES for m in messages)
    back = []
    for message in messages:
        outer = pb.Request.FromString(message)
        if outer.request_id == 0:
            assert outer.command == codec.BATCH_COMMAND
            inner = codec.unpack(outer.payload)
            assert len(inner) <= codec.BATCH_MAX_ITEMS
            back.extend(inner)
        else:
            back.append(message)
    assert back == requests


def test_a_lane_that_does_not_start_like_one_is_refused():
    def start(data: bytes, fds: list[int]) -> socket.socket | None:
        a, b = _pair()
        try:
            socket.send_fds(a, [data], fds)
            b.settimeout(5)
            return framing.receive_hello(b)
        finally:
            a.close()
            b.close()

    version = bytes([framing.LANE_VERSION])
    assert start(framing.HELLO_STREAM + version, []) is None
    q1, q2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    queue = start(framing.HELLO_QUEUE + version, [q2.fileno()])
    assert queue is not None and queue.type == socket.SOCK_SEQPACKET
    assert not queue.get_inheritable()
    queue.close()
    stream1, stream2 = _pair()
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(ConnectionError, match="not a snakepit lane"):
        start(framing.HELLO_QUEUE + version, [stream2.fileno()])  # a queue must be a SOCK_SEQPACKET socket
    with pytest.raises(ConnectionError, match="not a snakepit lane"):
        start(framing.HELLO_QUEUE + version, [])
    # another release's worker: its version named, its descriptor not kept
    with pytest.raises(ConnectionError, match="speaks version 1 .*another snakepit release"):
        start(framing.HELLO_QUEUE, [q2.fileno()])
    with pytest.raises(ConnectionError, match="speaks version 9, this manager version"):
        start(framing.HELLO_STREAM + bytes([9]), [])
    with pytest.raises(ConnectionError, match="not a snakepit lane"):
        start(b"X", [q2.fileno()])
    assert len(os.listdir("/proc/self/fd")) == before, "a descriptor that came with a bad start was kept"
    for s in (q1, q2, stream1, stream2):
        s.close()


def test_core_suite_on_grpc():
    """Every core test again, with the gRPC Dispatch stream instead of the lane."""
    env = dict(os.environ, SNAKEPIT_TRANSPORT="grpc")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *CORE_SUITE],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
