"""BaseBackend: the Backend protocol built once on a few storage primitives.

A concrete backend implements the ``_``-prefixed primitives below (see ``docs/backends.md``)
and gets from this class, identically for every backend: seq validation (J-01..J-10),
read-only mode, the tracer sink methods, snapshots by strategy, ``state_at``,
``max_records`` trimming and the shared query methods.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

import msgpack

from backends import query as _query
from backends.base import (
    BackendError,
    ConflictError,
    CorruptError,
    GapError,
    IndexColumns,
    Query,
    ReadOnlyError,
    Snapshot,
    UnknownMachine,
)
from backends.registry import mask_url
from backends.snapshots import AnyStrategy, IntervalStrategy, SnapshotStrategy, TimeStrategy
from tracer.codec import DecodeError, transition_from_list
from tracer.machine_time import MachineTime, TimeRecord
from tracer.records import Kind, MachineRecord, TransitionRecord
from tracer.sinks import row_to_record

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "BaseBackend",
    "RecoveryEvent",
    "parse_url",
]

# Every 128 records. Measured on 100,000 records of a 10-state machine (2-core box under
# load), state_at by snapshot + replay: every 64 -> median 0.15 ms, every 256 -> 1.2 ms
# (p90 6-9 ms), every 1000 -> 3.5-4.6 ms (p90 12 ms): replaying costs ~5-10 us a record.
# 128 keeps the worst case near 1 ms, inside SPEC §10's 5 ms, for ~1.5 bytes of snapshot
# per record in memory (a 10-clock snapshot is ~200 bytes). With the query index in
# memory, state_at does not replay at all (per-state bisections, ~40 us).
DEFAULT_SNAPSHOT_EVERY = 128

_MAX_SEQ = (1 << 63) - 1

# Save a growing query index every 2**18 records (~6 MB for a 10-state machine): a crash
# then costs at most that many records to decode again on the next open.
_INDEX_SAVE_EVERY = 1 << 18

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True}
_BOOL_WORDS.update({"0": False, "false": False, "no": False, "off": False})


def parse_url(url: str, scheme: str) -> tuple[str, dict[str, Any]]:
    """Split ``scheme://[host]/path?opt=value`` into the path and the query options.

    ``sqlite:///rel.db`` gives ``rel.db`` and ``sqlite:////abs.db`` gives ``/abs.db``
    (SQLAlchemy's convention); ``journal:///tmp/x.amj`` style URLs with a host-less
    absolute path keep the path as written after the third slash. Option values are
    converted: integers, floats, booleans (``true``/``false``), else strings.

    Raises:
        BackendError: when the URL has another scheme.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != scheme:
        raise BackendError(f"not a {scheme}:// URL: {mask_url(url)!r}")
    path = unquote(parts.netloc + parts.path)
    if not parts.netloc and path.startswith("/"):
        path = path[1:]  # sqlite:///x.db -> x.db ; sqlite:////abs -> /abs
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key] = _convert(value)
    return path, options


def _convert(value: str) -> Any:
    low = value.lower()
    if low in _BOOL_WORDS:
        return _BOOL_WORDS[low]
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _rows_to_records(machine_id: str, rows: Sequence[Sequence[Any]]) -> list[TransitionRecord]:
    try:
        return [transition_from_list(machine_id, r) for r in rows]
    except DecodeError as exc:
        raise BackendError(f"{machine_id}: bad record row: {exc}") from None


@dataclass(frozen=True, slots=True)
class RecoveryEvent:
    """One step of ``recover()`` (S-06): ``"snapshot"``, ``"record"`` or ``"complete"``."""

    kind: str
    snapshot: Snapshot | None = None
    record: TransitionRecord | None = None
    highest: int = -1


class _Machine:
    """What the base caches per machine: the record, its clocks after ``highest``."""

    __slots__ = ("clocks", "highest", "last", "record", "strategy")

    def __init__(self, record: MachineRecord) -> None:
        self.record = record
        self.clocks: MachineTime | None = None  # after [0, highest + 1); None = not loaded
        self.highest = -1
        self.strategy: SnapshotStrategy | None = None
        self.last: tuple[int, int] | None = None  # (time, mach_tick) of seq highest


