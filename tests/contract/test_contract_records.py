"""Record storage contract (J-01..J-10, D-07, B-01) run on every registered backend."""

from __future__ import annotations

import pytest

from backends.base import (
    Backend,
    BackendError,
    ConflictError,
    GapError,
    ReadOnlyError,
    UnknownMachine,
)
from tests.contract.helpers import counter_records, machine
from tracer.records import Kind, TransitionRecord


def _filled(backend, n=5, mid="m"):
    backend.put_machine(machine(mid))
    recs = counter_records(mid, n)
    backend.append(mid, recs)
    return recs


def test_is_a_backend_and_a_sink(backend):
    from tracer.sinks import Sink

    assert isinstance(backend, Backend)
    assert isinstance(backend, Sink)
    assert backend.scheme
    assert isinstance(backend.supports_delete, bool)


def test_j01_seqs_start_at_zero_and_highest_is_minus_one_when_empty(backend):
    backend.put_machine(machine())
    assert backend.highest("m") == -1
    backend.append("m", counter_records("m", 1))
    assert backend.highest("m") == 0
    backend.append("m", counter_records("m", 3, start=1))
    assert backend.highest("m") == 3
    assert [r.seq for r in backend.read("m")] == [0, 1, 2, 3]


def test_j01_first_record_must_be_seq_zero(backend):
    backend.put_machine(machine())
    with pytest.raises(GapError, match="expected seq 0, got 1"):
        backend.append("m", counter_records("m", 2, start=1))
    assert backend.highest("m") == -1


def test_j02_read_is_half_open(backend):
    recs = _filled(backend, 4)
    assert backend.read("m") == recs
    assert backend.read("m", 1, 3) == recs[1:3]
    assert backend.read("m", 3) == recs[3:]
    assert backend.read("m", 2, 2) == []
    assert backend.read("m", 2, 0) == recs[2:]  # end 0 means to the end
    assert backend.read("m", 3, 1) == []
    assert backend.read("m", 10) == []
    assert backend.read("m", 0, 100) == recs


@pytest.mark.parametrize(("start", "end"), [(-1, None), (0, -2), ("1", None), (1.5, None)])
def test_j02_bad_read_bounds_are_a_clear_error(backend, start, end):
    _filled(backend, 2)
    with pytest.raises(BackendError, match=r"read (start|end)"):
        backend.read("m", start, end)


def test_j03_streams_are_isolated_and_unknown_reads_empty(backend):
    a = _filled(backend, 3, "a")
    b = _filled(backend, 2, "b")
    assert backend.read("a") == a
    assert backend.read("b") == b
    assert backend.read("nobody") == []
    assert backend.highest("nobody") == -1
    assert backend.latest_snapshot("nobody") is None
    with pytest.raises(UnknownMachine, match="nobody"):
        backend.get_machine("nobody")
    assert [m.id for m in backend.machines()] == ["a", "b"]


def test_j04_delete_is_inclusive_and_keeps_highest(backend):
    if not backend.supports_delete:
        pytest.skip("backend cannot delete")
    recs = _filled(backend, 5)
    backend.delete_upto("m", 1)
    assert backend.read("m") == recs[2:]
    assert backend.read("m", 0, 3) == recs[2:3]
    assert backend.highest("m") == 4
    backend.delete_upto("m", 4)
    assert backend.read("m") == []
    assert backend.highest("m") == 4
    # appending continues after highest
    backend.append("m", counter_records("m", 1, start=5))
    assert [r.seq for r in backend.read("m")] == [5]
    assert backend.highest("m") == 5


def test_j04_delete_beyond_highest_is_refused(backend):
    _filled(backend, 3)
    with pytest.raises(BackendError, match="highest is 2"):
        backend.delete_upto("m", 3)
    with pytest.raises(BackendError, match="non-negative"):
        backend.delete_upto("m", -1)
    assert len(backend.read("m")) == 3


def test_j05_conflicting_duplicate_is_rejected(backend):
    recs = _filled(backend, 3)
    other = TransitionRecord("m", 1, Kind.EVENT, "different", time=5, exited=(0,))
    with pytest.raises(ConflictError, match="seq 1"):
        backend.append("m", [other])
    assert backend.read("m") == recs


def test_j05_identical_duplicate_is_a_no_op(backend):
    recs = _filled(backend, 3)
    backend.append("m", recs[1:3])
    backend.append("m", recs)
    assert backend.read("m") == recs
    assert backend.highest("m") == 2


def test_j05_resend_overlapping_the_tail_appends_only_the_new_part(backend):
    recs = counter_records("m", 6)
    backend.put_machine(machine())
    backend.append("m", recs[:4])
    backend.append("m", recs[2:6])
    assert backend.read("m") == recs


def test_j06_gap_is_rejected(backend):
    _filled(backend, 3)
    with pytest.raises(GapError, match="expected seq 3, got 5"):
        backend.append("m", counter_records("m", 1, start=5))
    nonconsecutive = [*counter_records("m", 1, start=3), *counter_records("m", 1, start=5)]
    with pytest.raises(GapError, match="not consecutive"):
        backend.append("m", nonconsecutive)
    assert backend.highest("m") == 2


def test_j09_batch_is_all_or_none(backend):
    recs = _filled(backend, 3)
    more = counter_records("m", 3, start=3)
    bad = TransitionRecord("m", 6, Kind.EVENT, "x", exited=(99,))  # outside the schema
    with pytest.raises(BackendError, match="outside the schema"):
        backend.append("m", [*more, bad])
    assert backend.read("m") == recs
    conflicting = TransitionRecord("m", 2, Kind.EVENT, "other")
    with pytest.raises(ConflictError):
        backend.append("m", [conflicting, *more])
    assert backend.read("m") == recs
    assert backend.highest("m") == 2
    backend.append("m", more)
    assert backend.highest("m") == 5


