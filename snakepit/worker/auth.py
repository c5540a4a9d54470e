"""Authentication of a TCP worker's RPCs: every call must carry the pool's secret.

A cluster worker (``--listen HOST:PORT``) is reachable by anyone who can reach the port —
other users of the host included, on loopback too. Each pool has a random secret; the
manager sends it as the ``snakepit-secret`` metadata of every call, and this interceptor
compares it in constant time (:func:`hmac.compare_digest`) before any handler runs. A call
without it, or with a wrong one, ends with ``UNAUTHENTICATED`` (nothing of it is decoded).
Each authenticated call also renews the worker's lease (:mod:`snakepit.worker.lease`).
"""
from __future__ import annotations

import hmac
from typing import Callable

import grpc

METADATA_KEY = "snakepit-secret"


def read_secret(path: str) -> bytes:
    """The secret from an owner-only file (written there by the Dask plugin)."""
    with open(path, "rb") as fh:
        secret = fh.read().strip()
    if len(secret) < 16:
        raise RuntimeError(f"secret file {path!r} holds no usable secret")
    return secret


def _abort_handler(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    async def deny(request_or_iterator, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong snakepit secret")

    async def deny_stream(request_or_iterator, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong snakepit secret")
        yield  # pragma: no cover - makes it an async generator

    req_stream = bool(handler and handler.request_streaming)
    resp_stream = bool(handler and handler.response_streaming)
    if req_stream and resp_stream:
        return grpc.stream_stream_rpc_method_handler(deny_stream)
    if resp_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    if req_stream:
        return grpc.stream_unary_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class SecretInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call whose ``snakepit-secret`` metadata is not the worker's secret."""

    def __init__(self, secret: bytes, on_authenticated: Callable[[], None] | None = None) -> None:
        self._secret = secret
        self._on_authenticated = on_authenticated

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        given = b""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == METADATA_KEY:
                given = value.encode() if isinstance(value, str) else bytes(value)
                break
        handler = await continuation(handler_call_details)
        if not hmac.compare_digest(given, self._secret):
            return _abort_handler(handler)
        if self._on_authenticated is not None:
            self._on_authenticated()
        return handler
