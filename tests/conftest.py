"""Shared fixtures. Every test is checked for leaks: worker processes, pools, threads."""
from __future__ import annotations

import os
import sys
import threading
import time

import psutil
import pytest

import snakepit

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def _snakepit_children() -> list[psutil.Process]:
    me = psutil.Process()
    out = []
    for child in me.children(recursive=True):
        try:
            if "snakepit.worker" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            pass
    return out


def _wait_until(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _snakepit_threads() -> set[str]:
    # The launcher's spawner/reaper threads live as long as the process, by design.
    permanent = {"snakepit-spawner", "snakepit-reaper"}
    return {
        t.name for t in threading.enumerate()
        if t.name.startswith("snakepit") and t.name not in permanent and t.is_alive()
    }


@pytest.fixture(autouse=True)
def check_leaks(request):
    """Fail a test that leaves pools, worker processes or snakepit threads behind."""
    yield
    leaked_pools = [p.name for p in snakepit.list_pools()]
    snakepit.shutdown()
    assert not leaked_pools, f"test left pools running: {leaked_pools}"
    assert _wait_until(lambda: not _snakepit_children(), 10.0), (
        f"worker processes left behind: {[c.pid for c in _snakepit_children()]}"
    )
    assert _wait_until(lambda: not _snakepit_threads(), 10.0), (
        f"snakepit threads left behind: {sorted(_snakepit_threads())}\n{_stacks(_snakepit_threads())}"
    )


def _stacks(names: set[str]) -> str:
    """Where each named thread is (to tell a leak's cause)."""
    import sys
    import traceback

    frames = sys._current_frames()
    return "\n".join(f"--- {t.name}\n" + "".join(traceback.format_stack(frames[t.ident]))
                     for t in threading.enumerate() if t.name in names and t.ident in frames)


@pytest.fixture
def wait_until():
    return _wait_until


@pytest.fixture
def events():
    """Collect telemetry events: ``events.attach(event)`` then read ``events.seen``."""

    class Recorder:
        def __init__(self) -> None:
            self.seen: list[tuple[tuple[str, ...], dict, dict]] = []
            self._ids: list[str] = []
            self._lock = threading.Lock()

        def attach(self, *evs: tuple[str, ...]) -> "Recorder":
            hid = f"test-recorder-{len(self._ids)}-{id(self)}"
            snakepit.telemetry.attach_many(hid, evs, self._record)
            self._ids.append(hid)
            return self

        def _record(self, event, measurements, metadata, config):
            with self._lock:
                self.seen.append((event, dict(measurements), dict(metadata)))

        def of(self, event: tuple[str, ...]) -> list[tuple[dict, dict]]:
            with self._lock:
                return [(m, md) for e, m, md in self.seen if e == event]

        def close(self) -> None:
            for hid in self._ids:
                snakepit.telemetry.detach(hid)

    rec = Recorder()
    yield rec
    rec.close()
