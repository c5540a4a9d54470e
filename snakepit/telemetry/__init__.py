"""Telemetry events, modelled on Erlang's ``:telemetry``.

Attach a handler to an event (a tuple of strings) and it is called synchronously, in the
thread that emitted the event, as ``fn(event, measurements, metadata, config)``::

    def on_request(event, measurements, metadata, config):
        print(metadata["command"], measurements["duration_us"])

    snakepit.telemetry.attach("my-logger", ("snakepit", "request", "executed"), on_request)
    ...
    snakepit.telemetry.detach("my-logger")

A handler that raises is detached and logged; it never breaks a request. Handlers should be
quick: they run on snakepit's dispatch path. Emitting an event nobody listens to costs a
dict lookup.

Events emitted by snakepit (measurements / metadata):

=============================================  ==================================  ============================================
``("snakepit","pool","saturated")``            queue_size, max_queue_size          pool, available_workers, busy_workers
``("snakepit","pool","capacity_reached")``     capacity, load                      worker_pid, worker_id, profile, rejected
``("snakepit","request","executed")``          duration_us                         pool, worker_id, command, success
``("snakepit","worker","recycled")``           uptime_s, request_count, memory_mb  pool, worker_id, reason
``("snakepit","worker","health_check_failed")`` missed                             pool, worker_id, error
``("snakepit","worker","started")``            startup_ms                          pool, worker_id, pid
``("snakepit","worker","crashed")``            exit_code                           pool, worker_id, pid
``("snakepit","session","moved")``             count                               pool, session_id, from_worker, to_worker
``("snakepit","pool","scaled")``               from_size, to_size                  pool, reason (manual/adapt_up/adapt_down)
=============================================  ==================================  ============================================

Prometheus: ``snakepit.telemetry.prometheus.start_exporter(port=0)`` serves these events as
counters/histograms plus pool gauges on 127.0.0.1 (needs the ``prometheus`` extra).
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Mapping

__all__ = [
    "EVENTS",
    "Handler",
    "attach",
    "attach_many",
    "detach",
    "execute",
    "has_handlers",
    "list_handlers",
]

log = logging.getLogger("snakepit.telemetry")

Event = tuple[str, ...]
Handler = Callable[[Event, Mapping[str, Any], Mapping[str, Any], Any], None]

POOL_SATURATED: Event = ("snakepit", "pool", "saturated")
POOL_CAPACITY_REACHED: Event = ("snakepit", "pool", "capacity_reached")
REQUEST_EXECUTED: Event = ("snakepit", "request", "executed")
WORKER_RECYCLED: Event = ("snakepit", "worker", "recycled")
WORKER_HEALTH_CHECK_FAILED: Event = ("snakepit", "worker", "health_check_failed")
WORKER_STARTED: Event = ("snakepit", "worker", "started")
WORKER_CRASHED: Event = ("snakepit", "worker", "crashed")
SESSION_MOVED: Event = ("snakepit", "session", "moved")
POOL_SCALED: Event = ("snakepit", "pool", "scaled")

EVENTS: tuple[Event, ...] = (
    POOL_SATURATED,
    POOL_SCALED,
    POOL_CAPACITY_REACHED,
    REQUEST_EXECUTED,
    WORKER_RECYCLED,
    WORKER_HEALTH_CHECK_FAILED,
    WORKER_STARTED,
    WORKER_CRASHED,
    SESSION_MOVED,
)

_lock = threading.Lock()
# event -> tuple of (handler_id, fn, config); replaced wholesale (copy-on-write) so that
# execute() reads it without a lock.
_by_event: dict[Event, tuple[tuple[str, Handler, Any], ...]] = {}
_ids: dict[str, tuple[Event, ...]] = {}


def _as_event(event: Iterable[str]) -> Event:
    ev = tuple(event)
    if not ev or not all(isinstance(part, str) for part in ev):
        raise ValueError(f"an event is a non-empty tuple of strings, got {event!r}")
    return ev


def attach(handler_id: str, event: Iterable[str], fn: Handler, config: Any = None) -> None:
    """Call ``fn(event, measurements, metadata, config)`` whenever ``event`` is emitted.

    Raises:
        ValueError: ``handler_id`` is already attached (detach it first), or ``fn`` is not callable.
    """
    attach_many(handler_id, [event], fn, config)


def attach_many(handler_id: str, events: Iterable[Iterable[str]], fn: Handler, config: Any = None) -> None:
    """Attach one handler to several events under one id."""
    if not callable(fn):
        raise ValueError(f"handler {handler_id!r} is not callable")
    evs = tuple(_as_event(e) for e in events)
    with _lock:
        if handler_id in _ids:
            raise ValueError(f"a handler with id {handler_id!r} is already attached")
        _ids[handler_id] = evs
        for ev in evs:
            _by_event[ev] = _by_event.get(ev, ()) + ((handler_id, fn, config),)


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False if no handler had that id."""
    with _lock:
        evs = _ids.pop(handler_id, None)
        if evs is None:
            return False
        for ev in evs:
            remaining = tuple(h for h in _by_event.get(ev, ()) if h[0] != handler_id)
            if remaining:
                _by_event[ev] = remaining
            else:
                _by_event.pop(ev, None)
        return True


def list_handlers(event: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The attached handlers (all, or those of one event)."""
    with _lock:
        items = _by_event.items() if event is None else [(_as_event(event), _by_event.get(_as_event(event), ()))]
        return [
            {"id": hid, "event": ev, "function": fn, "config": cfg}
            for ev, handlers in items
            for hid, fn, cfg in handlers
        ]


def has_handlers(event: Event) -> bool:
    """True if anything listens to ``event`` (lets emitters skip building payloads)."""
    return event in _by_event


def execute(event: Iterable[str], measurements: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    """Emit ``event`` to its handlers. A handler that raises is detached and logged."""
    handlers = _by_event.get(event if type(event) is tuple else tuple(event))  # noqa: E721
    if not handlers:
        return
    meta = metadata if metadata is not None else {}
    for handler_id, fn, config in handlers:
        try:
            fn(event, measurements, meta, config)  # type: ignore[arg-type]
        except Exception:
            log.exception("telemetry handler %r failed on %r and was detached", handler_id, event)
            detach(handler_id)
