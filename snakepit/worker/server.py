"""The worker process's gRPC service.

Data flow inside a worker::

    manager ──Dispatch stream──► asyncio loop thread ("snakepit-grpc")
                                   │  submit(request)
                                   ▼
                      RequestRunner: main thread      (process profile, capacity 1;
                                  or N threads         thread profile, capacity N)
                                   │  reply via loop.call_soon_threadsafe
                                   ▼
    manager ◄──Dispatch stream── asyncio loop thread

On the local lane (``worker/lane.py``, the default for local pools) the request threads
read their requests themselves and write the replies; the loop then serves only Ping,
Info, Cancel and Shutdown.

Commands never run on the loop thread, so heartbeats (Ping) and Info are answered while
a command computes. A process-profile command runs on the main thread, so that a cancel
can interrupt it with SIGINT; a thread-profile command is interrupted with an
asynchronous exception (pure-Python code) or its cooperative cancel flag.
"""
from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import sys
import threading
import time
import tracemalloc
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import grpc

from ..protocol import bulk, codec
from ..protocol import worker_pb2 as pb
from ..protocol import worker_pb2_grpc as pb_grpc
from . import functions
from .adapter import Adapter, Cancelled, RequestContext, _set_current
from .runner import RequestRunner

log = logging.getLogger("snakepit.worker")
_EARLY_CANCELS_KEPT = 4096  # far more than the pool ever sends ahead to one worker

Send = Callable[[pb.Reply], None]


