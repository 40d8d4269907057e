"""Where traced records go: the sink protocol and the in-process sink."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tracer.records import MachineRecord, TransitionRecord

__all__ = ["MemorySink", "Sink"]


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


class MemorySink:
    """Keeps every record in process memory; thread-safe. For tests and embedding."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self.machines: dict[str, MachineRecord] = {}
        self.records: dict[str, list[TransitionRecord]] = {}
        self.disposed: set[str] = set()

    def register(self, machine: MachineRecord) -> int:
        with self._lock:
            self.machines[machine.id] = machine
            self.disposed.discard(machine.id)
            return len(self.records.setdefault(machine.id, []))

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        with self._lock:
            stored = self.records.setdefault(machine_id, [])
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

    def dispose(self, machine_id: str) -> None:
        with self._lock:
            self.disposed.add(machine_id)

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass

    def history(self, machine_id: str) -> list[TransitionRecord]:
        with self._lock:
            return list(self.records.get(machine_id, ()))

    def wait_for(self, machine_id: str, count: int, timeout: float = 5.0) -> bool:
        """Block until ``machine_id`` has at least ``count`` records (tests use this)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.records.get(machine_id, ())) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True
