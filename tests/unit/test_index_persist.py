"""The persisted query index: journal sidecar file and LMDB sub-database, reused on reopen."""

from __future__ import annotations

import random
import shutil
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

import backends
from backends import query as q
from backends.journal import SIDECAR_MAGIC, JournalBackend
from tests.contract.helpers import machine, random_history
from tracer.records import REFUSALS, is_refusal

N = 3000


def _answers(b: Any) -> list[bool]:
    rnd = random.Random(5)
    out = []
    for _ in range(40):
        start = rnd.randint(0, N * 1000)
        end = start + rnd.randint(1, 50_000)
        state = rnd.choice("ABCD")
        out.append(b.activated_between("m", state, start, end))
        out.append(b.active_between("m", state, start, end))
    return out


def _fill(url: str) -> list[bool]:
    b = backends.open(url)
    b.put_machine(machine())
    history = random_history("m", N, random.Random(3))
    for i in range(0, N, 250):
        b.append("m", history[i : i + 250])
    answers = _answers(b)
    b.close()
    return answers


@pytest.fixture
def no_rebuild(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every full rebuild of a query index (the slow path a reopen should avoid)."""
    built: list[str] = []
    original = q.MachineIndex.build.__func__  # type: ignore[attr-defined]

    def build(cls: type[q.MachineIndex], backend: Any, machine_id: str) -> q.MachineIndex:
        built.append(machine_id)
        index: q.MachineIndex = original(cls, backend, machine_id)
        return index

    monkeypatch.setattr(q.MachineIndex, "build", classmethod(build))
    yield built


@pytest.mark.parametrize("kind", ["journal", "lmdb"])
@pytest.mark.parametrize("read_only", [False, True])
def test_reopen_loads_the_saved_index(
    tmp_path: Path, no_rebuild: list[str], kind: str, read_only: bool
) -> None:
    url = f"journal:///{tmp_path / 'h.amj'}" if kind == "journal" else f"lmdb:///{tmp_path / 'h'}"
    answers = _fill(url)
    b = backends.open(url, read_only=read_only)
    try:
        assert _answers(b) == answers
        assert b.state_at("m", N - 1).clocks == b._time_before("m", N).clocks
    finally:
        b.close()
    assert no_rebuild == []


def test_journal_index_extends_after_more_appends(tmp_path: Path, no_rebuild: list[str]) -> None:
    url = f"journal:///{tmp_path / 'h.amj'}"
    _fill(url)
    b = backends.open(url)
    b.append("m", random_history("m", N + 100, random.Random(3))[N:])
    answers = _answers(b)
    b.close()
    with backends.open(url) as b2:
        assert _answers(b2) == answers
        assert b2._indexes["m"].end == N + 100
    assert no_rebuild == []


@pytest.mark.parametrize("damage", ["garbage", "torn", "other-journal", "compacted"])
def test_journal_stale_or_damaged_sidecar_is_rebuilt(
    tmp_path: Path, no_rebuild: list[str], damage: str
) -> None:
    path = tmp_path / "h.amj"
    answers = _fill(f"journal:///{path}")
    sidecar = Path(str(path) + ".idx")
    assert sidecar.exists()
    if damage == "garbage":
        sidecar.write_bytes(b"not an index")
    elif damage == "torn":
        sidecar.write_bytes(sidecar.read_bytes()[:-100])
    elif damage == "other-journal":
        # The sidecar of another history of the same machine id must not be trusted.
        other = tmp_path / "o.amj"
        b = JournalBackend(str(other))
        b.put_machine(machine())
        b.append("m", random_history("m", N, random.Random(99)))
        b.activated_between("m", "A", 0, 1)
        b.close()
        shutil.copy(str(other) + ".idx", sidecar)
    else:
        with JournalBackend(str(path)) as b:
            b.compact()  # offsets change: the sidecar's anchor no longer matches
            b._indexes.clear()
            b._sidecar_pending.clear()
    with backends.open(f"journal:///{path}") as b:
        assert _answers(b) == answers
    assert no_rebuild == ["m"]


@pytest.mark.parametrize("sidecar", ["missing", "old-format"])
def test_a_read_only_open_saves_the_journal_index_it_built(
    tmp_path: Path, no_rebuild: list[str], sidecar: str
) -> None:
    """A read-only open (the TUI, ``aminspect open``) that had to build the index saves
    the sidecar cache, so the next read-only open loads it; the journal itself is never
    written."""
    path = tmp_path / "h.amj"
    answers = _fill(f"journal:///{path}")
    side = Path(str(path) + ".idx")
    if sidecar == "missing":
        side.unlink()
    else:
        with JournalBackend(str(path), read_only=True) as b:
            entries = b._read_sidecar()
        entries["m"][3] = _old_format(entries["m"][3])
        body = zlib.compress(msgpack.packb(entries, use_bin_type=True), 1)
        side.write_bytes(SIDECAR_MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)
    journal = path.read_bytes()
    with backends.open(f"journal:///{path}", read_only=True) as b:
        assert _answers(b) == answers
    assert no_rebuild == ["m"]
    with backends.open(f"journal:///{path}", read_only=True) as b:
        assert b.index_columns("m", 0, N) is not None  # loaded, not built
        assert _answers(b) == answers
    assert no_rebuild == ["m"]
    assert path.read_bytes() == journal
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.amj", "h.amj.idx"]


def test_a_read_only_open_of_a_journal_it_cannot_write_beside_still_works(
    tmp_path: Path, no_rebuild: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The sidecar cannot be written (read-only media; here its temporary file's name is
    taken by a directory, which fails for root too): the open answers and says nothing."""
    import logging
    import os

    path = tmp_path / "h.amj"
    answers = _fill(f"journal:///{path}")
    Path(str(path) + ".idx").unlink()
    Path(f"{path}.idx.tmp-{os.getpid()}").mkdir()
    with (
        caplog.at_level(logging.DEBUG, logger="backends"),
        backends.open(f"journal:///{path}", read_only=True) as b,
    ):
        assert _answers(b) == answers
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cannot save the query index" in r.getMessage() for r in caplog.records)
    assert not Path(str(path) + ".idx").exists()


def test_journal_sidecar_after_delete_is_not_used(tmp_path: Path, no_rebuild: list[str]) -> None:
    url = f"journal:///{tmp_path / 'h.amj'}"
    _fill(url)
    with backends.open(url) as b:
        b.delete_upto("m", 99)
    with backends.open(url) as b:
        assert b.first("m") == 100
        b.activated_between("m", "A", 0, 2**62)
        assert b._indexes["m"].first == 100


@pytest.mark.parametrize("kind", ["journal", "lmdb", "sqlite"])
def test_count_by_name_kind_outcome_answers_from_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from backends.base import Query

    url = {
        "journal": f"journal:///{tmp_path / 'h.amj'}",
        "lmdb": f"lmdb:///{tmp_path / 'h'}",
        "sqlite": f"sqlite:///{tmp_path / 'h.db'}",
    }[kind]
    _fill(url)
    history = random_history("m", N, random.Random(3))
    queries = [
        Query(machine_id="m", name="go"),
        Query(machine_id="m", name="no such name"),
        Query(machine_id="m", accepted=False, has_error=True),
        Query(machine_id="m", kinds=frozenset({"init", "gap"}), seq_start=100),
    ]
    with backends.open(url, read_only=True) as b:
        b.activated_between("m", "A", 0, 1)  # loads the saved index

        def no_reads(*args: Any) -> Any:
            raise AssertionError("count read records")

        monkeypatch.setattr(b, "_read", no_reads)
        got = [b.count(q) for q in queries]
    want = [
        sum(r.name == "go" for r in history),
        0,
        sum(r.accepted is False and r.error is not None for r in history),
        sum(r.kind in ("init", "gap") for r in history[100:]),
    ]
    assert got == want


def _old_format(data: bytes) -> bytes:
    """A saved index as format 2 wrote it: the same fields without ``refusals``."""
    fields = msgpack.unpackb(data)
    assert fields[0] == q.MachineIndex._FORMAT == 3
    return msgpack.packb([2, *fields[1:-1]], use_bin_type=True)


@pytest.mark.parametrize("kind", ["journal", "lmdb", "sqlite"])
def test_an_index_saved_before_refusals_were_kept_is_rebuilt(
    tmp_path: Path, no_rebuild: list[str], kind: str
) -> None:
    """An index saved by the code before ``refusals`` (format 2) would say "no refusal"
    for every record: it is never used. A read-only open rebuilds it in memory (and the
    journal, whose index is a cache file beside it, saves that); the next writable open
    saves the new format."""
    url = {
        "journal": f"journal:///{tmp_path / 'h.amj'}",
        "lmdb": f"lmdb:///{tmp_path / 'h'}",
        "sqlite": f"sqlite:///{tmp_path / 'h.db'}",
    }[kind]
    rnd = random.Random(7)
    history = random_history("m", N, rnd)
    for r in history[1:]:
        if rnd.random() < 0.1:
            r.accepted, r.error = False, (rnd.choice(sorted(REFUSALS)), "no")
    refused = [r.seq for r in history if is_refusal(r.error, r.accepted)]
    assert refused
    with backends.open(url) as b:
        b.put_machine(machine())
        for i in range(0, N, 250):
            b.append("m", history[i : i + 250])
        answers = _answers(b)
        b.flush()
        saved = b._load_index("m")
        assert saved is not None
        b._save_index("m", _old_format(saved))
        b._indexes.clear()  # as if the old code wrote the history
    with backends.open(url, read_only=True) as b:
        assert b.index_columns("m", 0, N) is None  # not trusted: the caller reads
        assert no_rebuild == []
        assert _answers(b) == answers  # a query rebuilds it in memory
        assert no_rebuild == ["m"]
        columns = b.index_columns("m", 0, N)
        assert columns is not None and list(columns.refused or ()) == refused
    # the journal's read-only open saved its sidecar: nothing to rebuild any more
    rebuilds = ["m"] if kind == "journal" else ["m", "m"]
    with backends.open(url) as b:
        assert _answers(b) == answers  # saved in the new format
        assert no_rebuild == rebuilds
    with backends.open(url, read_only=True) as b:
        columns = b.index_columns("m", 0, N)
        assert columns is not None and list(columns.refused or ()) == refused
        assert _answers(b) == answers
    assert no_rebuild == rebuilds


def test_a_journal_sidecar_of_the_old_format_is_rebuilt_by_a_writable_open(
    tmp_path: Path, no_rebuild: list[str]
) -> None:
    """The sidecar file itself as the old code wrote it (every entry format 2)."""
    path = tmp_path / "h.amj"
    answers = _fill(f"journal:///{path}")
    sidecar = Path(str(path) + ".idx")
    with JournalBackend(str(path), read_only=True) as b:
        entries = b._read_sidecar()
    assert set(entries) == {"m"}
    entries["m"][3] = _old_format(entries["m"][3])
    body = zlib.compress(msgpack.packb(entries, use_bin_type=True), 1)
    sidecar.write_bytes(SIDECAR_MAGIC + zlib.crc32(body).to_bytes(4, "little") + body)
    with backends.open(f"journal:///{path}") as b:
        assert _answers(b) == answers
    assert no_rebuild == ["m"]
    with JournalBackend(str(path), read_only=True) as b:
        data = b._read_sidecar()["m"][3]
    index = q.MachineIndex.from_bytes(data, 4)
    assert index is not None and index.end == N
