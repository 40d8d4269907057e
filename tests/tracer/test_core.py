"""The tracer core: ordering, nesting, the bounded buffer, gaps and failure isolation."""

from __future__ import annotations

import threading

import pytest

import tracer
from tracer import Kind, MachineTime, ManualMachine, MemorySink, StateSpec, attach
from tracer.core import OpenEvent, pop_event, push_event


def toggle_machine() -> ManualMachine:
    return ManualMachine(["Off", "On"], initial=["Off"])


def names(m: ManualMachine, idx) -> list[str]:
    return [m.schema.names[i] for i in idx]


def replay(m: ManualMachine, records) -> frozenset[str]:
    mt = MachineTime.for_schema(m.schema)
    for r in records:
        mt.apply(r)
    return frozenset(m.schema.names[i] for i in mt.active())


def test_manual_machine_records_every_mutation():
    sink = MemorySink()
    m = ManualMachine(
        ["Idle", "Busy", StateSpec("Busy_fetch", "Busy"), StateSpec("Busy_parse", "Busy")],
        initial=["Idle"],
    )
    h = attach(m, sink=sink, name="worker")
    m.set("Busy_fetch", args={"url": "x"})
    m.event("parsed", exited=["Busy_fetch"], entered=["Busy_parse"], duration=5)
    m.remove("Busy")
    m.add("Idle")
    assert h.flush(5)
    recs = sink.history("worker")
    assert [r.seq for r in recs] == [0, 1, 2, 3, 4]
    assert [r.kind for r in recs] == [Kind.INIT, Kind.SET, Kind.EVENT, Kind.REMOVE, Kind.ADD]
    assert names(m, recs[1].entered) == ["Busy", "Busy_fetch"]  # ancestors come along
    assert names(m, recs[3].exited) == ["Busy", "Busy_parse"]  # descendants go too
    assert recs[1].args == {"url": "x"}
    assert replay(m, recs) == m.active == {"Idle"}
    assert sink.machines["worker"].kind == "manual"
    assert h.stats.captured == 5 and h.stats.sent == 5 and h.stats.dropped == 0


def test_manual_event_that_contradicts_the_active_set_is_refused():
    m = toggle_machine()
    with pytest.raises(ValueError, match="exits inactive states: On"):
        m.event("x", exited=["On"])
    with pytest.raises(ValueError, match="enters active states: Off"):
        m.event("x", entered=["Off"])
    with pytest.raises(KeyError, match="unknown state 'Nope'"):
        m.add("Nope")


def test_ids_are_derived_per_class_and_unique():
    a, b = attach(toggle_machine(), sink=MemorySink()), attach(toggle_machine(), sink=MemorySink())
    assert a.machine_id.startswith("ManualMachine-") and a.machine_id != b.machine_id


def test_child_that_changes_state_first_is_ordered_first_with_parent_seq():
    """A trigger fired before its parent's state change gets the lower seq."""
    sink = MemorySink()
    m = ManualMachine(["A", "B", "C"], initial=["A"])
    h = attach(m, sink=sink, name="nest")
    ch = h.channels[0]
    parent = ch.begin(Kind.EVENT, "outer")
    ev = OpenEvent(ch, parent, 0)
    push_event(ev)
    m.event("inner", exited=["A"], entered=["B"])  # nested: runs while outer is open
    pop_event(ev)
    ch.position(parent)
    parent.record.exited, parent.record.entered = (1,), (2,)
    ch.commit(parent, frozenset({2}))
    assert h.flush(5)
    recs = sink.history("nest")
    assert [(r.seq, r.name, r.parent_seq) for r in recs] == [
        (0, "init", None),
        (1, "inner", 2),
        (2, "outer", None),
    ]
    mt = MachineTime(3)
    for r in recs:
        mt.apply(r)
    assert mt.active() == {2}


def test_event_of_another_machine_gets_a_source():
    sink = MemorySink()
    a, b = toggle_machine(), toggle_machine()
    ha, hb = attach(a, sink=sink, name="a"), attach(b, sink=sink, name="b")
    ch = ha.channels[0]
    cap = ch.begin(Kind.EVENT, "go")
    ch.position(cap)
    ev = OpenEvent(ch, cap, 0)
    push_event(ev)
    b.set("On")
    pop_event(ev)
    ch.commit(cap, frozenset({0}))
    assert ha.flush(5) and hb.flush(5)
    assert sink.history("b")[1].source == ("a", 1)


def test_full_buffer_drops_oldest_and_reports_one_exact_gap():
    sink = MemorySink()
    gate = threading.Event()

    class SlowSink(MemorySink):
        def write(self, machine_id, records):
            gate.wait(10)
            sink.write(machine_id, records)

        def register(self, machine):
            return sink.register(machine)

    m = toggle_machine()
    h = attach(m, sink=SlowSink(), name="slow", buffer_size=10)
    h.flush(5)  # the init record is in the sender, blocked in write
    for _ in range(50):
        m.event("flip", exited=list(m.active), entered=["On" if "Off" in m.active else "Off"])
    gate.set()
    assert h.flush(5)
    recs = sink.history("slow")
    gaps = [r for r in recs if r.kind == Kind.GAP]
    assert len(gaps) == 1 and gaps[0].args == {"dropped": 40}
    assert h.stats.dropped == 40 and h.stats.captured == 51
    assert [r.seq for r in recs] == list(range(len(recs)))  # contiguous
    assert len(recs) == 1 + 1 + 10
    assert replay(m, recs) == m.active  # the gap carries the configuration


