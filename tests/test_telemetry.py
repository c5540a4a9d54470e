"""snakepit.telemetry: attach/detach, failing handlers, and the worker.started event."""
from __future__ import annotations

import logging

import pytest

import snakepit
from snakepit import telemetry


def test_attach_execute_detach():
    seen = []
    telemetry.attach("t1", ("a", "b"), lambda e, m, md, c: seen.append((e, m, md, c)), config={"k": 1})
    try:
        telemetry.execute(("a", "b"), {"x": 1}, {"y": 2})
        telemetry.execute(("a", "other"), {"x": 1}, {})
        assert seen == [(("a", "b"), {"x": 1}, {"y": 2}, {"k": 1})]
        with pytest.raises(ValueError):
            telemetry.attach("t1", ("a", "b"), lambda *a: None)
        assert [h["id"] for h in telemetry.list_handlers(("a", "b"))] == ["t1"]
    finally:
        assert telemetry.detach("t1")
    assert not telemetry.detach("t1")
    telemetry.execute(("a", "b"), {"x": 2}, {})
    assert len(seen) == 1


def test_attach_many_and_bad_arguments():
    seen = []
    telemetry.attach_many("t2", [("e", "1"), ("e", "2")], lambda e, m, md, c: seen.append(e))
    try:
        telemetry.execute(("e", "1"), {}, {})
        telemetry.execute(("e", "2"), {}, {})
        assert seen == [("e", "1"), ("e", "2")]
    finally:
        telemetry.detach("t2")
    with pytest.raises(ValueError):
        telemetry.attach("t3", ("e",), "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        telemetry.attach("t4", (), lambda *a: None)


def test_a_raising_handler_is_detached_and_logged_and_requests_still_work(caplog):
    calls = []

    def bad(event, measurements, metadata, config):
        calls.append(1)
        raise RuntimeError("handler bug")

    telemetry.attach("bad-handler", ("snakepit", "request", "executed"), bad)
    pool = snakepit.start_pool("t-telemetry", pool_size=1)
    try:
        with caplog.at_level(logging.ERROR, logger="snakepit.telemetry"):
            assert pool.execute("ping")["pong"]
            assert pool.execute("ping")["pong"]
        assert calls == [1]  # called once, then detached
        assert "bad-handler" in caplog.text and "handler bug" in caplog.text
        assert not telemetry.list_handlers(("snakepit", "request", "executed"))
    finally:
        telemetry.detach("bad-handler")
        snakepit.shutdown()


def test_worker_started_event(events):
    events.attach(("snakepit", "worker", "started"))
    pool = snakepit.start_pool("t-started", pool_size=2)
    try:
        started = events.of(("snakepit", "worker", "started"))
        assert len(started) == 2
        assert {md["pid"] for _, md in started} == {w.pid for w in pool.list_workers()}
        assert all(m["startup_ms"] > 0 and md["pool"] == "t-started" for m, md in started)
    finally:
        snakepit.shutdown()


def test_events_are_documented():
    for event in telemetry.EVENTS:
        assert "``" + repr(event).replace("'", '"').replace(", ", ",") + "``" in telemetry.__doc__