class WorkerService(pb_grpc.WorkerServicer):
    """Serves one adapter instance to the manager."""

    def __init__(
        self,
        adapter: Adapter,
        *,
        worker_id: str,
        capacity: int,
        max_message_bytes: int,
        runner: RequestRunner,
        on_shutdown: Callable[[], None],
    ) -> None:
        self.adapter = adapter
        self.worker_id = worker_id
        self.capacity = capacity
        self.max_message_bytes = max_message_bytes
        self.runner = runner
        self.on_shutdown = on_shutdown
        self.started = time.monotonic()
        self.requests_served = 0
        self._in_flight: dict[int, RequestContext] = {}
        # Requests handed to the runner but not started yet, with their reply function: a
        # cancel answers them at once instead of after the request ahead of them (issue 7:
        # the manager may pipeline several requests to one worker).
        self._queued: dict[int, Send] = {}
        # Cancels of requests not running here (on the lane a cancel travels on gRPC and may
        # overtake its request): answered the moment they arrive. A cancel of one that has
        # finished is kept too (the pool never reuses an id), since "finished" cannot be told
        # from "read by another thread, not admitted yet". Oldest dropped first.
        self._cancelled_early: dict[int, None] = {}
        self._lock = threading.Lock()
        self._draining = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.main_thread_request: RequestContext | None = None
        self.memory = MemoryProbe()

    # -- request execution (runs on the runner's threads) ---------------------------
    def start_request(self, req: pb.Request, send: Send, *, stream: bool) -> None:
        """Queue ``req`` for the runner (the gRPC paths)."""
        ctx = self._admit(req, send, stream=stream, queued=True)
        if ctx is not None:
            self.runner.submit(lambda: self._run(req, ctx, send, stream, queued=True))

    def run_request(self, req: pb.Request, send: Send) -> None:
        """Run ``req`` now, on this request thread (the lane's path)."""
        ctx = self._admit(req, send, stream=req.stream, queued=False)
        if ctx is not None:
            self._run(req, ctx, send, req.stream, queued=False)

    def run_requests(self, reqs: list[pb.Request], send: Send) -> None:
        """Run ``reqs`` one after another on this thread (a batch of requests the manager
        pipelined to a thread worker's lane). All are admitted first, as waiting requests:
        a cancel answers a waiting one at once, whichever thread reads it."""
        admitted = []
        for req in reqs:
            if req.cancel:
                self.cancel(req.request_id)
                continue
            ctx = self._admit(req, send, stream=req.stream, queued=True)
            if ctx is not None:
                admitted.append((req, ctx))
        for req, ctx in admitted:
            try:
                self._run(req, ctx, send, req.stream, queued=True)
            except BaseException:  # noqa: BLE001 - a late interrupt meant for the request before
                log.debug("interrupt between requests ignored", exc_info=True)

    def _admit(self, req: pb.Request, send: Send, *, stream: bool, queued: bool) -> RequestContext | None:
        rid = req.request_id
        deadline = time.monotonic() + req.timeout_s if req.timeout_s > 0 else None
        ctx = RequestContext(rid, req.command, req.session_id, deadline)
        if stream:
            ctx.emit = lambda value: send(self._chunk(rid, value))
        with self._lock:
            early = rid in self._cancelled_early
            if early:
                del self._cancelled_early[rid]
            else:
                self._in_flight[rid] = ctx
                if queued:
                    self._queued[rid] = send
        if early:
            send(self._error(rid, codec.failure_from_exception(Cancelled(), codec.CANCELLED, tb="")))
            return None
        return ctx

    def _run(self, req: pb.Request, ctx: RequestContext, send: Send, stream: bool, queued: bool) -> None:
        if queued:
            with self._lock:
                if self._queued.pop(req.request_id, None) is None:
                    return  # cancelled before it started, and already answered
        t0 = time.perf_counter_ns()
        while True:
            try:
                if ctx.cancelled:
                    raise Cancelled()
                reply = self._execute(req, ctx, send, stream)
                break
            except (Cancelled, KeyboardInterrupt) as exc:
                # Raised by a cancel: inside the command, or in the instant after it.
                reply = self._error(req.request_id, codec.failure_from_exception(exc, codec.CANCELLED))
                ctx.thread_ident = None
                break
        reply.duration_us = (time.perf_counter_ns() - t0) // 1000
        with self._lock:
            self._in_flight.pop(req.request_id, None)
            self.requests_served += 1
        send(reply)

    def _execute(self, req: pb.Request, ctx: RequestContext, send: Send, stream: bool) -> pb.Reply:
        rid = req.request_id
        method = self.adapter.resolve(req.command)
        if method is None:
            exc = LookupError(
                f"unknown command {req.command!r}; this worker's adapter "
                f"({type(self.adapter).__qualname__}) offers: {', '.join(self.adapter.command_names())}"
            )
            return self._error(rid, codec.failure_from_exception(exc, codec.UNKNOWN_COMMAND, tb=""))
        try:
            kwargs = codec.loads(req.payload, "arguments of", req.command) or {}
        except Exception as exc:
            return self._error(rid, codec.failure_from_exception(exc, codec.SERIALIZATION, tb=""))
        if not isinstance(kwargs, dict):
            exc = TypeError(f"arguments of {req.command!r} must be a dict, got {type(kwargs).__name__}")
            return self._error(rid, codec.failure_from_exception(exc, codec.BAD_REQUEST, tb=""))
        if req.function_hash:  # a by-value function, shipped once per worker (worker/functions.py)
            try:
                kwargs["fn"] = functions.CACHE.resolve(req.function_hash, req.function)
            except Exception as exc:
                code = codec.UNKNOWN_FUNCTION if isinstance(exc, functions.UnknownFunction) else codec.SERIALIZATION
                return self._error(rid, codec.failure_from_exception(exc, code, tb=""))
        _set_current(ctx)
        ctx.thread_ident = threading.get_ident()
        on_main = self.runner.use_main_thread
        if on_main:
            self.main_thread_request = ctx
        try:
            try:
                value = method(**kwargs)
                if isinstance(value, types.GeneratorType):  # inspect.isgenerator, without its call
                    if not stream:
                        value.close()
                        raise TypeError(
                            f"command {req.command!r} streams its results; call it with pool.execute_stream()"
                        )
                    for item in value:
                        ctx.check_cancelled()
                        send(self._chunk(rid, item))
                    return pb.Reply(request_id=rid, kind=pb.Reply.END)
            finally:
                with self._lock:  # no interrupt is sent once this is cleared
                    ctx.thread_ident = None
                if on_main:
                    self.main_thread_request = None
                _set_current(None)
        except (Cancelled, KeyboardInterrupt):
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit & co. end the task, not the worker
            tb = _format_user_traceback(exc)
            failure = codec.failure_from_exception(exc, codec.REMOTE, tb=tb)
            if not isinstance(exc, Exception):
                failure.message = _describe_base_exception(exc)
            return self._error(rid, failure)
        if stream:
            send(self._chunk(rid, value))
            return pb.Reply(request_id=rid, kind=pb.Reply.END)
        return self._result(rid, req.command, value)

    def _result(self, rid: int, command: str, value: Any) -> pb.Reply | bulk.LargeReply:
        try:  # a big value travels in PART messages (protocol/bulk.py)
            return bulk.result_reply(rid, value, f"result of {command!r}", self.max_message_bytes)
        except Exception as exc:
            code = codec.TOO_LARGE if type(exc).__name__ == "PayloadTooLargeError" else codec.SERIALIZATION
            return self._error(rid, codec.failure_from_exception(exc, code, tb=""))

    def _chunk(self, rid: int, value: Any) -> pb.Reply:
        try:
            data = codec.dumps(value, "stream item", self.max_message_bytes)
        except Exception as exc:
            code = codec.TOO_LARGE if type(exc).__name__ == "PayloadTooLargeError" else codec.SERIALIZATION
            return self._error(rid, codec.failure_from_exception(exc, code, tb=""))
        return pb.Reply(request_id=rid, kind=pb.Reply.CHUNK, payload=data)

    @staticmethod
    def _error(rid: int, failure: pb.RemoteFailure) -> pb.Reply:
        return pb.Reply(request_id=rid, kind=pb.Reply.ERROR, error=failure)

    def cancel(self, request_id: int) -> bool:
        with self._lock:
            ctx = self._in_flight.get(request_id)
            if ctx is None:
                self._cancelled_early[request_id] = None  # answered on arrival, if it comes
                if len(self._cancelled_early) > _EARLY_CANCELS_KEPT:
                    del self._cancelled_early[next(iter(self._cancelled_early))]
                return False
            ctx.cancel()
            send = self._queued.pop(request_id, None)
            if send is not None:
                self._in_flight.pop(request_id, None)
            elif ctx.thread_ident is not None:
                self.runner.interrupt(ctx)
        if send is not None:
            send(self._error(request_id, codec.failure_from_exception(Cancelled(), codec.CANCELLED, tb="")))
        return True

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- gRPC handlers (run on the asyncio loop) --------------------------------------
    def _threadsafe_sender(self, put: Callable[[Any], None]) -> Send:
        loop = self.loop
        assert loop is not None
        return lambda reply: loop.call_soon_threadsafe(
            put, reply.single() if type(reply) is bulk.LargeReply else reply)

    async def Dispatch(self, request_iterator, context):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        # Replies come from the request threads. They are appended to a deque and the loop is
        # woken once per burst, not once per reply; replies that pile up while a write is in
        # flight leave together as one batch message (codec.BATCH_COMMAND, issue 7).
        pending: collections.deque[pb.Reply | None] = collections.deque()
        wake = asyncio.Event()
        wake_scheduled = [False]

        def send(reply: pb.Reply | None) -> None:
            pending.append(reply)
            if not wake_scheduled[0]:
                wake_scheduled[0] = True
                try:
                    loop.call_soon_threadsafe(wake.set)
                except RuntimeError:  # the loop is closed: the stream is gone anyway
                    pass

        batched_requests = codec.batched_requests

        def handle(req: pb.Request) -> None:
            if req.cancel:
                self.cancel(req.request_id)
            else:
                self.start_request(req, send, stream=req.stream)

        async def pump() -> None:
            try:
                async for req in request_iterator:
                    batch = batched_requests(req)
                    if batch is not None:
                        for item in batch:
                            handle(item)
                    else:
                        handle(req)
            finally:
                send(None)

        max_item, max_items, max_bytes = codec.BATCH_MAX_ITEM_BYTES, codec.BATCH_MAX_ITEMS, codec.BATCH_MAX_BYTES
        task = asyncio.ensure_future(pump())
        try:
            while True:
                await wake.wait()
                wake.clear()
                wake_scheduled[0] = False  # before draining: a later send schedules a new wake
                finished = False
                batch: list[pb.Reply] = []
                size = 0
                while pending:
                    reply = pending.popleft()
                    if reply is None:
                        finished = True
                        break
                    if type(reply) is bulk.LargeReply:  # its parts, one at a time, alone
                        if batch:
                            await self._write_batch(context, batch)
                            batch, size = [], 0
                        for part in reply.messages():
                            await context.write(part)
                        continue
                    n = reply.ByteSize()
                    if n > max_item:
                        if batch:
                            await self._write_batch(context, batch)
                            batch, size = [], 0
                        await context.write(reply)
                        continue
                    batch.append(reply)
                    size += n
                    if len(batch) >= max_items or size >= max_bytes:
                        await self._write_batch(context, batch)
                        batch, size = [], 0
                if batch:
                    await self._write_batch(context, batch)
                if finished:
                    break
        finally:
            task.cancel()

    @staticmethod
    async def _write_batch(context, batch: list[pb.Reply]) -> None:  # type: ignore[no-untyped-def]
        if len(batch) == 1:
            await context.write(batch[0])
        else:
            payload = codec.pack([r.SerializeToString() for r in batch])
            await context.write(pb.Reply(request_id=0, kind=pb.Reply.CHUNK, payload=payload))

    async def Execute(self, request, context):  # type: ignore[no-untyped-def]
        fut: asyncio.Future[pb.Reply] = asyncio.get_running_loop().create_future()
        self.start_request(request, self._threadsafe_sender(lambda r: fut.done() or fut.set_result(r)), stream=False)
        return await fut

    async def ExecuteStream(self, request, context):  # type: ignore[no-untyped-def]
        out: asyncio.Queue[pb.Reply] = asyncio.Queue()
        self.start_request(request, self._threadsafe_sender(out.put_nowait), stream=True)
        while True:
            reply = await out.get()
            yield reply
            if reply.kind in (pb.Reply.END, pb.Reply.ERROR):
                return

    async def Ping(self, request, context):  # type: ignore[no-untyped-def]
        if not request.want_metrics:
            return pb.PingReply(message=request.message, pid=os.getpid(), server_time=time.time())
        # The heartbeat: attach our figures (memory re-measured off the loop when stale).
        try:  # never spend more than a quarter of the caller's deadline on it
            budget = 0.25 * context.time_remaining()
        except Exception:  # noqa: BLE001 - no deadline known
            budget = MemoryProbe.WAIT_S
        await self.memory.refresh(request.memory_max_age_s, min(MemoryProbe.WAIT_S, budget))
        return pb.PingReply(message=request.message, pid=os.getpid(), server_time=time.time(),
                            metrics=self.metrics())

    async def Info(self, request, context):  # type: ignore[no-untyped-def]
        return self.metrics()

    async def Cancel(self, request, context):  # type: ignore[no-untyped-def]
        return pb.CancelReply(found=self.cancel(request.request_id))

    async def Shutdown(self, request, context):  # type: ignore[no-untyped-def]
        self._draining = True
        in_flight = self.in_flight
        grace = request.grace_s

        async def later() -> None:
            deadline = time.monotonic() + grace
            while self.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            self.on_shutdown()

        asyncio.ensure_future(later())
        return pb.ShutdownReply(in_flight=in_flight)

    def metrics(self) -> pb.WorkerMetrics:
        current, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        sessions = getattr(self.adapter, "session_count", None)
        times = os.times()
        m = pb.WorkerMetrics(
            pid=os.getpid(),
            worker_id=self.worker_id,
            capacity=self.capacity,
            in_flight=self.in_flight,
            requests_served=self.requests_served,
            uptime_s=time.monotonic() - self.started,
            thread_count=threading.active_count(),
            gc_counts=list(gc.get_count()),
            gc_collections=[s.get("collections", 0) for s in gc.get_stats()],
            tracemalloc_current=current,
            tracemalloc_peak=peak,
            python_version=sys.version.split()[0],
            adapter=f"{type(self.adapter).__module__}:{type(self.adapter).__qualname__}",
            sessions=sessions() if callable(sessions) else 0,
            cpu_time_s=times.user + times.system,
        )
        last = self.memory.last
        if last is not None:
            at, figures, children = last
            for key, value in figures.items():
                setattr(m, f"{key}_bytes", value)
            m.memory_age_s = max(0.0, time.monotonic() - at)
            m.child_processes = children
        return m


