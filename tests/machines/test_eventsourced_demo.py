"""The event-sourced demo: bank accounts that persist, snapshot and restart."""

from __future__ import annotations

import threading

import backends
from aminspect.machines.es_demo import open_account, run_demo
from aminspect.machines.es_store import Provider
from aminspect.machines.eventsourced import lifecycle_id
from tracer.records import Kind
from tracer.sinks import MemorySink


def test_demo_traces_events_and_restores_to_a_sink() -> None:
    sink = MemorySink()
    persisted = run_demo(sink, threading.Event(), pace=0, max_steps=40, restart_every=10)
    assert persisted == 40
    kinds = [r.kind for mid in ("account-alice", "account-bob") for r in sink.history(mid)]
    assert kinds.count(Kind.EVENT) == 40
    assert kinds.count(Kind.INIT) == 2
    assert kinds.count(Kind.RESTORE) == 4


def test_demo_into_a_backend_is_replayable() -> None:
    backend = backends.open("memory://")
    stop = threading.Event()
    persisted = run_demo(backend, stop, pace=0, max_steps=30, restart_every=7)
    ids = {m.id for m in backend.machines()}
    assert ids == {
        "account-alice",
        "account-bob",
        lifecycle_id("account-alice"),
        lifecycle_id("account-bob"),
    }
    assert sum(backend.highest(m) + 1 for m in ("account-alice", "account-bob")) == persisted
    restores = [
        r
        for name in ("account-alice", "account-bob")
        for r in backend.read(lifecycle_id(name))
        if r.kind == Kind.RESTORE
    ]
    assert len(restores) == 30 // 7
    provider = Provider(backend)
    for name in ("account-alice", "account-bob"):
        account = open_account(name, provider)
        assert account.state.operations == backend.highest(name) + 1
        account.close()
    backend.close()


def test_demo_stops_when_told() -> None:
    stop = threading.Event()
    stop.set()
    assert run_demo(MemorySink(), stop, pace=0) == 0