class BaseBackend(ABC):
    """Everything of the Backend protocol above the storage primitives.

    Seqs are 0-based, so "no records" is ``highest == -1`` (J-01, J-03: we expose -1 rather
    than protoactor's 0 because 0 is a real seq here). All public methods hold one
    re-entrant lock, so the tracer's sender thread and reader threads may share a backend.

    Args:
        url: the URL the backend was opened with (kept for messages, password masked).
        read_only: refuse every write with ReadOnlyError.
        snapshot_every: save a snapshot every N records (ST-01); ``0`` disables.
        snapshot_seconds: also save one when this many seconds passed (ST-02).
        snapshot_clock: the clock of the time strategy (tests inject one).
        max_records: keep at most this many records per machine, dropping the oldest;
            ``highest`` is unchanged.
        tracked_states: state names whose clocks ``to_time_record`` sums separately.
        durability: ``"full"`` (nothing acknowledged is lost) or ``"fast"`` (may lose the
            latest acknowledged batches on power loss, never consistency).

    Raises:
        BackendError: for any option value out of range, in one line.
    """

    scheme: ClassVar[str] = ""
    supports_delete: ClassVar[bool] = True
    #: False for backends whose data lives only in the process (reopen tests skip them).
    persistent: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        snapshot_seconds: float | None = None,
        snapshot_clock: Callable[[], float] | None = None,
        max_records: int | None = None,
        tracked_states: Sequence[str] = (),
        durability: str = "full",
    ) -> None:
        if type(read_only) is not bool:
            raise BackendError(f"read_only must be true or false, got {read_only!r}")
        if type(snapshot_every) is not int:
            raise BackendError(f"snapshot_every must be an integer, got {snapshot_every!r}")
        if snapshot_seconds is not None and (
            not isinstance(snapshot_seconds, int | float) or snapshot_seconds <= 0
        ):
            raise BackendError(
                f"snapshot_seconds must be a positive number, got {snapshot_seconds!r}"
            )
        if max_records is not None and (type(max_records) is not int or max_records < 1):
            raise BackendError(f"max_records must be a positive integer, got {max_records!r}")
        if durability not in ("full", "fast"):
            raise BackendError(f"durability must be 'full' or 'fast', got {durability!r}")
        if isinstance(tracked_states, str):
            tracked_states = [s for s in tracked_states.split(",") if s]
        self.url = mask_url(url)
        self.read_only = read_only
        self.snapshot_every = snapshot_every
        self.snapshot_seconds = snapshot_seconds
        self.snapshot_clock = snapshot_clock
        self.max_records = max_records
        self.tracked_states: tuple[str, ...] = tuple(tracked_states)
        self.durability = durability
        self._lock = threading.RLock()
        self._cache: dict[str, _Machine] = {}
        self._recovering: set[str] = set()
        self._closed = False
        self._auto_snapshots = True
        self._grouping = False  # inside group()
        self._index_tried: set[str] = set()  # append_rows looked for a saved index
        # Per-machine predicate indexes (backends.query.MachineIndex), built on first use.
        self._indexes: dict[str, _query.MachineIndex] = {}

    # ------------------------------------------------------------------ primitives
    # Called with self._lock held, with arguments already validated by the base.

    @abstractmethod
    def _put_machine(self, machine: MachineRecord) -> None:
        """Store or replace a machine record."""

    @abstractmethod
    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        """The stored machine record, or None."""

    @abstractmethod
    def _machines(self) -> list[MachineRecord]:
        """Every stored machine record."""

    @abstractmethod
    def _highest(self, machine_id: str) -> int:
        """The highest seq ever appended (-1 when none); never lowered by deletes."""

    @abstractmethod
    def _first(self, machine_id: str) -> int:
        """The lowest stored seq; ``highest + 1`` when nothing is stored."""

    @abstractmethod
    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Atomically store ``records`` (non-empty, seqs ``highest+1 ..`` contiguous, all
        of ``machine_id``) and save ``snapshots`` (same machine), raising leaves nothing
        of them stored. Afterwards ``_highest`` is ``records[-1].seq``."""

    @abstractmethod
    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        """Stored records with ``start <= seq < end`` in seq order; the base clamps the
        range to ``[_first, _highest + 1)`` and checks the result for gaps."""

    @abstractmethod
    def _delete_upto(self, machine_id: str, seq: int) -> None:
        """Delete records with seq ``<= seq`` (``seq <= _highest``); keep ``_highest``."""

    @abstractmethod
    def _save_snapshot(self, snapshot: Snapshot) -> None:
        """Store a snapshot, replacing one at the same (machine, index)."""

    @abstractmethod
    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        """The snapshot with the highest index ``<= upto``, or None."""

    @abstractmethod
    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        """Every snapshot of the machine, by ascending index (``copy`` uses it)."""

    @abstractmethod
    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        """Delete snapshots with index ``<= upto``."""

    def _start_at(self, machine_id: str, first: int) -> None:
        """Make an empty machine's history start at ``first``: ``_highest`` becomes
        ``first - 1`` and ``_first`` becomes ``first`` (records before it count as deleted).

        Only ``backends.copy`` uses it, to copy a history whose oldest records were
        deleted. This default appends placeholder records and deletes them (O(first)
        writes); backends override it with an O(1) metadata update when they can.
        """
        step = 4096
        for start in range(0, first, step):
            end = min(first, start + step)
            filler = [
                TransitionRecord(machine_id, seq, Kind.GAP, "deleted") for seq in range(start, end)
            ]
            self._append_batch(machine_id, filler, ())
            self._delete_upto(machine_id, end - 1)

    #: Set by backends that implement ``_append_rows_batch`` (``append_rows``' fast path).
    _stores_rows: ClassVar[bool] = False

    def _append_rows_batch(
        self,
        machine_id: str,
        rows: Sequence[Sequence[Any]],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Optional: ``_append_batch`` for records in their positional wire form (see
        ``append_rows``); only called when ``_stores_rows`` is True."""
        raise NotImplementedError

    def _group_begin(self) -> None:  # noqa: B027 - optional hook
        """Start a group commit (see ``group``); a backend that cannot group does nothing."""

    def _group_end(self) -> None:  # noqa: B027 - optional hook
        """Make everything appended since ``_group_begin`` durable, or raise BackendError."""

    def _flush(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Make everything acknowledged durable (for backends that buffer)."""

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections."""

    # Hooks a backend may override to answer queries faster; results must not change.
    def _index_for(self, machine_id: str) -> _query.MachineIndex:
        """The predicate index of a machine, built from the stored records on first use
        and kept current by ``append``."""
        index = self._indexes.get(machine_id)
        if index is not None and self.read_only:
            m = self._machine(machine_id)
            if index.first != self._first(machine_id) or index.end > m.highest + 1:
                index = None  # the writer deleted records: rebuild
            else:
                self._extend_index(machine_id, index, m)
        if index is None:
            index = self._stored_index(machine_id)
            if index is None:
                index = _query.MachineIndex.build(self, machine_id)
                self._persist_index(machine_id, index)
            self._indexes[machine_id] = index
        return index

    def _stored_index(self, machine_id: str) -> _query.MachineIndex | None:
        """The saved index when it still matches the stored records, extended to their end."""
        data = self._load_index(machine_id)
        if data is None:
            return None
        m = self._machine(machine_id)
        index = _query.MachineIndex.from_bytes(data, len(m.record.schema))
        end = m.highest + 1
        if index is None or index.first != self._first(machine_id) or index.end > end:
            return None  # records were deleted (or the file was rolled back) since
        self._extend_index(machine_id, index, m)
        return index

    def _extend_index(self, machine_id: str, index: _query.MachineIndex, m: _Machine) -> None:
        end = m.highest + 1
        pos = index.end
        while pos < end:
            upto = min(end, pos + 65536)
            index.extend(self._checked_read(machine_id, pos, upto), m.record.schema)
            pos = upto

    # Whether a read-only open may save the index it built (a cache kept outside the
    # recording, like the journal's sidecar file): else every read-only open of a history
    # without a usable saved index builds it again from every record.
    _saves_index_read_only = False

    def _persist_index(self, machine_id: str, index: _query.MachineIndex) -> None:
        if (self.read_only and not self._saves_index_read_only) or self._closed:
            return
        if index.saved_end == index.end:
            return
        try:
            self._save_index(machine_id, index.to_bytes())
        except BackendError:
            return  # only a cache: the next open rebuilds it
        index.saved_end = index.end

    def _load_index(self, machine_id: str) -> bytes | None:
        """Optional: the bytes last given to ``_save_index`` for the machine, or None."""
        return None

    def _save_index(self, machine_id: str, data: bytes) -> None:  # noqa: B027 - optional
        """Optional: keep the query index of a machine (``MachineIndex.to_bytes``) so a
        reopen loads it instead of decoding every record. It is a cache: it may be lost,
        and a stale one (records deleted since) is detected and rebuilt."""

    # ------------------------------------------------------------------ helpers
    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"backend {self.url} is closed")

    def _check_write(self) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyError(f"backend {self.url} is open read-only")

    def _machine(self, machine_id: str) -> _Machine:
        m = self._cache.get(machine_id)
        if m is None:
            record = self._get_machine(machine_id)
            if record is None:
                raise UnknownMachine(f"unknown machine {machine_id!r} in {self.url}")
            m = self._cache[machine_id] = _Machine(record)
            m.highest = self._highest(machine_id)
        elif self.read_only:
            # Another process may be recording into the same store (a live SQLite file):
            # follow its highest and let clocks and the index catch up on demand.
            highest = self._highest(machine_id)
            if highest != m.highest:
                m.highest = highest
                m.clocks = None
                m.last = None
        return m

    def _strategy(self, m: _Machine) -> SnapshotStrategy:
        if m.strategy is None:
            strategies: list[SnapshotStrategy] = []
            if self.snapshot_every > 0:
                strategies.append(IntervalStrategy(self.snapshot_every))
            if self.snapshot_seconds is not None:
                strategies.append(TimeStrategy(self.snapshot_seconds, self.snapshot_clock))
            m.strategy = strategies[0] if len(strategies) == 1 else AnyStrategy(*strategies)
        return m.strategy

    def _clocks_after_highest(self, machine_id: str, m: _Machine) -> MachineTime:
        if m.clocks is None:
            m.clocks = self._time_before(machine_id, m.highest + 1)
        return m.clocks

    def _time_before(self, machine_id: str, index: int) -> MachineTime:
        """Machine time after records ``[0, index)``: the nearest snapshot plus replay."""
        m = self._machine(machine_id)
        size = len(m.record.schema)
        if index <= 0:
            return MachineTime(size)
        snap = self._latest_snapshot(machine_id, index)
        first = self._first(machine_id)
        if snap is not None and len(snap.clocks) <= size:
            # A snapshot from before the schema grew: the new states were inactive then.
            start = snap.index
            mt = MachineTime(size, [*snap.clocks, *[0] * (size - len(snap.clocks))])
        else:
            start = 0
            mt = MachineTime(size)
        if start < first:
            if first > index:
                raise BackendError(
                    f"{machine_id}: records before seq {first} were deleted; "
                    f"cannot rebuild the state at index {index}"
                )
            raise BackendError(
                f"{machine_id}: records [{start}, {first}) were deleted and no snapshot "
                f"covers them; cannot rebuild the state at index {index}"
            )
        if start < index:
            for rec in self._checked_read(machine_id, start, index):
                mt.apply(rec, strict=False)
        return mt

    def _decode(self, machine_id: str, seq: int, data: bytes) -> TransitionRecord:
        """One stored record from its msgpack bytes (the SQL backends' ``data`` column).

        Raises:
            CorruptError: the bytes are not a record.
        """
        try:
            fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
            return transition_from_list(machine_id, fields)
        except (DecodeError, ValueError) as exc:
            raise CorruptError(
                f"{self.url}: record {machine_id}/{seq} cannot be decoded: {exc}"
            ) from None

    def _last_of(self, machine_id: str, seq: int, m: _Machine) -> tuple[int, int]:
        """(time, mach_tick) of record ``seq`` for a snapshot's fields; zeros before 0."""
        if seq < 0:
            return (0, m.record.mach_tick)
        rec = self._read(machine_id, seq, seq + 1)
        return (rec[0].time, rec[0].mach_tick) if rec else (0, m.record.mach_tick)

    def _checked_read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        records = self._read(machine_id, start, end)
        expected = start
        for rec in records:
            if rec.seq != expected:
                raise GapError(
                    f"{machine_id}: seq {expected} is missing from {self.url} "
                    f"(found {rec.seq} after it)"
                )
            expected += 1
        if expected != end:
            raise GapError(f"{machine_id}: seqs [{expected}, {end}) are missing from {self.url}")
        return records

    # ------------------------------------------------------------------ machines
    def put_machine(self, machine: MachineRecord) -> None:
        """Store or update a machine record.

        Raises:
            ReadOnlyError: when open read-only.
            ConflictError: when the new schema has fewer states than the stored one and
                records exist (the stored history would no longer fit it).
            BackendError: when the record is not a MachineRecord with a non-empty id.
        """
        if not isinstance(machine, MachineRecord) or not isinstance(machine.id, str):
            raise BackendError(f"expected a MachineRecord, got {type(machine).__name__}")
        if not machine.id:
            raise BackendError("a machine id must be a non-empty string")
        with self._lock:
            self._check_write()
            old = self._get_machine(machine.id)
            if (
                old is not None
                and len(machine.schema) < len(old.schema)
                and self._highest(machine.id) >= 0
            ):
                raise ConflictError(
                    f"machine {machine.id!r}: the new schema has {len(machine.schema)} states, "
                    f"the stored history uses {len(old.schema)}"
                )
            self._put_machine(machine)
            # Reload what the base derived from the old record (schema size, tick) lazily.
            self._cache.pop(machine.id, None)
            index = self._indexes.get(machine.id)
            if index is not None and len(index.base) != len(machine.schema):
                self._indexes.pop(machine.id, None)

    def get_machine(self, machine_id: str) -> MachineRecord:
        """The machine record.

        Raises:
            UnknownMachine: when nothing is stored for ``machine_id``.
        """
        with self._lock:
            self._check_open()
            return self._machine(machine_id).record

    def machines(self) -> list[MachineRecord]:
        """Every machine record, sorted by id."""
        with self._lock:
            self._check_open()
            return sorted(self._machines(), key=lambda m: m.id)

    # ------------------------------------------------------------------ records
    def highest(self, machine_id: str) -> int:
        """The highest seq ever appended for the machine; -1 when none or unknown (J-03)."""
        with self._lock:
            self._check_open()
            m = self._cache.get(machine_id)
            if m is not None and not self.read_only:
                return m.highest
            return self._highest(machine_id)

    def first(self, machine_id: str) -> int:
        """The lowest stored seq (``highest + 1`` when none is stored)."""
        with self._lock:
            self._check_open()
            return self._first(machine_id)

    def append(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        """Append a batch of one machine's records, all or none (J-09).

        Records already stored are checked and skipped: an identical one is a no-op
        (D-07: a resend after a reconnect), a different one is a conflict. Records at
        seqs already deleted are skipped unchecked. New records must continue at
        ``highest + 1`` without gaps.

        Raises:
            ReadOnlyError: when open read-only.
            UnknownMachine: when the machine was never put.
            ConflictError: a stored seq with a different record (J-05).
            GapError: seqs that skip ahead or are not consecutive (J-06).
            BackendError: a record of another machine, a bad seq or a state index
                outside the machine's schema (nothing of the batch is stored).
        """
        if not records:
            with self._lock:
                self._check_write()
            return
        with self._lock:
            self._check_write()
            if machine_id in self._recovering:
                raise BackendError(f"{machine_id}: cannot write while recovering (S-06)")
            m = self._machine(machine_id)
            new = self._validate(machine_id, m, records)
            if not new:
                return
            strategy = self._strategy(m) if self._auto_snapshots else IntervalStrategy(0)
            index = self._indexes.get(machine_id)
            if index is None and new[0].seq == 0:
                # A history recorded from its start: index it as it grows (an index built
                # later has to decode every record once: ~10 s per million).
                size = len(m.record.schema)
                index = _query.MachineIndex(size, 0, [0] * size)
                self._indexes[machine_id] = index
            if index is not None and index.end == new[0].seq:
                self._append_indexed(machine_id, m, new, index, strategy)
            else:
                self._append_replaying(machine_id, m, new, strategy)
            if self.max_records is not None:
                self._trim(machine_id, m)

    def append_rows(self, machine_id: str, first: int, rows: Sequence[Sequence[Any]]) -> None:
        """``append`` for records in their positional wire form: ``tracer.codec``'s 13
        fields (``transition_to_list``), each already type-checked as
        ``tracer.protocol.ServerSession(rows=True)`` does; seq ``first + i`` is row ``i``.

        The ingest server's path: a backend that stores rows as they are (the journal,
        SQLite, LMDB, memory) skips building and re-encoding record objects. The result is
        exactly ``append(machine_id, [transition_from_list(machine_id, r) for r in rows])``,
        which is what runs for resends, gaps, or backends without a rows path.

        Raises:
            As ``append``; BackendError also for rows that are not 13-field lists.
        """
        self._append_rows(machine_id, first, rows, trusted=False)

    def _append_rows(
        self, machine_id: str, first: int, rows: Sequence[Sequence[Any]], *, trusted: bool
    ) -> None:
        """``append_rows`` and ``write_rows``: ``trusted`` rows (the tracer's) skip the
        per-row checks of ``_rows_ok``; they may be tuples."""
        if not rows:
            return self.append(machine_id, [])
        with self._lock:
            self._check_write()
            if machine_id in self._recovering:
                raise BackendError(f"{machine_id}: cannot write while recovering (S-06)")
            m = self._machine(machine_id)
            index = self._indexes.get(machine_id)
            if index is None and first == 0 and m.highest == -1:
                size = len(m.record.schema)
                index = _query.MachineIndex(size, 0, [0] * size)
                self._indexes[machine_id] = index
            elif (
                index is None
                and self._stores_rows
                and first == m.highest + 1
                and machine_id not in self._index_tried
            ):
                self._index_tried.add(machine_id)
                # A history recorded before this open: its saved index (if any) makes the
                # fast path available; a missing one is not rebuilt here (ingest would stall).
                index = self._stored_index(machine_id)
                if index is not None:
                    self._indexes[machine_id] = index
            fast = (
                self._stores_rows
                and self._auto_snapshots
                and first == m.highest + 1
                and index is not None
                and index.end == first
                and (
                    first + len(rows) - 1 <= _MAX_SEQ if trusted else self._rows_ok(m, first, rows)
                )
            )
            if not fast:
                if trusted:
                    self.append(machine_id, [row_to_record(machine_id, r) for r in rows])
                else:
                    self.append(machine_id, _rows_to_records(machine_id, rows))
                return
            assert index is not None
            self._append_rows_indexed(machine_id, m, first, rows, index)
            if self.max_records is not None:
                self._trim(machine_id, m)

    def _rows_ok(self, m: _Machine, first: int, rows: Sequence[Sequence[Any]]) -> bool:
        """The checks ``append`` adds to the wire checks: seqs continue ``highest`` without
        gaps, state indexes within this backend's schema."""
        if first + len(rows) - 1 > _MAX_SEQ:
            return False
        # One loop for the per-row checks is cheaper here than three set/list passes.
        seq = first
        for r in rows:
            if type(r) is not list or len(r) != 13 or r[0] != seq:
                return False
            seq += 1
        states: set[Any] = {i for r in rows for i in r[9]}
        states.update([i for r in rows for i in r[10]])
        return not states or (
            {type(i) for i in states} == {int}
            and min(states) >= 0
            and max(states) < len(m.record.schema)
        )

    def _append_rows_indexed(
        self,
        machine_id: str,
        m: _Machine,
        first: int,
        rows: Sequence[Sequence[Any]],
        index: _query.MachineIndex,
    ) -> None:
        index.extend_rows(machine_id, rows, m.record.schema)
        snapshots = self._snapshots_due(
            machine_id,
            m,
            index,
            self._strategy(m),
            first,
            len(rows),
            lambda i: (rows[i][2], rows[i][1]),
        )
        last = rows[-1]
        self._commit_indexed(
            machine_id,
            m,
            index,
            lambda: self._append_rows_batch(machine_id, rows, snapshots),
            first + len(rows) - 1,
            (last[2], last[1]),
        )

    def _append_indexed(
        self,
        machine_id: str,
        m: _Machine,
        new: list[TransitionRecord],
        index: _query.MachineIndex,
        strategy: SnapshotStrategy,
    ) -> None:
        """Append when the query index is current: one pass over the records (the index
        advances the clocks), snapshot clocks by bisection in the index."""
        start = new[0].seq
        index.extend(new, m.record.schema)
        snapshots = self._snapshots_due(
            machine_id,
            m,
            index,
            strategy,
            start,
            len(new),
            lambda i: (new[i].time, new[i].mach_tick),
        )
        self._commit_indexed(
            machine_id,
            m,
            index,
            lambda: self._append_batch(machine_id, new, snapshots),
            new[-1].seq,
            (new[-1].time, new[-1].mach_tick),
        )

    def _snapshots_due(
        self,
        machine_id: str,
        m: _Machine,
        index: _query.MachineIndex,
        strategy: SnapshotStrategy,
        first: int,
        count: int,
        time_tick: Callable[[int], tuple[int, int]],
    ) -> list[Snapshot]:
        """The snapshots ``strategy`` asks for among ``count`` new records from ``first``
        (clocks by bisection in the index; ``time_tick(i)``: the i-th new record's)."""
        last_seq = first + count - 1
        if type(strategy) is IntervalStrategy:
            n = strategy.n
            points: Sequence[int] = range(-(-first // n) * n, last_seq + 1, n) if n > 0 else ()
        else:  # asked for every record in order, like the time strategy expects
            points = [seq for seq in range(first, last_seq + 1) if strategy.should_snapshot(seq)]
        snapshots: list[Snapshot] = []
        for seq in points:
            if seq > first:
                last = time_tick(seq - 1 - first)
            else:
                last = m.last if m.last is not None else self._last_of(machine_id, seq - 1, m)
            snapshots.append(Snapshot(machine_id, seq, tuple(index.clocks_before(seq)), *last))
        return snapshots

    def _commit_indexed(
        self,
        machine_id: str,
        m: _Machine,
        index: _query.MachineIndex,
        write: Callable[[], None],
        last_seq: int,
        last: tuple[int, int],
    ) -> None:
        """Write a batch the index already covers, then advance the machine's state."""
        try:
            write()
        except BaseException:
            # J-09 (Akka): forget what we believed; reload ``highest`` from storage.
            self._cache.pop(machine_id, None)
            self._indexes.pop(machine_id, None)
            raise
        m.clocks = MachineTime(len(m.record.schema), index.clocks.clocks)
        m.highest = last_seq
        m.last = last
        if index.end - max(index.saved_end, 0) >= _INDEX_SAVE_EVERY:
            self._persist_index(machine_id, index)

    def _append_replaying(
        self,
        machine_id: str,
        m: _Machine,
        new: list[TransitionRecord],
        strategy: SnapshotStrategy,
    ) -> None:
        """Append with no current query index: advance the cached clocks record by record."""
        mt = self._clocks_after_highest(machine_id, m).copy()
        snapshots: list[Snapshot] = []
        last = m.last
        changes = []
        clocks = mt.clocks
        for rec in new:
            if strategy.should_snapshot(rec.seq):
                if last is None:
                    last = self._last_of(machine_id, rec.seq - 1, m)
                snapshots.append(Snapshot(machine_id, rec.seq, tuple(clocks), *last))
            change = mt.changes(rec)
            changes.append(change)
            for i in change[0]:
                clocks[i] += 1
            for i in change[1]:
                clocks[i] += 1
            last = (rec.time, rec.mach_tick)
        try:
            self._append_batch(machine_id, new, snapshots)
        except BaseException:
            # A failed append (J-09, Akka): forget what we believed and reload
            # ``highest`` from storage before the next write.
            self._cache.pop(machine_id, None)
            self._indexes.pop(machine_id, None)
            raise
        m.clocks = mt
        m.highest = new[-1].seq
        m.last = last
        index = self._indexes.get(machine_id)
        if index is not None:
            if index.end == new[0].seq:
                index.extend(new, m.record.schema, changes)
                if index.end - max(index.saved_end, 0) >= _INDEX_SAVE_EVERY:
                    self._persist_index(machine_id, index)
            else:
                self._indexes.pop(machine_id, None)  # out of step: rebuilt on demand

    def _validate(
        self, machine_id: str, m: _Machine, records: Sequence[TransitionRecord]
    ) -> list[TransitionRecord]:
        size = len(m.record.schema)
        highest = m.highest
        expected: int | None = None
        new: list[TransitionRecord] = []
        for rec in records:
            if not isinstance(rec, TransitionRecord):
                raise BackendError(f"expected a TransitionRecord, got {type(rec).__name__}")
            if rec.machine_id != machine_id:
                raise BackendError(
                    f"a record of machine {rec.machine_id!r} in a batch of {machine_id!r}"
                )
            seq = rec.seq
            if type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
                raise BackendError(f"{machine_id}: seq must be a non-negative integer, got {seq!r}")
            if expected is not None and seq != expected:
                raise GapError(
                    f"{machine_id}: batch seqs are not consecutive ({expected - 1} then {seq})"
                )
            expected = seq + 1
            for indexes in (rec.exited, rec.entered):
                for i in indexes:
                    if type(i) is not int or not 0 <= i < size:
                        raise BackendError(
                            f"{machine_id} seq {seq}: state index {i!r} is outside the "
                            f"schema of {size} states"
                        )
            if seq > highest:
                if not new and seq != highest + 1:
                    raise GapError(
                        f"{machine_id}: expected seq {highest + 1}, got {seq} "
                        f"(seqs {highest + 1}..{seq - 1} are missing)"
                    )
                new.append(rec)
        # Records at stored seqs must be exact resends.
        old = [r for r in records if r.seq <= highest]
        if old:
            stored = {r.seq: r for r in self._read(machine_id, old[0].seq, old[-1].seq + 1)}
            for rec in old:
                have = stored.get(rec.seq)
                if have is not None and have != rec:
                    raise ConflictError(
                        f"{machine_id}: seq {rec.seq} is already stored with a different record"
                    )
        return new

    def _trim(self, machine_id: str, m: _Machine) -> None:
        assert self.max_records is not None
        first = self._first(machine_id)
        new_first = m.highest + 1 - self.max_records
        if new_first <= first:
            return
        # Keep the retained history rebuildable: a snapshot exactly at the new first seq.
        snap = self._latest_snapshot(machine_id, new_first)
        if snap is None or snap.index != new_first:
            mt = self._time_before(machine_id, new_first)
            last = self._last_of(machine_id, new_first - 1, m)
            self._save_snapshot(Snapshot(machine_id, new_first, tuple(mt.clocks), *last))
        self._delete_upto(machine_id, new_first - 1)
        self._delete_snapshots(machine_id, new_first - 1)
        self._indexes.pop(machine_id, None)

    def start_history_at(self, machine_id: str, first: int) -> None:
        """Let a machine with no records continue at seq ``first`` as if records
        ``[0, first)`` had been appended and deleted (``copy`` of a trimmed history).

        Raises:
            ReadOnlyError: when open read-only.
            UnknownMachine: the machine was never put.
            BackendError: the machine already has records, ``first`` is negative, or the
                backend cannot do it.
        """
        if type(first) is not int or first < 0:
            raise BackendError(f"a history starts at a non-negative seq, got {first!r}")
        with self._lock:
            self._check_write()
            m = self._machine(machine_id)
            if m.highest >= 0:
                if self._first(machine_id) == first and m.highest == first - 1:
                    return
                raise BackendError(
                    f"{machine_id}: already holds records up to seq {m.highest}; "
                    f"cannot restart it at {first}"
                )
            if first == 0:
                return
            self._start_at(machine_id, first)
            m.highest = first - 1
            m.clocks = None
            m.last = None
            self._indexes.pop(machine_id, None)

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Appends (and machine updates) in the block are made durable together when it
        ends: one SQLite transaction, one journal fsync, instead of one per batch (the
        ingest server groups the batches that queued up while it was writing).

        Each append in the block stays all-or-nothing (a refused one leaves nothing), but
        none is durable before the block ends, so nothing may be acknowledged before.
        The lock is held for the whole block. Nested blocks join the outer one.

        Raises:
            BackendError: making the group durable failed; what the block appended is
                then unknown (the backend re-reads ``highest`` from storage).
        """
        with self._lock:
            self._check_write()
            if self._grouping:
                yield
                return
            self._grouping = True
            try:
                self._group_begin()
                try:
                    yield
                finally:
                    try:
                        self._group_end()
                    except BaseException:
                        self._cache.clear()
                        self._indexes.clear()
                        raise
            finally:
                self._grouping = False

    @contextlib.contextmanager
    def auto_snapshots_off(self) -> Iterator[None]:
        """Within the block, appends save no snapshots by strategy (``copy`` uses it so
        the destination gets exactly the source's snapshots)."""
        with self._lock:
            before, self._auto_snapshots = self._auto_snapshots, False
        try:
            yield
        finally:
            with self._lock:
                self._auto_snapshots = before

    def read(
        self, machine_id: str, start: int = 0, end: int | None = None
    ) -> list[TransitionRecord]:
        """Records ``[start, end)`` of a machine (J-02); ``end`` None or 0 means to the end.

        Out-of-range bounds and unknown machines read empty; deleted seqs are skipped.

        Raises:
            BackendError: ``start`` or ``end`` negative or not an integer.
            GapError: a retained seq is missing from storage (J-06).
        """
        if type(start) is not int or start < 0:
            raise BackendError(f"read start must be a non-negative integer, got {start!r}")
        if end is not None and (type(end) is not int or end < 0):
            raise BackendError(f"read end must be a non-negative integer or None, got {end!r}")
        with self._lock:
            self._check_open()
            highest = self.highest(machine_id)
            stop = highest + 1 if end is None or end == 0 else min(end, highest + 1)
            begin = max(start, self._first(machine_id))
            if begin >= stop:
                return []
            return self._checked_read(machine_id, begin, stop)

    def replay(
        self,
        machine_id: str,
        from_seq: int = 0,
        to_seq: int | None = None,
        max_records: int | None = None,
    ) -> tuple[list[TransitionRecord], int]:
        """Bounded replay (J-08, Akka's ``replayMessages``): records ``from_seq ..
        to_seq`` **inclusive**, at most ``max_records`` of them, and ``highest``.

        ``max_records=0`` or ``from_seq > to_seq`` gives no records; ``highest`` is always
        reported (-1 for an unknown machine).

        Raises:
            BackendError: negative bounds.
        """
        if type(from_seq) is not int or from_seq < 0:
            raise BackendError(f"replay from_seq must be >= 0, got {from_seq!r}")
        if to_seq is not None and type(to_seq) is not int:
            raise BackendError(f"replay to_seq must be an integer or None, got {to_seq!r}")
        if max_records is not None and (type(max_records) is not int or max_records < 0):
            raise BackendError(f"replay max_records must be >= 0, got {max_records!r}")
        with self._lock:
            highest = self.highest(machine_id)
            stop = highest + 1 if to_seq is None else min(to_seq + 1, highest + 1)
            if max_records is not None:
                stop = min(stop, max(from_seq, self._first(machine_id)) + max_records)
            if max_records == 0 or from_seq >= stop:
                return [], highest
            return self.read(machine_id, from_seq, stop), highest

    def iter_records(
        self, machine_id: str, start: int = 0, end: int | None = None, chunk: int = 4096
    ) -> Iterator[TransitionRecord]:
        """Like ``read`` in chunks, so a long history never sits in memory at once."""
        stop = self.highest(machine_id) + 1 if end is None or end == 0 else end
        pos = max(start, self.first(machine_id))
        while pos < stop:
            upto = min(stop, pos + chunk)
            yield from self.read(machine_id, pos, upto)
            pos = upto

    def delete_upto(self, machine_id: str, seq: int) -> None:
        """Delete records ``[0, seq]`` (inclusive, J-04); ``highest`` is unchanged.

        A snapshot at ``seq + 1`` is saved first (when missing) so the retained records
        still rebuild exactly (``state_at``, predicates).

        Raises:
            ReadOnlyError: when open read-only.
            BackendError: ``seq`` beyond ``highest`` or negative, or the backend cannot
                delete (``supports_delete`` is False).
        """
        if type(seq) is not int or seq < 0:
            raise BackendError(f"delete_upto needs a non-negative integer seq, got {seq!r}")
        with self._lock:
            self._check_write()
            if not self.supports_delete:
                raise BackendError(f"the {self.scheme}:// backend cannot delete records")
            highest = self.highest(machine_id)
            if seq > highest:
                raise BackendError(
                    f"{machine_id}: cannot delete up to seq {seq}, the highest is {highest}"
                )
            if seq < self._first(machine_id):
                return
            m = self._machine(machine_id)
            snap = self._latest_snapshot(machine_id, seq + 1)
            if snap is None or snap.index != seq + 1:
                try:
                    mt = self._time_before(machine_id, seq + 1)
                except BackendError:
                    mt = None  # already not rebuildable; nothing to keep
                if mt is not None:
                    last = self._last_of(machine_id, seq, m)
                    self._save_snapshot(Snapshot(machine_id, seq + 1, tuple(mt.clocks), *last))
            self._delete_upto(machine_id, seq)
            self._indexes.pop(machine_id, None)

    # ------------------------------------------------------------------ snapshots
    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Save a snapshot; one at the same index is replaced (S-04).

        Raises:
            ReadOnlyError: when open read-only.
            UnknownMachine: the machine was never put.
            BackendError: a negative index, or clocks that are not one non-negative integer
                per state of the machine's schema.
        """
        if not isinstance(snapshot, Snapshot):
            raise BackendError(f"expected a Snapshot, got {type(snapshot).__name__}")
        if type(snapshot.index) is not int or snapshot.index < 0:
            raise BackendError(f"snapshot index must be a non-negative integer: {snapshot.index!r}")
        if not all(type(c) is int and c >= 0 for c in snapshot.clocks):
            raise BackendError("snapshot clocks must be non-negative integers")
        with self._lock:
            self._check_write()
            size = len(self._machine(snapshot.machine_id).record.schema)
            if len(snapshot.clocks) != size:
                raise BackendError(
                    f"{snapshot.machine_id}: a snapshot needs {size} clocks, "
                    f"got {len(snapshot.clocks)}"
                )
            self._save_snapshot(
                Snapshot(
                    snapshot.machine_id,
                    snapshot.index,
                    tuple(snapshot.clocks),
                    snapshot.time,
                    snapshot.mach_tick,
                )
            )

    def latest_snapshot(self, machine_id: str) -> Snapshot | None:
        """The snapshot with the highest index (S-04), or None."""
        with self._lock:
            self._check_open()
            return self._latest_snapshot(machine_id, _MAX_SEQ)

    def snapshots(self, machine_id: str) -> list[Snapshot]:
        """Every snapshot of a machine, by ascending index."""
        with self._lock:
            self._check_open()
            return self._snapshots(machine_id)

    def delete_snapshots(self, machine_id: str, upto: int) -> None:
        """Delete snapshots with index ``<= upto`` (inclusive, S-05).

        Raises:
            ReadOnlyError: when open read-only.
        """
        if type(upto) is not int:
            raise BackendError(f"delete_snapshots needs an integer index, got {upto!r}")
        with self._lock:
            self._check_write()
            self._delete_snapshots(machine_id, upto)

    def recover(self, machine_id: str) -> Iterator[RecoveryEvent]:
        """Replay a machine for resurrection (S-01, S-06): the latest snapshot (if any),
        then the records after it in order, then ``complete`` with ``highest``.

        ``recovering(machine_id)`` is true only inside that window, and appending to the
        machine meanwhile raises BackendError.
        """
        with self._lock:
            self._check_open()
            self._recovering.add(machine_id)
        try:
            snap = self.latest_snapshot(machine_id)
            start = 0
            if snap is not None:
                start = snap.index
                yield RecoveryEvent("snapshot", snapshot=snap)
            for rec in self.iter_records(machine_id, start):
                yield RecoveryEvent("record", record=rec)
            yield RecoveryEvent("complete", highest=self.highest(machine_id))
        finally:
            with self._lock:
                self._recovering.discard(machine_id)

    def recovering(self, machine_id: str) -> bool:
        return machine_id in self._recovering

    # ------------------------------------------------------------------ state and queries
    def state_at(self, machine_id: str, seq: int) -> MachineTime:
        """Machine time after applying record ``seq`` (SPEC §3.4): the nearest snapshot
        at or before ``seq + 1`` plus at most ``snapshot_every - 1`` replayed records.

        ``seq = -1`` gives the zero clocks.

        Raises:
            UnknownMachine: the machine was never put.
            BackendError: ``seq`` beyond ``highest``, or its records were deleted.
        """
        if type(seq) is not int or seq < -1:
            raise BackendError(f"state_at needs a seq >= -1, got {seq!r}")
        with self._lock:
            self._check_open()
            m = self._machine(machine_id)
            if seq > m.highest:
                raise BackendError(f"{machine_id}: no record {seq} (the highest is {m.highest})")
            index = self._indexes.get(machine_id)
            if seq == m.highest and m.clocks is not None:
                mt = m.clocks.copy()
            elif index is not None and index.first <= seq + 1 <= index.end:
                # Per-state bisections: ~10 us instead of a snapshot read plus replay.
                mt = MachineTime(len(m.record.schema), index.clocks_before(seq + 1))
            else:
                mt = self._time_before(machine_id, seq + 1)
            mt.tracked = self._tracked(m.record)
            return mt

    def _tracked(self, machine: MachineRecord) -> tuple[int, ...]:
        schema = machine.schema
        out = []
        for name in self.tracked_states:
            i = schema.get_index(name)
            if i is not None:
                out.append(i)
        return tuple(out)

    def to_time_record(self, record: TransitionRecord) -> TimeRecord:
        """The TimeRecord (sums, tracked sums, diffs) of a stored record."""
        with self._lock:
            return _query.to_time_record(self, record)

    def find(self, query: Query) -> list[TransitionRecord]:
        """Records matching every filter of ``query`` (see ``backends.query.find``)."""
        with self._lock:
            self._check_open()
            return _query.find(self, query)

    def count(self, query: Query) -> int:
        """How many records ``find(query)`` would return."""
        with self._lock:
            self._check_open()
            return _query.count(self, query)

    def index_columns(self, machine_id: str, start: int, end: int) -> IndexColumns | None:
        """What the query index holds of each record of ``[start, end)``, clipped to the
        indexed seqs (see :class:`backends.base.IndexColumns`), without reading records.

        Uses the index in memory or the saved one (a journal's ``.idx`` sidecar: ~0.3 s
        for a million records); an index that would have to be built from the records
        is not built here (that reads them all, as the caller's fallback does anyway).

        Returns:
            The columns (copies, taken under the backend lock), or None when there is
            no such index.

        Raises:
            UnknownMachine: the machine was never put.
        """
        with self._lock:
            self._check_open()
            self._machine(machine_id)
            if machine_id not in self._indexes:
                stored = self._stored_index(machine_id)
                if stored is None:
                    return None
                self._indexes[machine_id] = stored
            # follows another writer when read-only, as every query does
            return self._index_for(machine_id).columns(start, end)

    def activated_between(self, machine_id: str, state: str, start: int, end: int) -> bool:
        """Whether a record with time in ``[start, end)`` entered ``state``."""
        with self._lock:
            self._check_open()
            return _query.activated_between(self, machine_id, state, start, end)

    def deactivated_between(self, machine_id: str, state: str, start: int, end: int) -> bool:
        """Whether a record with time in ``[start, end)`` exited ``state``."""
        with self._lock:
            self._check_open()
            return _query.deactivated_between(self, machine_id, state, start, end)

    def active_between(self, machine_id: str, state: str, start: int, end: int) -> bool:
        """Whether ``state`` was active at any time in ``[start, end)`` (also when it was
        already active at ``start``)."""
        with self._lock:
            self._check_open()
            return _query.active_between(self, machine_id, state, start, end)

    def inactive_between(self, machine_id: str, state: str, start: int, end: int) -> bool:
        """Whether ``state`` was inactive at any time in ``[start, end)``."""
        with self._lock:
            self._check_open()
            return _query.inactive_between(self, machine_id, state, start, end)

    # ------------------------------------------------------------------ sink
    def register(self, machine: MachineRecord) -> int:
        """Sink: store the machine record and return the next seq (``highest + 1``)."""
        with self._lock:
            self.put_machine(machine)
            return self.highest(machine.id) + 1

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        """Sink: ``append``."""
        self.append(machine_id, records)

    def write_rows(self, machine_id: str, first_seq: int, rows: Sequence[tuple[Any, ...]]) -> None:
        """Sink (``tracer.sinks.RowSink``): records the tracer built as rows, so it builds
        no TransitionRecord for a backend.

        A tracer row is a wire row (``append_rows``) as a tuple, so it goes the same way:
        stored as it is by a backend with a rows path, else appended as records.

        Args:
            machine_id: the machine the rows belong to.
            first_seq: the seq of ``rows[0]``; row ``i`` has seq ``first_seq + i``.
            rows: tuples of ``tracer.codec.transition_to_list``'s 13 fields.

        Raises:
            As ``append_rows``.
        """
        # The tracer numbered the rows itself (contiguous from first_seq) with state
        # indexes of the schema it registered: append_rows' per-row checks are skipped.
        self._append_rows(machine_id, first_seq, rows, trusted=True)

    def dispose(self, machine_id: str) -> None:
        """Sink: the machine is no longer traced; its cached clocks are released."""
        with self._lock:
            self._cache.pop(machine_id, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Make acknowledged writes durable; True (every backend writes synchronously)."""
        with self._lock:
            if not self._closed:
                for mid, index in list(self._indexes.items()):
                    self._persist_index(mid, index)
                self._flush()
            return True

    def close(self) -> None:
        """Release the storage; idempotent. Later calls raise BackendError."""
        with self._lock:
            if self._closed:
                return
            for mid, index in list(self._indexes.items()):
                self._persist_index(mid, index)
            self._closed = True
            self._cache.clear()
            self._indexes.clear()
            self._close()

    def __enter__(self) -> BaseBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @classmethod
    def from_url(cls, url: str, **options: Any) -> BaseBackend:
        """Open the backend a URL names; query-string options merge with ``options``."""
        raise NotImplementedError

    @staticmethod
    def _merge(url_options: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        merged = dict(url_options)
        merged.update(options)
        return merged
