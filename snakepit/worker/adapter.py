"""What runs inside a worker: adapters, their commands, and the current request's context.

Write an adapter to give the pool commands of your own::

    # mylib/adapters.py
    import snakepit

    class Model(snakepit.Adapter):
        thread_safe = True                 # required by the "thread" profile

        def setup(self):                   # once per worker process, before any request
            self.model = load_model(self.options["path"])

        @snakepit.command
        def predict(self, rows):
            return self.model.predict(rows).tolist()

        @snakepit.command
        def batches(self, n):              # a generator command streams its items
            for i in range(n):
                yield i

    pool = snakepit.start_pool("ml", adapter="mylib.adapters:Model",
                               adapter_options={"path": "model.bin"})
    pool.execute("predict", {"rows": [[1, 2]]})

One adapter instance lives as long as its worker process; state set in ``setup`` is kept
between requests. Under the ``thread`` profile several requests run at once on one instance.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

__all__ = ["Adapter", "Cancelled", "RequestContext", "command", "current_request"]

F = TypeVar("F", bound=Callable[..., Any])

_COMMAND_ATTR = "__snakepit_command__"


def command(fn: F | None = None, *, name: str | None = None) -> Any:
    """Mark an adapter method as a command callable with ``pool.execute(name, {...})``.

    The method receives the request's ``args`` dict as keyword arguments. A method that
    returns a generator is a streaming command (``pool.execute_stream``).

    Usage: ``@snakepit.command`` or ``@snakepit.command(name="other-name")``.
    """

    def mark(f: F) -> F:
        setattr(f, _COMMAND_ATTR, name or f.__name__)
        return f

    if fn is not None:
        return mark(fn)
    return mark


class Adapter:
    """Base class of worker-side adapters. Subclass it and mark commands with ``@command``.

    Attributes:
        thread_safe: set to True to allow the ``thread`` profile, where one instance serves
            ``threads_per_worker`` requests at once. ``__thread_safe__ = True`` (Snakepit's
            spelling) is accepted too.
        options: the pool's ``adapter_options``.
        worker_id: the id of the worker this instance lives in.
    """

    thread_safe: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.worker_id = ""

    def setup(self) -> None:
        """Called once in the worker process before the first request."""

    def teardown(self) -> None:
        """Called once when the worker shuts down cleanly."""

    @classmethod
    def is_thread_safe(cls) -> bool:
        return bool(getattr(cls, "thread_safe", False) or getattr(cls, "__thread_safe__", False))

    @classmethod
    def command_names(cls) -> list[str]:
        return sorted(cls._command_table())

    @classmethod
    def _command_table(cls) -> dict[str, str]:
        """Command name -> attribute name, collected once per class."""
        table = cls.__dict__.get("_snakepit_commands")
        if table is None:
            table = {}
            for klass in reversed(cls.__mro__):
                for attr, value in vars(klass).items():
                    cmd_name = getattr(value, _COMMAND_ATTR, None)
                    if cmd_name is not None:
                        table[cmd_name] = attr
            cls._snakepit_commands = table  # type: ignore[attr-defined]
        return table

    def resolve(self, name: str) -> Callable[..., Any] | None:
        """The bound method of command ``name``, or None."""
        attr = self._command_table().get(name)
        return getattr(self, attr) if attr is not None else None


class Cancelled(BaseException):
    """Raised inside a command when its request is cancelled (like KeyboardInterrupt)."""


_CANCEL_LOCK = threading.Lock()


@dataclass
class RequestContext:
    """The request being served by the current thread; see :func:`current_request`."""

    request_id: int
    command: str
    session_id: str
    deadline: float | None
    emit: Callable[[Any], None] | None = None
    thread_ident: int | None = None
    started: float = field(default_factory=time.monotonic)
    # The cancel flag; its Event is made only for a command that waits on it (most never do,
    # and an Event per request was a fifth of a no-op's cost in the worker).
    _cancelled: bool = field(default=False, init=False, repr=False)
    _event: threading.Event | None = field(default=None, init=False, repr=False)

    @property
    def cancel_event(self) -> threading.Event:
        """An event set when the request is cancelled (to wait on, with a timeout)."""
        event = self._event
        if event is None:
            with _CANCEL_LOCK:
                if self._event is None:
                    self._event = threading.Event()
                    if self._cancelled:
                        self._event.set()
                event = self._event
        return event

    def cancel(self) -> None:
        """Mark the request cancelled (the worker does this when the caller cancels)."""
        with _CANCEL_LOCK:
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def cancelled(self) -> bool:
        """True once the caller asked to cancel this request."""
        return self._cancelled

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the request was cancelled (a cooperative check point)."""
        if self._cancelled:
            raise Cancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once (with :class:`Cancelled`) if the request is cancelled."""
        if self._cancelled or self.cancel_event.wait(max(0.0, seconds)):
            raise Cancelled()

    def send_chunk(self, value: Any) -> None:
        """Send one item to the caller of a streaming request while the command runs."""
        if self.emit is None:
            raise RuntimeError(f"request {self.command!r} is not a streaming request")
        self.emit(value)


_local = threading.local()


def current_request() -> RequestContext | None:
    """The request served by this thread in a worker, or None outside a request."""
    return getattr(_local, "request", None)


def _set_current(ctx: RequestContext | None) -> None:
    _local.request = ctx
