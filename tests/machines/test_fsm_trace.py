"""The validated FSM traced like any other machine, its SQLite store, and its demo scenario."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from aminspect.machines.fsm import (
    FSM,
    ArcFSMBuilder,
    FSMBuilder,
    FSMBuildError,
    FSMStoreError,
    RowCount,
    SQLiteFSMStore,
    TransitionContext,
    open_fsm_store,
)
from aminspect.machines.fsm_demo import run_demo
from backends.registry import open_backend
from tracer import Kind, MachineRecord, MemorySink, TransitionRecord


@dataclass
class New:
    name: str


@dataclass
class Step:
    id: int
    note: str = ""


class Refused(Exception):
    pass


def refuse_notes(ctx: TransitionContext) -> None:
    if getattr(ctx.payload, "note", "") == "refuse":
        raise Refused("the validator said no")


def machine(target: object, **kw: object) -> FSM:
    return (
        FSMBuilder("job", metadata=lambda ctx: f"m{ctx.id}", validation=refuse_notes)
        .initial("queued", New, next=["running"])
        .add_state("running", Step, next=["running", "done"])
        .add_state("done", Step)
        .build(target, **kw)  # type: ignore[arg-type]
    )


def names(sink: MemorySink, mid: str) -> list[tuple[str, str, bool]]:
    return [(r.kind, r.name, r.accepted) for r in sink.history(mid)]


def test_fsm_09_records_reach_a_memory_sink_after_commit(tmp_path: Path) -> None:
    sink = MemorySink()
    fsm = machine(str(tmp_path / "t.db"), sink=sink)
    id = fsm.insert(New("a"))
    fsm.update("queued", "running", Step(id, "go"))
    with pytest.raises(Refused):
        fsm.update("running", "running", Step(id, "refuse"))  # rolled back: not a change
    with pytest.raises(RowCount):
        fsm.update("queued", "running", Step(id))  # stale: not a change
    fsm.update("running", "done", Step(id))
    assert fsm.flush(5)
    mid = f"job-{id}"
    assert sink.wait_for(mid, 5)
    assert names(sink, mid) == [
        ("init", "init", True),
        ("event", "running", True),
        ("event", "running", False),
        ("event", "running", False),
        ("event", "done", True),
    ]
    recs = sink.history(mid)
    assert sink.machines[mid].kind == "fsm"
    schema = sink.machines[mid].schema
    assert schema.names == ("queued", "running", "done")
    assert schema.states[0].initial and schema.states[2].final
    assert {(t.source, t.dest) for t in schema.transitions} == {
        ("queued", "running"),
        ("running", "running"),
        ("running", "done"),
    }
    assert recs[0].entered == (0,)
    assert (recs[1].exited, recs[1].entered) == ((0,), (1,))
    assert recs[1].args == {"id": id, "data": {"note": "go"}, "metadata": f"m{id}"}
    assert recs[2].error is not None and recs[2].error[0] == "Refused"
    assert (recs[2].exited, recs[2].entered) == ((), ())
    assert recs[3].error is not None and recs[3].error[0] == "RowCount"
    assert (recs[4].exited, recs[4].entered) == ((1,), (2,))
    assert mid in sink.disposed  # "done" has no next state: detached
    assert fsm.trace_errors == 0
    fsm.close()


def test_traced_into_a_memory_backend_and_continued_by_a_second_process(tmp_path: Path) -> None:
    backend = open_backend("memory://")
    db = str(tmp_path / "t.db")
    untraced = machine(db)
    id = untraced.insert(New("a"))  # inserted where nobody traces
    untraced.close()
    traced = machine(db, sink=backend)
    traced.update("queued", "running", Step(id))
    traced.update("running", "running", Step(id, "again"))
    assert traced.flush(5)
    recs = backend.read(f"job-{id}")
    # first seen on an update: an init record with the state it was in, then the event
    assert [(r.kind, r.name) for r in recs] == [
        (Kind.INIT, "init"),
        (Kind.EVENT, "running"),
        (Kind.EVENT, "running"),
    ]
    assert recs[0].entered == (0,) and recs[2].exited == recs[2].entered == (1,)
    traced.close()
    backend.close()


class BrokenSink:
    """A sink that fails every call: tracing must not disturb the app."""

    def register(self, machine: MachineRecord) -> int:
        raise RuntimeError("register failed")

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        raise RuntimeError("write failed")

    def dispose(self, machine_id: str) -> None:
        raise RuntimeError("dispose failed")

    def flush(self, timeout: float | None = None) -> bool:
        raise RuntimeError("flush failed")

    def close(self) -> None:
        pass


def test_tracing_never_raises_into_the_app(tmp_path: Path) -> None:
    fsm = machine(str(tmp_path / "t.db"), sink=BrokenSink())
    id = fsm.insert(New("a"))
    fsm.update("queued", "running", Step(id))
    fsm.update("running", "done", Step(id))
    assert [e.type for e in fsm.events()] == ["queued", "running", "done"]
    fsm.close()
    with pytest.raises(FSMBuildError, match="sink or a url"):
        machine(":memory:", sink=MemorySink(), url="ws://127.0.0.1:1")


def test_trace_limit_detaches_the_least_recent(tmp_path: Path) -> None:
    sink = MemorySink()
    fsm = machine(str(tmp_path / "t.db"), sink=sink, trace_limit=2)
    ids = [fsm.insert(New(str(i))) for i in range(3)]
    fsm.update("queued", "running", Step(ids[0]))  # reopened: a fresh init record first
    fsm.flush(5)
    assert f"job-{ids[1]}" in sink.disposed
    assert names(sink, f"job-{ids[0]}") == [
        ("init", "init", True),
        ("init", "init", True),
        ("event", "running", True),
    ]
    fsm.close()


def test_arc_instances_are_traced(tmp_path: Path) -> None:
    sink = MemorySink()
    fsm = (
        ArcFSMBuilder("pay")
        .insert("pending", New)
        .update("pending", "declined", Step)
        .update("declined", "pending", Step)
        .update("pending", "captured", Step)
        .build(str(tmp_path / "a.db"), sink=sink)
    )
    id = fsm.insert("pending", New("x"))
    fsm.update("pending", "declined", Step(id))
    fsm.update("declined", "pending", Step(id))
    fsm.update("pending", "captured", Step(id))
    fsm.flush(5)
    mid = f"pay-{id}"
    assert [r.name for r in sink.history(mid)] == ["init", "declined", "pending", "captured"]
    assert mid in sink.disposed  # no arc leaves "captured"
    assert sink.machines[mid].kind == "arcfsm"
    fsm.close()


# -- the store ------------------------------------------------------------------------------
def test_store_urls_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = open_fsm_store("sqlite:///rel.db?durability=fast")
    assert (tmp_path / "rel.db").exists() and s.url == "sqlite:///rel.db"
    s.close()
    s = open_fsm_store(f"sqlite:///{tmp_path}/abs.db")
    s.close()
    assert (tmp_path / "abs.db").exists()
    s = open_fsm_store(tmp_path / "plain.db")
    s.close()
    with pytest.raises(FSMStoreError, match="no FSM store for mysql://"):
        open_fsm_store("mysql://x/y")
    with pytest.raises(FSMStoreError, match="unknown sqlite FSM store option"):
        open_fsm_store("sqlite:///x.db?colour=red")
    with pytest.raises(FSMStoreError, match="durability"):
        open_fsm_store("sqlite:///x.db?durability=maybe")
    with pytest.raises(FSMStoreError, match="needs a file path"):
        open_fsm_store("sqlite://")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(FSMStoreError, match="not an SQLite database"):
        open_fsm_store(tmp_path / "junk.db")
    with pytest.raises(FSMStoreError, match="unable to open"):
        open_fsm_store(tmp_path / "missing-dir" / "x.db")


def test_state_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/persist.db"
    fsm = machine(url)
    id = fsm.insert(New("a"))
    fsm.update("queued", "running", Step(id))
    fsm.close()  # built from a URL: closes its store
    again = machine(url)
    got = again.get(id)
    assert got is not None and got.state == "running"
    assert again.update("running", "done", Step(id)) == 3
    assert again.insert(New("b")) == id + 1
    again.close()


def test_shares_a_file_with_the_sqlite_history_backend(tmp_path: Path) -> None:
    path = tmp_path / "both.db"
    backend = open_backend(f"sqlite:///{path}")
    sink_fsm = machine(f"sqlite:///{path}", sink=backend)
    id = sink_fsm.insert(New("a"))
    sink_fsm.update("queued", "running", Step(id))
    assert sink_fsm.flush(5)
    assert [r.name for r in backend.read(f"job-{id}")] == ["init", "running"]
    assert [e.type for e in sink_fsm.events()] == ["queued", "running"]
    sink_fsm.close()
    backend.close()


# -- the demo --------------------------------------------------------------------------------
def test_demo_drives_orders_and_payments(tmp_path: Path) -> None:
    sink = MemorySink()
    db = str(tmp_path / "demo.db")
    run_demo(sink, threading.Event(), pace=0, ticks=60, db=db)
    mids = set(sink.machines)
    assert any(m.startswith("fsm-orders-") for m in mids)
    assert any(m.startswith("fsm-payments-") for m in mids)
    recs = [r for m in mids for r in sink.history(m)]
    assert any(not r.accepted for r in recs)  # refused transitions are shown
    assert any(r.name == "delivered" for r in recs)
    with SQLiteFSMStore(db) as store:
        assert len(store.events("fsm-orders", limit=10_000)) >= 10


def test_demo_stops_when_asked() -> None:
    stop = threading.Event()
    sink = MemorySink()
    t = threading.Thread(target=run_demo, args=(sink, stop), kwargs={"pace": 0.05})
    t.start()
    assert sink.wait_for("fsm-orders-1", 1, timeout=10)
    stop.set()
    t.join(10)
    assert not t.is_alive()
