"""The event and snapshot store of event-sourced objects, on top of any aminspect backend.

One persistent object's events are one machine's history in a backend: the event at
0-based index ``i`` is the ``TransitionRecord`` with ``seq == i`` (kind ``event``, name =
the event type, args = its msgpack payload), so journal rules J-01..J-10 are the backend's
own (``backends/_base.py``). Snapshots of the *user state* need a payload the backends'
``Snapshot`` (machine clocks only) lacks; they live in a small store next to the backend:
a dict for ``memory://``, an ``es_snapshots`` table in the same SQLite file, and a
directory of atomically replaced files beside a journal file or an LMDB directory.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote

import msgpack

import backends
from backends import (
    Backend,
    BackendError,
    ConflictError,
    CorruptError,
    ReadOnlyError,
    UnknownMachine,
)
from backends.journal import atomic_write
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

__all__ = [
    "DEFAULT_SCHEMA",
    "DuplicateIndex",
    "FileSnapshotStore",
    "MemorySnapshotStore",
    "Provider",
    "SQLiteSnapshotStore",
    "SnapshotStore",
    "StoredEvent",
    "StoredSnapshot",
    "snapshot_store_for",
]

#: The schema of an event stream whose object declares no states: one state, ``live``,
#: entered by the first event (so the inspector shows when the object came to life).
DEFAULT_SCHEMA = Schema.flat(["live"])

STREAM_KIND = "eventsourced"


class DuplicateIndex(ConflictError):
    """An event index that is already stored (J-05): appends never overwrite."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event: its 0-based ``index``, type ``name`` and msgpack ``payload``."""

    stream: str
    index: int
    name: str
    payload: Any
    time: int = 0  # UTC ns when it was persisted
    mach_tick: int = 0  # the object's restart count when it was persisted


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    """The encoded user state after events ``[0, index)`` of ``stream`` (S-01)."""

    stream: str
    index: int
    data: bytes
    time: int = 0  # UTC ns when it was saved


@runtime_checkable
class SnapshotStore(Protocol):
    """Where user-state snapshots live. ``latest`` is the highest index (S-04); saving at
    an existing index replaces it; ``delete_upto`` is inclusive and really deletes (S-05)."""

    def save(self, snapshot: StoredSnapshot) -> None: ...
    def latest(self, stream: str) -> StoredSnapshot | None: ...
    def all(self, stream: str) -> list[StoredSnapshot]: ...
    def delete_upto(self, stream: str, upto: int) -> None: ...
    def close(self) -> None: ...