class MemoryProbe:
    """The worker's own process memory (itself and its children), for the heartbeat reply.

    Without child processes (the usual case, told by one ``waitid(WNOWAIT)`` call) it is
    measured right on the event loop: one read of ``/proc/self/smaps_rollup`` (about a
    millisecond of kernel time, the GIL released). With children, the process table must be
    scanned, which a busy command thread can stretch (every GIL hand-over may wait 5 ms):
    that runs on a thread of its own ("snakepit-metrics", started only then), and a
    heartbeat waits for it at most :attr:`WAIT_S`; a slower result is reported by the next
    heartbeat, with its age (``WorkerMetrics.memory_age_s``). So the liveness answer is never
    held up, and a worker without children pays no extra thread (~0.25 MB of private memory).
    """

    WAIT_S = 0.2

    def __init__(self) -> None:
        self.last: tuple[float, dict[str, int], int] | None = None  # (monotonic, bytes, children)
        self._executor: ThreadPoolExecutor | None = None
        self._running: asyncio.Future | None = None

    def measure(self, children: bool = True) -> None:
        from ..lifecycle import own_memory  # noqa: PLC0415 - imported by the zygote's warm-up

        t = time.monotonic()
        result = own_memory(children)
        if result is not None:
            self.last = (t, result[0], result[1])

    async def refresh(self, max_age_s: float, wait_s: float = WAIT_S) -> None:
        """Measure if the last measurement is older than ``max_age_s`` (waiting at most ``wait_s``
        for one that runs on the thread)."""
        from ..lifecycle import has_children  # noqa: PLC0415

        last = self.last
        if last is not None and time.monotonic() - last[0] < max_age_s:
            return
        try:
            if self._running is None or self._running.done():
                if not has_children():
                    self.measure(children=False)
                    return
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="snakepit-metrics")
                self._running = asyncio.get_running_loop().run_in_executor(self._executor, self.measure)
            await asyncio.wait_for(asyncio.shield(self._running), max(0.0, wait_s))
        except asyncio.TimeoutError:
            pass  # still measuring: this reply carries the previous figures
        except Exception:  # noqa: BLE001 - a failed measurement must not fail the heartbeat
            log.debug("memory measurement failed", exc_info=True)