def test_j09_unencodable_record_stores_nothing(backend):
    recs = _filled(backend, 2)
    more = counter_records("m", 2, start=2)
    more[1].args = object()  # cannot be serialised
    with pytest.raises(BackendError):
        backend.append("m", more)
    assert backend.read("m") == recs
    assert backend.highest("m") == 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (TransitionRecord("other", 0, Kind.INIT), "machine 'other'"),
        (TransitionRecord("m", -1, Kind.INIT), "non-negative"),
        (TransitionRecord("m", 0, Kind.INIT, entered=(4,)), "outside the schema"),
    ],
)
def test_bad_records_are_clear_errors(backend, record, message):
    backend.put_machine(machine())
    with pytest.raises(BackendError, match=message):
        backend.append("m", [record])


def test_append_to_unknown_machine_is_refused(backend):
    with pytest.raises(UnknownMachine, match="ghost"):
        backend.append("ghost", counter_records("ghost", 1))


def test_machine_records_round_trip_and_update(backend):
    m = machine(tags={"k": "v"}, parent_id="root")
    backend.put_machine(m)
    got = backend.get_machine("m")
    assert (got.id, got.kind, got.parent_id, got.tags, got.schema) == (
        "m",
        "manual",
        "root",
        {"k": "v"},
        m.schema,
    )
    m.mach_tick = 3
    backend.put_machine(m)
    assert backend.get_machine("m").mach_tick == 3
    assert len(backend.machines()) == 1


def test_schema_cannot_shrink_under_stored_history(backend):
    _filled(backend, 2)
    with pytest.raises(ConflictError, match="schema"):
        backend.put_machine(machine(states=("A",)))


def test_read_only_refuses_writes(store):
    b = store.open()
    _filled(b, 2)
    b.close()
    if not store.opened[0].persistent:
        ro = store.open(read_only=True)
        with pytest.raises(ReadOnlyError):
            ro.put_machine(machine())
        return
    ro = store.open(read_only=True)
    assert len(ro.read("m")) == 2
    for call in (
        lambda: ro.put_machine(machine()),
        lambda: ro.append("m", counter_records("m", 1, start=2)),
        lambda: ro.delete_upto("m", 0),
        lambda: ro.delete_snapshots("m", 0),
        lambda: ro.register(machine()),
    ):
        with pytest.raises(ReadOnlyError, match="read-only"):
            call()


def test_j10_reopen_keeps_everything_acknowledged(store):
    b = store.open(snapshot_every=2)
    if not b.persistent:
        pytest.skip("memory:// keeps nothing across processes by design")
    recs = _filled(b, 5)
    b.put_machine(machine("other"))
    b.flush()
    b.close()
    again = store.open(snapshot_every=2)
    assert again.read("m") == recs
    assert again.highest("m") == 4
    assert again.highest("other") == -1
    assert [m.id for m in again.machines()] == ["m", "other"]
    assert again.latest_snapshot("m").index == 4
    assert again.state_at("m", 4).clocks == b_clocks(recs)
    again.append("m", counter_records("m", 2, start=5))
    assert again.highest("m") == 6


def b_clocks(recs):
    from tracer.machine_time import MachineTime

    mt = MachineTime(4)
    for r in recs:
        mt.apply(r)
    return mt.clocks


def test_j10_reopen_keeps_highest_after_deleting_everything(store):
    b = store.open()
    if not b.persistent or not b.supports_delete:
        pytest.skip("needs a persistent backend that deletes")
    _filled(b, 3)
    b.delete_upto("m", 2)
    b.close()
    again = store.open()
    assert again.highest("m") == 2
    assert again.read("m") == []
    again.append("m", counter_records("m", 1, start=3))
    assert again.highest("m") == 3


def test_closed_backend_refuses_calls(backend):
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.read("m")


@pytest.mark.parametrize(
    ("bounds", "seqs"),
    [
        ((0, None, None), [0, 1, 2, 3, 4]),
        ((1, 3, None), [1, 2, 3]),  # inclusive both ends
        ((1, 3, 2), [1, 2]),
        ((0, None, 0), []),  # max 0: none
        ((3, 1, None), []),  # from > to: none
        ((2, 2, None), [2]),
        ((4, 10, 5), [4]),
        ((7, None, None), []),
    ],
)
def test_j08_bounded_replay_reports_highest(backend, bounds, seqs):
    _filled(backend, 5)
    records, highest = backend.replay("m", *bounds)
    assert [r.seq for r in records] == seqs
    assert highest == 4
    assert backend.replay("nobody") == ([], -1)


def test_j08_bad_replay_bounds(backend):
    with pytest.raises(BackendError, match="from_seq"):
        backend.replay("m", -1)
    with pytest.raises(BackendError, match="max_records"):
        backend.replay("m", 0, None, -1)


def test_schema_may_grow_under_stored_history(backend):
    recs = _filled(backend, 4)
    backend.active_between("m", "A", 0, 10**9)  # the index exists
    backend.put_machine(machine(states=("A", "B", "C", "D", "E")))
    more = [TransitionRecord("m", 4, Kind.EVENT, "grow", time=10**6, entered=(4,))]
    backend.append("m", more)
    assert backend.read("m") == recs + more
    assert backend.state_at("m", 4).clocks[4] == 1
    assert backend.active_between("m", "E", 10**6, 10**6 + 1)
    assert backend.to_time_record(more[0]).diff == 1
