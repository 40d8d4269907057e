"""Where validated FSMs keep their rows and events: the store protocol and its SQLite store.

The FSM (``aminspect.machines.fsm``) holds no SQL: every statement is a method of a store,
so the dialect differences (paramstyle, ``RETURNING``, upsert, row locks) live in one class
per database. :class:`SQLiteFSMStore` is the standard-library one;
``aminspect.machines.fsm_postgres.PostgresFSMStore`` implements the same :class:`FSMStore`
protocol for PostgreSQL.

Tables (prefix ``fsm_``, so they can share a file with aminspect's SQLite history):

* ``fsm_machines``: one row per FSM name: the last assigned integer id and the last event
  seq. Both are bumped with ``UPDATE ... RETURNING`` inside the transition's transaction:
  that row is then locked until commit, so event seqs follow commit order with no gaps on
  any database (an auto-increment column does not give that on PostgreSQL).
* ``fsm_instances``: ``(machine, id)`` -> state, payload fields (JSON), created/updated
  times (UTC ns). ``id`` has no declared type so an int stays an int and a str a str.
* ``fsm_events``: ``(machine, seq)`` -> type (the destination state), foreign id (the
  instance id), metadata (bytes or str as given) and time.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from aminspect.machines.fsm_errors import FSMStoreError
from backends._base import parse_url

__all__ = [
    "FSMStore",
    "FSMStoreError",
    "SQLiteFSMStore",
    "StoredEvent",
    "StoredInstance",
    "open_fsm_store",
]

InstanceID = int | str


@dataclass(frozen=True, slots=True)
class StoredInstance:
    """One instance row as stored."""

    id: InstanceID
    state: str
    data: str  # the payload fields, JSON
    created_at: int  # UTC ns
    updated_at: int  # UTC ns


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event row as stored."""

    seq: int
    type: str
    foreign_id: InstanceID
    metadata: bytes | str | None
    time: int  # UTC ns


