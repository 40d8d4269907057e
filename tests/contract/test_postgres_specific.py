"""What only the PostgreSQL backend does: URLs, connection errors, masking, schema versions,
claims of machines by one writer (D-08), the highest compare-and-set and concurrent opens.

Runs against the suite's throwaway server (``tests/pg_server.py``); skips only when no
PostgreSQL binary is installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import backends
from backends.base import BackendError, ConflictError, MissingDependency, ReadOnlyError, Unreachable
from tests import pg_server
from tests.contract.helpers import counter_records, machine

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def url() -> Iterator[str]:
    with pg_server.fresh_store() as u:
        yield u


@pytest.fixture
def tcp_url() -> Iterator[str]:
    """A fresh store over TCP with the password in the URL."""
    server = pg_server.require()
    u = pg_server.fresh_schema_url(server.url)
    try:
        yield u
    finally:
        pg_server.drop_schema(u)


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "conninfo", "options"),
    [
        ("postgresql://u:p@h:5/db", "postgresql://u:p@h:5/db", {}),
        ("postgres://u@h/db", "postgresql://u@h/db", {}),
        ("postgresql+psycopg://u@h/db", "postgresql://u@h/db", {}),
        (
            "postgresql://u@h/db?sslmode=require&durability=fast&schema=s1&snapshot_every=8",
            "postgresql://u@h/db?sslmode=require",
            {"durability": "fast", "schema": "s1", "snapshot_every": 8},
        ),
    ],
)
def test_split_url(url: str, conninfo: str, options: dict[str, object]) -> None:
    from backends.postgres import split_url

    assert split_url(url) == (conninfo, options)


def test_both_spellings_open_the_same_store(tcp_url: str) -> None:
    with backends.open(tcp_url) as b:
        b.put_machine(machine())
        b.append("m", counter_records("m", 3))
    other = tcp_url.replace("postgresql://", "postgres://", 1)
    with backends.open(other, read_only=True) as b:
        assert b.highest("m") == 2


def test_password_is_masked_everywhere(tcp_url: str) -> None:
    password = pg_server.PASSWORD
    with backends.open(tcp_url) as b:
        assert password not in b.url and password not in repr(b)
        assert "***" in b.url
        b.put_machine(machine())
        with pytest.raises(BackendError) as err:
            b.read("m", -1)
        assert password not in str(err.value)
    with pytest.raises(BackendError) as err:
        b.highest("m")  # closed
    assert password not in str(err.value)


# -- connection errors --------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    assert pg_server.PASSWORD not in text, text
    return text


def test_password_parameter_is_masked_too() -> None:
    url = f"postgresql://u@127.0.0.1:{_closed_port()}/db?password=hunter2&connect_timeout=3"
    with pytest.raises(Unreachable) as err:
        backends.open(url)
    assert "hunter2" not in str(err.value) and "password=***" in str(err.value)


def test_unreachable_server_is_one_line() -> None:
    url = f"postgresql://u:{pg_server.PASSWORD}@127.0.0.1:{_closed_port()}/db?connect_timeout=3"
    with pytest.raises(Unreachable) as err:
        backends.open(url)
    text = _one_line(err.value)
    assert "cannot reach" in text and "refused" in text.lower() and "***" in text


def test_wrong_password_is_one_line(tcp_url: str) -> None:
    bad = tcp_url.replace(pg_server.PASSWORD, "not-the-password")
    with pytest.raises(Unreachable) as err:
        backends.open(bad)
    text = _one_line(err.value)
    assert "refused the credentials" in text and "not-the-password" not in text


def test_unknown_user_is_one_line() -> None:
    server = pg_server.require()
    bad = server.url.replace(f"{pg_server.USER}:", "nobody_here:", 1)
    with pytest.raises(Unreachable) as err:
        backends.open(bad)
    assert "refused the credentials" in _one_line(err.value)


def test_missing_database_is_one_line() -> None:
    server = pg_server.require()
    bad = server.url.rsplit("/", 1)[0] + "/no_such_db"
    with pytest.raises(Unreachable) as err:
        backends.open(bad)
    text = _one_line(err.value)
    assert "database 'no_such_db' does not exist" in text and "createdb no_such_db" in text


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"schema": "bad-name; drop"}, "schema must be a lower-case PostgreSQL identifier"),
        ({"schema": "Upper"}, "schema must be a lower-case PostgreSQL identifier"),
        ({"pool_size": 0}, "pool_size must be"),
        ({"claim_wait": -1}, "claim_wait must be"),
        ({"durability": "maybe"}, "durability must be"),
    ],
)
def test_bad_options(url: str, option: dict[str, object], message: str) -> None:
    with pytest.raises(BackendError, match=message):
        backends.open(url, **option)


def test_not_a_postgres_url() -> None:
    from backends.postgres import PostgresBackend

    with pytest.raises(BackendError, match="not a postgresql"):
        PostgresBackend.from_url("mysql://x")


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    monkeypatch.delitem(sys.modules, "backends.postgres", raising=False)
    with pytest.raises(MissingDependency, match=r"aminspect\[postgres\]"):
        backends.open("postgresql://u@127.0.0.1/db")


# -- schema -------------------------------------------------------------------------------


def test_schema_from_a_newer_version_is_refused(url: str) -> None:
    from backends.postgres import SCHEMA_VERSION

    backends.open(url).close()
    schema = url.rsplit("schema=", 1)[1]
    with psycopg.connect(pg_server.require().local_url.split("?")[0], **_host_kwargs()) as conn:
        conn.execute(f'UPDATE "{schema}".schema_version SET version = {SCHEMA_VERSION + 1}')
    with pytest.raises(BackendError, match="newer aminspect"):
        backends.open(url)


def _host_kwargs() -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    query = dict(parse_qsl(urlsplit(pg_server.require().local_url).query))
    return {k: v for k, v in query.items() if k in ("host", "port")}


def test_read_only_of_an_empty_schema(url: str) -> None:
    with pytest.raises(BackendError, match="holds no aminspect history"):
        backends.open(url, read_only=True)


def test_read_only_refuses_writes_and_follows_a_writer(url: str) -> None:
    with backends.open(url) as w:
        w.put_machine(machine())
        w.append("m", counter_records("m", 4))
        with backends.open(url, read_only=True) as r:
            assert r.highest("m") == 3
            with pytest.raises(ReadOnlyError):
                r.append("m", counter_records("m", 1, start=4))
            w.append("m", counter_records("m", 2, start=4))
            assert r.highest("m") == 5 and len(r.read("m")) == 6


def test_processes_opening_a_new_schema_at_once_all_succeed(url: str) -> None:
    errors: list[BaseException] = []

    def opener(i: int) -> None:
        try:
            with backends.open(url) as b:
                b.put_machine(machine(f"m{i}"))
                b.append(f"m{i}", counter_records(f"m{i}", 5))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with backends.open(url, read_only=True) as b:
        assert [m.id for m in b.machines()] == ["m0", "m1", "m2", "m3"]


# -- several writers (D-08) ------------------------------------------------------------------


def test_a_second_writer_of_a_machine_is_refused(url: str) -> None:
    first = backends.open(url)
    second = backends.open(url, claim_wait=0)
    try:
        first.register(machine("shared"))
        first.append("shared", counter_records("shared", 3))
        with pytest.raises(ConflictError, match="already being recorded") as err:
            second.register(machine("shared"))
        assert f"pid {os.getpid()}" in str(err.value)
        # Other machines are free; nothing of the refused one changed.
        second.register(machine("other"))
        second.append("other", counter_records("other", 2))
        assert first.read("shared") == counter_records("shared", 3)
        from backends.postgres import MachineClaimed

        with pytest.raises(MachineClaimed):
            second.append("shared", counter_records("shared", 1, start=3))
        assert first.highest("shared") == 2
    finally:
        first.close()
    # Closing the holder frees the machine; the next writer carries on where it stopped.
    assert second.register(machine("shared")) == 3
    second.append("shared", counter_records("shared", 2, start=3))
    second.close()


def test_dispose_releases_the_claim(url: str) -> None:
    with backends.open(url) as first, backends.open(url, claim_wait=0) as second:
        first.register(machine("m"))
        assert first.claimed() == {"m"}
        first.dispose("m")
        assert first.claimed() == frozenset()
        assert second.register(machine("m")) == 0


def test_readers_never_claim(url: str) -> None:
    with backends.open(url) as w:
        w.register(machine("m"))
        w.append("m", counter_records("m", 2))
        with backends.open(url, read_only=True) as r:
            assert r.read("m") == counter_records("m", 2)
            assert r.claimed() == frozenset()


_HOLDER = """
import sys, time, backends
from tests.contract.helpers import machine
b = backends.open(sys.argv[1])
b.register(machine("m"))
print("claimed", flush=True)
time.sleep(60)
"""


def test_a_killed_holder_frees_its_machines(url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "claimed"
        with backends.open(url, claim_wait=0) as b, pytest.raises(ConflictError):
            b.register(machine("m"))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    with backends.open(url, claim_wait=10) as b:
        assert b.register(machine("m")) == 0


def test_append_is_a_compare_and_set_on_highest(url: str) -> None:
    with backends.open(url) as b:
        b.register(machine("m"))
        b.append("m", counter_records("m", 3))
        # Another writer moved ``highest`` behind the claim's back (a lost lock session).
        schema = url.rsplit("schema=", 1)[1]
        with psycopg.connect(
            pg_server.require().local_url.split("?")[0], autocommit=True, **_host_kwargs()
        ) as conn:
            conn.execute(f"UPDATE \"{schema}\".machines SET highest = 5 WHERE id = 'm'")
        with pytest.raises(ConflictError, match="another writer"):
            b.append("m", counter_records("m", 2, start=3))
        assert [r.seq for r in b.read("m", 0, 3)] == [0, 1, 2]
        with psycopg.connect(
            pg_server.require().local_url.split("?")[0], autocommit=True, **_host_kwargs()
        ) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{schema}".records').fetchone() == (3,)


# -- pushdown ----------------------------------------------------------------------------------


def test_names_postgres_text_cannot_hold_still_match_like_the_evaluator(url: str) -> None:
    from backends.base import Query
    from tracer.records import Kind, TransitionRecord

    odd = ["a\x00b", "ab", "ok"]
    with backends.open(url) as b:
        b.put_machine(machine())
        recs = [TransitionRecord("m", 0, Kind.INIT, "init", time=1, entered=(0,))]
        recs += [
            TransitionRecord("m", i + 1, Kind.EVENT, name, time=2 + i) for i, name in enumerate(odd)
        ]
        b.append("m", recs)
        assert b.read("m") == recs
        for name in odd:
            q = Query(machine_id="m", name=name)
            assert [r.name for r in b.find(q)] == [name]
            assert b.count(q) == 1
        assert b.count(Query(name="ab", kinds=frozenset({Kind.EVENT}))) == 1
        assert b.count(Query(machine_id="m", kinds=frozenset({"event", "\x00"}))) == 3
        assert b.count(Query(machine_id="m", accepted=True, has_error=False)) == 4


def test_sql_count_and_find_equal_the_memory_backend(url: str) -> None:
    import itertools
    import random

    from backends.base import Query
    from tests.contract.helpers import random_history
    from tracer.records import Kind

    with backends.open(url) as pg, backends.open("memory://") as mem:
        for i in range(3):
            m = machine(f"m{i}")
            recs = random_history(m.id, 300, random.Random(i), monotonic=i != 2)
            for b in (pg, mem):
                b.put_machine(m)
                b.append(m.id, recs)
        grid = itertools.product(
            (None, "m1"),
            (None, "go", ""),
            (None, frozenset({Kind.EVENT, Kind.ADD})),
            (None, True),
            (None, False),
            ((None, None), (1_200, 1_900)),
            (None, frozenset({"A"})),
        )
        for mid, name, kinds, accepted, err, (t0, t1), active in grid:
            q = Query(
                machine_id=mid,
                name=name,
                kinds=kinds,
                accepted=accepted,
                has_error=err,
                time_start=t0,
                time_end=t1,
                active=active or frozenset(),
                seq_start=5,
                newest_first=bool(t0),
                limit=7 if err is False else None,
            )
            assert pg.count(q) == mem.count(q), q
            assert pg.find(q) == mem.find(q), q


def test_a_machine_id_postgres_cannot_hold_is_refused_in_one_line(url: str) -> None:
    from backends.base import UnknownMachine

    with backends.open(url) as b:
        with pytest.raises(BackendError, match="cannot be stored in PostgreSQL") as err:
            b.put_machine(machine("a\x00b"))
        assert "\n" not in str(err.value)
        assert b.highest("a\x00b") == -1 and b.read("a\x00b") == []
        with pytest.raises(UnknownMachine):
            b.get_machine("a\x00b")
