"""The diff model: what changed in one machine between two records (a mark and the cursor).

Plain Python with no UI. ``StateDiff`` compares the configuration after record ``base``
with the one after record ``target`` (``base < target``; ``base = -1`` is the empty
history): states entered, exited, re-entered or visited, every clock that moved, the
records in between (``(base, target]``: their count and first names) and the time elapsed.
Only the two clock vectors and a few records are read, however far apart the two are.
"""

from __future__ import annotations

import pprint
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aminspect.session import Outcome, format_duration, outcome_of
from backends.base import Backend
from tracer.records import Schema, TransitionRecord

__all__ = [
    "HEAD",
    "SCAN_LIMIT",
    "ClockChange",
    "StateDiff",
    "diff_lines",
    "format_elapsed",
    "load_diff",
    "state_diff",
]

HEAD = 6  # names of the first records in between shown
SCAN_LIMIT = 4096  # up to this many records in between, errors and refusals are counted too


@dataclass(frozen=True, slots=True)
class ClockChange:
    """One state's clock at both ends."""

    index: int
    name: str
    old: int
    new: int

    @property
    def kind(self) -> str:
        """``entered``, ``exited``, ``re-entered`` (active at both ends) or ``visited``."""
        a, b = self.old & 1, self.new & 1
        if not a and b:
            return "entered"
        if a and not b:
            return "exited"
        return "re-entered" if a else "visited"


@dataclass(frozen=True, slots=True)
class StateDiff:
    """What differs between the configuration after ``base`` and after ``target``.

    ``marked`` is the seq the user marked (``base`` or ``target``), None for a diff
    against the previous record.
    """

    machine_id: str
    base: int
    target: int
    marked: int | None
    changes: tuple[ClockChange, ...]
    between: int  # records in (base, target]
    head: tuple[str, ...]  # names of the first records in between
    errors: int | None  # among the records in between (None: too many to scan)
    refused: int | None
    elapsed: int | None  # ns from base's record to target's (None when base is -1)
    target_record: TransitionRecord | None

    def names(self, kind: str) -> list[str]:
        return [c.name for c in self.changes if c.kind == kind]

    @property
    def entered(self) -> list[str]:
        return self.names("entered")

    @property
    def exited(self) -> list[str]:
        return self.names("exited")


def state_diff(
    schema: Schema,
    machine_id: str,
    base: int,
    target: int,
    before: Sequence[int],
    after: Sequence[int],
    between: Sequence[TransitionRecord],
    *,
    total_between: int | None = None,
    base_time: int | None = None,
    target_record: TransitionRecord | None = None,
    marked: int | None = None,
) -> StateDiff:
    """The diff of two clock vectors (pure).

    Args:
        schema: the machine's schema (for state names).
        machine_id: the machine.
        base: the earlier seq (-1 for the empty history).
        target: the later seq.
        before: clocks after ``base``.
        after: clocks after ``target``.
        between: records in ``(base, target]`` from ``base + 1``: all of them, or the
            first ones when ``total_between`` is given.
        total_between: how many records are in between when ``between`` holds only the
            first ones (errors and refusals are then not counted).
        base_time: the time of record ``base`` (None for ``-1``).
        target_record: record ``target`` (default: the last of ``between`` when it is).
        marked: the marked seq, if any.

    Returns:
        The diff.
    """
    changes = []
    for i in range(len(schema)):
        old = before[i] if i < len(before) else 0
        new = after[i] if i < len(after) else 0
        if old != new:
            changes.append(ClockChange(i, schema.states[i].name, old, new))
    complete = total_between is None
    if target_record is None and between and between[-1].seq == target:
        target_record = between[-1]
    errors = refused = None
    if complete:
        outcomes = [outcome_of(r) for r in between]
        errors = sum(1 for o in outcomes if o is Outcome.ERROR)
        refused = sum(1 for o in outcomes if o is Outcome.REJECTED)
    elapsed = None
    if base_time is not None and target_record is not None:
        elapsed = target_record.time - base_time
    return StateDiff(
        machine_id=machine_id,
        base=base,
        target=target,
        marked=marked,
        changes=tuple(changes),
        between=len(between) if complete else int(total_between or 0),
        head=tuple(r.name or r.kind for r in between[:HEAD]),
        errors=errors,
        refused=refused,
        elapsed=elapsed,
        target_record=target_record,
    )


