"""Resurrection API: restore live machines from a history without running callbacks."""

from __future__ import annotations

import pytest

import backends
import tracer
from aminspect.resurrect import (
    ResurrectError,
    SchemaMismatch,
    rebuild,
    recorded_state,
    resurrect,
)
from tests.e2e.machines import RING, Quest, make_order, make_ring, make_ring_renamed
from tracer import MachineTime
from tracer.records import Kind

pytestmark = pytest.mark.timeout(60)


def record_ring(backend, incs: list[int], name: str = "ring"):
    """One ring machine with a model per entry of ``incs``, each inc'ed that often."""
    machine = make_ring(len(incs))
    handle = tracer.attach(machine, sink=backend, name=name)
    for model, n in zip(machine.models, incs, strict=True):
        for _ in range(n):
            model.inc()
    assert handle.flush(10)
    handle.detach()
    return handle.machine_ids


def check_continuous(backend, machine_id: str) -> list:
    """Every record applies strictly on top of the previous ones; returns the records."""
    records = backend.read(machine_id)
    assert [r.seq for r in records] == list(range(len(records)))
    mt = MachineTime.for_schema(backend.get_machine(machine_id).schema)
    for rec in records:
        if rec.kind == Kind.RESTORE:
            # the restart restores exactly the configuration the history had reached
            assert frozenset(rec.entered) == mt.active()
        mt.apply(rec)
    return records


@pytest.fixture
def journal(tmp_path):
    backend = backends.open(str(tmp_path / "h.amj"), snapshot_every=3)
    yield backend
    backend.close()


def test_flat_machine_with_several_models_restores_and_continues(journal):
    ids = record_ring(journal, [3, 9])  # r3 and r2 (9 mod 7)
    machine = make_ring(2)
    a, b = machine.models
    result = resurrect(machine, journal, ids)
    assert (a.state, b.state) == ("r3", "r2")
    assert not a.entered and not b.entered  # no callback ran
    assert result.mach_tick == [1, 1]
    a.inc()
    b.inc()
    b.inc()
    assert result.handle is not None and result.handle.flush(10)
    for mid, incs, state in ((ids[0], 3, "r4"), (ids[1], 9, "r4")):
        records = check_continuous(journal, mid)
        restore = [r for r in records if r.kind == Kind.RESTORE]
        assert len(restore) == 1 and restore[0].seq == incs + 1  # after init + incs
        assert all(r.mach_tick == 0 for r in records[: restore[0].seq])
        assert all(r.mach_tick == 1 for r in records[restore[0].seq :])
        assert journal.get_machine(mid).mach_tick == 1
        assert recorded_state(journal, mid).leaves == (state,)
    result.handle.detach()


def test_restore_at_every_seq_is_exact_with_snapshots(journal):
    """S-02: a counter-like history; an off-by-one in snapshot + tail shows up."""
    ids = record_ring(journal, [17])
    assert journal.snapshots(ids[0])  # snapshot_every=3: several snapshots are used
    for seq in range(18):
        machine = make_ring()
        resurrect(machine, journal, ids[0], seq, trace=False)
        # record 0 is init (r0); record k is the k-th inc
        assert machine.models[0].state == RING[seq % 7], seq


def test_second_resurrection_bumps_the_tick_again(journal):
    ids = record_ring(journal, [2])
    for expected in (1, 2):
        machine = make_ring()
        result = resurrect(machine, journal, ids[0])
        machine.models[0].inc()
        assert result.handle is not None
        result.handle.flush(10)
        result.handle.detach()
        assert result.mach_tick == [expected]
    records = check_continuous(journal, ids[0])
    assert [r.mach_tick for r in records] == [0, 0, 0, 1, 1, 2, 2]
    assert machine.models[0].state == "r4"


def test_trace_false_appends_the_restore_record_itself(journal):
    ids = record_ring(journal, [4])
    machine = make_ring()
    result = resurrect(machine, journal, ids[0], trace=False)
    assert result.handle is None
    assert [r.kind for r in result.records] == [Kind.RESTORE]
    records = check_continuous(journal, ids[0])
    assert records[-1].kind == Kind.RESTORE and records[-1].mach_tick == 1
    assert journal.get_machine(ids[0]).mach_tick == 1


def test_read_only_source_is_never_written(tmp_path):
    with backends.open(str(tmp_path / "r.amj")) as backend:
        ids = record_ring(backend, [5])
    before = (tmp_path / "r.amj").read_bytes()
    ro = backends.open(str(tmp_path / "r.amj"), read_only=True)
    machine = make_ring()
    result = resurrect(machine, ro, ids[0], trace=False)
    ro.close()
    assert machine.models[0].state == "r5" and not result.records
    assert (tmp_path / "r.amj").read_bytes() == before


def test_nested_and_parallel_transitions_machine(journal):
    machine = make_order()
    handle = tracer.attach(machine, sink=journal, name="order")
    m = machine.models[0]
    m.start()
    m.packed()
    m.send()
    m.pay()
    handle.flush(10)
    handle.detach()
    fresh = make_order()
    result = resurrect(fresh, journal, "order")
    model = fresh.models[0]
    assert model.state == ["ship_carrier_wait", "ship_bill_paid"]
    assert not model.entered
    model.move()
    model.finish()
    assert result.handle is not None and result.handle.flush(10)
    records = check_continuous(journal, "order")
    assert [r.name for r in records[-3:]] == ["restore", "move", "finish"]
    assert recorded_state(journal, "order").leaves == ("done",)
    # restore in the middle: before "send"
    older = make_order()
    resurrect(older, journal, "order", seq=2, trace=False)
    assert older.models[0].state == "work_pack"
    result.handle.detach()


