"""Machine time: a clock per state, derived from transition records.

Entering a state adds 1 to its clock and exiting adds 1, so a state is active exactly when
its clock is odd; a state exited and re-entered in one record gains 2. The sum of all clocks
counts state changes and never decreases. Clocks are always derived from records, never
taken from the wire.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tracer.records import RESET_KINDS, Schema, TransitionRecord, transition_id

__all__ = ["InconsistentRecord", "MachineTime", "TimeRecord", "time_records"]


class InconsistentRecord(ValueError):
    """A record exits a state that is not active or enters one that already is."""


class MachineTime:
    """The clock vector of one machine, advanced record by record."""

    __slots__ = ("clocks", "tracked")

    def __init__(
        self,
        size: int,
        clocks: Sequence[int] | None = None,
        tracked: Sequence[int] = (),
    ) -> None:
        self.clocks: list[int] = list(clocks) if clocks is not None else [0] * size
        if len(self.clocks) != size:
            raise ValueError(f"expected {size} clocks, got {len(self.clocks)}")
        self.tracked: tuple[int, ...] = tuple(tracked)

    @classmethod
    def for_schema(cls, schema: Schema, tracked_states: Iterable[str] = ()) -> MachineTime:
        return cls(len(schema), tracked=[schema.index(n) for n in tracked_states])

    def copy(self) -> MachineTime:
        return MachineTime(len(self.clocks), self.clocks, self.tracked)

    def is_active(self, i: int) -> bool:
        return self.clocks[i] & 1 == 1

    def active(self) -> frozenset[int]:
        return frozenset(i for i, c in enumerate(self.clocks) if c & 1)

    @property
    def sum(self) -> int:
        return sum(self.clocks)

    @property
    def tracked_sum(self) -> int:
        clocks = self.clocks
        return sum(clocks[i] for i in self.tracked)

    def changes(self, record: TransitionRecord) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The (exited, entered) indexes this record applies to the current clocks.

        For reset kinds (init, restore, gap) they are computed from the configuration the
        record carries; for every other kind they are the record's own lists.
        """
        if record.kind in RESET_KINDS:
            target = set(record.entered)
            clocks = self.clocks
            exited = tuple(i for i, c in enumerate(clocks) if c & 1 and i not in target)
            entered = tuple(i for i in sorted(target) if not clocks[i] & 1)
            return exited, entered
        return tuple(record.exited), tuple(record.entered)

    def apply(self, record: TransitionRecord, *, strict: bool = True) -> None:
        """Advance the clocks by one record.

        Raises:
            InconsistentRecord: when ``strict`` and the record exits an inactive state,
                enters an active one, or names an index outside the schema.
        """
        exited, entered = self.changes(record)
        clocks = self.clocks
        n = len(clocks)
        for i in exited:
            if strict and not (0 <= i < n and clocks[i] & 1):
                raise InconsistentRecord(
                    f"{record.machine_id} seq {record.seq}: exits state {i}, which is not active"
                )
            clocks[i] += 1
        for i in entered:
            if strict and not (0 <= i < n and not clocks[i] & 1):
                raise InconsistentRecord(
                    f"{record.machine_id} seq {record.seq}: enters state {i}, which is active"
                )
            clocks[i] += 1


@dataclass(frozen=True, slots=True)
class TimeRecord:
    """Machine time after one record, with the derived sums and diffs."""

    transition_id: str
    seq: int
    kind: str
    mach_tick: int
    time: int  # UTC ns
    sum: int  # sum of all clocks after the record
    tracked_sum: int  # sum of the tracked states' clocks after the record
    diff: int  # sum gained by this record
    tracked_diff: int  # tracked sum gained by this record
    record_diff: int  # sum gained since the previous record given (or the previous seq)
    tracked: tuple[int, ...]  # tracked clocks after the record
    tracked_clock_diff: tuple[int, ...]  # per tracked state, clock gained by this record


def time_records(
    schema: Schema,
    records: Iterable[TransitionRecord],
    *,
    tracked_states: Iterable[str] = (),
    start: MachineTime | None = None,
) -> Iterator[TimeRecord]:
    """Derive a TimeRecord for each record, replaying from ``start`` (zero clocks by default).

    ``record_diff`` is measured against the previous record yielded, so it differs from
    ``diff`` only when the input skips records.
    """
    mt = start.copy() if start is not None else MachineTime.for_schema(schema, tracked_states)
    if start is not None and tracked_states:
        mt.tracked = tuple(schema.index(n) for n in tracked_states)
    previous_sum: int | None = None
    for rec in records:
        before_sum = mt.sum
        before_tracked = [mt.clocks[i] for i in mt.tracked]
        mt.apply(rec)
        total = mt.sum
        tracked = tuple(mt.clocks[i] for i in mt.tracked)
        yield TimeRecord(
            transition_id=transition_id(rec.machine_id, rec.mach_tick, rec.seq),
            seq=rec.seq,
            kind=rec.kind,
            mach_tick=rec.mach_tick,
            time=rec.time,
            sum=total,
            tracked_sum=sum(tracked),
            diff=total - before_sum,
            tracked_diff=sum(tracked) - sum(before_tracked),
            record_diff=total - (before_sum if previous_sum is None else previous_sum),
            tracked=tracked,
            tracked_clock_diff=tuple(a - b for a, b in zip(tracked, before_tracked, strict=True)),
        )
        previous_sum = total
