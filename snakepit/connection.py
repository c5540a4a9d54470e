"""The manager's connection to one worker: a gRPC channel and a long-lived Dispatch stream.

Requests are multiplexed over the stream by id. One reader thread per connection turns
replies into calls of ``on_reply``; when the stream breaks, ``on_broken`` is called once.

gRPC's request-iterator thread takes the next request only once the previous write is
done; requests queued meanwhile go out together as one batch message (see
``codec.BATCH_COMMAND``), and batches of replies are taken apart here (issue 7).
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Sequence

import grpc

from .signals import signals_blocked
from .protocol import codec
from .protocol import worker_pb2 as pb
from .protocol import worker_pb2_grpc as pb_grpc

log = logging.getLogger("snakepit.connection")

_CLOSE = None


class WorkerConnection:
    """Client side of one worker."""

    def __init__(
        self,
        target: str,
        *,
        name: str,
        max_message_bytes: int,
        on_reply: Callable[[pb.Reply], None],
        on_broken: Callable[[BaseException | None], None],
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Connect to the worker at ``target`` (``unix:/path`` or ``host:port``).

        ``credentials`` make it a TLS channel; ``metadata`` travels with every call (a
        cluster worker's secret); ``options`` are extra gRPC channel options.
        """
        channel_options = [
            ("grpc.max_send_message_length", max_message_bytes + 2**16),
            ("grpc.max_receive_message_length", max_message_bytes + 2**16),
            ("grpc.enable_retries", 0),
            ("grpc.use_local_subchannel_pool", 1),
            *options,
        ]
        self.metadata = tuple(metadata) or None
        self._outbox: queue.SimpleQueue[pb.Request | None] = queue.SimpleQueue()
        self._on_reply = on_reply
        self._on_broken = on_broken
        self._closed = False
        # gRPC starts its threads (channel spin, request consumer) from this thread: they
        # inherit the blocked mask, so Ctrl-C keeps reaching the main thread.
        with signals_blocked():
            if credentials is None:
                self.channel = grpc.insecure_channel(target, options=channel_options)
            else:
                self.channel = grpc.secure_channel(target, credentials, options=channel_options)
            self.stub = pb_grpc.WorkerStub(self.channel)
            self._reader = threading.Thread(target=self._read, name=f"snakepit-conn-{name}", daemon=True)
            self._open_dispatch()
            self._reader.start()

    def _open_dispatch(self) -> None:
        """Open the request/reply stream that ``send`` writes to and ``_read`` reads."""
        self._call = self.stub.Dispatch(self._requests(), metadata=self.metadata)

    def send(self, request: pb.Request, batchable: bool = False) -> None:
        """Queue a request on the stream (never blocks). ``batchable``: it may run after
        others on one worker thread (see ``LaneConnection.send``); the gRPC stream batches
        whatever waits to leave anyway, and the worker fans a batch out to its threads."""
        self._outbox.put(request)

    def cancel(self, request_id: int) -> None:
        self._outbox.put(pb.Request(request_id=request_id, cancel=True))

    def _requests(self):  # type: ignore[no-untyped-def]
        """The stream's request iterator: one request, or a batch of those already waiting."""
        get, get_nowait = self._outbox.get, self._outbox.get_nowait
        Empty = queue.Empty
        max_item, max_items, max_bytes = codec.BATCH_MAX_ITEM_BYTES, codec.BATCH_MAX_ITEMS, codec.BATCH_MAX_BYTES
        carry: pb.Request | None = None
        closing = False
        while not closing:
            first = carry if carry is not None else get()
            carry = None
            if first is _CLOSE:
                return
            if len(first.payload) > max_item:
                yield first
                continue
            batch = [first]
            size = len(first.payload)
            while len(batch) < max_items and size < max_bytes:
                try:
                    nxt = get_nowait()
                except Empty:
                    break
                if nxt is _CLOSE:
                    closing = True
                    break
                if len(nxt.payload) > max_item:
                    carry = nxt
                    break
                batch.append(nxt)
                size += len(nxt.payload)
            if len(batch) == 1:
                yield first
            else:
                yield codec.batch_request([r.SerializeToString() for r in batch])

    def _read(self) -> None:
        error: BaseException | None = None
        on_reply = self._on_reply
        batch_kind = pb.Reply.CHUNK
        parse = pb.Reply.FromString
        try:
            for reply in self._call:
                if reply.request_id == 0 and reply.kind == batch_kind:
                    for raw in codec.unpack(reply.payload):
                        on_reply(parse(raw))
                else:
                    on_reply(reply)
        except grpc.RpcError as exc:
            error = exc
        except BaseException as exc:  # noqa: BLE001
            log.exception("connection reader failed")
            error = exc
        if not self._closed:
            self._on_broken(error)

    def ping(self, timeout: float) -> pb.PingReply:
        return self.stub.Ping(pb.PingRequest(message="heartbeat"), timeout=timeout, metadata=self.metadata)

    def ping_future(self, request: pb.PingRequest, timeout: float) -> grpc.Future:
        """A heartbeat that does not block (the lifecycle thread pings every worker at once)."""
        return self.stub.Ping.future(request, timeout=timeout, metadata=self.metadata)

    def info(self, timeout: float) -> pb.WorkerMetrics:
        return self.stub.Info(pb.InfoRequest(), timeout=timeout, metadata=self.metadata)

    def info_future(self, timeout: float) -> grpc.Future:
        """``Info`` without blocking (diagnostics ask every worker at once)."""
        return self.stub.Info.future(pb.InfoRequest(), timeout=timeout, metadata=self.metadata)

    def shutdown(self, grace: float, timeout: float = 1.0) -> None:
        try:
            self.stub.Shutdown(pb.ShutdownRequest(grace_s=grace), timeout=timeout, metadata=self.metadata)
        except grpc.RpcError:
            pass

    def close(self) -> None:
        """Close the stream and the channel; ``on_broken`` is not called."""
        if self._closed:
            return
        self._closed = True
        self._close_dispatch()
        self.channel.close()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=2.0)

    def _close_dispatch(self) -> None:
        self._outbox.put(_CLOSE)
        try:
            self._call.cancel()
        except Exception:
            pass