class MemorySnapshotStore:
    """Snapshots in a dict (for ``memory://`` backends and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snaps: dict[str, dict[int, StoredSnapshot]] = {}

    def save(self, snapshot: StoredSnapshot) -> None:
        with self._lock:
            self._snaps.setdefault(snapshot.stream, {})[snapshot.index] = snapshot

    def latest(self, stream: str) -> StoredSnapshot | None:
        with self._lock:
            snaps = self._snaps.get(stream)
            return snaps[max(snaps)] if snaps else None

    def all(self, stream: str) -> list[StoredSnapshot]:
        with self._lock:
            snaps = self._snaps.get(stream, {})
            return [snaps[k] for k in sorted(snaps)]

    def delete_upto(self, stream: str, upto: int) -> None:
        with self._lock:
            snaps = self._snaps.get(stream, {})
            for k in [k for k in snaps if k <= upto]:
                del snaps[k]

    def close(self) -> None:
        """Nothing to release; the snapshots stay for other providers of the backend."""


_SQL_DDL = (
    "CREATE TABLE IF NOT EXISTS es_snapshots ("
    " stream TEXT NOT NULL, idx INTEGER NOT NULL, time INTEGER NOT NULL,"
    " data BLOB NOT NULL, PRIMARY KEY (stream, idx)) WITHOUT ROWID"
)


class SQLiteSnapshotStore:
    """Snapshots in an ``es_snapshots`` table of the backend's SQLite file, through a
    connection of its own; each save or delete is one transaction (``synchronous=FULL``).

    Raises:
        BackendError: the file cannot be opened.
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
                )
            else:
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            if not read_only:
                self._db.execute("PRAGMA synchronous = FULL")
                self._db.execute(_SQL_DDL)
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite {path}: cannot open the snapshot table: {exc}") from None

    def _run(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return []  # a read-only file no event-sourced object wrote to
                raise BackendError(f"sqlite {self.path}: {exc}") from None
            except sqlite3.Error as exc:
                raise BackendError(f"sqlite {self.path}: {exc}") from None

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.path} is open read-only")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(sql, params)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise BackendError(f"sqlite {self.path}: {exc}") from None

    def save(self, snapshot: StoredSnapshot) -> None:
        self._write(
            "INSERT OR REPLACE INTO es_snapshots (stream, idx, time, data) VALUES (?, ?, ?, ?)",
            (snapshot.stream, snapshot.index, snapshot.time, snapshot.data),
        )

    def latest(self, stream: str) -> StoredSnapshot | None:
        rows = self._run(
            "SELECT idx, time, data FROM es_snapshots WHERE stream = ? ORDER BY idx DESC LIMIT 1",
            (stream,),
        )
        return StoredSnapshot(stream, rows[0][0], bytes(rows[0][2]), rows[0][1]) if rows else None

    def all(self, stream: str) -> list[StoredSnapshot]:
        rows = self._run(
            "SELECT idx, time, data FROM es_snapshots WHERE stream = ? ORDER BY idx", (stream,)
        )
        return [StoredSnapshot(stream, i, bytes(d), t) for i, t, d in rows]

    def delete_upto(self, stream: str, upto: int) -> None:
        self._write("DELETE FROM es_snapshots WHERE stream = ? AND idx <= ?", (stream, upto))

    def close(self) -> None:
        with self._lock:
            self._db.close()


_FILE_MAGIC = b"AMES1"


