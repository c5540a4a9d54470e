"""The default adapter: ``ping``, ``echo``, ``sleep``, function calls and code execution.

``pool.submit(fn, ...)``, ``pool.map`` and ``pool.run_code`` (``%%snakepit_run``) use the
``call``, ``call_batch`` and ``run_code`` commands, so a custom adapter that should support
them subclasses :class:`DefaultAdapter`.
"""
from __future__ import annotations

import ast
import io
import itertools
import linecache
import os
import pickle
import sys
import threading
import time
from typing import Any, Callable

import cloudpickle

from .adapter import Adapter, command, current_request

__all__ = ["DefaultAdapter"]

MAX_REPR = 20_000
_cell_numbers = itertools.count(1)


class DefaultAdapter(Adapter):
    """Built-in commands. Thread-safe: session namespaces are guarded by a lock."""

    thread_safe = True

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._ns_lock = threading.Lock()

    # -- trivial commands -------------------------------------------------------------
    @command
    def ping(self, **payload: Any) -> dict[str, Any]:
        """Answer ``{"pong": True, "pid": ..., "worker_id": ..., **payload}``."""
        return {"pong": True, "pid": os.getpid(), "worker_id": self.worker_id, **payload}

    @command
    def echo(self, **payload: Any) -> dict[str, Any]:
        """Return the arguments unchanged."""
        return payload

    @command
    def sleep(self, seconds: float = 0.1, **_: Any) -> float:
        """Sleep ``seconds`` (cancellable at once); return the seconds slept."""
        ctx = current_request()
        start = time.monotonic()
        if ctx is not None:
            ctx.sleep(float(seconds))
        else:
            time.sleep(float(seconds))
        return time.monotonic() - start

    @command
    def count(self, n: int = 3, delay: float = 0.0, **_: Any):  # type: ignore[no-untyped-def]
        """Stream the integers ``0 .. n-1``, ``delay`` seconds apart."""
        ctx = current_request()
        for i in range(int(n)):
            if delay:
                if ctx is not None:
                    ctx.sleep(delay)
                else:
                    time.sleep(delay)
            yield i

    @command
    def pid(self, **_: Any) -> int:
        """The worker's process id."""
        return os.getpid()

    # -- function calls -------------------------------------------------------------
    @command
    def call(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict | None = None) -> Any:
        """Call a (cloudpickled) function: what ``pool.submit`` uses."""
        return fn(*args, **(kwargs or {}))

    @command
    def call_batch(self, fn: Callable[..., Any], items: list[Any], star: bool = True) -> list[Any]:
        """One chunk of ``pool.map``: ``fn(*item)`` for each item (``fn(item)`` with ``star=False``).

        The calls run in C (``map``) in groups that grow while they stay under a millisecond;
        the cancel flag is checked between groups.
        """
        apply = itertools.starmap if star else map
        ctx = current_request()
        if ctx is None:
            return list(apply(fn, items))
        out: list[Any] = []
        i, n, step = 0, len(items), 1
        while i < n:
            ctx.check_cancelled()
            t0 = time.perf_counter()
            out.extend(apply(fn, items[i:i + step]))
            i += step
            if step < 1024 and time.perf_counter() - t0 < 0.001:
                step *= 2
        return out

    @command
    def function_cache(self, clear: bool = False, **_: Any) -> dict[str, int]:
        """This worker's cache of by-value functions: ``size``, ``hits``, ``loads`` (functions
        unpickled), ``unknown`` (hashes asked for but not held); ``clear=True`` empties it."""
        from .functions import CACHE  # noqa: PLC0415

        return CACHE.info(clear=bool(clear))

    # -- code execution (%%snakepit_run) --------------------------------------------
    def _namespace(self, session_id: str | None) -> dict[str, Any]:
        if not session_id:
            return {"__name__": "__snakepit__", "__builtins__": __builtins__}
        with self._ns_lock:
            ns = self._namespaces.get(session_id)
            if ns is None:
                ns = self._namespaces[session_id] = {"__name__": "__snakepit__", "__builtins__": __builtins__}
            return ns

    @command
    def run_code(
        self,
        source: str,
        session_id: str | None = None,
        push: dict[str, Any] | None = None,
        pull: list[str] | None = None,
        filename: str = "<snakepit-cell>",
    ) -> dict[str, Any]:
        """Run ``source`` in the session's namespace (a fresh one without a session).

        stdout/stderr are sent to the caller while the code runs (streaming requests).
        Returns ``{"result", "result_repr", "changed", "pulled", "missing", "stdout", "stderr"}``.
        """
        ctx = current_request()
        ns = self._namespace(session_id or (ctx.session_id if ctx else None))
        if push:
            ns.update(push)
        before = {k: id(v) for k, v in ns.items()}
        if filename == "<snakepit-cell>":
            filename = f"<snakepit-cell-{next(_cell_numbers)}>"
        # Let tracebacks show the cell's lines, as IPython does for its cells.
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        tree = ast.parse(source, filename=filename, mode="exec")
        last_expr = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last_expr = ast.Expression(tree.body.pop().value)
        out_buf, err_buf = io.StringIO(), io.StringIO()

        def sink(stream: str, buf: io.StringIO) -> Callable[[str], None]:
            def write(text: str) -> None:
                buf.write(text)
                if ctx is not None and ctx.emit is not None:
                    ctx.emit((stream, text))

            return write

        value = None
        with _capture_output(sink("stdout", out_buf), sink("stderr", err_buf)):
            exec(compile(tree, filename, "exec"), ns)
            if last_expr is not None:
                value = eval(compile(last_expr, filename, "eval"), ns)
        changed = sorted(
            k for k, v in ns.items() if not k.startswith("__") and before.get(k) != id(v)
        )
        pulled, missing = {}, []
        for name in pull or ():
            if name in ns:
                pulled[name] = ns[name]
            else:
                missing.append(name)
        result_repr = None if value is None else _safe_repr(value)
        if value is not None and not _picklable(value):
            value = None
        return {
            "result": value,
            "result_repr": result_repr,
            "changed": changed,
            "pulled": pulled,
            "missing": missing,
            "stdout": out_buf.getvalue(),
            "stderr": err_buf.getvalue(),
        }

    @command
    def session_close(self, session_id: str) -> bool:
        """Forget a session's namespace; True if it existed."""
        with self._ns_lock:
            return self._namespaces.pop(session_id, None) is not None

    @command
    def session_names(self, session_id: str) -> list[str]:
        """The variable names defined in a session's namespace."""
        with self._ns_lock:
            ns = self._namespaces.get(session_id, {})
            return sorted(k for k in ns if not k.startswith("__"))

    def session_count(self) -> int:
        return len(self._namespaces)


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not lose the run
        text = f"<unrepresentable {type(value).__name__}: {exc}>"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + "…"