ClocksAt = Callable[[str, int], Sequence[int]]


def load_diff(
    backend: Backend,
    schema: Schema,
    machine_id: str,
    cursor: int,
    mark: int | None,
    clocks_at: ClocksAt,
) -> StateDiff:
    """I/O: the diff between the mark and the cursor, or the cursor and the record before it.

    Reads two clock vectors (``clocks_at``: the session's cache or ``state_at``), the two
    end records and at most ``SCAN_LIMIT`` records in between.

    Args:
        backend: where the history is.
        schema: the machine's schema.
        machine_id: the machine.
        cursor: the cursor's seq.
        mark: the marked seq, or None.
        clocks_at: ``f(machine_id, seq) -> clocks after seq`` (zeros for -1).

    Returns:
        The diff, ``base < target`` whichever of the two comes first.

    Raises:
        BackendError: a read failed.
    """
    marked = None if mark is None or mark == cursor else mark
    if marked is None:
        base, target = cursor - 1, cursor
    else:
        base, target = min(marked, cursor), max(marked, cursor)
    before = clocks_at(machine_id, base)
    after = clocks_at(machine_id, target)
    total = target - base
    total_between: int | None = None
    if total <= SCAN_LIMIT:
        between = backend.read(machine_id, base + 1, target + 1)
        target_rec = between[-1] if between and between[-1].seq == target else None
    else:
        between = backend.read(machine_id, base + 1, base + 1 + HEAD)
        last = backend.read(machine_id, target, target + 1)
        target_rec = last[0] if last else None
        total_between = total
    base_time = None
    if base >= 0:
        rec = backend.read(machine_id, base, base + 1)
        base_time = rec[0].time if rec else None
    return state_diff(
        schema,
        machine_id,
        base,
        target,
        before,
        after,
        between,
        total_between=total_between,
        base_time=base_time,
        target_record=target_rec,
        marked=marked,
    )


def format_elapsed(ns: int | None) -> str:
    """Elapsed wall time: ``-`` when unknown, else like ``format_duration`` (``0`` for none)."""
    if ns is None:
        return "-"
    if ns == 0:
        return "0"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns >= 60 * 10**9:  # minutes and hours read better than "748s"
        minutes, sec = divmod(ns // 10**9, 60)
        hours, minutes = divmod(minutes, 60)
        return sign + (f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s")
    return sign + format_duration(ns)


def diff_lines(diff: StateDiff) -> list[tuple[str, str]]:
    """The diff as labelled lines for the diff panel: (label, value)."""
    if diff.marked is None:
        what = f"seq {diff.base} → {diff.target} (previous record; b marks one)"
    else:
        a = "mark" if diff.marked == diff.base else "cursor"
        b = "mark" if diff.marked == diff.target else "cursor"
        what = f"seq {diff.base} ({a}) → {diff.target} ({b})"
    lines = [("between", what)]
    lines.append(("entered", ", ".join(diff.entered) or "-"))
    lines.append(("exited", ", ".join(diff.exited) or "-"))
    lines.append(("elapsed", format_elapsed(diff.elapsed)))
    names = ", ".join(diff.head)
    if diff.between > len(diff.head):
        names += f", … (+{diff.between - len(diff.head):,})"
    events = f"{diff.between:,} record{'s' if diff.between != 1 else ''}"
    if names:
        events += f": {names}"
    lines.append(("events", events))
    if diff.errors is not None and (diff.errors or diff.refused):
        lines.append(("outcomes", f"{diff.errors} error(s), {diff.refused} not accepted"))
    # active (or inactive) at both ends, but exited and entered again (or visited) between
    if diff.names("re-entered"):
        lines.append(("again", ", ".join(diff.names("re-entered"))))
    if diff.names("visited"):
        lines.append(("visited", ", ".join(diff.names("visited"))))
    clocks = ", ".join(f"{c.name} {c.old}→{c.new}" for c in diff.changes)
    lines.append(("clocks", clocks or "no change"))
    rec = diff.target_record
    if rec is not None:
        lines.append(("took", format_duration(rec.duration)))
        if rec.args is not None:
            lines.append(("args", pprint.pformat(rec.args, width=60, compact=True)))
    return lines