_INTERNAL_FILES = {__file__, os.path.join(os.path.dirname(__file__), "builtin.py")}


def _describe_base_exception(exc: BaseException) -> str:
    """The message for a task that raised SystemExit, GeneratorExit or another BaseException:
    it ended the task; the worker keeps serving."""
    if isinstance(exc, SystemExit):
        what = f"the task called sys.exit({exc.code!r})"
    else:
        what = f"the task raised {type(exc).__name__}({str(exc)!r})" if str(exc) else f"the task raised {type(exc).__name__}"
    return f"{what}; the worker was not stopped and keeps serving"


def _format_user_traceback(exc: BaseException) -> str:
    """The traceback without snakepit's own frames at the top."""
    import traceback

    tb = exc.__traceback__
    # Skip snakepit's own frames (server.py, builtin.py) so the user sees their code first.
    while tb is not None and tb.tb_frame.f_code.co_filename in _INTERNAL_FILES and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class ServerHandle:
    """The running gRPC server of a worker; ``stop()`` may be called from any thread."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self.thread: threading.Thread | None = None
        self.port = 0  # the bound TCP port of a --listen worker

    def stop(self) -> None:
        if self.loop is not None and self._stop_event is not None and not self.stopped.is_set():
            try:
                self.loop.call_soon_threadsafe(self._stop_event.set)
            except RuntimeError:  # loop already closed
                pass


def serve(service: WorkerService, socket_path: str | None, *, listen: str | None = None,
          credentials: grpc.ServerCredentials | None = None, interceptors: tuple = ()) -> ServerHandle:
    """Start the asyncio gRPC server on ``socket_path`` in a background thread.

    Or, with ``listen="HOST:PORT"`` (a cluster worker), on TCP (port 0: any free one, see
    ``handle.port``), with TLS when ``credentials`` are given; ``interceptors`` check the
    secret of each call (:mod:`snakepit.worker.auth`).
    """

    handle = ServerHandle()
    started = threading.Event()
    errors: list[BaseException] = []

    async def main() -> None:
        service.loop = handle.loop = asyncio.get_running_loop()
        handle._stop_event = asyncio.Event()
        options = [
            ("grpc.max_send_message_length", service.max_message_bytes + 2**16),
            ("grpc.max_receive_message_length", service.max_message_bytes + 2**16),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options, interceptors=list(interceptors) or None)
        pb_grpc.add_WorkerServicer_to_server(service, server)
        if listen is not None:
            if credentials is not None:
                handle.port = server.add_secure_port(listen, credentials)
            else:
                handle.port = server.add_insecure_port(listen)
            if not handle.port:
                raise RuntimeError(f"cannot listen on {listen}")
            await server.start()
        else:
            old_umask = os.umask(0o177)  # the socket file is created owner-only
            try:
                server.add_insecure_port(f"unix://{socket_path}")
            finally:
                os.umask(old_umask)
            await server.start()
            os.chmod(socket_path, 0o600)
        started.set()
        await handle._stop_event.wait()
        await server.stop(0.2)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter
            errors.append(exc)
            started.set()
        finally:
            handle.stopped.set()
            service.runner.stop()

    handle.thread = threading.Thread(target=run, name="snakepit-grpc", daemon=True)
    handle.thread.start()
    started.wait()
    if errors:
        raise errors[0]
    return handle
