"""The one backend interface, its error hierarchy and the value types it speaks."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from tracer.machine_time import MachineTime, TimeRecord
from tracer.records import MachineRecord, TransitionRecord

__all__ = [
    "Backend",
    "BackendError",
    "ConflictError",
    "CorruptError",
    "GapError",
    "IndexColumns",
    "MissingDependency",
    "Query",
    "ReadOnlyError",
    "Snapshot",
    "UnknownMachine",
    "UnknownScheme",
    "Unreachable",
]


class BackendError(Exception):
    """Base of every backend error; ``str(err)`` is one line a UI or CLI can show as is."""


class UnknownScheme(BackendError):
    """A URL whose scheme no backend is registered for (the message lists known ones)."""


class MissingDependency(BackendError):
    """A backend's optional package is not installed (the message names it)."""


class UnknownMachine(BackendError):
    """A machine id the backend holds nothing for, where something was required."""


class ConflictError(BackendError):
    """An append reuses a stored seq with a different record (J-05)."""


class GapError(BackendError):
    """An append skips seqs, or a read finds seqs missing (J-06)."""


class CorruptError(BackendError):
    """Stored data cannot be decoded; the message gives the position of the first bad part."""


class ReadOnlyError(BackendError):
    """A write to a backend opened read-only."""


class Unreachable(BackendError):
    """A server backend cannot be reached or refused the credentials."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Machine time of ``machine_id`` after records ``[0, index)`` (S-01)."""

    machine_id: str
    index: int
    clocks: tuple[int, ...]
    time: int = 0  # UTC ns of the last record covered (0 when index is 0)
    mach_tick: int = 0


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of ``find`` and ``count``; every set filter must match (AND).

    Times are UTC nanoseconds; seq and time ranges are half-open ``[start, end)``.
    State filters name states; ``active``/``inactive`` test the configuration *after*
    the record.
    """

    machine_id: str | None = None
    seq_start: int | None = None
    seq_end: int | None = None
    time_start: int | None = None
    time_end: int | None = None
    name: str | None = None  # exact event / record name
    kinds: frozenset[str] | None = None
    entered: frozenset[str] = field(default_factory=frozenset)  # entered all of these
    exited: frozenset[str] = field(default_factory=frozenset)  # exited all of these
    active: frozenset[str] = field(default_factory=frozenset)  # all active after
    inactive: frozenset[str] = field(default_factory=frozenset)  # all inactive after
    accepted: bool | None = None
    has_error: bool | None = None
    newest_first: bool = False
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class IndexColumns:
    """What a backend's query index knows of each record of ``[start, end)`` of one
    machine, copied without reading a record (``Backend.index_columns``).

    Built for the inspector's record summary, which filters a million records in well
    under a second from these instead of decoding them (about 12 s on a journal).

    Attributes:
        start: the first seq covered.
        end: one past the last seq covered (``end - start`` records).
        kinds: the kind name of each code in ``kind``; None for a kind the index does not
            name (read that record for it).
        kind: one kind code per record.
        accepted: one byte per record: 1 when ``accepted == True``, 2 when
            ``accepted == False``, 0 (or 3) when neither holds, as for a value of an
            unexpected type (read that record).
        error: one byte per record: 1 when the record has an error, else 0.
        names: the event name of each id in ``name``.
        name: one id into ``names`` per record.
        entered: per state, the ascending seqs in ``[start, end)`` that entered it.
        exited: per state, the ascending seqs in ``[start, end)`` that exited it. For a
            reset kind (init, restore, gap) both hold its change to the configuration
            before it, not the lists it stores.
        refused: the ascending seqs in ``[start, end)`` of the records whose error is a
            library's refusal (``tracer.records.is_refusal``: not accepted, error type in
            ``REFUSALS``), so every other record with an error is an error.
    """

    start: int
    end: int
    kinds: tuple[str | None, ...]
    kind: bytes
    accepted: bytes
    error: bytes
    names: tuple[str, ...]
    name: array[int]
    entered: tuple[array[int], ...]
    exited: tuple[array[int], ...]
    refused: array[int]


@runtime_checkable
class Backend(Protocol):
    """History storage. Every backend passes ``tests/contract``.

    Seqs are 0-based and contiguous per machine; ``highest`` is -1 for a machine with no
    records and never decreases, also after deletes. Backends are also tracer sinks
    (``register``/``write``/``dispose``/``flush``/``close``).
    """

    scheme: ClassVar[str]
    supports_delete: ClassVar[bool]
    url: str
    read_only: bool

    # machines
    def put_machine(self, machine: MachineRecord) -> None: ...
    def get_machine(self, machine_id: str) -> MachineRecord: ...  # raises UnknownMachine
    def machines(self) -> list[MachineRecord]: ...

    # records
    def append(self, machine_id: str, records: Sequence[TransitionRecord]) -> None: ...
    def read(
        self, machine_id: str, start: int = 0, end: int | None = None
    ) -> list[TransitionRecord]: ...
    def highest(self, machine_id: str) -> int: ...
    def first(self, machine_id: str) -> int: ...  # lowest stored seq (highest + 1 if none)
    def delete_upto(self, machine_id: str, seq: int) -> None: ...

    # snapshots
    def save_snapshot(self, snapshot: Snapshot) -> None: ...
    def latest_snapshot(self, machine_id: str) -> Snapshot | None: ...
    def delete_snapshots(self, machine_id: str, upto: int) -> None: ...
    def snapshots(self, machine_id: str) -> list[Snapshot]: ...  # ascending index

    # sink
    def register(self, machine: MachineRecord) -> int: ...
    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None: ...
    def dispose(self, machine_id: str) -> None: ...
    def flush(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Backend: ...
    def __exit__(self, *exc: object) -> None: ...

    # queries (one shared evaluator: backends/query.py)
    def state_at(self, machine_id: str, seq: int) -> MachineTime: ...
    def find(self, query: Query) -> list[TransitionRecord]: ...
    def count(self, query: Query) -> int: ...
    def activated_between(self, machine_id: str, state: str, start: int, end: int) -> bool: ...
    def active_between(self, machine_id: str, state: str, start: int, end: int) -> bool: ...
    def deactivated_between(self, machine_id: str, state: str, start: int, end: int) -> bool: ...
    def inactive_between(self, machine_id: str, state: str, start: int, end: int) -> bool: ...
    def to_time_record(self, record: TransitionRecord) -> TimeRecord: ...
    # The query index's columns of ``[start, end)`` (clipped to what it holds), or None
    # when the backend keeps no index it can give without reading every record.
    def index_columns(self, machine_id: str, start: int, end: int) -> IndexColumns | None: ...
