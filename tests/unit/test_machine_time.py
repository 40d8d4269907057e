"""Machine time: clocks derived from records (SPEC §3.2), checked by properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer import Kind, MachineTime, Schema, StateSpec, TransitionRecord, time_records
from tracer.codec import decode_transition, encode_transition
from tracer.machine_time import InconsistentRecord
from tracer.records import RESET_KINDS

NAMES = ["A", "B", "C", "D", "E", "F", "G"]


def rec(seq: int, kind: str = Kind.EVENT, exited=(), entered=()) -> TransitionRecord:
    return TransitionRecord("m", seq, kind, "e", exited=tuple(exited), entered=tuple(entered))


def test_enter_exit_and_reenter_counts():
    mt = MachineTime(3)
    mt.apply(rec(0, Kind.INIT, entered=[0]))
    assert mt.clocks == [1, 0, 0]
    mt.apply(rec(1, exited=[0], entered=[1]))
    assert mt.clocks == [2, 1, 0]
    mt.apply(rec(2, exited=[1], entered=[1]))  # exit and re-enter in one record
    assert mt.clocks == [2, 3, 0]
    assert mt.active() == {1}
    assert mt.sum == 5


def test_reset_kinds_set_the_configuration():
    mt = MachineTime(3, clocks=[1, 2, 1])
    mt.apply(rec(0, Kind.GAP, entered=[1, 2]))
    assert mt.clocks == [2, 3, 1]  # 0 exited, 1 entered, 2 unchanged


def test_compound_state_active_while_a_child_is():
    schema = Schema((StateSpec("P"), StateSpec("P_a", "P"), StateSpec("P_b", "P"), StateSpec("Q")))
    assert schema.with_ancestors([1]) == {0, 1}
    mt = MachineTime.for_schema(schema)
    mt.apply(rec(0, Kind.INIT, entered=schema.with_ancestors([1])))
    mt.apply(rec(1, exited=[1], entered=[2]))  # P stays active: its clock does not move
    assert mt.clocks == [1, 2, 1, 0]
    mt.apply(rec(2, exited=[2, 0], entered=[3]))
    assert not mt.is_active(0) and mt.is_active(3)


def test_inconsistent_records_are_named():
    mt = MachineTime(2)
    with pytest.raises(InconsistentRecord, match="seq 0: exits state 1, which is not active"):
        mt.apply(rec(0, exited=[1]))
    mt.apply(rec(0, entered=[0]))
    with pytest.raises(InconsistentRecord, match="enters state 0, which is active"):
        mt.apply(rec(1, entered=[0]))
    with pytest.raises(InconsistentRecord):
        mt.apply(rec(1, entered=[5]))


@st.composite
def histories(draw):
    """A state count and a valid record sequence over it, with the expected clocks."""
    size = draw(st.integers(1, len(NAMES)))
    active: set[int] = set()
    clocks = [0] * size
    records = []
    expected = []
    for seq in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from([Kind.EVENT, Kind.EVENT, Kind.EVENT, Kind.INIT, Kind.GAP]))
        if kind in RESET_KINDS:
            target = set(draw(st.sets(st.integers(0, size - 1))))
            for i in range(size):
                if (i in active) != (i in target):
                    clocks[i] += 1
            active = target
            r = rec(seq, kind, entered=sorted(target))
        else:
            exited = draw(st.sets(st.sampled_from(sorted(active)))) if active else set()
            free = [i for i in range(size) if i not in active or i in exited]
            entered = draw(st.sets(st.sampled_from(free))) if free else set()
            for i in exited:
                clocks[i] += 1
            for i in entered:
                clocks[i] += 1
            active = (active - exited) | entered
            r = rec(seq, kind, exited=sorted(exited), entered=sorted(entered))
        r.time = 1_700_000_000_000_000_000 + seq
        records.append(r)
        expected.append(list(clocks))
    return size, records, expected


@settings(max_examples=100, deadline=None)
@given(histories())
def test_active_exactly_when_clock_is_odd(history):
    size, records, _ = history
    mt = MachineTime(size)
    active: set[int] = set()
    for r in records:
        exited, entered = mt.changes(r)
        active = (active - set(exited)) | set(entered)
        mt.apply(r)
        assert mt.active() == active
        assert all((c % 2 == 1) == (i in active) for i, c in enumerate(mt.clocks))


@settings(max_examples=100, deadline=None)
@given(histories())
def test_replay_from_zero_reproduces_the_clocks(history):
    size, records, expected = history
    mt = MachineTime(size)
    for r, clocks in zip(records, expected, strict=True):
        mt.apply(r)
        assert mt.clocks == clocks


@settings(max_examples=100, deadline=None)
@given(histories(), st.data())
def test_sums_never_decrease_and_diffs_add_up(history, data):
    size, records, _ = history
    tracked = data.draw(st.lists(st.sampled_from(NAMES[:size]), unique=True))
    schema = Schema.flat(NAMES[:size])
    previous = 0
    previous_tracked = 0
    for tr in time_records(schema, records, tracked_states=tracked):
        assert tr.sum >= previous and tr.tracked_sum >= previous_tracked
        assert tr.diff == tr.sum - previous == tr.record_diff
        assert tr.tracked_diff == tr.tracked_sum - previous_tracked
        assert sum(tr.tracked_clock_diff) == tr.tracked_diff
        assert tr.transition_id == f"m/0/{tr.seq}"
        previous, previous_tracked = tr.sum, tr.tracked_sum


@settings(max_examples=100, deadline=None)
@given(histories())
def test_encode_decode_round_trips(history):
    _, records, _ = history
    for r in records:
        assert decode_transition(encode_transition(r)) == r
