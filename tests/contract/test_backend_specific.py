"""What only one backend does: SQLite file handling and URLs, memory compaction, parse_url."""

from __future__ import annotations

import sqlite3

import pytest

import backends
from backends._base import parse_url
from backends.base import BackendError, ConflictError, CorruptError, Query, ReadOnlyError
from backends.sqlite import SCHEMA_VERSION
from tests.contract.helpers import counter_records, machine


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///rel.db", "rel.db", {}),
        ("sqlite:////abs/x.db", "/abs/x.db", {}),
        (
            "sqlite:///x.db?durability=fast&snapshot_every=10",
            "x.db",
            {"durability": "fast", "snapshot_every": 10},
        ),
        (
            "sqlite:///x.db?read_only=true&snapshot_seconds=0.5",
            "x.db",
            {"read_only": True, "snapshot_seconds": 0.5},
        ),
        ("sqlite:///a%20b.db", "a b.db", {}),
    ],
)
def test_parse_url(url, path, options):
    assert parse_url(url, "sqlite") == (path, options)


def test_parse_url_rejects_another_scheme():
    with pytest.raises(BackendError, match="not a sqlite"):
        parse_url("memory://", "sqlite")


def test_sqlite_needs_a_path():
    with pytest.raises(BackendError, match="needs a file path"):
        backends.open("sqlite://")


def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(CorruptError, match="not an SQLite database"):
        backends.open(f"sqlite:///{bad}")


def test_sqlite_refuses_another_programs_database(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(BackendError, match="another program"):
        backends.open(f"sqlite:///{path}")


def test_sqlite_refuses_a_newer_schema(tmp_path):
    path = tmp_path / "new.db"
    backends.open(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(BackendError, match="newer aminspect"):
        backends.open(f"sqlite:///{path}")


def test_sqlite_read_only_of_a_missing_file(tmp_path):
    with pytest.raises(BackendError, match="no such file"):
        backends.open(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)


def test_sqlite_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match=r"unable to open|cannot open"):
        backends.open(f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.db'}")


def test_sqlite_wal_and_synchronous_follow_durability(tmp_path):
    full = backends.open(f"sqlite:///{tmp_path / 'f.db'}")
    fast = backends.open(f"sqlite:///{tmp_path / 'n.db'}", durability="fast")
    assert full._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert full._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert fast._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    full.close()
    fast.close()


def test_sqlite_reader_sees_a_writers_commits(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    writer = backends.open(url)
    writer.put_machine(machine())
    writer.append("m", counter_records("m", 3))
    reader = backends.open(url, read_only=True)
    assert len(reader.read("m")) == 3
    writer.append("m", counter_records("m", 2, start=3))
    assert reader.highest("m") == 4
    with pytest.raises(ReadOnlyError):
        reader.append("m", counter_records("m", 1, start=5))
    writer.close()
    reader.close()


def test_sqlite_stale_saved_index_is_rebuilt(tmp_path):
    url = f"sqlite:///{tmp_path / 'i.db'}"
    b = backends.open(url)
    b.put_machine(machine())
    b.append("m", counter_records("m", 10))
    b.flush()  # saves the query index
    b.close()
    # Another program deletes records behind our back: the saved index no longer fits.
    db = sqlite3.connect(tmp_path / "i.db")
    db.execute("DELETE FROM records WHERE seq < 4")
    db.execute("UPDATE machines SET first = 4")
    db.execute("INSERT INTO snapshots VALUES (1, 4, X'9404030000', 0, 0)")  # msgpack [4,3,0,0]
    db.commit()
    db.close()
    again = backends.open(url)
    assert [r.seq for r in again.find(Query(machine_id="m"))] == [4, 5, 6, 7, 8, 9]
    assert [r.seq for r in again.find(Query(machine_id="m", active=frozenset({"A"})))] == [4, 6, 8]
    again.close()


def test_memory_compacts_after_deletes():
    b = backends.open("memory://", max_records=10, snapshot_every=0)
    b.put_machine(machine())
    recs = counter_records("m", 1000)
    for i in range(0, 1000, 7):
        b.append("m", recs[i : i + 7])
    stream = b._streams["m"]
    assert len(stream) == 10
    assert len(stream.offsets) < 40  # dead offsets were compacted away
    assert b.read("m") == recs[-10:]


def test_j07_undecodable_sqlite_record_names_machine_and_seq(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    b = backends.open(url, snapshot_every=0)
    b.put_machine(machine())
    b.append("m", counter_records("m", 5))
    b.close()
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute("UPDATE records SET data = X'c1' WHERE seq = 3")  # 0xc1: never valid msgpack
    db.commit()
    db.close()
    again = backends.open(url)
    assert len(again.read("m", 0, 3)) == 3
    with pytest.raises(CorruptError, match="m/3"):
        again.read("m")
    with pytest.raises(CorruptError, match="m/3"):
        list(again.recover("m"))  # recovery fails instead of resurrecting half-way
    assert not again.recovering("m")
    again.close()


def test_j07_undecodable_memory_record_names_machine_and_seq():
    b = backends.open("memory://")
    b.put_machine(machine())
    b.append("m", counter_records("m", 3))
    stream = b._streams["m"]
    start, _ = stream.span(1)
    stream.data[start] = 0xC1
    with pytest.raises(CorruptError, match="record 1"):
        b.read("m")


def test_sqlite_read_only_follows_a_live_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'follow.db'}"
    writer = backends.open(url, snapshot_every=4)
    writer.put_machine(machine())
    recs = counter_records("m", 10)
    writer.append("m", recs[:5])
    reader = backends.open(url, read_only=True)
    assert reader.count(Query(machine_id="m")) == 5
    assert reader.state_at("m", 4).clocks == writer.state_at("m", 4).clocks
    writer.append("m", recs[5:])
    assert reader.highest("m") == 9
    assert reader.count(Query(machine_id="m", active=frozenset({"A"}))) == 5
    assert reader.state_at("m", 9).clocks == writer.state_at("m", 9).clocks
    assert reader.active_between("m", "B", recs[9].time, recs[9].time + 1)
    writer.close()
    reader.close()


def test_sqlite_second_writer_is_refused_then_reloads_highest(tmp_path):
    url = f"sqlite:///{tmp_path / 'two.db'}"
    one = backends.open(url)
    two = backends.open(url)
    one.put_machine(machine())
    two.put_machine(machine())
    assert two.highest("m") == -1  # caches nothing that matters yet
    two.get_machine("m")
    one.append("m", counter_records("m", 3))
    with pytest.raises(ConflictError, match="another writer"):
        two.append("m", counter_records("m", 2))
    assert two.highest("m") == 2  # reloaded after the failure
    two.append("m", counter_records("m", 1, start=3))
    one.close()
    two.close()
    # (a writable backend assumes it is the only writer: ``one`` does not follow ``two``)
    with backends.open(url, read_only=True) as reader:
        assert reader.read("m") == counter_records("m", 4)
