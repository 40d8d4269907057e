"""Where traced records go: the sink protocol and the in-process sink."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from tracer.records import Kind, MachineRecord, TransitionRecord

__all__ = ["MemorySink", "RowSink", "Sink", "row_to_record"]

# Kinds by their code in the positional form (the order of ``tracer.codec.KIND_CODES``;
# codec's ``transition_from_list`` checks every field, which rows the tracer built itself
# need not pay for).
_KINDS_BY_CODE: tuple[str, ...] = (
    Kind.INIT,
    Kind.EVENT,
    Kind.FORCED,
    Kind.RESTORE,
    Kind.ADD,
    Kind.REMOVE,
    Kind.SET,
    Kind.GAP,
)


def row_to_record(machine_id: str, row: Sequence[Any]) -> TransitionRecord:
    """The record of a row the tracer built (``RowSink.write_rows``), without checks.

    Args:
        machine_id: the machine the row belongs to.
        row: the 13 positional fields of ``tracer.codec.transition_to_list``.

    Returns:
        The TransitionRecord.
    """
    seq, tick, t, duration, kind, name, args, accepted, error, exited, entered, parent, src = row
    return TransitionRecord(
        machine_id, seq, _KINDS_BY_CODE[kind], name, tick, t, duration, args, accepted,
        error, exited, entered, parent, src,
    )  # fmt: skip


@runtime_checkable
class Sink(Protocol):
    """A destination for traced records. Called only from the tracer's sender thread.

    Backends from ``backends/`` and the WebSocket sink implement it, so any of them can
    be passed as ``attach(machine, sink=...)``.
    """

    def register(self, machine: MachineRecord) -> int:
        """Store or refresh a machine record; return the next seq it should continue from."""
        ...

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        """Store records of one machine, in seq order, contiguous with what it holds."""
        ...

    def dispose(self, machine_id: str) -> None:
        """The machine is no longer traced (detached or gone)."""
        ...

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything written is stored; False when the timeout ran out."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class RowSink(Sink, Protocol):
    """A sink that also takes records as rows: the tracer then builds no record objects.

    A row is a tuple of the 13 positional fields of ``tracer.codec.transition_to_list``
    (kind as its code; ``error``, ``exited``, ``entered`` and ``source`` as tuples). The
    tracer calls ``write_rows`` instead of ``write`` on sinks that have it.
    """

    def write_rows(self, machine_id: str, first_seq: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Store rows of one machine; row ``i`` has seq ``first_seq + i``, contiguous
        with what the sink holds. Raises as ``write``."""
        ...


class MemorySink:
    """Keeps every record in process memory; thread-safe. For tests and embedding.

    Records the tracer hands over as rows are kept as rows (tuples of plain values, which
    the garbage collector stops tracking) and become TransitionRecords when first read.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.machines: dict[str, MachineRecord] = {}
        self._records: dict[str, list[TransitionRecord]] = {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {}  # written after _records, unread
        self.disposed: set[str] = set()

    @property
    def records(self) -> dict[str, list[TransitionRecord]]:
        """Every machine's records by machine id (read it, do not change it)."""
        with self._lock:
            for machine_id in list(self._rows):
                self._build(machine_id)
            return self._records

    def _build(self, machine_id: str) -> list[TransitionRecord]:
        """Turn the rows kept for ``machine_id`` into records (call with the lock held)."""
        stored = self._records.setdefault(machine_id, [])
        rows = self._rows.pop(machine_id, None)
        if rows:
            stored.extend([row_to_record(machine_id, row) for row in rows])
        return stored

    def _count(self, machine_id: str) -> int:
        return len(self._records.get(machine_id, ())) + len(self._rows.get(machine_id, ()))

    def register(self, machine: MachineRecord) -> int:
        with self._lock:
            self.machines[machine.id] = machine
            self.disposed.discard(machine.id)
            self._records.setdefault(machine.id, [])
            return self._count(machine.id)

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        with self._lock:
            stored = self._build(machine_id)
            if not records:
                return
            n = len(stored)
            # Batches come numbered in order from the tracer: checking both ends is enough
            # unless they disagree, and then every seq is checked to name the bad one.
            if records[0].seq != n or records[-1].seq != n + len(records) - 1:
                for i, rec in enumerate(records):
                    if rec.seq != n + i:
                        raise ValueError(f"{machine_id}: expected seq {n + i}, got {rec.seq}")
            stored.extend(records)
            self._lock.notify_all()

    def write_rows(self, machine_id: str, first_seq: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Keep rows (see ``RowSink``); they become records when read.

        Raises:
            ValueError: when the seqs do not continue what the sink holds.
        """
        with self._lock:
            self._records.setdefault(machine_id, [])
            if not rows:
                return
            n = self._count(machine_id)
            if first_seq != n or rows[0][0] != n or rows[-1][0] != n + len(rows) - 1:
                for i, row in enumerate(rows):
                    if row[0] != n + i:
                        raise ValueError(f"{machine_id}: expected seq {n + i}, got {row[0]}")
                raise ValueError(f"{machine_id}: expected seq {n}, got first_seq {first_seq}")
            kept = self._rows.get(machine_id)
            if kept is None:
                self._rows[machine_id] = list(rows)
            else:
                kept.extend(rows)
            self._lock.notify_all()

    def dispose(self, machine_id: str) -> None:
        with self._lock:
            self.disposed.add(machine_id)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass

    def history(self, machine_id: str) -> list[TransitionRecord]:
        with self._lock:
            if machine_id not in self._records and machine_id not in self._rows:
                return []
            return list(self._build(machine_id))

    def wait_for(self, machine_id: str, count: int, timeout: float = 5.0) -> bool:
        """Block until ``machine_id`` has at least ``count`` records (tests use this)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._count(machine_id) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True
