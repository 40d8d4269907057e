"""write_rows (the tracer's rows path into a backend, RowSink) equals write, per backend."""

from __future__ import annotations

import random
from typing import Any

import pytest

import backends
from backends.base import BackendError, ConflictError, GapError, ReadOnlyError, UnknownMachine
from tests.contract.helpers import machine, random_history
from tests.contract.test_contract_rows import _same, _with_links
from tracer import Kind, ManualMachine, MemorySink, StateSpec, attach
from tracer.codec import transition_to_list
from tracer.core import OpenEvent, _takes_rows, pop_event, push_event
from tracer.records import TransitionRecord


def _trow(r: TransitionRecord) -> tuple[Any, ...]:
    """A record as the tracer's dispatcher builds its row: a tuple, tuples inside."""
    f = transition_to_list(r)
    return (
        *f[:8],
        None if f[8] is None else tuple(f[8]),
        tuple(f[9]),
        tuple(f[10]),
        f[11],
        None if f[12] is None else tuple(f[12]),
    )


def _write(b: Any, records: list[TransitionRecord]) -> None:
    b.write_rows("m", records[0].seq, [_trow(r) for r in records])


@pytest.mark.parametrize("seed", [1, 2])
def test_write_rows_equals_write(store: Any, seed: int) -> None:
    rnd = random.Random(seed)
    n = 700
    history = _with_links(random_history("m", n, rnd))
    b = store.open(snapshot_every=16)
    assert _takes_rows(b)  # the tracer hands a backend rows, not records
    oracle = backends.open("memory://", snapshot_every=16)
    assert b.register(machine()) == 0 == oracle.register(machine())
    pos = 0
    while pos < n:
        size = rnd.choice((1, 3, 50, 200))
        _write(b, history[pos : pos + size])
        oracle.write("m", history[pos : pos + size])
        pos += size
    _same(b, oracle, n)
    assert b.read("m") == history
    if store.scheme != "memory":
        b.close()
        again = store.open(snapshot_every=16)
        _same(again, oracle, n)
        assert again.register(machine()) == n
        _write(again, history[:3])  # an identical resend is a no-op (D-07)
        _same(again, oracle, n)


def test_write_rows_refuses_what_write_refuses(store: Any) -> None:
    b = store.open()
    history = random_history("m", 30, random.Random(3))
    with pytest.raises(UnknownMachine):
        _write(b, history[:2])
    b.register(machine())
    _write(b, history[:10])
    _write(b, history[5:12])  # overlaps what is stored: checked and skipped
    with pytest.raises(GapError):
        _write(b, history[14:16])
    changed = [_trow(r) for r in history[11:13]]
    changed[0] = (*changed[0][:5], "different", *changed[0][6:])
    with pytest.raises(ConflictError):
        b.write_rows("m", 11, changed)
    assert b.read("m") == history[:12]
    _write(b, history[12:30])
    assert b.read("m") == history
    b.write_rows("m", 30, [])  # nothing to store
    b.close()
    with pytest.raises(BackendError, match="closed"):
        _write(b, history[:1])
    if store.scheme != "memory":
        ro = store.open(read_only=True)
        with pytest.raises(ReadOnlyError):
            ro.write_rows("m", 30, [_trow(TransitionRecord("m", 30, Kind.EVENT, "x"))])


def test_write_rows_with_max_records_trims(store: Any) -> None:
    b = store.open(max_records=50)
    b.register(machine())
    history = random_history("m", 300, random.Random(6))
    for pos in range(0, 300, 40):
        _write(b, history[pos : pos + 40])
    assert b.highest("m") == 299
    assert b.read("m") == history[250:]


def test_a_traced_machine_into_a_backend_equals_a_memory_sink(store: Any) -> None:
    b = store.open(snapshot_every=8)
    sink = MemorySink()
    m = ManualMachine(["Idle", "Busy", StateSpec("Fetch", "Busy"), StateSpec("Parse", "Busy")])
    other = ManualMachine(["X", "Y"], initial=["X"])
    handles = [attach(m, sink=b, name="w"), attach(m, sink=sink, name="w")]
    h_other = attach(other, sink=b, name="o")
    for i in range(300):
        m.set("Fetch", args={"i": i} if i % 50 == 0 else None)
        m.event("parsed", exited=["Fetch"], entered=["Parse"], duration=3)
        m.remove("Busy")
        m.add("Idle", "Busy", name="")
        m.remove("Busy", "Idle")
        if i % 100 == 0:  # records with a parent (same machine) and a source (another)
            ch = handles[0].channels[0]
            cap = ch.begin(Kind.EVENT, "outer")
            ch.position(cap)
            ev = OpenEvent(ch, cap, 0)
            push_event(ev)
            try:
                m.add("Idle")
                other.set("Y")
                other.set("X")
            finally:
                pop_event(ev)
            ch.commit(cap, ch.active)
    for h in (*handles, h_other):
        assert h.flush(20)
        assert h.stats.dropped == 0
    mine = b.read("w")
    assert [r.seq for r in mine] == list(range(len(mine)))
    assert [(r.kind, r.name, r.exited, r.entered, r.args) for r in mine if r.name != "outer"] == [
        (r.kind, r.name, r.exited, r.entered, r.args) for r in sink.history("w")
    ]
    assert any(r.parent_seq is not None for r in mine)
    assert any(r.source is not None for r in b.read("o"))
    assert b.state_at("w", len(mine) - 1).active() == m._active
    assert b.activated_between("w", "Parse", 0, 2**62)


def test_a_failing_write_rows_becomes_a_gap(store: Any) -> None:
    plain = store.open()
    plain.close()
    fail = {"on": False}
    base = type(plain)

    class Flaky(base):  # type: ignore[valid-type, misc]
        def write_rows(self, machine_id: str, first_seq: int, rows: Any) -> None:
            if fail["on"]:
                raise BackendError("disk full")
            super().write_rows(machine_id, first_seq, rows)

    b = Flaky.from_url(store.url)
    store.opened.append(b)
    assert _takes_rows(b)
    m = ManualMachine(["Off", "On"], initial=["Off"])
    h = attach(m, sink=b, name="flaky")
    assert h.flush(10)
    fail["on"] = True
    m.set("On")
    m.set("Off")
    assert h.flush(10)
    assert h.stats.last_error == "BackendError: disk full"
    fail["on"] = False
    m.set("On")
    assert h.flush(10)
    h.detach()
    recs = b.read("flaky")
    assert [r.kind for r in recs] == [Kind.INIT, Kind.GAP, Kind.SET]
    assert recs[1].args == {"dropped": 2}
    assert h.stats.dropped == 2 and h.stats.sent == 2
    assert b.state_at("flaky", 2).active() == {1}