class FileSnapshotStore:
    """One file per snapshot under ``directory/<quoted stream>/<index>.snap``, written with
    temp + fsync + rename + directory fsync (D-04) and checked by CRC32 when read."""

    def __init__(self, directory: str, *, read_only: bool = False) -> None:
        self.directory = directory
        self.read_only = read_only
        self._lock = threading.Lock()

    def _dir(self, stream: str) -> str:
        return os.path.join(self.directory, quote(stream, safe=""))

    def _indexes(self, stream: str) -> list[int]:
        try:
            names = os.listdir(self._dir(stream))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            stem, dot, ext = name.partition(".")
            if dot and ext == "snap" and stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def _load(self, stream: str, index: int) -> StoredSnapshot:
        path = os.path.join(self._dir(stream), f"{index:020d}.snap")
        with open(path, "rb") as f:
            blob = f.read()
        head = len(_FILE_MAGIC) + 12
        if len(blob) < head or not blob.startswith(_FILE_MAGIC):
            raise CorruptError(f"{path}: not a snapshot file")
        crc = int.from_bytes(blob[len(_FILE_MAGIC) : len(_FILE_MAGIC) + 4], "big")
        stamp = int.from_bytes(blob[len(_FILE_MAGIC) + 4 : head], "big")
        data = blob[head:]
        if zlib.crc32(data) != crc:
            raise CorruptError(f"{path}: snapshot checksum mismatch")
        return StoredSnapshot(stream, index, data, stamp)

    def save(self, snapshot: StoredSnapshot) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.directory} is open read-only")
        with self._lock:
            folder = self._dir(snapshot.stream)
            try:
                os.makedirs(folder, exist_ok=True)
                header = _FILE_MAGIC + zlib.crc32(snapshot.data).to_bytes(4, "big")
                header += snapshot.time.to_bytes(8, "big")
                atomic_write(
                    os.path.join(folder, f"{snapshot.index:020d}.snap"), [header, snapshot.data]
                )
            except OSError as exc:
                raise BackendError(f"cannot save a snapshot in {folder}: {exc}") from None

    def latest(self, stream: str) -> StoredSnapshot | None:
        with self._lock:
            indexes = self._indexes(stream)
            return self._load(stream, indexes[-1]) if indexes else None

    def all(self, stream: str) -> list[StoredSnapshot]:
        with self._lock:
            return [self._load(stream, i) for i in self._indexes(stream)]

    def delete_upto(self, stream: str, upto: int) -> None:
        if self.read_only:
            raise ReadOnlyError(f"{self.directory} is open read-only")
        with self._lock:
            folder = self._dir(stream)
            gone = [i for i in self._indexes(stream) if i <= upto]
            try:
                for i in gone:
                    os.unlink(os.path.join(folder, f"{i:020d}.snap"))
                if gone:
                    fd = os.open(folder, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            except OSError as exc:
                raise BackendError(f"cannot delete snapshots in {folder}: {exc}") from None

    def streams(self) -> list[str]:
        """The streams holding at least one snapshot file."""
        try:
            return sorted(unquote(n) for n in os.listdir(self.directory))
        except FileNotFoundError:
            return []

    def close(self) -> None:
        """Nothing is held open between calls."""


# One snapshot store per backend object, so two providers on one backend share snapshots.
_stores: weakref.WeakKeyDictionary[Any, SnapshotStore] = weakref.WeakKeyDictionary()
_stores_lock = threading.Lock()


def snapshot_store_for(backend: Backend) -> SnapshotStore:
    """The snapshot store that goes with a backend (see the module docstring).

    Raises:
        BackendError: for a backend kind with no default store (pass one to Provider).
    """
    with _stores_lock:
        try:
            found = _stores.get(backend)
        except TypeError:
            found = None
        if found is not None:
            return found
        scheme = getattr(backend, "scheme", "")
        path = getattr(backend, "path", None)
        read_only = bool(getattr(backend, "read_only", False))
        store: SnapshotStore
        if scheme == "memory":
            store = MemorySnapshotStore()
        elif scheme == "sqlite" and isinstance(path, str):
            store = SQLiteSnapshotStore(path, read_only=read_only)
        elif scheme in ("journal", "lmdb") and isinstance(path, str):
            store = FileSnapshotStore(path.rstrip("/") + ".es-snapshots", read_only=read_only)
        else:
            raise BackendError(
                f"no snapshot store for {scheme or type(backend).__name__}:// backends; "
                "pass snapshots=... to Provider"
            )
        with contextlib.suppress(TypeError):
            _stores[backend] = store
            # The store's connection goes when the backend object does.
            weakref.finalize(backend, store.close)
        return store


def _check_stream(stream: object) -> str:
    if not isinstance(stream, str) or not stream:
        raise BackendError(f"a stream name must be a non-empty string, got {stream!r}")
    return stream


def _check_index(what: str, value: object) -> int:
    if type(value) is not int or value < 0:
        raise BackendError(f"{what} must be a non-negative integer, got {value!r}")
    return value


class Provider:
    """Events and snapshots of event-sourced objects in one aminspect backend.

    Indexes are 0-based and contiguous per stream; ``highest`` is -1 for a stream with no
    events and never decreases, also after deletes (J-01, J-03, J-04).

    Args:
        backend: an open backend, or a URL for ``backends.open`` (then owned and closed
            by ``close()``).
        snapshots: where user-state snapshots go; by default the store for the backend
            (``snapshot_store_for``).

    Raises:
        BackendError: the URL cannot be opened or the backend has no snapshot store.
    """

    def __init__(self, backend: Backend | str, *, snapshots: SnapshotStore | None = None) -> None:
        if isinstance(backend, str):
            self.backend: Backend = backends.open(backend)
            self._owned = True
        else:
            self.backend = backend
            self._owned = False
        try:
            self.snapshots: SnapshotStore = (
                snapshots if snapshots is not None else snapshot_store_for(self.backend)
            )
        except BaseException:
            if self._owned:
                self.backend.close()
            raise
        self._packer = msgpack.Packer(use_bin_type=True)
        self._lock = threading.RLock()

    # -- streams ---------------------------------------------------------------------------
    def open_stream(
        self,
        stream: str,
        schema: Schema = DEFAULT_SCHEMA,
        *,
        kind: str = STREAM_KIND,
        parent_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> MachineRecord:
        """The stream's machine record, created when missing (its schema is widened when
        ``schema`` has more states).

        Raises:
            BackendError: a bad name, or the backend refuses the write.
        """
        _check_stream(stream)
        with self._lock:
            try:
                record = self.backend.get_machine(stream)
            except UnknownMachine:
                record = MachineRecord(stream, kind, schema, parent_id, tags=dict(tags or {}))
                self.backend.put_machine(record)
                return record
            if len(schema) > len(record.schema):
                record.schema = schema
                self.backend.put_machine(record)
            return record

    def set_tick(self, stream: str, tick: int) -> None:
        """Store the stream's restart count (``mach_tick``) on its machine record."""
        with self._lock:
            record = self.backend.get_machine(stream)
            record.mach_tick = tick
            record.updated = time.time_ns()
            self.backend.put_machine(record)

    # -- events ----------------------------------------------------------------------------
    def highest(self, stream: str) -> int:
        """The highest index ever written; -1 for an unknown or empty stream (J-01, J-03)."""
        return self.backend.highest(_check_stream(stream))

    def first(self, stream: str) -> int:
        """The lowest index still stored (``highest + 1`` when none is)."""
        return self.backend.first(_check_stream(stream))

    def read_events(self, stream: str, start: int = 0, end: int | None = None) -> list[StoredEvent]:
        """Events ``[start, end)`` (J-02): ``end`` None or 0 means to the end, ``start ==
        end`` is empty, out-of-range bounds read empty, deleted indexes are skipped.

        Raises:
            BackendError: negative bounds.
            GapError: an index inside the stored range is missing (J-06).
            CorruptError: a stored event cannot be decoded (J-07).
        """
        _check_stream(stream)
        _check_index("start", start)
        if end is not None:
            _check_index("end", end)
        return [_event_of(r) for r in self.backend.read(stream, start, end)]

    def replay(
        self,
        stream: str,
        from_index: int = 0,
        to_index: int | None = None,
        max_events: int | None = None,
    ) -> tuple[list[StoredEvent], int]:
        """Bounded replay (J-08): events ``from_index .. to_index`` **inclusive**, at most
        ``max_events``, and ``highest`` (always reported). ``max_events=0`` or ``from_index
        > to_index`` gives none.

        Raises:
            BackendError: negative bounds.
        """
        _check_stream(stream)
        _check_index("from_index", from_index)
        if to_index is not None:
            _check_index("to_index", to_index)
        if max_events is not None:
            _check_index("max_events", max_events)
        with self._lock:
            highest = self.highest(stream)
            stop = highest + 1 if to_index is None else min(to_index + 1, highest + 1)
            if max_events is not None:
                stop = min(stop, max(from_index, self.first(stream)) + max_events)
            if max_events == 0 or from_index >= stop:
                return [], highest
            return self.read_events(stream, from_index, stop), highest

    def encode_check(self, payload: Any) -> None:
        """Raise TypeError/ValueError when ``payload`` cannot be stored (a rejection)."""
        self._packer.pack(payload)

    def append(self, stream: str, records: Sequence[TransitionRecord]) -> None:
        """Append event records, all or none (J-09). The first must be at ``highest + 1``.

        Raises:
            DuplicateIndex: an index is already stored (J-05), also when another writer
                stored it first.
            GapError: the indexes skip ahead or are not consecutive (J-06).
            BackendError: a payload that cannot be encoded (nothing stored) or a storage
                failure (the outcome is unknown: re-read ``highest``).
        """
        _check_stream(stream)
        if not records:
            return
        with self._lock:
            highest = self.highest(stream)
            if records[0].seq <= highest:
                raise DuplicateIndex(
                    f"{stream}: event index {records[0].seq} is already stored "
                    f"(the highest is {highest})"
                )
            try:
                self.backend.append(stream, records)
            except DuplicateIndex:
                raise
            except ConflictError as exc:
                raise DuplicateIndex(str(exc)) from None

    def write_events(
        self,
        stream: str,
        start: int,
        events: Sequence[tuple[str, Any]],
        *,
        mach_tick: int = 0,
    ) -> None:
        """Append ``(name, payload)`` events at ``start, start + 1, ...`` (the stream is
        created with the default schema when missing). Same rules as ``append``.

        Raises:
            DuplicateIndex, GapError, BackendError: see ``append``.
        """
        _check_stream(stream)
        _check_index("start", start)
        now = time.time_ns()
        records = []
        for i, (name, payload) in enumerate(events):
            if not isinstance(name, str):
                raise BackendError(f"an event name must be a string, got {name!r}")
            try:
                self.encode_check(payload)
            except (TypeError, ValueError, OverflowError) as exc:
                raise BackendError(
                    f"{stream}: event {start + i} cannot be encoded: {exc}"
                ) from None
            records.append(
                TransitionRecord(stream, start + i, Kind.EVENT, name, mach_tick, now, args=payload)
            )
        with self._lock:
            self.open_stream(stream)
            self.append(stream, records)

    def delete_events(self, stream: str, upto: int) -> None:
        """Delete events ``[0, upto]`` (inclusive, J-04); ``highest`` is unchanged.

        Raises:
            BackendError: ``upto`` beyond ``highest`` or negative.
        """
        _check_stream(stream)
        _check_index("upto", upto)
        self.backend.delete_upto(stream, upto)

    # -- snapshots -------------------------------------------------------------------------
    def save_snapshot(self, stream: str, index: int, data: bytes) -> None:
        """Save encoded state after events ``[0, index)``; one at ``index`` is replaced.

        Raises:
            BackendError: a bad index or a storage failure.
        """
        _check_stream(stream)
        _check_index("snapshot index", index)
        if not isinstance(data, bytes | bytearray):
            raise BackendError(f"snapshot data must be bytes, got {type(data).__name__}")
        self.snapshots.save(StoredSnapshot(stream, index, bytes(data), time.time_ns()))

    def latest_snapshot(self, stream: str) -> StoredSnapshot | None:
        """The snapshot with the highest index (S-04), or None (J-03)."""
        return self.snapshots.latest(_check_stream(stream))

    def select_snapshot(
        self, stream: str, *, max_index: int | None = None, max_time: int | None = None
    ) -> StoredSnapshot | None:
        """The highest-index snapshot with ``index <= max_index`` and ``time <= max_time``
        (UTC ns), or None (S-05, Akka's ``SnapshotSelectionCriteria``)."""
        for snap in reversed(self.all_snapshots(stream)):
            if (max_index is None or snap.index <= max_index) and (
                max_time is None or snap.time <= max_time
            ):
                return snap
        return None

    def all_snapshots(self, stream: str) -> list[StoredSnapshot]:
        """Every snapshot of the stream by ascending index."""
        return self.snapshots.all(_check_stream(stream))

    def delete_snapshots(self, stream: str, upto: int) -> None:
        """Delete snapshots with index ``<= upto`` (inclusive, S-05)."""
        _check_stream(stream)
        if type(upto) is not int:
            raise BackendError(f"delete_snapshots needs an integer index, got {upto!r}")
        self.snapshots.delete_upto(stream, upto)

    def flush(self) -> None:
        self.backend.flush()

    def close(self) -> None:
        """Close the backend when this provider opened it from a URL."""
        if self._owned:
            self.backend.close()
            self.snapshots.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _event_of(rec: TransitionRecord) -> StoredEvent:
    return StoredEvent(rec.machine_id, rec.seq, rec.name, rec.args, rec.time, rec.mach_tick)
