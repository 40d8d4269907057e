"""Copy machines, records and snapshots between any two backends, exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

from backends._base import BaseBackend
from backends.base import Backend, BackendError

__all__ = ["CopyStats", "copy_backend"]

_CHUNK = 4096  # records per read and append: bounded memory, few transactions


@dataclass(slots=True)
class CopyStats:
    """What a copy did."""

    machines: int = 0
    records: int = 0  # records appended to the destination (resends already there excluded)
    snapshots: int = 0


def copy_backend(
    source: Backend,
    dest: Backend,
    machine_ids: Iterable[str] | None = None,
    *,
    chunk: int = _CHUNK,
    progress: Callable[[str, int, int], None] | None = None,
) -> CopyStats:
    """Copy machines with their records and snapshots from ``source`` into ``dest``.

    The destination ends with the same machine records, the same records at the same seqs
    and the same snapshots (its own snapshot strategy is paused for the copy). A history
    whose oldest records were deleted continues at the same first seq. Copying again is a
    no-op (records already there must be identical: resends are idempotent, D-07).

    Args:
        source: the backend to read.
        dest: the backend to write (not read-only).
        machine_ids: only these machines (default: every machine).
        chunk: records per read/append batch.
        progress: called as ``progress(machine_id, copied, total)`` after each batch.

    Returns:
        CopyStats with the counts copied.

    Raises:
        UnknownMachine: a requested machine is not in ``source``.
        ConflictError: ``dest`` already holds a different record at some seq.
        BackendError: any storage error, with a one-line message.
    """
    if chunk < 1:
        raise BackendError(f"chunk must be >= 1, got {chunk}")
    stats = CopyStats()
    if machine_ids is None:
        machines = source.machines()
    else:
        machines = [source.get_machine(mid) for mid in machine_ids]
    paused = dest.auto_snapshots_off() if isinstance(dest, BaseBackend) else nullcontext()
    with paused:
        for machine in machines:
            mid = machine.id
            dest.put_machine(machine)
            stats.machines += 1
            # Snapshots first: a trimmed history rebuilds from the one at its first seq.
            for snap in source.snapshots(mid):
                dest.save_snapshot(snap)
                stats.snapshots += 1
            first = source.first(mid)
            highest = source.highest(mid)
            if highest < 0:
                continue
            if dest.highest(mid) < 0 and first > 0:
                if not isinstance(dest, BaseBackend):
                    raise BackendError(
                        f"{mid}: cannot copy a history starting at seq {first} into {dest.url}"
                    )
                dest.start_history_at(mid, first)
            total = highest + 1 - first
            done = 0
            before = dest.highest(mid)
            for start in range(first, highest + 1, chunk):
                batch = source.read(mid, start, min(start + chunk, highest + 1))
                dest.append(mid, batch)
                done += len(batch)
                if progress is not None:
                    progress(mid, done, total)
            stats.records += dest.highest(mid) - max(before, first - 1)
    dest.flush()
    return stats
