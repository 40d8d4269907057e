"""MemoryBackend (``memory://``): compact, process-local history storage; the default."""

from __future__ import annotations

import dataclasses
from array import array
from bisect import bisect_right, insort
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import msgpack

from backends._base import BaseBackend, parse_url
from backends.base import BackendError, CorruptError, Snapshot
from tracer.codec import DecodeError, transition_from_list, transition_to_list
from tracer.records import MachineRecord, TransitionRecord

__all__ = ["MemoryBackend"]


def _copy_machine(m: MachineRecord) -> MachineRecord:
    # Callers (the tracer) keep mutating their MachineRecord; store our own copy.
    return dataclasses.replace(m, tags=dict(m.tags), schema=m.schema)


class _Stream:
    """One machine's records: msgpack bytes back to back plus an offset per record.

    A record costs its msgpack size (~35 bytes for a typical transition) plus 8 bytes of
    offset, instead of ~600 bytes as a TransitionRecord object. Deleted records are
    dropped lazily: ``dead`` counts leading offsets no longer in use, compacted once they
    are half of the stream so trimming with ``max_records`` stays O(1) amortised.
    """

    __slots__ = ("data", "dead", "first", "highest", "offsets")

    def __init__(self) -> None:
        self.data = bytearray()
        self.offsets: array[int] = array("Q")  # start of each record in data
        self.dead = 0
        self.first = 0  # seq of offsets[dead]
        self.highest = -1

    def __len__(self) -> int:
        return len(self.offsets) - self.dead

    def span(self, k: int) -> tuple[int, int]:
        """Byte range of the k-th live record."""
        i = self.dead + k
        start = self.offsets[i]
        end = self.offsets[i + 1] if i + 1 < len(self.offsets) else len(self.data)
        return start, end

    def drop_upto(self, seq: int) -> None:
        n = min(len(self), seq + 1 - self.first)
        if n <= 0:
            return
        self.dead += n
        self.first += n
        if len(self) == 0:
            self.data = bytearray()
            self.offsets = array("Q")
            self.dead = 0
        elif self.dead >= len(self):
            cut = self.offsets[self.dead]
            del self.data[:cut]
            self.offsets = array("Q", (o - cut for o in self.offsets[self.dead :]))
            self.dead = 0


class MemoryBackend(BaseBackend):
    """History held in process memory, ~75 bytes per transition including the query
    index (measured with tracemalloc, see ``docs/backends.md``). Thread-safe.

    Options: see :class:`backends._base.BaseBackend` (``durability`` has no effect).
    """

    scheme = "memory"
    supports_delete = True
    persistent = False

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._machine_records: dict[str, MachineRecord] = {}
        self._streams: dict[str, _Stream] = {}
        self._snaps: dict[str, dict[int, Snapshot]] = {}
        self._snap_keys: dict[str, list[int]] = {}
        self._packer = msgpack.Packer(use_bin_type=True)

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> MemoryBackend:
        """Open an empty in-memory backend; ``memory://?snapshot_every=100`` style options.

        Raises:
            BackendError: a URL of another scheme or a bad option value.
        """
        _, url_options = parse_url(url, "memory")
        return cls(url, **cls._merge(url_options, options))

    # -- primitives ----------------------------------------------------------------------
    def _put_machine(self, machine: MachineRecord) -> None:
        self._machine_records[machine.id] = _copy_machine(machine)

    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        m = self._machine_records.get(machine_id)
        return None if m is None else _copy_machine(m)

    def _machines(self) -> list[MachineRecord]:
        return [_copy_machine(m) for m in self._machine_records.values()]

    def _highest(self, machine_id: str) -> int:
        stream = self._streams.get(machine_id)
        return -1 if stream is None else stream.highest

    def _first(self, machine_id: str) -> int:
        stream = self._streams.get(machine_id)
        return 0 if stream is None else stream.first

    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        # Encode everything before touching the stream, so a record that cannot be
        # encoded leaves nothing stored (J-09).
        pack = self._packer.pack
        try:
            blobs = [pack(transition_to_list(r)) for r in records]
        except (TypeError, ValueError, KeyError) as exc:
            raise BackendError(f"{machine_id}: cannot encode a record: {exc}") from None
        self._store_blobs(machine_id, blobs, records[-1].seq, snapshots)

    _stores_rows = True

    def _append_rows_batch(
        self,
        machine_id: str,
        rows: Sequence[Sequence[Any]],
        snapshots: Sequence[Snapshot],
    ) -> None:
        # A wire row is the record's transition_to_list: stored as it is.
        pack = self._packer.pack
        try:
            blobs = list(map(pack, rows))
        except (TypeError, ValueError, OverflowError) as exc:
            raise BackendError(f"{machine_id}: cannot encode a record: {exc}") from None
        self._store_blobs(machine_id, blobs, rows[-1][0], snapshots)

    def _store_blobs(
        self, machine_id: str, blobs: list[bytes], highest: int, snapshots: Sequence[Snapshot]
    ) -> None:
        stream = self._streams.get(machine_id)
        if stream is None:
            stream = self._streams[machine_id] = _Stream()
        data, offsets = stream.data, stream.offsets
        # In C loops: each record starts where the previous one ends.
        offsets.extend(accumulate(map(len, blobs[:-1]), initial=len(data)))
        data += b"".join(blobs)
        stream.highest = highest
        for snap in snapshots:
            self._save_snapshot(snap)

    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        stream = self._streams.get(machine_id)
        if stream is None:
            return []
        lo = max(start, stream.first) - stream.first
        hi = min(end, stream.highest + 1) - stream.first
        out = []
        view = memoryview(stream.data)
        try:
            for k in range(lo, hi):
                a, b = stream.span(k)
                fields = msgpack.unpackb(view[a:b], raw=False, strict_map_key=False)
                out.append(transition_from_list(machine_id, fields))
        except (DecodeError, ValueError) as exc:
            raise CorruptError(
                f"{machine_id}: record {stream.first + k} cannot be decoded: {exc}"
            ) from None
        finally:
            view.release()
        return out

    def _start_at(self, machine_id: str, first: int) -> None:
        stream = self._streams[machine_id] = _Stream()
        stream.first = first
        stream.highest = first - 1

    def _delete_upto(self, machine_id: str, seq: int) -> None:
        stream = self._streams.get(machine_id)
        if stream is not None:
            stream.drop_upto(seq)

    def _save_snapshot(self, snapshot: Snapshot) -> None:
        snaps = self._snaps.setdefault(snapshot.machine_id, {})
        if snapshot.index not in snaps:
            insort(self._snap_keys.setdefault(snapshot.machine_id, []), snapshot.index)
        snaps[snapshot.index] = snapshot

    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        keys = self._snap_keys.get(machine_id)
        if not keys:
            return None
        i = bisect_right(keys, upto)
        return None if i == 0 else self._snaps[machine_id][keys[i - 1]]

    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        snaps = self._snaps.get(machine_id, {})
        return [snaps[k] for k in self._snap_keys.get(machine_id, [])]

    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        keys = self._snap_keys.get(machine_id)
        if not keys:
            return
        i = bisect_right(keys, upto)
        snaps = self._snaps[machine_id]
        for k in keys[:i]:
            del snaps[k]
        del keys[:i]

    def _close(self) -> None:
        self._streams.clear()
        self._snaps.clear()
        self._snap_keys.clear()
