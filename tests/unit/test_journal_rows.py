"""encode_batch_rows (the ingest path, column by column for uniform batches) writes exactly
the bytes encode_batch writes for the same records."""

from __future__ import annotations

import random

import pytest

from backends import _framing as fr
from tests.contract.helpers import random_history
from tracer.codec import transition_to_list
from tracer.records import Kind, TransitionRecord


def _rows(records: list[TransitionRecord]) -> list[list[object]]:
    return [transition_to_list(r) for r in records]


@pytest.mark.parametrize("seed", range(6))
def test_rows_frame_equals_records_frame_on_random_histories(seed: int) -> None:
    rnd = random.Random(seed)
    history = random_history("m", 400, rnd)
    pos = 0
    while pos < len(history):
        batch = history[pos : pos + rnd.choice((1, 2, 9, 60, 200))]
        assert fr.encode_batch_rows("m", _rows(batch)) == fr.encode_batch("m", batch)
        pos += len(batch)


def _uniform(n: int, names: tuple[str, ...], tick: int = 3) -> list[TransitionRecord]:
    return [
        TransitionRecord(
            "m",
            s,
            Kind.EVENT,
            names[s % len(names)],
            tick,
            1_000 + 7 * s,
            2_500,
            exited=(s % 3,),
            entered=((s + 1) % 3,),
        )
        for s in range(n)
    ]


@pytest.mark.parametrize("names", [("go",), ("go", "stop", "tick")])
def test_rows_frame_equals_records_frame_on_uniform_batches(names: tuple[str, ...]) -> None:
    records = _uniform(500, names)
    for lo, hi in ((0, 1), (0, 2), (3, 500), (100, 101)):
        batch = records[lo:hi]
        assert fr.encode_batch_rows("m", _rows(batch)) == fr.encode_batch("m", batch)
        assert fr.decode_batch(memoryview(fr.encode_batch_rows("m", _rows(batch)))[8:]) == batch


def test_one_field_off_its_default_takes_the_row_path() -> None:
    """A batch where a single record differs (tick, accepted, args, error, links) is not
    the uniform batch: its frame still equals encode_batch's."""
    base = _uniform(50, ("go",))
    changes = [
        {"mach_tick": 4},
        {"accepted": False},
        {"args": {"k": 1}},
        {"error": ("E", "boom")},
        {"parent_seq": 3},
        {"source": ("other", 2)},
    ]
    for change in changes:
        batch = list(base)
        r = batch[20]
        fields = {
            "machine_id": r.machine_id,
            "seq": r.seq,
            "kind": r.kind,
            "name": r.name,
            "mach_tick": r.mach_tick,
            "time": r.time,
            "duration": r.duration,
            "exited": r.exited,
            "entered": r.entered,
            **change,
        }
        batch[20] = TransitionRecord(**fields)  # type: ignore[arg-type]
        assert fr.encode_batch_rows("m", _rows(batch)) == fr.encode_batch("m", batch), change