class FSMStore(Protocol):
    """What an FSM needs from a database. Methods taking ``tx`` run inside ``transaction()``."""

    url: str

    def transaction(self) -> Any:
        """A context manager: one write transaction, committed on a clean exit, rolled back
        when the block raises. Yields the transaction handle the other methods take."""
        ...

    def register(self, machine: str, graph: str) -> None:
        """Make sure ``machine`` has its counter row; store its graph (JSON) for tools."""
        ...

    def next_id(self, tx: Any, machine: str) -> int:
        """Assign the next integer instance id of ``machine``."""
        ...

    def claim_id(self, tx: Any, machine: str, id: int) -> None:
        """An explicit integer id was used: later assigned ids start above it."""
        ...

    def insert_instance(self, tx: Any, machine: str, row: StoredInstance) -> bool:
        """Insert a new row; False when ``(machine, id)`` exists already."""
        ...

    def lock_instance(self, tx: Any, machine: str, id: InstanceID) -> StoredInstance | None:
        """Read (and on databases with row locks, lock) one row for an update."""
        ...

    def update_instance(
        self,
        tx: Any,
        machine: str,
        id: InstanceID,
        from_state: str,
        to_state: str,
        data: str,
        updated_at: int,
    ) -> int:
        """Compare-and-set: move the row from ``from_state``; return the rows changed."""
        ...

    def append_event(
        self,
        tx: Any,
        machine: str,
        type: str,
        foreign_id: InstanceID,
        metadata: bytes | str | None,
        time: int,
    ) -> int:
        """Append one event; return its seq (1, 2, 3... per machine, in commit order)."""
        ...

    def query(self, tx: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a read statement inside the transaction (for validation hooks)."""
        ...

    def get(self, machine: str, id: InstanceID) -> StoredInstance | None: ...

    def instances(
        self, machine: str, state: str | None = None, limit: int = 1000
    ) -> list[StoredInstance]: ...

    def events(self, machine: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]: ...

    def close(self) -> None: ...


_DDL = """
CREATE TABLE IF NOT EXISTS fsm_machines (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    graph TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS fsm_instances (
    machine TEXT NOT NULL,
    id NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (machine, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fsm_instances_state ON fsm_instances (machine, state);
CREATE TABLE IF NOT EXISTS fsm_events (
    machine TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    foreign_id NOT NULL,
    metadata,
    time INTEGER NOT NULL,
    PRIMARY KEY (machine, seq)
) WITHOUT ROWID;
"""

_INSTANCE_COLUMNS = "id, state, data, created_at, updated_at"


class SQLInstanceReads:
    """The reads the SQL stores share: a subclass names its parameter marker, the stored
    form of an instance id, its event columns, and how it runs a read (``_read``)."""

    _P = "?"  # the driver's parameter marker
    _EVENT_COLUMNS = "seq, type, foreign_id, metadata, time"

    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    def _key(self, id: InstanceID) -> Any:
        """An instance id as the ``id`` column holds it."""
        return id

    def _event(self, row: Sequence[Any]) -> StoredEvent:
        return StoredEvent(*row)

    def get(self, machine: str, id: InstanceID) -> StoredInstance | None:
        p = self._P
        rows = self._read(
            f"SELECT {_INSTANCE_COLUMNS} FROM fsm_instances WHERE machine = {p} AND id = {p}",
            (machine, self._key(id)),
        )
        return StoredInstance(*rows[0]) if rows else None

    def instances(
        self, machine: str, state: str | None = None, limit: int = 1000
    ) -> list[StoredInstance]:
        p = self._P
        where, params = (
            (f"machine = {p}", (machine, limit))
            if state is None
            else (f"machine = {p} AND state = {p}", (machine, state, limit))
        )
        rows = self._read(
            f"SELECT {_INSTANCE_COLUMNS} FROM fsm_instances WHERE {where} "
            f"ORDER BY created_at, id LIMIT {p}",
            params,
        )
        return [StoredInstance(*r) for r in rows]

    def events(self, machine: str, after: int = 0, limit: int = 1000) -> list[StoredEvent]:
        p = self._P
        rows = self._read(
            f"SELECT {self._EVENT_COLUMNS} FROM fsm_events "
            f"WHERE machine = {p} AND seq > {p} ORDER BY seq LIMIT {p}",
            (machine, after, limit),
        )
        return [self._event(r) for r in rows]


class SQLiteFSMStore(SQLInstanceReads):
    """FSM rows and events in an SQLite file (WAL), standard-library ``sqlite3``.

    One connection per store object, used under a lock, so threads may share a store.
    Transactions are ``BEGIN IMMEDIATE``: writers are serialised by SQLite itself, also
    across store objects and processes (waiting up to ``busy_timeout`` ms).

    Args:
        path: the database file, created with its tables when missing; ``":memory:"``
            for a private in-memory database.
        durability: ``"full"`` (``synchronous=FULL``: a returned transition survives power
            loss) or ``"fast"`` (``synchronous=NORMAL``: consistent, may lose the latest).
        busy_timeout: ms to wait for another writer before failing.

    Raises:
        FSMStoreError: the file cannot be opened, or is not an SQLite database.
    """

    def __init__(self, path: str, *, durability: str = "full", busy_timeout: int = 5000) -> None:
        if not path:
            raise FSMStoreError("sqlite FSM store needs a file path (sqlite:///file.db or a path)")
        if durability not in ("full", "fast"):
            raise FSMStoreError(f"durability must be 'full' or 'fast', not {durability!r}")
        self.path = path
        self.url = "sqlite:///:memory:" if path == ":memory:" else f"sqlite:///{path}"
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
            if path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            sync = "FULL" if durability == "full" else "NORMAL"
            self._db.execute(f"PRAGMA synchronous = {sync}")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _DDL.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQLiteFSMStore:
        """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` (options may also come
        as a query string, ``?durability=fast``).

        Raises:
            FSMStoreError: no path or a bad option.
        """
        try:
            path, url_options = parse_url(url, "sqlite")
        except Exception as exc:
            raise FSMStoreError(str(exc)) from None
        merged = {**url_options, **options}
        unknown = set(merged) - {"durability", "busy_timeout"}
        if unknown:
            raise FSMStoreError(f"unknown sqlite FSM store option(s): {', '.join(sorted(unknown))}")
        return cls(path, **merged)

    def _error(self, exc: sqlite3.Error) -> FSMStoreError:
        msg = str(exc)
        if "not a database" in msg:
            return FSMStoreError(f"{self.path} is not an SQLite database ({msg})")
        return FSMStoreError(f"sqlite {self.path}: {msg}")

    # -- transactions --------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise self._error(exc) from None

    def _run(self, tx: sqlite3.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return tx.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def register(self, machine: str, graph: str) -> None:
        with self.transaction() as tx:
            self._run(
                tx,
                "INSERT INTO fsm_machines (name, graph) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET graph = excluded.graph",
                (machine, graph),
            )

    def next_id(self, tx: sqlite3.Connection, machine: str) -> int:
        row = self._run(
            tx,
            "UPDATE fsm_machines SET last_id = last_id + 1 WHERE name = ? RETURNING last_id",
            (machine,),
        ).fetchone()
        if row is None:
            raise FSMStoreError(f"sqlite {self.path}: FSM {machine!r} is not registered")
        return int(row[0])

    def claim_id(self, tx: sqlite3.Connection, machine: str, id: int) -> None:
        self._run(
            tx,
            "UPDATE fsm_machines SET last_id = max(last_id, ?) WHERE name = ?",
            (id, machine),
        )

    def insert_instance(self, tx: sqlite3.Connection, machine: str, row: StoredInstance) -> bool:
        cur = self._run(
            tx,
            f"INSERT INTO fsm_instances (machine, {_INSTANCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (machine, id) DO NOTHING",
            (machine, row.id, row.state, row.data, row.created_at, row.updated_at),
        )
        return cur.rowcount == 1

    def lock_instance(
        self, tx: sqlite3.Connection, machine: str, id: InstanceID
    ) -> StoredInstance | None:
        # BEGIN IMMEDIATE already holds the database's write lock: no row lock needed.
        row = self._run(
            tx,
            f"SELECT {_INSTANCE_COLUMNS} FROM fsm_instances WHERE machine = ? AND id = ?",
            (machine, id),
        ).fetchone()
        return None if row is None else StoredInstance(*row)

    def update_instance(
        self,
        tx: sqlite3.Connection,
        machine: str,
        id: InstanceID,
        from_state: str,
        to_state: str,
        data: str,
        updated_at: int,
    ) -> int:
        cur = self._run(
            tx,
            "UPDATE fsm_instances SET state = ?, data = ?, updated_at = ? "
            "WHERE machine = ? AND id = ? AND state = ?",
            (to_state, data, updated_at, machine, id, from_state),
        )
        return int(cur.rowcount)

    def append_event(
        self,
        tx: sqlite3.Connection,
        machine: str,
        type: str,
        foreign_id: InstanceID,
        metadata: bytes | str | None,
        time: int,
    ) -> int:
        row = self._run(
            tx,
            "UPDATE fsm_machines SET last_seq = last_seq + 1 WHERE name = ? RETURNING last_seq",
            (machine,),
        ).fetchone()
        if row is None:
            raise FSMStoreError(f"sqlite {self.path}: FSM {machine!r} is not registered")
        seq = int(row[0])
        self._run(
            tx,
            "INSERT INTO fsm_events (machine, seq, type, foreign_id, metadata, time) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (machine, seq, type, foreign_id, metadata, time),
        )
        return seq

    def query(
        self, tx: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(tx, sql, params).fetchall()]

    # -- reads ---------------------------------------------------------------------------
    def _read(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SQLiteFSMStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_fsm_store(target: str | os.PathLike[str], **options: Any) -> FSMStore:
    """Open the store a URL or path names: ``sqlite:///file.db``, ``sqlite:////abs.db``,
    a plain file path (SQLite), or ``postgresql://user:pw@host/db?schema=NAME``.

    Args:
        target: the URL or path.
        **options: store options (``durability``, ``busy_timeout`` for SQLite).

    Returns:
        The open store; close it with ``close()``.

    Raises:
        FSMStoreError: an unknown scheme, a bad option, or a file that cannot be opened.
    """
    text = os.fspath(target)
    if "://" not in text:
        return SQLiteFSMStore(text, **options)
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteFSMStore.from_url(text, **options)
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if options:
            raise FSMStoreError("pass PostgreSQL store options in the URL's query string")
        from aminspect.machines.fsm_postgres import PostgresFSMStore

        return PostgresFSMStore(text)
    raise FSMStoreError(
        f"no FSM store for {scheme}:// URLs (known: sqlite://, postgresql://, or a file path)"
    )
