"""MachineIndex.extend_rows (column by column for batches without reset kinds) equals extend."""

from __future__ import annotations

import random

import pytest

from backends.query import MachineIndex
from tests.contract.helpers import STATES, machine, random_history
from tracer.codec import transition_to_list
from tracer.records import RESET_KINDS, Kind, TransitionRecord


def _same(a: MachineIndex, b: MachineIndex) -> None:
    assert a.to_bytes() == b.to_bytes()
    assert a.monotonic == b.monotonic
    assert a.clocks.clocks == b.clocks.clocks
    assert a.name_ids == b.name_ids


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
def test_extend_rows_equals_extend(seed: int, monotonic: bool, resets: bool) -> None:
    rnd = random.Random(seed)
    history = random_history("m", 600, rnd, monotonic=monotonic)
    if not resets:
        history = _without_resets(history)
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
