"""PostgresBackend (``postgresql://user:pw@host:port/db``): one history shared by many recorders.

* Tables live in one PostgreSQL schema (``?schema=NAME``, default ``aminspect``), created
  on first use under an advisory transaction lock (so several processes starting at once
  do not race) and versioned in ``schema_version``; a newer version is refused.
* One transaction per appended batch: the records (binary ``COPY``), the snapshots the
  batch triggered and the machine's ``highest``, updated by compare-and-set on the value
  this writer expects (shift's CAS on ``from``): if anything else moved it, the batch
  rolls back with ``ConflictError`` and nothing of it is stored.
* Several writers: a writable backend *claims* a machine before its first write with a
  session-level advisory lock (``pg_try_advisory_lock`` on a 64-bit hash of schema and
  machine id), held on a dedicated connection until ``dispose`` or ``close``. A second
  recorder of the same machine is refused with :class:`MachineClaimed`, which names the
  holder (host, pid, since) from the ``writers`` table. The server drops the lock when
  the holder's connection ends, so a killed recorder never blocks its machines.
* ``durability="full"`` (default) runs ``synchronous_commit=on``: a committed batch is
  flushed to the server's WAL before ``append`` returns. ``"fast"`` runs
  ``synchronous_commit=off``: consistent, but a server crash may lose the latest commits.
* A connection pool (psycopg_pool) serves the primitives, in autocommit mode outside the
  explicit write transactions, so a read is one round trip.
* Queries: the shared evaluator's per-machine index is kept in ``query_index`` (like
  SQLite's). Record-level filters (name, kinds, accepted, has-error) are pushed down into
  SQL on the stored columns, so ``count``/``find`` by event name read no record bodies.
* Every message masks the password (in the user part or a ``?password=`` parameter); an
  unreachable server, wrong credentials or a missing database raise
  :class:`backends.base.Unreachable` in one line.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from backends import query as _query
from backends._base import BaseBackend, parse_url
from backends.base import (
    BackendError,
    ConflictError,
    CorruptError,
    GapError,
    Query,
    Snapshot,
    Unreachable,
)
from backends.registry import mask_url
from tracer.codec import (
    DecodeError,
    decode_machine,
    encode_machine,
    transition_to_list,
)
from tracer.records import MachineRecord, TransitionRecord

__all__ = ["SCHEMA_VERSION", "MachineClaimed", "PostgresBackend"]

SCHEMA_VERSION = 1

# Options of the backend itself; every other query-string key goes to libpq
# (sslmode, connect_timeout, application_name, host=/unix/socket/dir, ...).
_OWN_OPTIONS = frozenset(
    {
        "read_only",
        "snapshot_every",
        "snapshot_seconds",
        "max_records",
        "tracked_states",
        "durability",
        "schema",
        "pool_size",
        "claim_wait",
    }
)
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # unquoted in search_path: lower case
_DDL_LOCK = 0x616D696E  # "amin": serialises schema creation across processes

_DDL = """
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS machines (
    mid integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    data bytea NOT NULL,
    highest bigint NOT NULL DEFAULT -1,
    first bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS records (
    mid integer NOT NULL,
    seq bigint NOT NULL,
    time bigint NOT NULL,
    kind text,  -- NULL when PostgreSQL text cannot hold it (see _text)
    name text,
    accepted boolean NOT NULL,
    failed boolean NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (mid, seq)
);
CREATE TABLE IF NOT EXISTS snapshots (
    mid integer NOT NULL,
    idx bigint NOT NULL,
    clocks bytea NOT NULL,
    time bigint NOT NULL,
    tick bigint NOT NULL,
    PRIMARY KEY (mid, idx)
);
CREATE TABLE IF NOT EXISTS query_index (
    mid integer PRIMARY KEY,
    data bytea NOT NULL
);
-- The saved query index is megabytes of int64 arrays: pglz barely shrinks them, and
-- decompressing them dominated the first query after a reopen.
ALTER TABLE query_index ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS writers (
    id text PRIMARY KEY,
    owner text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)
"""

_COPY_RECORDS = (
    "COPY records (mid, seq, time, kind, name, accepted, failed, data) FROM STDIN (FORMAT BINARY)"
)
# Binary COPY built by hand: ~1 us a row instead of ~8 us through ``write_row``.
_COPY_HEAD = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
_COPY_TAIL = b"\xff\xff"
_ROW_START = struct.Struct(">hii")  # 8 fields; mid (int4)
_ROW_INTS = struct.Struct(">iqiq")  # seq, time (int8)
_LEN = struct.Struct(">i")
_ROW_FLAGS = struct.Struct(">ibib")  # accepted, failed (bool)
_NULL = _LEN.pack(-1)


def _text(value: str) -> bytes | None:
    """A text column's bytes, or None (stored as NULL) when PostgreSQL cannot hold the
    string (a NUL character or a lone surrogate): such values are never pushed down."""
    if "\x00" in value:
        return None
    try:
        return value.encode()
    except UnicodeEncodeError:
        return None


def _copy_payload(
    mid: int, records: Sequence[TransitionRecord], pack: Callable[[Any], bytes]
) -> bytes:
    """The binary COPY stream of ``records`` for the ``records`` table."""
    parts = [_COPY_HEAD]
    add = parts.append
    start = _ROW_START.pack(8, 4, mid)
    ints, flags, length = _ROW_INTS.pack, _ROW_FLAGS.pack, _LEN.pack
    for r in records:
        data = pack(transition_to_list(r))
        add(start)
        add(ints(8, r.seq, 8, r.time))
        for value in (str(r.kind), r.name):
            text = _text(value) if type(value) is str else None
            if text is None:
                add(_NULL)
            else:
                add(length(len(text)))
                add(text)
        add(flags(1, bool(r.accepted), 1, r.error is not None))
        add(length(len(data)))
        add(data)
    add(_COPY_TAIL)
    return b"".join(parts)


class MachineClaimed(ConflictError):
    """Another writer (recorder) holds the machine; D-08: two recorders of one machine."""


def _mask(url: str) -> str:
    """``registry.mask_url`` plus libpq's ``?password=`` query parameter."""
    url = mask_url(url)
    if "password=" not in url:
        return url
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line
    return type(exc).__name__


def _connect_error(url: str, exc: BaseException) -> BackendError:
    """One line for a failed connection, password masked."""
    text = str(exc)
    low = text.lower()
    where = _mask(url)
    if "password authentication failed" in low or "no password supplied" in low:
        return Unreachable(f"{where}: the server refused the credentials ({_first_line(exc)})")
    if "database" in low and "does not exist" in low:
        db = urlsplit(url).path.lstrip("/") or "?"
        return Unreachable(f"{where}: database {db!r} does not exist (create it: createdb {db})")
    if "role" in low and "does not exist" in low:
        return Unreachable(f"{where}: the server refused the credentials ({_first_line(exc)})")
    # psycopg: 'connection failed: connection to server at "h", port p failed: Connection
    # refused' -- keep the cause, drop the libpq hint lines.
    line = _first_line(exc)
    cause = line.rsplit("failed:", 1)[-1].strip() if "failed:" in line else line
    return Unreachable(f"cannot reach the PostgreSQL server of {where}: {cause}")


def _pg_error(where: str, exc: psycopg.Error) -> BackendError:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return ConflictError(f"{where}: another writer stored these records first")
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return Unreachable(f"{where}: lost the PostgreSQL server: {_first_line(exc)}")
    return BackendError(f"postgresql {where}: {_first_line(exc)}")


def split_url(url: str) -> tuple[str, dict[str, Any]]:
    """The libpq conninfo URL and the backend's own options of a ``postgresql://`` URL.

    ``postgres://`` and ``postgresql+psycopg://`` are accepted as spellings of
    ``postgresql://``; backend options (``durability``, ``schema``, ``snapshot_every``,
    ...) are taken out of the query string, libpq's stay in the conninfo.

    Raises:
        BackendError: not a PostgreSQL URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise BackendError(f"not a postgresql:// URL: {_mask(url)!r}")
    normal = "postgresql://" + rest
    _, options = parse_url(normal, "postgresql")
    parts = urlsplit(normal)
    libpq = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    own = {k: v for k, v in options.items() if k in _OWN_OPTIONS}
    conninfo = urlunsplit(
        parts._replace(query=urlencode([(k, v) for k, v in libpq if k not in _OWN_OPTIONS]))
    )
    return conninfo, own


class PostgresBackend(BaseBackend):
    """History in a PostgreSQL database (see the module docstring for the guarantees).

    Args:
        conninfo: a libpq URL (``postgresql://user:pw@host:port/db?sslmode=...``).
        schema: the PostgreSQL schema holding the tables (created unless read-only).
        pool_size: connections of the pool (1 to 64).
        claim_wait: seconds to keep trying to claim a machine another writer holds
            before refusing (covers a holder killed a moment ago).
        **options: see :class:`backends._base.BaseBackend`.

    Raises:
        Unreachable: the server cannot be reached, refused the credentials, or the
            database does not exist.
        BackendError: a bad option, a schema written by a newer aminspect, or a
            read-only open of a schema that holds no history.
    """

    scheme = "postgresql"
    supports_delete = True
    persistent = True

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "aminspect",
        pool_size: int = 4,
        claim_wait: float = 1.0,
        **options: Any,
    ) -> None:
        url = _mask(options.pop("url", conninfo))
        super().__init__(url, **options)
        if not isinstance(schema, str) or not _IDENT.fullmatch(schema):
            raise BackendError(
                f"schema must be a lower-case PostgreSQL identifier (a-z, 0-9, _), got {schema!r}"
            )
        if type(pool_size) is not int or not 1 <= pool_size <= 64:
            raise BackendError(f"pool_size must be an integer from 1 to 64, got {pool_size!r}")
        if not isinstance(claim_wait, int | float) or not 0 <= claim_wait <= 60:
            raise BackendError(f"claim_wait must be 0 to 60 seconds, got {claim_wait!r}")
        self.schema = schema
        self.claim_wait = float(claim_wait)
        self._conninfo = conninfo
        self._mids: dict[str, int] = {}
        self._packer = msgpack.Packer(use_bin_type=True)
        self._owner = uuid.uuid4().hex
        self._claims: set[str] = set()
        self._lock_conn: psycopg.Connection[Any] | None = None
        settings = [
            f"-c search_path={schema}",
            f"-c synchronous_commit={'on' if self.durability == 'full' else 'off'}",
        ]
        if self.read_only:
            settings.append("-c default_transaction_read_only=on")
        self._kwargs: dict[str, Any] = {"options": " ".join(settings), "autocommit": True}
        if "connect_timeout" not in conninfo:
            self._kwargs["connect_timeout"] = 10
        try:
            with psycopg.connect(conninfo, **self._kwargs) as conn:
                self._setup(conn)
        except psycopg.OperationalError as exc:
            raise _connect_error(url, exc) from None
        except psycopg.Error as exc:
            raise _pg_error(self.url, exc) from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            kwargs=self._kwargs,
            open=False,
            name=f"aminspect-{schema}",
            timeout=30,
        )
        try:
            self._pool.open(wait=True, timeout=30)
        except PoolTimeout as exc:
            self._pool.close()
            raise _connect_error(url, exc) from None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresBackend:
        """``postgresql://user:password@host:port/database?schema=NAME&durability=fast``.

        Raises:
            As the constructor.
        """
        conninfo, url_options = split_url(url)
        return cls(conninfo, url=url, **cls._merge(url_options, options))

    # -- connections ---------------------------------------------------------------------
    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        schema = sql.Identifier(self.schema)
        exists = conn.execute(
            "SELECT 1 FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name = 'schema_version'",
            (self.schema,),
        ).fetchone()
        if exists is None:
            if self.read_only:
                raise BackendError(f"{self.url}: schema {self.schema!r} holds no aminspect history")
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
                for stmt in _DDL.split(";"):
                    conn.execute(stmt.strip())
                if conn.execute("SELECT version FROM schema_version").fetchone() is None:
                    conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row and row[0] is not None else SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            raise BackendError(
                f"{self.url}: schema {self.schema!r} was written by a newer aminspect "
                f"(version {version}, this one reads up to {SCHEMA_VERSION})"
            )

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; with ``write`` inside one transaction (commit or rollback).

        Raises:
            BackendError: any database error, in one line (ConflictError for a key that
                another writer stored first, Unreachable for a lost server).
        """
        try:
            with self._pool.connection() as conn:
                if write:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.Error as exc:
            raise _pg_error(self.url, exc) from None
        except PoolTimeout as exc:
            raise _pg_error(self.url, exc) from None

    def _mid(self, machine_id: str) -> int | None:
        mid = self._mids.get(machine_id)
        if mid is None:
            if _text(machine_id) is None:
                return None  # no such id can be stored (see _put_machine)
            with self._conn() as conn:
                row = conn.execute(
                    "SELECT mid FROM machines WHERE id = %s", (machine_id,)
                ).fetchone()
            if row is None:
                return None
            mid = self._mids[machine_id] = int(row[0])
        return mid

    def _need_mid(self, machine_id: str) -> int:
        mid = self._mid(machine_id)
        if mid is None:  # the base checked the machine exists
            raise BackendError(f"unknown machine {machine_id!r} in {self.url}")
        return mid

    # -- claims (several writers) ------------------------------------------------------------
    def _claim_key(self, machine_id: str) -> int:
        digest = hashlib.blake2b(f"{self.schema}\0{machine_id}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big", signed=True)

    def _claim(self, machine_id: str) -> None:
        """Hold the machine for this backend, or raise MachineClaimed naming the holder."""
        if machine_id in self._claims:
            return
        try:
            if self._lock_conn is None or self._lock_conn.closed:
                self._lock_conn = psycopg.connect(self._conninfo, **self._kwargs)
            conn = self._lock_conn
            key = self._claim_key(machine_id)
            deadline = time.monotonic() + self.claim_wait
            while True:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
                if (row and row[0]) or time.monotonic() >= deadline:
                    break
                # A holder killed a moment ago: the server ends its session (and lock)
                # as soon as it reads the closed socket.
                time.sleep(0.05)
            if not row or not row[0]:
                holder = conn.execute(
                    "SELECT host, pid, since FROM writers WHERE id = %s", (machine_id,)
                ).fetchone()
                who = (
                    f"host {holder[0]} pid {holder[1]} since {holder[2]:%Y-%m-%d %H:%M:%S %Z}"
                    if holder
                    else "another connection"
                )
                raise MachineClaimed(
                    f"machine {machine_id!r} is already being recorded into {self.url} "
                    f"by another writer ({who}); two recorders of one machine are refused"
                )
            conn.execute(
                "INSERT INTO writers (id, owner, host, pid) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, host = excluded.host, "
                "pid = excluded.pid, since = now()",
                (machine_id, self._owner, socket.gethostname(), os.getpid()),
            )
        except psycopg.OperationalError as exc:
            raise _connect_error(self._conninfo, exc) from None
        except psycopg.Error as exc:
            raise _pg_error(self.url, exc) from None
        self._claims.add(machine_id)

    def _release(self, machine_id: str) -> None:
        if machine_id not in self._claims:
            return
        self._claims.discard(machine_id)
        conn = self._lock_conn
        if conn is None or conn.closed:
            return
        try:
            conn.execute(
                "DELETE FROM writers WHERE id = %s AND owner = %s", (machine_id, self._owner)
            )
            conn.execute("SELECT pg_advisory_unlock(%s)", (self._claim_key(machine_id),))
        except psycopg.Error:
            pass  # the lock goes with the connection anyway

    def claimed(self) -> frozenset[str]:
        """The machines this backend holds for writing."""
        with self._lock:
            return frozenset(self._claims)

    def dispose(self, machine_id: str) -> None:
        """Sink: the machine is no longer traced here; its claim is released too."""
        with self._lock:
            super().dispose(machine_id)
            if not self._closed:
                self._release(machine_id)

    # -- primitives ----------------------------------------------------------------------
    def _put_machine(self, machine: MachineRecord) -> None:
        if _text(machine.id) is None:
            raise BackendError(
                f"machine id {machine.id!r} cannot be stored in PostgreSQL text "
                "(it holds a NUL character or a lone surrogate)"
            )
        self._claim(machine.id)
        data = encode_machine(machine)
        with self._conn(write=True) as conn:
            conn.execute(
                "INSERT INTO machines (id, data) VALUES (%s, %s) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                (machine.id, data),
            )

    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        if _text(machine_id) is None:
            return None
        with self._conn() as conn:
            row = conn.execute(
                "SELECT data FROM machines WHERE id = %s", (machine_id,), binary=True
            ).fetchone()
        if row is None:
            return None
        try:
            return decode_machine(bytes(row[0]))
        except DecodeError as exc:
            raise CorruptError(
                f"{self.url}: machine {machine_id!r} cannot be decoded: {exc}"
            ) from None

    def _machines(self) -> list[MachineRecord]:
        with self._conn() as conn:
            rows = conn.execute("SELECT id, data FROM machines ORDER BY id", binary=True).fetchall()
        out = []
        for mid, data in rows:
            try:
                out.append(decode_machine(bytes(data)))
            except DecodeError as exc:
                raise CorruptError(
                    f"{self.url}: machine {mid!r} cannot be decoded: {exc}"
                ) from None
        return out

    def _highest(self, machine_id: str) -> int:
        if _text(machine_id) is None:
            return -1
        with self._conn() as conn:
            row = conn.execute(
                "SELECT highest FROM machines WHERE id = %s", (machine_id,)
            ).fetchone()
        return -1 if row is None else int(row[0])

    def _first(self, machine_id: str) -> int:
        if _text(machine_id) is None:
            return 0
        with self._conn() as conn:
            row = conn.execute("SELECT first FROM machines WHERE id = %s", (machine_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        self._claim(machine_id)
        mid = self._need_mid(machine_id)
        try:
            payload = _copy_payload(mid, records, self._packer.pack)
        except (TypeError, ValueError, KeyError, OverflowError, struct.error) as exc:
            raise BackendError(f"{machine_id}: cannot encode a record: {exc}") from None
        with self._conn(write=True) as conn:
            # Compare-and-set on the highest this writer expects: a second writer that got
            # past the claim (a lost lock connection) cannot interleave or duplicate.
            cur = conn.execute(
                "UPDATE machines SET highest = %s WHERE mid = %s AND highest = %s",
                (records[-1].seq, mid, records[0].seq - 1),
            )
            if cur.rowcount != 1:
                raise ConflictError(
                    f"{machine_id}: another writer appended to this machine in {self.url}"
                )
            with conn.cursor() as c, c.copy(_COPY_RECORDS) as copy:
                copy.write(payload)
            if snapshots:
                self._upsert_snapshots(conn, mid, snapshots)

    def _upsert_snapshots(
        self, conn: psycopg.Connection[Any], mid: int, snapshots: Sequence[Snapshot]
    ) -> None:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO snapshots (mid, idx, clocks, time, tick) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (mid, idx) DO UPDATE SET "
                "clocks = excluded.clocks, time = excluded.time, tick = excluded.tick",
                [
                    (mid, s.index, self._packer.pack(list(s.clocks)), s.time, s.mach_tick)
                    for s in snapshots
                ],
            )

    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        mid = self._mid(machine_id)
        if mid is None:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT seq, data FROM records WHERE mid = %s AND seq >= %s AND seq < %s "
                "ORDER BY seq",
                (mid, start, end),
                binary=True,
            ).fetchall()
        return [self._decode(machine_id, seq, data) for seq, data in rows]

    def _start_at(self, machine_id: str, first: int) -> None:
        self._claim(machine_id)
        with self._conn(write=True) as conn:
            conn.execute(
                "UPDATE machines SET highest = %s, first = %s WHERE id = %s",
                (first - 1, first, machine_id),
            )

    def _delete_upto(self, machine_id: str, seq: int) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        self._claim(machine_id)
        with self._conn(write=True) as conn:
            conn.execute("DELETE FROM records WHERE mid = %s AND seq <= %s", (mid, seq))
            conn.execute(
                "UPDATE machines SET first = greatest(first, %s) WHERE mid = %s", (seq + 1, mid)
            )

    def _save_snapshot(self, snapshot: Snapshot) -> None:
        mid = self._need_mid(snapshot.machine_id)
        self._claim(snapshot.machine_id)
        with self._conn(write=True) as conn:
            self._upsert_snapshots(conn, mid, [snapshot])

    def _snapshot_row(self, machine_id: str, row: tuple[Any, ...]) -> Snapshot:
        idx, clocks, t, tick = row
        try:
            values = msgpack.unpackb(bytes(clocks))
            if not isinstance(values, list) or not all(type(v) is int for v in values):
                raise ValueError("clocks are not a list of integers")
        except ValueError as exc:
            raise CorruptError(
                f"{self.url}: snapshot {machine_id}@{idx} cannot be decoded: {exc}"
            ) from None
        return Snapshot(machine_id, int(idx), tuple(values), int(t), int(tick))

    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        mid = self._mid(machine_id)
        if mid is None:
            return None
        with self._conn() as conn:
            row = conn.execute(
                "SELECT idx, clocks, time, tick FROM snapshots WHERE mid = %s AND idx <= %s "
                "ORDER BY idx DESC LIMIT 1",
                (mid, upto),
                binary=True,
            ).fetchone()
        return None if row is None else self._snapshot_row(machine_id, row)

    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        mid = self._mid(machine_id)
        if mid is None:
            return []
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT idx, clocks, time, tick FROM snapshots WHERE mid = %s ORDER BY idx",
                (mid,),
                binary=True,
            ).fetchall()
        return [self._snapshot_row(machine_id, row) for row in rows]

    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        self._claim(machine_id)
        with self._conn(write=True) as conn:
            conn.execute("DELETE FROM snapshots WHERE mid = %s AND idx <= %s", (mid, upto))

    def _close(self) -> None:
        for machine_id in list(self._claims):
            self._release(machine_id)
        if self._lock_conn is not None:
            try:
                self._lock_conn.close()
            except psycopg.Error:
                pass
        self._pool.close()

    # -- the persisted query index --------------------------------------------------------
    def _load_index(self, machine_id: str) -> bytes | None:
        mid = self._mid(machine_id)
        if mid is None:
            return None
        with self._conn() as conn:
            row = conn.execute(
                "SELECT data FROM query_index WHERE mid = %s", (mid,), binary=True
            ).fetchone()
        return None if row is None else bytes(row[0])

    def _save_index(self, machine_id: str, data: bytes) -> None:
        mid = self._mid(machine_id)
        if mid is None:
            return
        with self._conn(write=True) as conn:
            conn.execute(
                "INSERT INTO query_index (mid, data) VALUES (%s, %s) "
                "ON CONFLICT (mid) DO UPDATE SET data = excluded.data",
                (mid, data),
            )

    # -- record-level filters pushed down into SQL --------------------------------------------
    @staticmethod
    def _pushable(q: Query) -> bool:
        """Whether the query has record-level filters (name, kinds, accepted, has_error)
        whose values the stored columns can answer."""
        if q.name is None and q.kinds is None and q.accepted is None and q.has_error is None:
            return False
        texts = [q.name] if q.name is not None else []
        texts.extend(q.kinds or ())
        # A value no text column holds (a NUL): the shared evaluator decides.
        return all(type(t) is str and _text(t) is not None for t in texts)

    @staticmethod
    def _where(q: Query, mids: list[int], with_time: bool) -> tuple[str, list[Any]]:
        """The SQL condition of the query's record-level filters, seq range (and time
        range) over the machines ``mids``."""
        where = ["mid = ANY(%s)"]
        params: list[Any] = [mids]
        for column, value in (("name", q.name), ("accepted", q.accepted), ("failed", q.has_error)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if q.kinds is not None:
            where.append("kind = ANY(%s)")
            params.append([str(k) for k in q.kinds])
        bounds = [("seq >= %s", q.seq_start), ("seq < %s", q.seq_end)]
        if with_time:
            bounds += [("time >= %s", q.time_start), ("time < %s", q.time_end)]
        for clause, bound in bounds:
            if bound is not None:
                where.append(clause)
                params.append(bound)
        return " AND ".join(where), params

    def _record_seqs(self, machine_id: str, q: Query) -> set[int]:
        """Seqs of the machine's stored records passing the query's record-level filters
        and its seq range, by SQL."""
        mid = self._mid(machine_id)
        if mid is None:
            return set()
        cond, params = self._where(q, [mid], with_time=False)
        with self._conn() as conn:
            rows = conn.execute("SELECT seq FROM records WHERE " + cond, params).fetchall()
        return {int(r[0]) for r in rows}

    def _sql_count(self, q: Query) -> int | None:
        """``count`` wholly in SQL when every filter is a column one (no state filters)."""
        if q.entered or q.exited or q.active or q.inactive or not self._pushable(q):
            return None
        mids = [m for m in (self._mid(i) for i in _query._machine_ids(self, q)) if m is not None]
        cond, params = self._where(q, mids, with_time=True)
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM records WHERE " + cond, params).fetchone()
        return int(row[0]) if row else 0

    def _pushed_seqs(self, q: Query) -> dict[str, list[int]] | None:
        """Per machine, the matching seqs in the query's order: SQL for the record-level
        filters intersected with the shared index for the rest; None to fall back."""
        if not self._pushable(q):
            return None
        strict = q.machine_id is not None
        out: dict[str, list[int]] = {}
        for mid in _query._machine_ids(self, q):
            found = _query._candidates(self, mid, q, strict)
            if found is None:
                continue
            allowed = self._record_seqs(mid, q)
            out[mid] = [s for s in found[1] if s in allowed]
        return out

    def _read_seqs(self, machine_id: str, seqs: Sequence[int]) -> dict[int, TransitionRecord]:
        """The records at ``seqs`` (stored ones: the index produced them), by seq."""
        mid = self._need_mid(machine_id)
        out: dict[int, TransitionRecord] = {}
        with self._conn() as conn:
            for i in range(0, len(seqs), 8192):
                rows = conn.execute(
                    "SELECT seq, data FROM records WHERE mid = %s AND seq = ANY(%s)",
                    (mid, list(seqs[i : i + 8192])),
                    binary=True,
                ).fetchall()
                for seq, data in rows:
                    out[seq] = self._decode(machine_id, seq, data)
        missing = [s for s in seqs if s not in out]
        if missing:
            raise GapError(f"{machine_id}: seq {missing[0]} is missing from {self.url}")
        return out

    def count(self, query: Query) -> int:
        """How many records ``find(query)`` would return; record-level filters run in SQL.

        Raises:
            As :meth:`find`.
        """
        with self._lock:
            self._check_open()
            _query._check_query(query)
            if query.limit == 0:
                return 0
            total = self._sql_count(query)
            if total is None:
                pushed = self._pushed_seqs(query)
                if pushed is None:
                    return _query.count(self, query)
                total = sum(len(seqs) for seqs in pushed.values())
            return total if query.limit is None else min(total, query.limit)

    def find(self, query: Query) -> list[TransitionRecord]:
        """Records matching every filter of ``query``; record-level filters run in SQL, so
        only matching record bodies are read (results are the shared evaluator's).

        Raises:
            UnknownMachine: ``query.machine_id`` names a machine never put.
            BackendError: a malformed query, or an unknown state of the named machine.
        """
        with self._lock:
            self._check_open()
            _query._check_query(query)
            if query.limit == 0:
                return []
            pushed = self._pushed_seqs(query)
            if pushed is None:
                return _query.find(self, query)
            merged: list[TransitionRecord] = []
            limit = query.limit
            single = query.machine_id is not None
            for mid, seqs in pushed.items():
                if single or (limit is not None and self._index_for(mid).monotonic):
                    seqs = seqs[:limit] if limit is not None else seqs
                by_seq = self._read_seqs(mid, seqs)
                merged.extend(by_seq[s] for s in seqs)
            if single:
                return merged
            merged.sort(key=lambda r: (r.time, r.machine_id, r.seq), reverse=query.newest_first)
            return merged if limit is None else merged[:limit]
