"""The worker set: starting workers through the pool's backend, replacing the ones that die,
recycling and retiring them.

A mixin of :class:`snakepit.pool.Pool`. Where workers run is the backend's business
(:mod:`snakepit.backends`): this module only sees :class:`~snakepit.backends.WorkerHandle`.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable, Sequence

from .. import telemetry
from ..backends import StartFailure, WorkerHandle
from ..errors import ConfigError, WorkerCrashedError, WorkerStartError
from ..lifecycle import worker_rss_mb
from ..signals import start_thread
from .records import AVAILABLE, BUSY, RECYCLING, RETIRED, SCALED_DOWN, STOPPED, UNHEALTHY, _Worker

log = logging.getLogger("snakepit.pool")


class WorkerSetMixin:
    """The pool's workers: start, activate, replace, recycle, retire."""

    # ------------------------------------------------------------------ start-up
    def _new_worker(self) -> _Worker:
        seq = next(self._worker_seq)
        worker = _Worker(f"{self.name}-w{seq}", self._capacity)
        cfg = self.config
        if cfg.worker_max_requests:
            spread = int(cfg.worker_max_requests * cfg.recycle_jitter)
            worker.max_requests = cfg.worker_max_requests + (random.randint(0, spread) if spread else 0)
        if cfg.worker_ttl:
            worker.ttl = cfg.worker_ttl * (1.0 + random.uniform(0, cfg.recycle_jitter))
        return worker

    def _start_workers(self, workers: Sequence[_Worker]) -> None:
        """Start ``workers`` through the backend; raise the first failure (nothing left running)."""
        results = self._backend.start_workers([w.worker_id for w in workers], self.config.startup_timeout)
        failures = [r for r in results if isinstance(r, StartFailure)]
        if failures:
            self._backend.stop_workers([r for r in results if isinstance(r, WorkerHandle)], 0.5)
            self._raise_start_error(failures[0].error)
        for worker, handle in zip(workers, results):
            worker.attach(handle)

    def _connect(self, worker: _Worker) -> None:
        handle = worker.process
        worker.conn = handle.connect(
            max_message_bytes=self.config.max_message_bytes,
            on_reply=lambda reply, w=worker: self._on_reply(w, reply),
            on_broken=lambda err, w=worker: self._on_connection_broken(w, err),
        )
        handle.add_exit_callback(lambda code, w=worker: self._on_worker_exit(w, code))
        handle.add_drain_callback(lambda w=worker: self._on_worker_draining(w))

    def _on_worker_draining(self, worker: _Worker) -> None:
        """Its host is being retired (e.g. Dask's ``retire_workers``): a graceful recycle with
        reason ``retired``: nothing new goes to it, it finishes what it holds, the pool refills
        elsewhere, and its exit is not a crash."""
        if not self.begin_recycle(worker.worker_id, RETIRED, replace_first=False):
            with self._lock:  # already recycling for another reason: keep that, expect the exit
                if worker.status == RECYCLING and not worker.gone:
                    worker.recycle_reason = worker.recycle_reason or RETIRED

    def _start_initial_workers(self) -> None:
        workers = [self._new_worker() for _ in range(int(self.config.pool_size or 1))]
        self._start_workers(workers)
        with self._lock:
            for worker in workers:
                self._workers[worker.worker_id] = worker
        for worker in workers:
            self._activate(worker)

    def _raise_start_error(self, message: str) -> None:
        if "adapter" in message and ("cannot load adapter" in message or "thread-safe" in message
                                      or "not a snakepit.Adapter" in message):
            raise ConfigError("adapter", message)
        if "interpreter" in message or "No module named 'snakepit'" in message:
            raise ConfigError("python", message)
        raise WorkerStartError(self.name, message)

    def _activate(self, worker: _Worker, replacement: bool = False) -> None:
        """Connect to a ready worker and make it available (a started replacement stops
        counting as pending in the same step, so the pool's size is never counted twice)."""
        self._connect(worker)
        startup_ms = (time.monotonic() - worker.started_mono) * 1000
        with self._lock:
            if replacement:
                self._replacements_pending -= 1
            if worker.gone:
                return
            worker.status = AVAILABLE
            worker.last_heartbeat = time.time()
            self._workers[worker.worker_id] = worker
            dispatch = self._fill_from_queue(worker)
        self.counters["workers_started"] += 1
        telemetry.execute(
            telemetry.WORKER_STARTED,
            {"startup_ms": startup_ms},
            {"pool": self.name, "worker_id": worker.worker_id, "pid": worker.pid,
             "host": worker.host, "dask_worker": worker.dask_worker},
        )
        self._send_all(dispatch)

    def _start_replacement(self, delay: float = 0.0, then: Callable[[], None] | None = None,
                           counted: bool = False) -> None:
        """Start one worker in the background (after ``delay``), retrying with backoff.

        ``then`` runs once the new worker is serving (used to retire the worker it replaces).
        """
        with self._lock:
            if self._closed:
                if counted:
                    self._replacements_pending -= 1
                return
            if not counted:
                self._replacements_pending += 1

        def run() -> None:
            pending = True  # this start still counts in _replacements_pending
            try:
                if delay:
                    time.sleep(delay)
                if self._closed:
                    return
                worker = self._new_worker()
                result = self._backend.start_workers([worker.worker_id], self.config.startup_timeout)[0]
                if isinstance(result, StartFailure):
                    raise WorkerStartError(self.name, result.error)
                worker.attach(result)
                if self._closed:
                    result.stop(1.0)
                    return
                self._activate(worker, replacement=True)  # counts it down, under the lock
                pending = False
                self._start_failures = 0
                if then is not None:
                    then()
                else:
                    self._trim_to_target()
            except Exception as exc:  # noqa: BLE001 - retried with backoff, reported in diagnostics
                self._start_failures += 1
                self._last_start_error = str(exc)
                self.counters["start_failures"] += 1
                backoff = min(30.0, 0.2 * 2 ** min(self._start_failures, 8))
                log.warning("pool %r: replacement worker failed to start (%s); retrying in %.1fs",
                            self.name, exc, backoff)
                if not self._closed and pending:
                    self._start_replacement(delay=backoff, then=then, counted=True)  # takes its place
                    return
            finally:
                self._starter_threads.discard(threading.current_thread())
            if pending:
                with self._lock:
                    self._replacements_pending -= 1

        thread = threading.Thread(target=run, name=f"snakepit-{self.name}-starter", daemon=True)
        self._starter_threads.add(thread)
        start_thread(thread)


    # ------------------------------------------------------------------ worker death
    def _on_connection_broken(self, worker: _Worker, error: BaseException | None) -> None:
        proc = worker.process
        code = proc.wait(1.0) if proc is not None else None
        if code is None and proc is not None:
            proc.kill()  # alive but unreachable (e.g. a broken lane): it must not linger
        self._handle_worker_gone(worker, code, worker.kill_reason or ("connection lost" if code is None else ""))

    def _on_worker_exit(self, worker: _Worker, code: int) -> None:
        self._handle_worker_gone(worker, code, worker.kill_reason)

    def _handle_worker_gone(self, worker: _Worker, exit_code: int | None, reason: str) -> None:
        with self._lock:
            if worker.gone:
                return
            worker.gone = True
            worker.exit_code = exit_code
            expected = worker.status == STOPPED or self._closed
            retiring = worker.status == RECYCLING
            worker.status = STOPPED
            self._workers.pop(worker.worker_id, None)
            orphans = list(worker.in_flight.values())
            worker.in_flight.clear()
            worker.load = 0
            for call in worker.waiting:
                call.waiting = False
                self._pipelined -= 1
            worker.waiting.clear()
            if not expected:
                self.counters["crashes"] += 1
                self.crash_history.append({
                    "time": time.time(), "worker_id": worker.worker_id, "pid": worker.pid,
                    "exit_code": exit_code, "reason": reason or "exited",
                })
        if not expected and not retiring:
            telemetry.execute(
                telemetry.WORKER_CRASHED,
                {"exit_code": exit_code if exit_code is not None else -1},
                {"pool": self.name, "worker_id": worker.worker_id, "pid": worker.pid,
                 "host": worker.host, "dask_worker": worker.dask_worker},
            )
        for call in orphans:
            if call.request_timer is not None:
                call.request_timer.cancel()
            if call.queue_timer is not None:
                call.queue_timer.cancel()
            if not call.started_at:
                call.started_at = time.monotonic()
            self._complete(call, None, WorkerCrashedError(worker.worker_id, worker.pid, exit_code, reason))
            telemetry.execute(
                telemetry.REQUEST_EXECUTED,
                {"duration_us": int((time.monotonic() - call.started_at) * 1e6)},
                {"pool": self.name, "worker_id": worker.worker_id, "command": call.command, "success": False},
            )
        if worker.conn is not None:
            start_thread(threading.Thread(target=worker.conn.close, name="snakepit-conn-close", daemon=True))
        if expected:
            return
        if not retiring:
            log.warning("pool %r: worker %s (pid %s) died (exit code %s); starting a replacement",
                        self.name, worker.worker_id, worker.pid, exit_code)
            self._grow_to_target()
        else:
            # A recycling worker that died: its replacement is already on its way.
            self._record_recycle(worker, worker.recycle_reason or "manual", worker.recycle_memory_mb)

    def _kill_worker(self, worker: _Worker, reason: str) -> None:
        """Kill a worker now; it is handled as a crash (in-flight calls fail, replacement starts)."""
        worker.kill_reason = reason
        if worker.process is not None:
            worker.process.kill()

    def declare_unhealthy(self, worker: _Worker, reason: str) -> None:
        """Kill a worker that stopped answering (the lifecycle thread decides); a replacement starts."""
        with self._lock:
            if worker.gone:
                return
            worker.status = UNHEALTHY
            self.counters["unhealthy"] += 1
        self._kill_worker(worker, f"unhealthy: {reason}")


    # ------------------------------------------------------------------ recycling
    def _check_max_requests(self, worker: _Worker) -> bool:
        """(lock held) After a request: stop routing to a worker that reached max_requests."""
        if worker.max_requests and worker.requests_served >= worker.max_requests:
            return self._mark_recycling(worker, "max_requests")
        return False

    def _mark_recycling(self, worker: _Worker, reason: str, grace: bool = True) -> bool:
        """(lock held) Stop routing to ``worker``; it is stopped once drained (or after the grace)."""
        if worker.status not in (AVAILABLE, BUSY, UNHEALTHY) or worker.gone:
            return False
        worker.status = RECYCLING
        worker.recycle_reason = reason
        if grace:
            self._timer.call_later(self.config.recycle_grace, lambda: self._recycle_grace_expired(worker))
        return True

    def begin_recycle(self, worker_id: str, reason: str, *, replace_first: bool = True) -> bool:
        """Retire a worker gracefully.

        With ``replace_first`` the replacement starts while the old worker keeps serving; once
        it is ready the old worker stops taking requests, finishes its in-flight ones (up to
        ``recycle_grace``) and exits. Otherwise the old worker stops taking requests at once.
        """
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None or worker.gone or worker.status not in (AVAILABLE, BUSY, UNHEALTHY):
                return False
            if worker.recycle_reason is not None:
                return False  # already on its way out
            worker.recycle_reason = reason
            if not replace_first or worker.status == UNHEALTHY:
                worker.recycle_reason = None
                self._mark_recycling(worker, reason)
                drained = not worker.in_flight
            else:
                drained = None
        if drained is None:
            self._start_replacement(then=lambda: self._retire_when_drained(worker, reason))
            return True
        self._start_replacement()
        if drained:
            self._retire(worker)
        return True

    def _retire_when_drained(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            worker.recycle_reason = None
            if not self._mark_recycling(worker, reason):
                return
            drained = not worker.in_flight
        if drained:
            self._retire(worker)

    def _recycle_grace_expired(self, worker: _Worker) -> None:
        if worker.gone or worker.status != RECYCLING:
            return
        log.warning("pool %r: recycling worker %s still busy after %.0fs grace; killing it",
                    self.name, worker.worker_id, self.config.recycle_grace)
        worker.recycle_memory_mb = worker_rss_mb(worker)  # the recycled event reports it
        if worker.process is not None:
            worker.process.kill()

    def _retire(self, worker: _Worker) -> None:
        """Stop a drained recycling worker and record the recycle."""
        with self._lock:
            if worker.gone:
                return
            worker.gone = True
            worker.status = STOPPED
            self._workers.pop(worker.worker_id, None)
            sessions = list(worker.sessions)
        reason = worker.recycle_reason or "manual"
        memory_mb = worker_rss_mb(worker)
        for sid in sessions:
            session = self._sessions.get(sid)
            if session is not None and session.worker_id == worker.worker_id:
                if reason == SCALED_DOWN:  # its state is gone: the next call says so
                    session._lose(worker.worker_id, "the pool was scaled down")
                else:
                    session._unbind(f"worker recycled ({reason})")
        if worker.conn is not None:
            worker.conn.close()
        if worker.process is not None:
            start_thread(threading.Thread(target=worker.process.stop, args=(2.0,), name="snakepit-stop", daemon=True))
        self._record_recycle(worker, reason, memory_mb)

    def _record_recycle(self, worker: _Worker, reason: str, memory_mb: float | None = None) -> None:
        uptime = time.monotonic() - worker.started_mono
        entry = {
            "time": time.time(), "worker_id": worker.worker_id, "pid": worker.pid, "reason": reason,
            "uptime_s": uptime, "request_count": worker.requests_served, "memory_mb": memory_mb,
        }
        self.recycle_history.append(entry)
        self.counters["recycled"] += 1
        telemetry.execute(
            telemetry.WORKER_RECYCLED,
            {"uptime_s": uptime, "request_count": worker.requests_served, "memory_mb": memory_mb or 0.0},
            {"pool": self.name, "worker_id": worker.worker_id, "reason": reason,
             "memory_threshold_mb": self.config.memory_threshold_mb},
        )

    def recycle_worker(self, worker_id: str) -> None:
        """Recycle one worker now (reason ``manual``): a replacement starts, the old one drains.

        Raises:
            KeyError: no live worker has that id (see :meth:`list_workers`).
        """
        self._check_open()
        if not self.begin_recycle(worker_id, "manual"):
            raise KeyError(f"pool {self.name!r} has no active worker {worker_id!r}")

