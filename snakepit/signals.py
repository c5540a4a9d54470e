"""Keep Ctrl-C and termination signals for the main thread.

Linux delivers a process-directed signal (a terminal's Ctrl-C, Jupyter's interrupt, SIGTERM)
to any thread that does not block it. CPython runs the Python handler in the main thread, but
when the signal landed on another thread, a main thread blocked in a system call
(``time.sleep``, waiting for a future) is not woken: Ctrl-C seems to do nothing until the call
returns. So every thread snakepit starts blocks these signals — and so do gRPC's own threads,
which inherit the signal mask of the thread that creates them.

Child processes inherit the mask too: the worker entry point unblocks them first thing.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["MAIN_THREAD_SIGNALS", "signals_blocked", "start_thread", "unblock_main_thread_signals"]

MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})

try:  # the C function: signal.pthread_sigmask's wrapper turns the old mask into enums (3 µs a pair)
    from _signal import pthread_sigmask as _sigmask
except ImportError:  # pragma: no cover - not CPython, or no pthread_sigmask
    _sigmask = getattr(signal, "pthread_sigmask", None)
_SIGNAL_NUMBERS = frozenset(int(s) for s in MAIN_THREAD_SIGNALS)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block :data:`MAIN_THREAD_SIGNALS` in this thread for the block (threads started inside inherit it)."""
    if _sigmask is None:
        yield
        return
    old = _sigmask(signal.SIG_BLOCK, _SIGNAL_NUMBERS)
    try:
        yield
    finally:
        _sigmask(signal.SIG_SETMASK, old)


def start_thread(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` so that it never receives :data:`MAIN_THREAD_SIGNALS`."""
    with signals_blocked():
        thread.start()
    return thread


def unblock_main_thread_signals() -> None:
    """Undo an inherited block (in a freshly started worker process)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MAIN_THREAD_SIGNALS)
