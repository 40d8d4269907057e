"""PostgresFSMStore (``postgresql://...?schema=NAME``): FSM rows and events in PostgreSQL.

The same tables as the SQLite store (``fsm_machines``, ``fsm_instances``, ``fsm_events``)
in one PostgreSQL schema (default ``aminspect``, next to the history backend's tables).
Dialect differences from SQLite: ``%s`` parameters, ids stored as TEXT (the FSM turns them
back into its id type), ``SELECT ... FOR UPDATE`` to lock the row an update reads, and
``GREATEST`` for the id counter. Event seqs come from ``UPDATE fsm_machines ... RETURNING``
inside the transition's transaction: that row stays locked until commit, so seqs follow
commit order with no gaps (a sequence would give neither).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from aminspect.machines.fsm_errors import FSMStoreError
from aminspect.machines.fsm_store import (
    InstanceID,
    SQLInstanceReads,
    StoredEvent,
    StoredInstance,
)
from backends.postgres import split_url
from backends.registry import mask_url

__all__ = ["PostgresFSMStore"]

_DDL = """
CREATE TABLE IF NOT EXISTS fsm_machines (
    name TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0,
    graph TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS fsm_instances (
    machine TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (machine, id)
);
CREATE INDEX IF NOT EXISTS fsm_instances_state ON fsm_instances (machine, state);
CREATE TABLE IF NOT EXISTS fsm_events (
    machine TEXT NOT NULL,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    foreign_id TEXT NOT NULL,
    metadata BYTEA,
    metadata_text TEXT,
    time BIGINT NOT NULL,
    PRIMARY KEY (machine, seq)
);
"""

_COLUMNS = "id, state, data, created_at, updated_at"


def _first_line(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


class PostgresFSMStore(SQLInstanceReads):
    """FSM rows and events in a PostgreSQL schema (psycopg 3).

    One connection per store object, used under a lock (threads may share a store; use a
    store per process or per worker for parallel writers). Transactions run at READ
    COMMITTED: the row an update reads is locked with ``FOR UPDATE`` and the update itself
    is the compare-and-set on ``state``.

    Args:
        url: ``postgresql://user:password@host:port/db``, options in the query string:
            ``schema`` (default ``aminspect``), ``durability`` (``full``/``fast``), and
            libpq's own (``sslmode``, ``connect_timeout``...).

    Raises:
        FSMStoreError: the server cannot be reached, or the URL or an option is bad (the
            password is masked in every message).
    """

    _P = "%s"
    _EVENT_COLUMNS = "seq, type, foreign_id, metadata_text, metadata, time"

    def __init__(self, url: str) -> None:
        self.url = url
        where = mask_url(url)
        try:
            conninfo, options = split_url(url)
        except Exception as exc:
            raise FSMStoreError(str(exc)) from None
        schema = str(options.pop("schema", "aminspect"))
        durability = str(options.pop("durability", "full"))
        if durability not in ("full", "fast"):
            raise FSMStoreError(f"durability must be 'full' or 'fast', not {durability!r}")
        if options:
            raise FSMStoreError(f"unknown FSM store option(s): {', '.join(sorted(options))}")
        self.schema = schema
        self._where = where
        self._lock = threading.RLock()
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "options": f"-c search_path={schema} -c synchronous_commit="
            + ("on" if durability == "full" else "off"),
        }
        if "connect_timeout" not in conninfo:
            kwargs["connect_timeout"] = 10
        try:
            self._db: psycopg.Connection[Any] = psycopg.connect(conninfo, **kwargs)
        except psycopg.Error as exc:
            raise FSMStoreError(
                f"cannot reach the PostgreSQL server of {where}: {_first_line(exc)}"
            ) from None
        try:
            with self._db.transaction():
                # Several processes may create the tables at once: serialise them.
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext('aminspect-fsm-ddl'))")
                self._db.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                for stmt in _DDL.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt.encode())
        except psycopg.Error as exc:
            self._db.close()
            raise self._error(exc) from None

    def _error(self, exc: psycopg.Error) -> FSMStoreError:
        return FSMStoreError(f"postgresql {self._where}: {_first_line(exc)}")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            try:
                tx = self._db.transaction()
                tx.__enter__()
            except psycopg.Error as exc:
                raise self._error(exc) from None
            try:
                yield self._db
            except BaseException as exc:
                try:
                    tx.__exit__(type(exc), exc, exc.__traceback__)
                except psycopg.Error:
                    pass  # the rollback failed too: the original error matters
                raise
            try:
                tx.__exit__(None, None, None)
            except psycopg.Error as exc:
                raise self._error(exc) from None

    def _run(self, tx: psycopg.Connection[Any], query: str, params: Sequence[Any]) -> Any:
        try:
            return tx.execute(query.encode(), params)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def register(self, machine: str, graph: str) -> None:
        with self.transaction() as tx:
            self._run(
                tx,
                "INSERT INTO fsm_machines (name, graph) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET graph = excluded.graph",
                (machine, graph),
            )

    def next_id(self, tx: psycopg.Connection[Any], machine: str) -> int:
        row = self._run(
            tx,
            "UPDATE fsm_machines SET last_id = last_id + 1 WHERE name = %s RETURNING last_id",
            (machine,),
        ).fetchone()
        if row is None:
            raise FSMStoreError(f"postgresql {self._where}: FSM {machine!r} is not registered")
        return int(row[0])

    def claim_id(self, tx: psycopg.Connection[Any], machine: str, id: int) -> None:
        self._run(
            tx,
            "UPDATE fsm_machines SET last_id = GREATEST(last_id, %s) WHERE name = %s",
            (id, machine),
        )

    def insert_instance(
        self, tx: psycopg.Connection[Any], machine: str, row: StoredInstance
    ) -> bool:
        cur = self._run(
            tx,
            f"INSERT INTO fsm_instances (machine, {_COLUMNS}) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (machine, id) DO NOTHING",
            (machine, str(row.id), row.state, row.data, row.created_at, row.updated_at),
        )
        return bool(cur.rowcount == 1)

    def lock_instance(
        self, tx: psycopg.Connection[Any], machine: str, id: InstanceID
    ) -> StoredInstance | None:
        row = self._run(
            tx,
            f"SELECT {_COLUMNS} FROM fsm_instances WHERE machine = %s AND id = %s FOR UPDATE",
            (machine, str(id)),
        ).fetchone()
        return None if row is None else StoredInstance(*row)

    def update_instance(
        self,
        tx: psycopg.Connection[Any],
        machine: str,
        id: InstanceID,
        from_state: str,
        to_state: str,
        data: str,
        updated_at: int,
    ) -> int:
        cur = self._run(
            tx,
            "UPDATE fsm_instances SET state = %s, data = %s, updated_at = %s "
            "WHERE machine = %s AND id = %s AND state = %s",
            (to_state, data, updated_at, machine, str(id), from_state),
        )
        return int(cur.rowcount)

    def append_event(
        self,
        tx: psycopg.Connection[Any],
        machine: str,
        type: str,
        foreign_id: InstanceID,
        metadata: bytes | str | None,
        time: int,
    ) -> int:
        row = self._run(
            tx,
            "UPDATE fsm_machines SET last_seq = last_seq + 1 WHERE name = %s RETURNING last_seq",
            (machine,),
        ).fetchone()
        if row is None:
            raise FSMStoreError(f"postgresql {self._where}: FSM {machine!r} is not registered")
        seq = int(row[0])
        # bytes and str metadata in their own columns, so each comes back as given
        blob = metadata if isinstance(metadata, bytes) else None
        text = metadata if isinstance(metadata, str) else None
        self._run(
            tx,
            "INSERT INTO fsm_events (machine, seq, type, foreign_id, metadata, metadata_text, "
            "time) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (machine, seq, type, str(foreign_id), blob, text, time),
        )
        return seq

    def query(
        self, tx: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(tx, sql, params).fetchall()]

    def _read(self, query: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(query.encode(), params).fetchall()
            except psycopg.Error as exc:
                raise self._error(exc) from None

    def _key(self, id: InstanceID) -> Any:
        return str(id)  # ids are TEXT here; the FSM turns them back into its id type

    def _event(self, row: Sequence[Any]) -> StoredEvent:
        seq, typ, fid, text, blob, time = row
        return StoredEvent(seq, typ, fid, text if text is not None else blob, time)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> PostgresFSMStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
