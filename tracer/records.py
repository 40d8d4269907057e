"""The data model every layer speaks: schemas, machine records and transition records.

See ``docs/records.md`` for the field layout on the wire and on disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "REFUSALS",
    "RESET_KINDS",
    "Kind",
    "MachineRecord",
    "Schema",
    "StateSpec",
    "TransitionRecord",
    "TransitionSpec",
    "is_refusal",
    "transition_id",
]


class Kind(StrEnum):
    """What produced a transition record."""

    INIT = "init"  # the initial configuration was set
    EVENT = "event"  # a trigger / event was processed (accepted or not)
    FORCED = "forced"  # a direct state write (set_state, to_state, current_state_value)
    RESTORE = "restore"  # the machine was resurrected from its history
    ADD = "add"  # manual API: states added to the active set
    REMOVE = "remove"  # manual API: states removed from the active set
    SET = "set"  # manual API: the active set replaced
    GAP = "gap"  # records the tracer had to drop; carries the configuration after them


# Kinds whose ``entered`` is the whole configuration after the record: applying one
# exits every active state not in ``entered`` and enters the rest. This keeps the
# history consistent when what came before is unknown to the source (a fresh process
# appending to an old history, a resurrection, or records dropped by the tracer).
RESET_KINDS = frozenset({Kind.INIT, Kind.RESTORE, Kind.GAP})

# The exceptions a library raises to say "this event does not apply in this state". A
# record refused with one of them is an event that was not accepted (the exception is the
# reason), not a failure of the user's code. Here, not in the inspector, so the backends'
# query index can tell a refusal from an error without importing the inspector.
REFUSALS = frozenset({"MachineError", "TransitionNotAllowed"})


def is_refusal(error: Any, accepted: Any) -> bool:
    """Whether a record's outcome is a library's refusal rather than an error.

    Args:
        error: the record's ``error`` (``(type, message)`` or None).
        accepted: the record's ``accepted``.

    Returns:
        True when the record was not accepted and its error's type is in ``REFUSALS``.
    """
    return error is not None and not accepted and error[0] in REFUSALS


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One state of a schema. ``name`` is the full path (``"B_x"``, ``"shipping.packed"``)."""

    name: str
    parent: str | None = None
    initial: bool = False  # the initial state of the machine or of its parent
    final: bool = False
    parallel: bool = False  # its children are regions that are active together


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    """A declared transition. ``dest`` is None for internal transitions."""

    source: str
    event: str
    dest: str | None
    internal: bool = False


@dataclass(frozen=True, slots=True)
class Schema:
    """The ordered states of a machine; the order defines state indexes."""

    states: tuple[StateSpec, ...]
    transitions: tuple[TransitionSpec, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False, compare=False, hash=False)
    _parents: tuple[int | None, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index = {s.name: i for i, s in enumerate(self.states)}
        if len(index) != len(self.states):
            seen: set[str] = set()
            dupes = [s.name for s in self.states if s.name in seen or seen.add(s.name)]  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate state names in schema: {', '.join(dupes)}")
        parents: list[int | None] = []
        for s in self.states:
            if s.parent is not None and s.parent not in index:
                raise ValueError(f"state {s.name!r} names an unknown parent {s.parent!r}")
            parents.append(None if s.parent is None else index[s.parent])
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "_parents", tuple(parents))

    @classmethod
    def flat(cls, names: Iterable[str], initial: str | None = None) -> Schema:
        """A schema of top-level states, in the given order."""
        return cls(tuple(StateSpec(n, initial=(n == initial)) for n in names))

    def __len__(self) -> int:
        return len(self.states)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    def index(self, name: str) -> int:
        """The index of a state; raises KeyError naming the state when it is unknown."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown state {name!r}") from None

    def get_index(self, name: str) -> int | None:
        return self._index.get(name)

    def parent_of(self, i: int) -> int | None:
        return self._parents[i]

    def ancestors(self, i: int) -> list[int]:
        """Indexes of the parents of state ``i``, innermost first."""
        out = []
        p = self._parents[i]
        while p is not None:
            out.append(p)
            p = self._parents[p]
        return out

    def children(self, i: int | None) -> list[int]:
        """Indexes of the direct children of ``i`` (of the root when ``i`` is None)."""
        return [j for j, p in enumerate(self._parents) if p == i]

    def depth(self, i: int) -> int:
        return len(self.ancestors(i))

    def with_ancestors(self, leaves: Iterable[int]) -> frozenset[int]:
        """The active set implied by active leaves: each leaf plus every ancestor."""
        out: set[int] = set()
        for i in leaves:
            while i is not None and i not in out:
                out.add(i)
                i = self._parents[i]  # type: ignore[assignment]
        return frozenset(out)

    def to_dict(self) -> dict[str, Any]:
        return {
            "states": [[s.name, s.parent, s.initial, s.final, s.parallel] for s in self.states],
            "transitions": [[t.source, t.event, t.dest, t.internal] for t in self.transitions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        states = tuple(
            StateSpec(str(n), None if p is None else str(p), bool(i), bool(f), bool(par))
            for n, p, i, f, par in data["states"]
        )
        transitions = tuple(
            TransitionSpec(str(s), str(e), None if d is None else str(d), bool(i))
            for s, e, d, i in data.get("transitions", ())
        )
        return cls(states, transitions)


def _utc_now_ns() -> int:
    return time.time_ns()


@dataclass(slots=True)
class MachineRecord:
    """One traced machine instance."""

    id: str
    kind: str
    schema: Schema
    parent_id: str | None = None
    mach_tick: int = 0
    created: int = field(default_factory=_utc_now_ns)  # UTC, nanoseconds since the epoch
    updated: int = field(default_factory=_utc_now_ns)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class TransitionRecord:
    """One mutation of one machine: the unit of history.

    ``exited`` and ``entered`` are state indexes. For the kinds in RESET_KINDS,
    ``entered`` is the whole active configuration after the record.
    """

    machine_id: str
    seq: int
    kind: str
    name: str = ""
    mach_tick: int = 0
    time: int = 0  # UTC wall clock at the source, ns since the epoch
    duration: int = 0  # ns
    args: Any = None  # sanitized, size-capped
    accepted: bool = True
    error: tuple[str, str] | None = None  # (exception type, message)
    exited: tuple[int, ...] = ()
    entered: tuple[int, ...] = ()
    parent_seq: int | None = None
    source: tuple[str, int] | None = None  # (machine_id, seq) of a causing record

    @property
    def id(self) -> str:
        return transition_id(self.machine_id, self.mach_tick, self.seq)

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.machine_id,
            self.seq,
            self.kind,
            self.name,
            self.mach_tick,
            self.time,
            self.duration,
            self.args,
            self.accepted,
            self.error,
            tuple(self.exited),
            tuple(self.entered),
            self.parent_seq,
            self.source,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransitionRecord):
            return NotImplemented
        return self.as_tuple() == other.as_tuple()

    __hash__ = None  # type: ignore[assignment]


def transition_id(machine_id: str, mach_tick: int, seq: int) -> str:
    """The deterministic id of a transition: ``"{machine_id}/{mach_tick}/{seq}"``."""
    return f"{machine_id}/{mach_tick}/{seq}"
