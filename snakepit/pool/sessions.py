"""Sessions: calls that stay on one worker while it lives."""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator, Mapping

from .. import telemetry
from ..errors import SessionLostError, WorkerCrashedError
from .calls import _DEFAULT, SnakepitFuture, _iterate_stream, _wait
from .records import RunResult


class Session:
    """Calls made through a session run on one worker while that worker lives.

    When the worker dies or is recycled, the next call moves to another worker: ``moves``
    records it (``[{"from": ..., "to": ..., "reason": ..., "time": ...}]``) and the
    ``("snakepit","session","moved")`` event is emitted. The namespace of ``run_code`` does
    not survive a move.
    """

    def __init__(self, pool: Pool, session_id: str, register: bool = True) -> None:
        self.pool = pool
        self.session_id = session_id
        self.worker_id: str | None = None
        self.worker_pid: int | None = None
        self.moves: list[dict[str, Any]] = []
        self.pinned = False
        self.last_used = time.monotonic()
        self._pending_move: str | None = None
        self.lost: tuple[str, str] | None = None  # (worker_id, reason): its worker was retired
        self._previous: str | None = None

    # Called with the pool lock held.
    def _bind(self, worker: _Worker) -> None:
        old = self.pool._workers.get(self.worker_id) if self.worker_id is not None else None
        if old is not None:
            old.sessions.discard(self.session_id)
        previous = self._previous
        self.worker_id = worker.worker_id
        self.worker_pid = worker.pid
        worker.sessions.add(self.session_id)
        if self._pending_move is not None:
            move = {"from": previous, "to": worker.worker_id, "reason": self._pending_move, "time": time.time()}
            self.moves.append(move)
            self._pending_move = None
            telemetry.execute(
                telemetry.SESSION_MOVED, {"count": len(self.moves)},
                {"pool": self.pool.name, "session_id": self.session_id, "from_worker": previous,
                 "to_worker": worker.worker_id, "reason": move["reason"]},
            )

    def _unbind(self, reason: str) -> None:
        if self.pinned:
            raise WorkerCrashedError(self.worker_id or "?", self.worker_pid, None, f"pinned worker {reason}")
        if self.worker_id is not None:
            self._previous = self.worker_id
            self._pending_move = reason
            self.worker_id = None

    def _lose(self, worker_id: str, reason: str) -> None:
        """(pool lock held) The worker was retired for good: the next call raises."""
        self.lost = (worker_id, reason)
        self.worker_id = None
        self._pending_move = None

    def _raise_if_lost(self) -> None:
        lost, self.lost = self.lost, None
        if lost is not None:
            raise SessionLostError(self.session_id, lost[0], lost[1])

    @property
    def moved(self) -> bool:
        """True if the session changed workers at least once."""
        return bool(self.moves)

    def execute(self, command: str, args: Mapping[str, Any] | None = None, *, timeout: Any = _DEFAULT) -> Any:
        call = self.pool._dispatch(command, args, session=self, stream=False, timeout=timeout)
        return _wait(call)

    def submit_command(self, command: str, args: Mapping[str, Any] | None = None, *,
                       timeout: Any = _DEFAULT) -> SnakepitFuture:
        call = self.pool._dispatch(command, args, session=self, stream=False, timeout=timeout)
        assert call.future is not None
        return call.future

    def execute_stream(self, command: str, args: Mapping[str, Any] | None = None, *,
                       timeout: Any = _DEFAULT) -> Iterator[Any]:
        call = self.pool._dispatch(command, args, session=self, stream=True, timeout=timeout)
        return _iterate_stream(self.pool, call)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> SnakepitFuture:
        return self.pool._submit_fn(fn, args, kwargs, self)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], chunksize: int | None = None,
            timeout: float | None = None, progress: bool | None = None) -> Iterator[Any]:
        return self.pool._map(fn, iterables, chunksize, timeout, self, progress)

    def executor(self) -> Any:
        """A :class:`concurrent.futures.Executor` over this session (every call on its worker)."""
        from ..executor import SnakepitExecutor  # noqa: PLC0415

        return SnakepitExecutor(self)

    def run_code(self, source: str, *, push: Mapping[str, Any] | None = None, pull: Iterable[str] | None = None,
                 on_output: Callable[[str, str], None] | None = None, timeout: Any = _DEFAULT) -> RunResult:
        return self.pool.run_code(source, self.session_id, push=push, pull=pull, on_output=on_output,
                                  timeout=timeout)

    def close(self) -> None:
        """Forget the session (and its namespace on the worker)."""
        pool = self.pool
        worker_id = self.worker_id
        with pool._lock:
            pool._sessions.pop(self.session_id, None)
            worker = pool._workers.get(worker_id) if worker_id else None
            if worker is not None:
                worker.sessions.discard(self.session_id)
        if worker is not None and not pool.closed:
            try:
                on_worker = pool._pinned_session(worker.worker_id)
                pool._dispatch("session_close", {"session_id": self.session_id}, session=on_worker,
                               stream=False, timeout=5.0)
            except Exception:  # closing is best effort: the worker may be gone already
                pass

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<snakepit.Session {self.session_id!r} worker={self.worker_id}>"


