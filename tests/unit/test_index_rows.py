"""MachineIndex.extend_rows (column by column for batches without reset kinds) equals extend."""

from __future__ import annotations

import random

import pytest

from backends.query import MachineIndex
from tests.contract.helpers import STATES, machine, random_history
from tracer.codec import transition_to_list
from tracer.records import RESET_KINDS, Kind, TransitionRecord, is_refusal


def _same(a: MachineIndex, b: MachineIndex) -> None:
    assert a.to_bytes() == b.to_bytes()
    assert a.monotonic == b.monotonic
    assert a.clocks.clocks == b.clocks.clocks
    assert a.name_ids == b.name_ids
    assert a.refusals == b.refusals


def _with_refusals(records: list[TransitionRecord], rnd: random.Random) -> list[TransitionRecord]:
    """The history with errors of refusal types and others, accepted or not (a refusal
    type's error on an accepted record is an error, not a refusal)."""
    for r in records:
        roll = rnd.random()
        if roll < 0.15:
            r.error = (rnd.choice(("MachineError", "TransitionNotAllowed")), "no")
        elif roll < 0.2:
            r.error = ("KeyError", "x")
        if r.error is not None and rnd.random() < 0.7:
            r.accepted = False
    return records


def _without_resets(records: list[TransitionRecord]) -> list[TransitionRecord]:
    """The history with its reset records turned into events entering nothing new."""
    out = []
    for r in records:
        if r.kind in RESET_KINDS and r.seq > 0:
            r = TransitionRecord(r.machine_id, r.seq, Kind.EVENT, r.name, time=r.time)
        out.append(r)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("monotonic", [True, False])
@pytest.mark.parametrize("resets", [True, False])
@pytest.mark.parametrize("refusals", [True, False])
def test_extend_rows_equals_extend(
    seed: int, monotonic: bool, resets: bool, refusals: bool
) -> None:
    rnd = random.Random(seed)
    history = random_history("m", 600, rnd, monotonic=monotonic)
    if not resets:
        history = _without_resets(history)
    if refusals:
        history = _with_refusals(history, rnd)
    schema = machine().schema
    size = len(STATES)
    by_rows = MachineIndex(size, 0, [0] * size)
    by_records = MachineIndex(size, 0, [0] * size)
    pos = 0
    while pos < len(history):
        batch = history[pos : pos + rnd.choice((1, 2, 7, 64, 200))]
        by_rows.extend_rows("m", [transition_to_list(r) for r in batch], schema)
        by_records.extend(batch, schema)
        pos += len(batch)
        _same(by_rows, by_records)
    want = [r.seq for r in history if is_refusal(r.error, r.accepted)]
    assert list(by_rows.refusals) == want
    assert bool(want) == refusals
    columns = by_rows.columns(100, 400)
    assert columns.refused is not None
    assert list(columns.refused) == [s for s in want if 100 <= s < 400]
    again = MachineIndex.from_bytes(by_rows.to_bytes(), size)
    assert again is not None and again.refusals == by_rows.refusals


def test_extend_rows_uniform_batches() -> None:
    """One name, one kind, all accepted, one state in and out: the ingest server's batch."""
    schema = machine().schema
    size = len(STATES)
    records = [
        TransitionRecord(
            "m", s, Kind.EVENT, "go", time=1000 + s, exited=(s % 3,), entered=((s + 1) % 3,)
        )
        for s in range(1, 3000)
    ]
    first = TransitionRecord("m", 0, Kind.INIT, "init", time=1000, entered=(0,))
    by_rows = MachineIndex(size, 0, [0] * size)
    by_records = MachineIndex(size, 0, [0] * size)
    for batch in ([first], records[:1000], records[1000:1001], records[1001:]):
        by_rows.extend_rows("m", [transition_to_list(r) for r in batch], schema)
        by_records.extend(batch, schema)
        _same(by_rows, by_records)
    # Times going backwards across and within batches turn the monotonic flag off.
    back = [
        TransitionRecord("m", 3000 + i, Kind.EVENT, "go", time=t, exited=(0,), entered=(1,))
        for i, t in enumerate((5000, 10, 20))
    ]
    for batch in (back[:1], back[1:]):
        by_rows.extend_rows("m", [transition_to_list(r) for r in batch], schema)
        by_records.extend(batch, schema)
    _same(by_rows, by_records)
    assert not by_rows.monotonic


@pytest.mark.parametrize("with_init", [False, True])
def test_extend_rows_time_out_of_range_changes_nothing(with_init: bool) -> None:
    schema = machine().schema
    size = len(STATES)
    index = MachineIndex(size, 0, [0] * size)
    rows = [transition_to_list(TransitionRecord("m", 0, Kind.EVENT, "go", time=5, entered=(1,)))]
    if with_init:  # a reset row first: the rows before the bad one go another way
        rows = [
            transition_to_list(TransitionRecord("m", 0, Kind.INIT, "init", time=1, entered=(0,))),
            transition_to_list(
                TransitionRecord("m", 1, Kind.EVENT, "go", time=5, exited=(0,), entered=(1,))
            ),
            transition_to_list(
                TransitionRecord("m", 2, Kind.EVENT, "go", time=6, exited=(1,), entered=(0,))
            ),
        ]
    before = index.to_bytes()
    rows[-1][2] = 1 << 63
    with pytest.raises(OverflowError):
        index.extend_rows("m", rows, schema)
    assert index.to_bytes() == before


def test_refusals_of_every_batch_shape() -> None:
    """Refusals in batches without errors, with errors only, with resets, and error
    values a refusal test cannot judge (no type): the same from rows and records."""
    schema = machine().schema
    size = len(STATES)
    odd: list[object] = [(), "MachineError", ("MachineError",), (["x"], "unhashable")]

    def rec(seq: int, accepted: object = True, error: object = None) -> TransitionRecord:
        r = TransitionRecord("m", seq, Kind.EVENT, "go", time=seq, exited=(0,), entered=(0,))
        r.accepted = accepted  # type: ignore[assignment]
        r.error = error  # type: ignore[assignment]
        return r

    batches = [
        [TransitionRecord("m", 0, Kind.INIT, "init", time=0, entered=(0,))],
        [rec(s) for s in range(1, 50)],  # the common batch: nothing to test
        [rec(50, False, ("MachineError", "no")), rec(51, True, ("MachineError", "no"))],
        [rec(52, False, ("TransitionNotAllowed", "no")), rec(53, False, ("KeyError", "x"))],
        [rec(54, 0, ("MachineError", "no")), rec(55, None, ("MachineError", "no"))],
        [rec(56, False)],  # rejected without an error
        [rec(57 + i, False, e) for i, e in enumerate(odd)],
        [
            rec(61, False, ("MachineError", "no")),
            TransitionRecord("m", 62, Kind.GAP, "gap", time=62, entered=(1,)),
            rec(63, False, ("TransitionNotAllowed", "no")),
        ],
    ]

    def row(r: TransitionRecord) -> list[object]:
        error, r.error = r.error, None  # odd errors do not encode: put in the row as is
        out = transition_to_list(r)
        r.error = error
        out[8] = error
        return out

    by_rows = MachineIndex(size, 0, [0] * size)
    by_records = MachineIndex(size, 0, [0] * size)
    for batch in batches:
        by_rows.extend_rows("m", [row(r) for r in batch], schema)
        by_records.extend(batch, schema)
        _same(by_rows, by_records)
    # 54 and 55: ``not accepted`` holds; 57, 58, 60: no error type in REFUSALS to find
    assert list(by_rows.refusals) == [50, 52, 54, 55, 59, 61, 63]
