"""A throwaway PostgreSQL server for tests: found, initialised, started on loopback, removed.

``server()`` returns one :class:`PgServer` per test process (started on first use, stopped
at exit), or the server ``AMINSPECT_PG_URL`` names when that variable is set. Tests call
``require()``, which skips with the reason only when no PostgreSQL server binary exists;
any other failure to start is an error, not a skip.

The cluster lives in a temporary directory: ``initdb`` with password (scram) auth on
TCP and trust on its private unix socket directory, ``postgres`` on a free port of
127.0.0.1 with ``fsync=off`` and ``full_page_writes=off``: data survives a process kill
(the page cache keeps it) but not a power loss, which tests never cause. PostgreSQL
refuses to run as root, so when the tests run as root the cluster is owned by and the
server run as ``nobody`` (``setpriv``); the tests connect over TCP either way.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

__all__ = [
    "USER",
    "PgServer",
    "binaries",
    "drop_schema",
    "fresh_schema_url",
    "fresh_store",
    "recycle",
    "require",
    "server",
    "start",
    "store_url",
]

ENV_URL = "AMINSPECT_PG_URL"
USER = "aminspect"
PASSWORD = "test-secret"
DATABASE = "aminspect_test"
_SEARCH = ("/usr/local/bin", "/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")
_NOBODY = 65534


def binaries() -> dict[str, str] | None:
    """Paths of ``initdb`` and ``postgres`` (PATH first, then the usual places), or None."""
    found: dict[str, str] = {}
    for name in ("initdb", "postgres"):
        path = shutil.which(name)
        if path is None:
            for pattern in _SEARCH:
                for d in sorted(glob.glob(pattern), reverse=True):  # newest version first
                    candidate = os.path.join(d, name)
                    if os.access(candidate, os.X_OK):
                        path = candidate
                        break
                if path:
                    break
        if path is None:
            return None
        found[name] = path
    return found


@dataclass
class PgServer:
    """A running server: ``url`` is the test database's URL over TCP with its password;
    ``local_url`` reaches the same database over the private unix socket with trust auth
    (no password hashing per connection: what the contract suite uses, for speed)."""

    url: str
    proc: subprocess.Popen[bytes] | None = None
    directory: str | None = None
    watchdog: subprocess.Popen[bytes] | None = None
    local_url: str = ""
    own: bool = False  # started here (dropping test schemas is then unnecessary)

    def __post_init__(self) -> None:
        self.local_url = self.local_url or self.url

    def admin_url(self, database: str | None = None) -> str:
        parts = urlsplit(self.url)
        path = f"/{database}" if database else parts.path
        return urlunsplit(parts._replace(path=path, query=""))

    def stop(self) -> None:
        """Fast shutdown, then remove the cluster directory (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # postgres: fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        dog, self.watchdog = self.watchdog, None
        if dog is not None:
            if dog.stdin is not None:
                dog.stdin.close()
            dog.wait(40)


def _as_server_user() -> list[str]:
    """A command prefix running a program as a user PostgreSQL accepts (not root).

    Raises:
        RuntimeError: running as root with neither ``setpriv`` nor ``runuser``.
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv"):
        return ["setpriv", f"--reuid={_NOBODY}", f"--regid={_NOBODY}", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    raise RuntimeError("running as root: PostgreSQL needs setpriv or runuser to drop to nobody")


# Stops the server and removes its directory when the test process ends in any way
# (also SIGKILL, where atexit never runs): it waits for EOF on the pipe from the parent.
_WATCHDOG = """
import os, shutil, signal, sys, time
pid, directory = int(sys.argv[1]), sys.argv[2]
sys.stdin.read()
try:
    os.kill(pid, signal.SIGINT)
    for _ in range(300):
        os.kill(pid, 0)
        time.sleep(0.1)
except OSError:
    pass
shutil.rmtree(directory, ignore_errors=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(timeout: float = 60.0) -> PgServer:
    """Initialise a cluster in a temporary directory and start it on a free port.

    Raises:
        RuntimeError: no server binary, or initdb / the server failed (with its log tail).
    """
    import psycopg

    found = binaries()
    if found is None:
        raise RuntimeError("no PostgreSQL server binary (initdb, postgres) found")
    prefix = _as_server_user()
    # /tmp when the server runs as nobody: $TMPDIR may be a directory only root can enter.
    base = "/tmp" if prefix and os.path.isdir("/tmp") else None
    directory = tempfile.mkdtemp(prefix="aminspect-pg-", dir=base)
    server = PgServer(url="", directory=directory)
    try:
        data, sockets = os.path.join(directory, "data"), os.path.join(directory, "sock")
        os.mkdir(sockets)
        pwfile = os.path.join(directory, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if prefix:
            for path in (directory, sockets, pwfile):
                os.chown(path, _NOBODY, _NOBODY)
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        init = subprocess.run(
            [
                *prefix,
                found["initdb"],
                "-D",
                data,
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        for attempt in range(5):
            port = _free_port()
            log = open(os.path.join(directory, "server.log"), "ab")  # noqa: SIM115
            server.proc = subprocess.Popen(
                [
                    *prefix,
                    found["postgres"],
                    "-D",
                    data,
                    "-p",
                    str(port),
                    "-k",
                    sockets,
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "shared_buffers=64MB",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a ^C of the test run does not hit it first
            )
            log.close()  # the server has its own descriptor
            admin = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres"
            deadline = time.monotonic() + timeout
            while server.proc.poll() is None and time.monotonic() < deadline:
                try:
                    with psycopg.connect(admin, autocommit=True, connect_timeout=2) as conn:
                        conn.execute(f"CREATE DATABASE {DATABASE}")
                    break
                except psycopg.OperationalError:
                    time.sleep(0.05)
            if server.proc.poll() is None:
                break
            if attempt == 4:
                with open(os.path.join(directory, "server.log"), "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"postgres did not start: {tail}")
        server.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(server.proc.pid), directory],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        server.url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DATABASE}"
        server.local_url = f"postgresql://{USER}@/{DATABASE}?host={sockets}&port={port}"
        server.own = True
        return server
    except BaseException:
        server.stop()
        raise


_SERVER: PgServer | None = None
_FAILED: str | None = None


def server() -> PgServer:
    """The test process's server: ``AMINSPECT_PG_URL`` or one started on first use.

    Raises:
        RuntimeError: as :func:`start` (remembered: later calls fail the same way fast).
    """
    global _SERVER, _FAILED
    if _SERVER is not None:
        return _SERVER
    if os.environ.get(ENV_URL):
        _SERVER = PgServer(url=os.environ[ENV_URL])
        return _SERVER
    if _FAILED is not None:
        raise RuntimeError(_FAILED)
    try:
        _SERVER = start()
    except RuntimeError as exc:
        _FAILED = str(exc)
        raise
    atexit.register(_SERVER.stop)
    return _SERVER


def require() -> PgServer:
    """``server()``, skipping the calling test when no PostgreSQL binary is installed."""
    if not os.environ.get(ENV_URL) and binaries() is None:
        pytest.skip(
            "PostgreSQL tests need a server: install PostgreSQL (initdb, postgres) "
            f"or set {ENV_URL}"
        )
    return server()


def fresh_schema_url(base: str) -> str:
    """``base`` with a new, unused ``schema`` option: an empty store for one test."""
    schema = "t_" + uuid.uuid4().hex[:16]
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


def drop_schema(url: str) -> None:
    """Remove the schema a ``fresh_schema_url`` made in a server given by
    ``AMINSPECT_PG_URL`` (a throwaway cluster is removed whole at exit instead)."""
    import psycopg

    if _SERVER is not None and _SERVER.own:
        return
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query)
    schema = dict(pairs).get("schema")
    if not schema:
        return
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"])
    with psycopg.connect(urlunsplit(parts._replace(query=rest)), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# Wiped stores ready for reuse: making a schema's tables costs ~100 ms of catalog work,
# emptying them ~5 ms, and the contract suite opens one store per test.
_SPARE: list[str] = []
_WIPE = ("machines", "records", "snapshots", "query_index", "writers")


def store_url() -> str:
    """The URL of an empty store in the test server: a recycled one or a fresh schema."""
    server = require()
    if _SPARE:
        return _SPARE.pop()
    return fresh_schema_url(server.local_url)


def recycle(url: str) -> None:
    """Hand a store back after a test: wiped for reuse when it is in the throwaway server,
    holds the current schema version and no session holds a claim; else dropped."""
    import psycopg

    from backends.postgres import SCHEMA_VERSION

    if _SERVER is None or not _SERVER.own:
        drop_schema(url)
        return
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query)
    schema = dict(pairs).get("schema", "")
    rest = urlencode([(k, v) for k, v in pairs if k != "schema"])
    with psycopg.connect(urlunsplit(parts._replace(query=rest)), autocommit=True) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchone()
        if not tables or tables[0] != len(_WIPE) + 1:
            return  # never created (or not by this code): nothing to reuse
        held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        row = held.fetchone()
        versions = conn.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
        if (row and row[0]) or versions != [(SCHEMA_VERSION,)]:
            return  # a backend left open still claims machines, or the version was changed
        with conn.transaction():
            for table in _WIPE:
                conn.execute(f'DELETE FROM "{schema}".{table}')
            conn.execute(f'ALTER TABLE "{schema}".machines ALTER COLUMN mid RESTART')
    _SPARE.append(url)


@contextmanager
def fresh_store() -> Iterator[str]:
    """A URL of an empty store in the test server, removed afterwards."""
    url = fresh_schema_url(require().local_url)
    try:
        yield url
    finally:
        drop_schema(url)