def test_sink_failure_never_reaches_the_app_and_becomes_a_gap():
    sink = MemorySink()
    fail = {"on": True}

    class Flaky(MemorySink):
        def register(self, machine):
            return sink.register(machine)

        def write(self, machine_id, records):
            if fail["on"]:
                raise OSError("disk full")
            sink.write(machine_id, records)

    m = toggle_machine()
    h = attach(m, sink=Flaky(), name="flaky")
    m.set("On")
    assert h.flush(5)
    assert h.stats.last_error == "OSError: disk full"
    fail["on"] = False
    m.set("Off")
    assert h.flush(5)
    recs = sink.history("flaky")
    assert [r.kind for r in recs] == [Kind.GAP, Kind.SET]
    assert recs[0].args == {"dropped": 2}
    assert replay(m, recs) == {"Off"}


def test_detach_stops_recording_and_disposes():
    sink = MemorySink()
    m = toggle_machine()
    h = attach(m, sink=sink, name="d")
    h.detach()
    m.set("On")
    h.flush(5)
    assert len(sink.history("d")) == 1 and "d" in sink.disposed


def test_sanitizer_redacts_and_a_failing_one_is_contained():
    sink = MemorySink()
    m = toggle_machine()
    h = attach(m, sink=sink, name="s", sanitizer=lambda a, k: {"redacted": len(a)})
    # the manual API passes args through; adapters call the sanitizer
    assert h.channels[0].machine.id == "s"
    from tracer.sanitize import sanitize_args

    assert sanitize_args((1, object()), {"pw": "x"}, lambda a, k: 1 / 0) == (
        "<sanitizer failed: ZeroDivisionError>"
    )
    big = sanitize_args(tuple(range(100)), {"k": "x" * 1000})
    assert len(big["args"]) == 17 and len(big["kwargs"]["k"]) == 200


def test_unsupported_objects_are_refused_clearly():
    with pytest.raises(tracer.UnsupportedMachine, match="cannot trace int"):
        attach(42)


def test_sender_thread_stops_after_detach_and_restarts_on_attach():
    import time

    sink = MemorySink()
    m = toggle_machine()
    h = attach(m, sink=sink, name="reaped")
    d = h.dispatcher
    assert h.flush(5) and d._running
    h.detach()
    deadline = time.monotonic() + 5
    while d._running and time.monotonic() < deadline:  # stops once its channels are gone
        time.sleep(0.01)
    assert not d._running and d._thread is not None and not d._thread.is_alive()
    m2 = toggle_machine()
    h2 = attach(m2, sink=sink, name="again")  # the same dispatcher starts a new thread
    assert h2.dispatcher is d and d._running
    m2.set("On")
    assert h2.flush(5)
    assert [r.kind for r in sink.history("again")] == [Kind.INIT, Kind.SET]
    h2.detach()


def test_records_of_a_parent_that_never_commits_wait_and_others_flow():
    """A nested record waits for its parent's position; other machines are not held up."""
    sink = MemorySink()
    a, b = toggle_machine(), toggle_machine()
    ha, hb = attach(a, sink=sink, name="pa"), attach(b, sink=sink, name="pb")
    ch = ha.channels[0]
    parent = ch.begin(Kind.EVENT, "outer")
    ev = OpenEvent(ch, parent, 0)
    push_event(ev)
    a.set("On")  # nested in "outer", which has not changed the machine yet
    pop_event(ev)
    b.set("On")
    assert ha.flush(5) and hb.flush(5)
    assert [r.name for r in sink.history("pa")] == ["init"]  # "set" waits for "outer"
    assert [r.kind for r in sink.history("pb")] == [Kind.INIT, Kind.SET]
    ch.position(parent)
    ch.commit(parent, frozenset({1}))
    assert ha.flush(5)
    assert [(r.kind, r.parent_seq) for r in sink.history("pa")] == [
        (Kind.INIT, None),
        (Kind.SET, 2),
        (Kind.EVENT, None),
    ]


def test_flush_cuts_short_the_senders_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender lingers after a wake-up so a batch builds up; a flush arriving meanwhile
    must not wait the linger out (it did: up to 30 ms on every flush)."""
    import time

    import tracer.core

    monkeypatch.setattr(tracer.core, "LINGER", 30.0)  # a linger no flush could wait out
    sink = MemorySink()
    m = toggle_machine()
    h = attach(m, sink=sink, name="m")
    assert h.flush(5)
    m.set("On")
    time.sleep(0.2)  # the add's urgency is spent: this record's wake-up lingers
    m.set("Off")
    time.sleep(0.2)  # the sender is lingering now
    assert h.flush(5), "the flush waited for the linger"
    assert [r.name for r in sink.records["m"]][-2:] == ["=On", "=Off"]
    h.detach()


def test_sender_keeps_no_record_alive_once_it_is_written():
    # Records of events that raised hold their event (and through it the model's trace)
    # until the sender has numbered them. The sender once kept its last batch in a loop
    # variable while it waited for the next wake-up, and with it those events.
    import gc

    from transitions import Machine, MachineError

    from tracer.adapters.transitions import _Event

    class Discard(MemorySink):  # keeps no row: whatever stays alive is the tracer's
        def write_rows(self, machine_id, first_seq, rows):
            pass

    class Model:
        pass

    model = Model()
    machine = Machine(model, states=["idle", "busy"], transitions=[["go", "idle", "busy"]])
    handle = attach(machine, sink=Discard())
    for _ in range(100):
        with pytest.raises(MachineError):
            model.go() if model.state == "busy" else (model.go(), model.go())
    assert handle.flush(5)
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is _Event]
    handle.detach()
