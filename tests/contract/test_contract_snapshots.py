"""Snapshot contract (S-01..S-06) and state_at, on every registered backend.

Histories are counters (each record toggles state A), so an off-by-one in a snapshot
index changes the clocks and fails the test (S-02).
"""

from __future__ import annotations

import pytest

from backends.base import BackendError, Snapshot, UnknownMachine
from tests.contract.helpers import counter_records, machine
from tracer.machine_time import MachineTime


def replay(records, size=4, start=None):
    mt = MachineTime(size, start)
    for r in records:
        mt.apply(r)
    return mt.clocks


def test_s01_snapshot_at_k_covers_records_before_k(store):
    b = store.open(snapshot_every=4)
    b.put_machine(machine())
    recs = counter_records("m", 10)
    b.append("m", recs)
    snaps = b.snapshots("m")
    assert [s.index for s in snaps] == [0, 4, 8]
    for s in snaps:
        assert list(s.clocks) == replay(recs[: s.index])
        assert s.time == (recs[s.index - 1].time if s.index else 0)
    assert b.latest_snapshot("m").index == 8


def test_s01_snapshots_are_taken_across_batch_boundaries(store):
    b = store.open(snapshot_every=3)
    b.put_machine(machine())
    recs = counter_records("m", 10)
    for i in range(0, 10, 2):  # batches of 2 never line up with the interval
        b.append("m", recs[i : i + 2])
    assert [s.index for s in b.snapshots("m")] == [0, 3, 6, 9]
    for s in b.snapshots("m"):
        assert list(s.clocks) == replay(recs[: s.index])


def test_snapshot_every_zero_never_snapshots(store):
    b = store.open(snapshot_every=0)
    b.put_machine(machine())
    b.append("m", counter_records("m", 20))
    assert b.latest_snapshot("m") is None
    assert b.state_at("m", 19).clocks == replay(counter_records("m", 20))


def test_time_strategy_snapshots_when_the_clock_moves(store):
    now = [0.0]
    b = store.open(snapshot_every=0, snapshot_seconds=1.0, snapshot_clock=lambda: now[0])
    b.put_machine(machine())
    recs = counter_records("m", 6)
    b.append("m", recs[:2])
    assert b.latest_snapshot("m") is None
    now[0] = 1.0
    b.append("m", recs[2:4])  # asked at index 2: triggers; at 3: resets, no
    now[0] = 1.5
    b.append("m", recs[4:5])
    now[0] = 2.0
    b.append("m", recs[5:6])
    assert [s.index for s in b.snapshots("m")] == [2, 5]
    assert list(b.latest_snapshot("m").clocks) == replay(recs[:5])


# The five TestRecovery scenarios of protoactor's plugin_test, with counters (S-02).
@pytest.mark.parametrize(
    ("every", "first", "second"),
    [
        (0, 0, 0),  # empty
        (4, 4, 0),  # snapshot only (a snapshot at 0 and 4, nothing after)
        (3, 7, 2),  # snapshot + tail + new records
        (4, 9, 0),  # interval 4
        (0, 0, 2),  # two new events, no snapshot
    ],
)
def test_s02_round_trip_state_before_equals_state_after(store, every, first, second):
    b = store.open(snapshot_every=every)
    b.put_machine(machine())
    recs = counter_records("m", first + second)
    if first:
        b.append("m", recs[:first])
    before = b.state_at("m", first - 1).clocks
    assert before == replay(recs[:first])
    if b.persistent:
        b.close()
        b = store.open(snapshot_every=every)
    assert b.state_at("m", first - 1).clocks == before
    # resurrection = latest snapshot + the records after it
    events = list(b.recover("m"))
    snap = events[0].snapshot if events and events[0].kind == "snapshot" else None
    tail = [e.record for e in events if e.kind == "record"]
    assert replay(tail, start=None if snap is None else snap.clocks) == before
    if second:
        b.append("m", recs[first:])
        assert b.state_at("m", first + second - 1).clocks == replay(recs)


def test_s03_every_snapshot_plus_tail_equals_full_replay(store):
    b = store.open(snapshot_every=3)
    b.put_machine(machine())
    recs = counter_records("m", 17)
    b.append("m", recs)
    full = replay(recs)
    for s in b.snapshots("m"):
        assert replay(b.read("m", s.index), start=s.clocks) == full
    for seq in range(-1, 17):
        assert b.state_at("m", seq).clocks == replay(recs[: seq + 1])


