"""The pool: dispatch, bounded queue, sessions, worker bookkeeping.

Data flow::

    caller thread ──submit──► Pool._dispatch ──(lock)──► least-loaded worker with a free slot
                                   │ none free                      │
                                   ▼                                ▼
                             bounded FIFO queue ◄── slot freed ── WorkerConnection (Dispatch stream)
                                   │                                │ replies (reader thread)
                                   ▼                                ▼
                            queue_timeout timer            Future / stream queue of the call

One lock guards the pool's state; sending a request and completing a future happen outside
it. A worker is used only once it reported ready; a worker that dies is removed at once,
its in-flight requests fail with :class:`WorkerCrashedError`, and a replacement starts.
Where workers run is the backend's business (:mod:`snakepit.backends`).
"""
from .calls import SnakepitFuture
from .core import Pool
from .records import AVAILABLE, BUSY, COUNTERS, RECYCLING, STARTING, STOPPED, UNHEALTHY, RunResult, WorkerInfo, WorkerRecord
from .sessions import Session

__all__ = ["Pool", "Session", "WorkerInfo", "RunResult", "SnakepitFuture", "WorkerRecord",
           "AVAILABLE", "BUSY", "COUNTERS", "RECYCLING", "STARTING", "STOPPED", "UNHEALTHY"]