def test_statemachine_configuration_and_history_values(journal):
    sm = Quest()
    handle = tracer.attach(sm, sink=journal, name="quest")
    sm.send("step")  # left: x -> y
    sm.send("turn")  # right: u -> v
    sm.send("truce")  # leave the parallel state; history remembers y
    handle.flush(10)
    handle.detach()
    fresh = Quest()
    fresh.entered.clear()
    result = resurrect(fresh, journal, "quest")
    assert set(fresh.configuration_values) == {"peace"}
    assert [s.id for s in fresh.history_values["h"]] == ["y"]
    assert not fresh.entered  # no entry callback ran
    fresh.send("resume")  # back through the history state: y, not the initial x
    assert {"war", "left", "y", "right", "u"} == set(fresh.configuration_values)
    assert result.handle is not None and result.handle.flush(10)
    records = check_continuous(journal, "quest")
    assert [r.kind for r in records[-2:]] == [Kind.RESTORE, Kind.EVENT]
    assert records[-1].mach_tick == 1
    result.handle.detach()


def test_statemachine_parallel_configuration_mid_history(journal):
    sm = Quest()
    handle = tracer.attach(sm, sink=journal, name="quest")
    sm.send("step")
    sm.send("turn")
    handle.flush(10)
    handle.detach()
    fresh = Quest()
    resurrect(fresh, journal, "quest", trace=False)
    assert set(fresh.configuration_values) == {"war", "left", "y", "right", "v"}
    fresh.send("step")
    assert "z" in fresh.configuration_values


def test_schema_mismatch_names_missing_and_new_states(journal):
    ids = record_ring(journal, [1])
    with pytest.raises(SchemaMismatch, match=r"missing from the machine: r6\b.*renamed\?\): r6b"):
        resurrect(make_ring_renamed(), journal, ids[0])
    # nothing was written
    assert journal.highest(ids[0]) == 1


def test_unknown_machine_and_bad_seq(journal):
    record_ring(journal, [1])
    with pytest.raises(backends.UnknownMachine, match="machines: ring"):
        resurrect(make_ring(), journal, "nope")
    with pytest.raises(ResurrectError, match="no record 9"):
        resurrect(make_ring(), journal, "ring", seq=9)
    with pytest.raises(ResurrectError, match="2 machine id"):
        resurrect(make_ring(), journal, ["ring", "ring-2"])
    with pytest.raises(ResurrectError, match="cannot resurrect a dict"):
        resurrect({}, journal, "ring")
    with pytest.raises(ResurrectError, match="no state is active at seq -1"):
        resurrect(make_ring(), journal, "ring", seq=-1)
    # all or nothing (J-07): a bad second id leaves the first model untouched
    two = make_ring(2)
    two.models[0].inc()
    with pytest.raises(backends.UnknownMachine):
        resurrect(two, journal, ["ring", "nope"])
    assert [m.state for m in two.models] == ["r1", "r0"]
    assert journal.highest("ring") == 1


def test_rebuild_from_the_schema_alone(journal):
    machine = make_order()
    handle = tracer.attach(machine, sink=journal, name="order")
    machine.models[0].start()
    machine.models[0].send()
    handle.flush(10)
    handle.detach()
    rebuilt, model, state = rebuild(journal, "order")
    assert state.leaves == ("ship_carrier_wait", "ship_bill_due")
    assert model.state == ["ship_carrier_wait", "ship_bill_due"]
    model.move()
    model.finish()
    assert model.state == "done"
    ids = record_ring(journal, [3], name="flat")
    _, ring_model, _ = rebuild(journal, ids[0], seq=2)
    assert ring_model.state == "r2"
    ring_model.inc()
    assert ring_model.state == "r3"
    assert rebuilt is not None


def test_resurrection_ships_nothing_while_reading(journal):
    """D-09: reading the history and restoring emits no record anywhere."""
    ids = record_ring(journal, [6])
    sink = tracer.MemorySink()
    machine = make_ring()
    resurrect(machine, journal, ids[0], trace=False)
    assert not sink.machines and not tracer.default_sink().records.get(ids[0])
    assert not machine.models[0].entered


def test_manual_machine_and_attach_restore_directly(journal):
    from tracer import ManualMachine, StateSpec

    states = [StateSpec("idle", initial=True), StateSpec("run"), StateSpec("run.a", "run")]
    m = ManualMachine(states, initial=["idle"])
    handle = tracer.attach(m, sink=journal, name="man")
    m.set("run.a")
    handle.flush(10)
    handle.detach()
    fresh = ManualMachine(states, initial=["idle"])
    result = resurrect(fresh, journal, "man")
    assert fresh.active == {"run", "run.a"}
    fresh.remove("run")
    assert result.handle is not None and result.handle.flush(10)
    records = check_continuous(journal, "man")
    assert [(r.kind, r.mach_tick) for r in records] == [
        (Kind.INIT, 0),
        (Kind.SET, 0),
        (Kind.RESTORE, 1),
        (Kind.REMOVE, 1),
    ]
    result.handle.detach()
    # the tracer-level switch: ids and ticks are taken in the order channels open
    again = ManualMachine(states, initial=["idle"])
    h = tracer.attach(again, sink=journal, name="ignored", restore=[("man", 7)])
    assert h.machine_ids == ["man"]
    h.flush(10)
    h.detach()
    last = journal.read("man")[-1]
    assert (last.kind, last.mach_tick, last.seq) == (Kind.RESTORE, 7, 4)
    assert journal.get_machine("man").mach_tick == 7