def test_s04_latest_is_highest_index_and_same_index_overwrites(store):
    b = store.open(snapshot_every=0)
    b.put_machine(machine())
    b.save_snapshot(Snapshot("m", 5, (1, 0, 0, 0)))
    b.save_snapshot(Snapshot("m", 2, (1, 1, 0, 0)))  # written last, lower index
    assert b.latest_snapshot("m").index == 5
    b.save_snapshot(Snapshot("m", 5, (3, 0, 0, 0), time=7))
    latest = b.latest_snapshot("m")
    assert (latest.index, latest.clocks, latest.time) == (5, (3, 0, 0, 0), 7)
    assert [s.index for s in b.snapshots("m")] == [2, 5]


def test_s05_delete_snapshots_is_inclusive_and_really_deletes(store):
    b = store.open(snapshot_every=0)
    b.put_machine(machine())
    for i in (1, 3, 5):
        b.save_snapshot(Snapshot("m", i, (i, 0, 0, 0)))
    b.delete_snapshots("m", 3)
    assert [s.index for s in b.snapshots("m")] == [5]
    b.delete_snapshots("m", 5)
    assert b.latest_snapshot("m") is None
    if b.persistent:
        b.close()
        again = store.open()
        assert again.latest_snapshot("m") is None
        assert again.snapshots("m") == []


def test_snapshots_are_per_machine(store):
    b = store.open(snapshot_every=2)
    for mid in ("a", "b"):
        b.put_machine(machine(mid))
    b.append("a", counter_records("a", 5))
    assert [s.index for s in b.snapshots("a")] == [0, 2, 4]
    assert b.snapshots("b") == []
    assert b.latest_snapshot("b") is None


@pytest.mark.parametrize(
    ("snapshot", "error", "message"),
    [
        (Snapshot("m", -1, (0, 0, 0, 0)), BackendError, "index"),
        (Snapshot("m", 1, (0, 0)), BackendError, "4 clocks"),
        (Snapshot("m", 1, (0, -1, 0, 0)), BackendError, "non-negative"),
        (Snapshot("ghost", 1, (0,)), UnknownMachine, "ghost"),
    ],
)
def test_bad_snapshots_are_clear_errors(backend, snapshot, error, message):
    backend.put_machine(machine())
    with pytest.raises(error, match=message):
        backend.save_snapshot(snapshot)


def test_s06_recovery_order_and_no_writes_while_recovering(store):
    b = store.open(snapshot_every=4)
    b.put_machine(machine())
    recs = counter_records("m", 6)
    b.append("m", recs)
    assert not b.recovering("m")
    events = b.recover("m")
    first = next(events)
    assert first.kind == "snapshot"
    assert first.snapshot.index == 4
    assert b.recovering("m")
    with pytest.raises(BackendError, match="recovering"):
        b.append("m", counter_records("m", 1, start=6))
    rest = list(events)
    assert [e.kind for e in rest] == ["record", "record", "complete"]
    assert [e.record.seq for e in rest[:2]] == [4, 5]
    assert rest[-1].highest == 5
    assert not b.recovering("m")
    b.append("m", counter_records("m", 1, start=6))


def test_state_at_bounds(backend):
    backend.put_machine(machine())
    backend.append("m", counter_records("m", 3))
    assert backend.state_at("m", -1).clocks == [0, 0, 0, 0]
    with pytest.raises(BackendError, match="highest is 2"):
        backend.state_at("m", 3)
    with pytest.raises(UnknownMachine):
        backend.state_at("ghost", 0)


def test_state_at_after_delete_uses_the_kept_snapshot(store):
    b = store.open(snapshot_every=0)
    if not b.supports_delete:
        pytest.skip("backend cannot delete")
    b.put_machine(machine())
    recs = counter_records("m", 9)
    b.append("m", recs)
    b.delete_upto("m", 4)
    assert b.latest_snapshot("m").index == 5
    for seq in range(4, 9):
        assert b.state_at("m", seq).clocks == replay(recs[: seq + 1])
    with pytest.raises(BackendError, match="deleted"):
        b.state_at("m", 2)
