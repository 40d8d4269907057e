"""Divergence check: replay a recording against the current machine definition.

The check walks the recorded history (the recorded configuration before each record)
and asks the *current* definition, declaratively, whether it would do the same: for an
accepted event record, some declared transition with that event must start from a state
that was active and lead to a state the record entered (or, for an internal transition,
enter nothing). The first record where that fails is reported, with the reason:

- ``missing-state``: the record names a state the definition no longer has;
- ``not-accepted``: the definition has no transition for the event from the active states;
- ``different-target``: it has one, but to other states than the record entered.

The check is pure (D-09): no user callback runs, conditions are not evaluated (a
recorded transition is matched if *some* declared transition could have taken it), and
nothing is traced or written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aminspect.export import declared_for, iter_history
from aminspect.resurrect import schema_of
from backends import Backend
from tracer.records import RESET_KINDS, Kind, Schema, TransitionRecord

__all__ = ["Divergence", "DivergenceReport", "check", "check_schema_history"]


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first record the current definition would not reproduce."""

    machine_id: str
    seq: int
    name: str
    reason: str  # "missing-state", "not-accepted" or "different-target"
    active: tuple[str, ...]  # active states before the record
    recorded: tuple[str, ...]  # states the record entered
    expected: tuple[str, ...]  # destinations the current definition declares for the event

    def message(self) -> str:
        """One line describing the divergence."""
        where = f"{self.machine_id} seq {self.seq}"
        active = ", ".join(self.active) or "(nothing active)"
        if self.reason == "missing-state":
            return f"{where}: {self.name!r} involves states the machine no longer has: " + (
                ", ".join(self.recorded)
            )
        if self.reason == "not-accepted":
            return f"{where}: event {self.name!r} is no longer accepted in {active}"
        return (
            f"{where}: event {self.name!r} in {active} now goes to "
            f"{', '.join(self.expected) or '(nowhere)'}; recorded: "
            f"{', '.join(self.recorded) or '(no change)'}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine_id,
            "seq": self.seq,
            "name": self.name,
            "reason": self.reason,
            "active": list(self.active),
            "recorded": list(self.recorded),
            "expected": list(self.expected),
            "message": self.message(),
        }


@dataclass(frozen=True, slots=True)
class DivergenceReport:
    """The result of a check: ``divergence`` is None when the definition agrees."""

    machine_id: str
    checked: int  # records examined
    events: int  # event records compared with the definition
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine_id": self.machine_id,
            "checked": self.checked,
            "events": self.events,
            "ok": self.ok,
            "divergence": None if self.divergence is None else self.divergence.to_dict(),
        }


def check(
    definition: Any,
    source: Backend,
    machine_id: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> DivergenceReport:
    """Replay ``machine_id``'s history against the current definition.

    Args:
        definition: a live machine built from the current code (a ``transitions``
            machine, a python-statemachine machine or class, a ManualMachine) or a
            Schema. It is only inspected, never run.
        source: the backend holding the recording.
        machine_id: the recorded machine.
        progress: called with the number of records processed, now and then.

    Returns:
        A DivergenceReport; ``report.divergence`` is the first record that differs.

    Raises:
        UnknownMachine: the source has no such machine.
        ResurrectError: the definition is not a machine aminspect knows.
    """
    current = definition if isinstance(definition, Schema) else schema_of(definition)
    return check_schema_history(current, source, machine_id, progress=progress)


def check_schema_history(
    current: Schema,
    source: Backend,
    machine_id: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> DivergenceReport:
    """``check`` against a Schema (what the definition declares)."""
    machine = source.get_machine(machine_id)
    recorded = machine.schema
    names = recorded.names
    checked = events = 0
    for rec, before, exited, entered in iter_history(source, machine):
        checked += 1
        if progress is not None and checked % 1024 == 0:
            progress(1024)
        found = _compare(current, recorded, rec, before, exited, entered)
        if rec.kind == Kind.EVENT and rec.accepted:
            events += 1
        if found is not None:
            reason, expected = found
            return DivergenceReport(
                machine_id,
                checked,
                events,
                Divergence(
                    machine_id,
                    rec.seq,
                    rec.name,
                    reason,
                    tuple(names[i] for i in sorted(before)),
                    tuple(names[i] for i in entered)
                    if reason != "missing-state"
                    else tuple(expected),
                    tuple(expected) if reason != "missing-state" else (),
                ),
            )
    if progress is not None:
        progress(checked % 1024)
    return DivergenceReport(machine_id, checked, events, None)


def _compare(
    current: Schema,
    recorded: Schema,
    rec: TransitionRecord,
    before: frozenset[int],
    exited: tuple[int, ...],
    entered: tuple[int, ...],
) -> tuple[str, list[str]] | None:
    names = recorded.names
    involved = set(exited) | set(entered)
    if rec.kind in RESET_KINDS:
        involved = set(entered) if rec.kind != Kind.GAP else set()
    missing = [names[i] for i in sorted(involved) if current.get_index(names[i]) is None]
    if missing:
        return "missing-state", missing
    if rec.kind != Kind.EVENT or not rec.accepted or rec.error is not None:
        return None  # only accepted events say what the definition must do
    # Map the recorded indexes to the current schema by name (order may have changed).
    idx = current.index
    before_now = frozenset(idx(names[i]) for i in before if current.get_index(names[i]) is not None)
    entered_now = [idx(names[i]) for i in entered]
    after_now = (before_now - {idx(names[i]) for i in exited}) | set(entered_now)
    if declared_for(current, rec.name, before_now, entered_now, after_now):
        return None
    before_names = {names[i] for i in before}
    options = sorted(
        {
            t.dest if t.dest is not None else "(internal)"
            for t in current.transitions
            if t.event == rec.name and t.source in before_names
        }
    )
    if not options:
        return "not-accepted", []
    return "different-target", options
