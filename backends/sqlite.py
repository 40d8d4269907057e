"""SQLiteBackend (``sqlite:///path.db``): history in one SQLite file, WAL mode, stdlib sqlite3.

* One transaction per appended batch: the records and the snapshots the batch triggered
  commit together (J-09, S-01). Records are keyed ``(machine, seq)`` (WITHOUT ROWID), so
  every read is one key-range scan. They are inserted 128 rows per ``INSERT`` statement
  (~1 us a record less than one statement per row).
* ``durability="full"`` (default) runs ``synchronous=FULL``: a committed batch survives
  power loss. ``"fast"`` runs ``synchronous=NORMAL``: consistent, but the latest commits
  may be lost on power loss (D-05). Do not put the file on a network filesystem.
* Concurrency: one connection per backend object, used under the base's lock, so the
  tracer's sender thread and reader threads share it safely (a read is a few ms at most,
  so serialising them costs little and avoids a connection per thread). Other processes
  may read the file while one records (WAL).
* Schema version in ``PRAGMA user_version``; a file from a newer version is refused.
* Queries use the shared evaluator's per-machine index (state-change seqs and record
  times), which this backend keeps in the ``query_index`` table: saved on flush, on close
  and every 2**18 records, loaded on open and extended by the records after it. An
  earlier version kept one SQL row per state change instead and answered the predicates
  in SQL in ~20 us, but tripled the rows written and cut the append rate by about half;
  the in-memory index answers in ~10 us and costs ~25 bytes per record on disk.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

import msgpack

from backends._base import BaseBackend, parse_url
from backends.base import BackendError, ConflictError, CorruptError, Snapshot
from tracer.codec import (
    DecodeError,
    decode_machine,
    encode_machine,
    transition_to_list,
)
from tracer.records import MachineRecord, TransitionRecord

__all__ = ["SCHEMA_VERSION", "SQLiteBackend"]

SCHEMA_VERSION = 1

_DDL = """
CREATE TABLE IF NOT EXISTS machines (
    mid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    data BLOB NOT NULL,
    highest INTEGER NOT NULL DEFAULT -1,
    first INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    mid INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (mid, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    mid INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    clocks BLOB NOT NULL,
    time INTEGER NOT NULL,
    tick INTEGER NOT NULL,
    PRIMARY KEY (mid, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS query_index (
    mid INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
"""


# Records per multi-row INSERT: 3 parameters each stays far below the 999 parameters of
# SQLite builds older than 3.32 (newer ones allow 32,766).
_ROWS_PER_INSERT = 128
_INSERT_MANY = "INSERT INTO records (mid, seq, data) VALUES " + ", ".join(
    ["(?, ?, ?)"] * _ROWS_PER_INSERT
)


def _sqlite_error(path: str, exc: sqlite3.Error) -> BackendError:
    msg = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        # Our own validation rules out duplicates, so another writer got there first.
        return ConflictError(f"{path}: another writer stored these records first ({msg})")
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in msg:
        return CorruptError(f"{path} is not an SQLite database ({msg})")
    return BackendError(f"sqlite {path}: {msg}")


class SQLiteBackend(BaseBackend):
    """History in an SQLite file (see the module docstring for the guarantees).

    Args:
        path: the database file; created (with its tables) unless ``read_only``.
        **options: see :class:`backends._base.BaseBackend`.

    Raises:
        BackendError: the file cannot be opened or created.
        CorruptError: the file is not an SQLite database.
    """

    scheme = "sqlite"
    supports_delete = True
    persistent = True

    def __init__(self, path: str, **options: Any) -> None:
        url = options.pop("url", f"sqlite:///{path}")
        super().__init__(url, **options)
        if not path:
            raise BackendError(
                "sqlite:// needs a file path: sqlite:///relative.db or sqlite:////abs.db"
            )
        self.path = path
        self._in_group = False  # inside BaseBackend.group(): appends use savepoints
        self._in_savepoint = False
        try:
            if self.read_only:
                if not os.path.exists(path):
                    raise BackendError(f"cannot open {path} read-only: no such file")
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
                )
            else:
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._setup()
        except sqlite3.Error as exc:
            raise _sqlite_error(path, exc) from None
        self._mids: dict[str, int] = {}
        self._packer = msgpack.Packer(use_bin_type=True)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteBackend:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db``, options also as a query
        string (``?durability=fast``).

        Raises:
            BackendError: no path, or a bad option value.
        """
        path, url_options = parse_url(url, "sqlite")
        return cls(path, url=url, **cls._merge(url_options, options))

    def _setup(self) -> None:
        db = self._db
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise BackendError(
                f"{self.path} was written by a newer aminspect (schema {version}, "
                f"this one reads up to {SCHEMA_VERSION})"
            )
        db.execute("PRAGMA busy_timeout = 5000")
        if self.read_only:
            if version == 0 and not self._has_tables():
                raise BackendError(f"{self.path} holds no aminspect history")
            return
        db.execute("PRAGMA journal_mode = WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        db.execute(f"PRAGMA synchronous = {sync}")
        if version == 0:
            if not self._has_tables() and self._has_foreign_tables():
                raise BackendError(f"{self.path} is an SQLite database of another program")
            db.execute("BEGIN IMMEDIATE")
            for stmt in _DDL.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")

    def _has_tables(self) -> bool:
        row = self._db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='records'"
        ).fetchone()
        return bool(row[0])

    def _has_foreign_tables(self) -> bool:
        # aminspect's persistent machines may share the file: their tables do not make it
        # "another program's" database (fsm_*: validated FSM, es_*: event-sourced snapshots,
        # hsm_*: HSM trees).
        row = self._db.execute(
            "SELECT count(*) FROM sqlite_master WHERE name NOT GLOB 'fsm_*' "
            "AND name NOT GLOB 'es_*' AND name NOT GLOB 'hsm_*' AND name NOT GLOB 'sqlite_*'"
        ).fetchone()
        return bool(row[0])

    # -- helpers -----------------------------------------------------------------------
    def _mid(self, machine_id: str) -> int | None:
        mid = self._mids.get(machine_id)
        if mid is None:
            row = self._db.execute(
                "SELECT mid FROM machines WHERE id = ?", (machine_id,)
            ).fetchone()
            if row is None:
                return None
            mid = self._mids[machine_id] = int(row[0])
        return mid

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    # -- primitives ----------------------------------------------------------------------
    def _put_machine(self, machine: MachineRecord) -> None:
        data = encode_machine(machine)
        with self._tx():
            self._db.execute(
                "INSERT INTO machines (id, data) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (machine.id, data),
            )

    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        row = self._db.execute("SELECT data FROM machines WHERE id = ?", (machine_id,)).fetchone()
        if row is None:
            return None
        try:
            return decode_machine(row[0])
        except DecodeError as exc:
            raise CorruptError(
                f"{self.path}: machine {machine_id!r} cannot be decoded: {exc}"
            ) from None

    def _machines(self) -> list[MachineRecord]:
        out = []
        for mid, data in self._db.execute("SELECT id, data FROM machines ORDER BY id"):
            try:
                out.append(decode_machine(data))
            except DecodeError as exc:
                raise CorruptError(
                    f"{self.path}: machine {mid!r} cannot be decoded: {exc}"
                ) from None
        return out

    def _highest(self, machine_id: str) -> int:
        row = self._db.execute(
            "SELECT highest FROM machines WHERE id = ?", (machine_id,)
        ).fetchone()
        return -1 if row is None else int(row[0])

    def _first(self, machine_id: str) -> int:
        row = self._db.execute("SELECT first FROM machines WHERE id = ?", (machine_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        mid = self._mid(machine_id)
        if mid is None:  # the base checked the machine exists
            raise BackendError(f"unknown machine {machine_id!r} in {self.url}")
        pack = self._packer.pack
        try:
            blobs = [pack(transition_to_list(r)) for r in records]
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise BackendError(f"{machine_id}: cannot encode a record: {exc}") from None
        self._insert(mid, records[0].seq, blobs, snapshots)

    _stores_rows = True

    def _append_rows_batch(
        self,
        machine_id: str,
        rows: Sequence[Sequence[Any]],
        snapshots: Sequence[Snapshot],
    ) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            raise BackendError(f"unknown machine {machine_id!r} in {self.url}")
        # A wire row is the record's transition_to_list: stored as it is.
        try:
            blobs = list(map(self._packer.pack, rows))
        except (TypeError, ValueError, OverflowError) as exc:
            raise BackendError(f"{machine_id}: cannot encode a record: {exc}") from None
        self._insert(mid, rows[0][0], blobs, snapshots)

    def _insert(
        self, mid: int, first: int, blobs: list[bytes], snapshots: Sequence[Snapshot]
    ) -> None:
        """Store records ``first ..`` (their msgpack ``blobs``) and ``snapshots`` in one
        transaction, and advance the machine's ``highest``."""
        db = self._db
        n = len(blobs)
        # Many rows per INSERT statement: sqlite3 pays its per-statement step (and Python
        # its per-row call) once per _ROWS_PER_INSERT records, ~1 us a record less. The
        # parameters are interleaved by slice assignment (C loops): mid, seq, data, ...
        params: list[Any] = [mid] * (3 * n)
        params[1::3] = range(first, first + n)
        params[2::3] = blobs
        k = 3 * _ROWS_PER_INSERT
        full = len(params) - len(params) % k
        with self._tx():
            if full:
                db.executemany(_INSERT_MANY, [params[i : i + k] for i in range(0, full, k)])
            if full < len(params):
                rest = params[full:]
                db.executemany(
                    "INSERT INTO records (mid, seq, data) VALUES (?, ?, ?)",
                    [rest[i : i + 3] for i in range(0, len(rest), 3)],
                )
            if snapshots:
                pack = self._packer.pack
                db.executemany(
                    "INSERT OR REPLACE INTO snapshots (mid, idx, clocks, time, tick) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (mid, sn.index, pack(list(sn.clocks)), sn.time, sn.mach_tick)
                        for sn in snapshots
                    ],
                )
            db.execute("UPDATE machines SET highest = ? WHERE mid = ?", (first + n - 1, mid))

    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        mid = self._mid(machine_id)
        if mid is None:
            return []
        cur = self._db.execute(
            "SELECT seq, data FROM records WHERE mid = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (mid, start, end),
        )
        return [self._decode(machine_id, seq, data) for seq, data in cur]

    def _start_at(self, machine_id: str, first: int) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE machines SET highest = ?, first = ? WHERE id = ?",
                (first - 1, first, machine_id),
            )

    def _delete_upto(self, machine_id: str, seq: int) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        with self._tx():
            self._db.execute("DELETE FROM records WHERE mid = ? AND seq <= ?", (mid, seq))
            self._db.execute(
                "UPDATE machines SET first = max(first, ?) WHERE mid = ?", (seq + 1, mid)
            )

    def _save_snapshot(self, snapshot: Snapshot) -> None:
        mid = self._mid(snapshot.machine_id)
        if mid is None:  # the base checked the machine exists
            raise BackendError(f"unknown machine {snapshot.machine_id!r} in {self.url}")
        clocks = self._packer.pack(list(snapshot.clocks))
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots (mid, idx, clocks, time, tick) "
                "VALUES (?, ?, ?, ?, ?)",
                (mid, snapshot.index, clocks, snapshot.time, snapshot.mach_tick),
            )

    def _snapshot_row(self, machine_id: str, row: tuple[Any, ...]) -> Snapshot:
        idx, clocks, t, tick = row
        try:
            values = msgpack.unpackb(clocks)
            if not isinstance(values, list) or not all(type(v) is int for v in values):
                raise ValueError("clocks are not a list of integers")
        except ValueError as exc:
            raise CorruptError(
                f"{self.path}: snapshot {machine_id}@{idx} cannot be decoded: {exc}"
            ) from None
        return Snapshot(machine_id, idx, tuple(values), t, tick)

    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        mid = self._mid(machine_id)
        if mid is None:
            return None
        row = self._db.execute(
            "SELECT idx, clocks, time, tick FROM snapshots WHERE mid = ? AND idx <= ? "
            "ORDER BY idx DESC LIMIT 1",
            (mid, upto),
        ).fetchone()
        return None if row is None else self._snapshot_row(machine_id, row)

    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        mid = self._mid(machine_id)
        if mid is None:
            return []
        cur = self._db.execute(
            "SELECT idx, clocks, time, tick FROM snapshots WHERE mid = ? ORDER BY idx", (mid,)
        )
        return [self._snapshot_row(machine_id, row) for row in cur]

    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        with self._tx():
            self._db.execute("DELETE FROM snapshots WHERE mid = ? AND idx <= ?", (mid, upto))

    def _flush(self) -> None:
        pass  # every batch is committed before append returns

    def _group_begin(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise _sqlite_error(self.path, err) from None
        self._in_group = True

    def _group_end(self) -> None:
        self._in_group = False
        db = self._db
        try:
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _sqlite_error(self.path, err) from None

    def _close(self) -> None:
        try:
            self._db.close()
        except sqlite3.Error:
            pass

    # -- the persisted query index --------------------------------------------------------
    def _load_index(self, machine_id: str) -> bytes | None:
        mid = self._mid(machine_id)
        if mid is None:
            return None
        row = self._db.execute("SELECT data FROM query_index WHERE mid = ?", (mid,)).fetchone()
        return None if row is None else bytes(row[0])

    def _save_index(self, machine_id: str, data: bytes) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        with self._tx():
            self._db.execute(
                "INSERT OR REPLACE INTO query_index (mid, data) VALUES (?, ?)", (mid, data)
            )


class _Transaction:
    """``BEGIN IMMEDIATE`` .. ``COMMIT``, or ``ROLLBACK`` on error; nests as a no-op,
    except directly inside a group commit, where it is a savepoint (each append of the
    group stays all-or-nothing)."""

    __slots__ = ("_backend", "_outer", "_savepoint")

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend
        self._outer = False
        self._savepoint = False

    def __enter__(self) -> None:
        backend = self._backend
        db = backend._db
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
            self._outer = True
        elif backend._in_group and not backend._in_savepoint:
            db.execute("SAVEPOINT one_append")
            backend._in_savepoint = self._savepoint = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._savepoint:
            self._backend._in_savepoint = False
            db = self._backend._db
            try:
                if exc_type is not None:
                    db.execute("ROLLBACK TO one_append")
                db.execute("RELEASE one_append")
            except sqlite3.Error as err:
                raise _sqlite_error(self._backend.path, err) from None
            if isinstance(exc, sqlite3.Error):
                raise _sqlite_error(self._backend.path, exc) from None
            return
        if not self._outer:
            return
        db = self._backend._db
        if exc_type is None:
            try:
                db.execute("COMMIT")
                return
            except sqlite3.Error as err:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise _sqlite_error(self._backend.path, err) from None
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise _sqlite_error(self._backend.path, exc) from None