def _picklable(value: Any) -> bool:
    try:
        pickle.loads(cloudpickle.dumps(value))
        return True
    except Exception:
        return False


class _capture_output:
    """Route this thread's writes to sys.stdout/sys.stderr to the given sinks."""

    def __init__(self, out: Callable[[str], None], err: Callable[[str], None]) -> None:
        self.out, self.err = out, err

    def __enter__(self) -> None:
        _router_out.push(self.out)
        _router_err.push(self.err)

    def __exit__(self, *exc: Any) -> None:
        _router_out.pop()
        _router_err.pop()


class _ThreadRoutedStream(io.TextIOBase):
    """A stand-in for sys.stdout that sends each thread's writes to that thread's sink.

    Installed once per worker, so that requests running in parallel threads (the thread
    profile) each capture their own output.
    """

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback
        self._local = threading.local()

    def push(self, sink: Callable[[str], None]) -> None:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(sink)

    def pop(self) -> None:
        self._local.stack.pop()

    def write(self, text: str) -> int:
        stack = getattr(self._local, "stack", None)
        if stack:
            stack[-1](text)
        elif self._fallback is not None:
            self._fallback.write(text)
        return len(text)

    def flush(self) -> None:
        if self._fallback is not None and not getattr(self._local, "stack", None):
            self._fallback.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._fallback, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        if self._fallback is None:
            raise io.UnsupportedOperation("fileno")
        return self._fallback.fileno()


_router_out = _ThreadRoutedStream(sys.stdout)
_router_err = _ThreadRoutedStream(sys.stderr)


def install_output_routing() -> None:
    """Make sys.stdout/sys.stderr per-thread routable (called once at worker start)."""
    sys.stdout = _router_out
    sys.stderr = _router_err
