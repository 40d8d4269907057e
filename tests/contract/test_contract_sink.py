"""Backends as tracer sinks: attach() records straight into any backend, no server (D-07)."""

from __future__ import annotations

import backends
from tests.contract.helpers import counter_records, machine
from tracer import ManualMachine, attach
from tracer.machine_time import MachineTime


def test_attach_manual_machine_records_into_the_backend(store):
    sink = store.open()
    m = ManualMachine(["Off", "On"], initial=["Off"])
    handle = attach(m, sink=sink, name="lamp")
    for _ in range(5):
        m.set("On")
        m.set("Off")
    assert handle.flush(10)
    handle.detach()
    recs = sink.read("lamp")
    assert [r.seq for r in recs] == list(range(11))
    assert recs[0].kind == "init"
    mt = MachineTime(2)
    for r in recs:
        mt.apply(r)
    assert mt.active() == {0}
    assert sink.state_at("lamp", 10).clocks == mt.clocks
    assert sink.activated_between("lamp", "On", 0, 2**62)
    assert sink.get_machine("lamp").kind == "manual"


def test_attach_after_reopen_continues_the_seqs(store):
    first = store.open()
    if not first.persistent:
        return
    m = ManualMachine(["A", "B"], initial=["A"])
    h = attach(m, sink=first, name="mach")
    m.set("B")
    assert h.flush(10)
    h.detach()
    first.close()
    second = store.open()
    m2 = ManualMachine(["A", "B"], initial=["B"])
    h2 = attach(m2, sink=second, name="mach")
    m2.set("A")
    assert h2.flush(10)
    h2.detach()
    assert [r.seq for r in second.read("mach")] == [0, 1, 2, 3]


def test_register_returns_the_next_seq_and_write_is_append(backend):
    assert backend.register(machine()) == 0
    backend.write("m", counter_records("m", 3))
    assert backend.register(machine()) == 3
    backend.dispose("m")
    assert backend.flush(1.0) is True
    assert backend.highest("m") == 2


def test_d07_the_same_stream_twice_leaves_no_duplicates(backend):
    recs = counter_records("m", 10)
    for _ in range(2):  # e.g. a reconnect replays everything
        nxt = backend.register(machine())
        backend.write("m", recs[:7])
        backend.write("m", recs[5:])
    assert nxt == 10
    assert backend.read("m") == recs


def test_backends_open_defaults_to_memory():
    b = backends.open("memory://")
    assert b.scheme == "memory"
    assert b.read("nothing") == []
