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

import signal
import threading

__all__ = ["MAIN_THREAD_SIGNALS", "signals_blocked", "start_thread", "unblock_main_thread_signals"]

MAIN_THREAD_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT})

try:  # the C function: signal.pthread_sigmask's wrapper turns the old mask into enums (3 µs a pair)
    from _signal import pthread_sigmask as _sigmask
except ImportError:  # pragma: no cover - not CPython, or no pthread_sigmask
    _sigmask = getattr(signal, "pthread_sigmask", None)
_SIGNAL_NUMBERS = frozenset(int(s) for s in MAIN_THREAD_SIGNALS)


class signals_blocked:  # noqa: N801 - used like a function: ``with signals_blocked():``
    """Block :data:`MAIN_THREAD_SIGNALS` in this thread for the block (threads started inside inherit it).

    A class rather than a generator: the lane enters it for every write from the main thread.
    """

    __slots__ = ("_old",)

    def __enter__(self) -> None:
        self._old = _sigmask(signal.SIG_BLOCK, _SIGNAL_NUMBERS) if _sigmask is not None else None

    def __exit__(self, *exc_info: object) -> None:
        if self._old is not None:
            _sigmask(signal.SIG_SETMASK, self._old)


def start_thread(thread: threading.Thread) -> threading.Thread:
    """Start ``thread`` so that it never receives :data:`MAIN_THREAD_SIGNALS`."""
    with signals_blocked():
        thread.start()
    return thread


def unblock_main_thread_signals() -> None:
    """Undo an inherited block (in a freshly started worker process)."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MAIN_THREAD_SIGNALS)
