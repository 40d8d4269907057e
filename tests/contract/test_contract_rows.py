"""append_rows (the ingest server's path: records in wire form) equals append, per backend."""

from __future__ import annotations

import random
from typing import Any

import pytest

import backends
from backends.base import BackendError, ConflictError, GapError, ReadOnlyError
from tests.contract.helpers import machine, random_history
from tracer.codec import transition_to_list
from tracer.records import Kind, TransitionRecord


def _rows(records: list[TransitionRecord]) -> list[list[Any]]:
    return [transition_to_list(r) for r in records]


def _with_links(records: list[TransitionRecord]) -> list[TransitionRecord]:
    """Some records with parent_seq, source and another mach_tick (the journal's long rows)."""
    out = []
    for r in records:
        if r.seq % 7 == 3:
            r = TransitionRecord(
                r.machine_id,
                r.seq,
                r.kind,
                r.name,
                r.mach_tick + 1,
                r.time,
                r.duration,
                r.args,
                r.accepted,
                r.error,
                r.exited,
                r.entered,
                r.seq - 1,
                ("other", 5),
            )
        out.append(r)
    return out


def _same(a: Any, b: Any, n: int) -> None:
    assert a.highest("m") == b.highest("m") == n - 1
    assert a.read("m") == b.read("m")
    assert a.snapshots("m") == b.snapshots("m")
    rnd = random.Random(1)
    for _ in range(30):
        start = rnd.randint(0, 3000)
        end = start + rnd.randint(1, 400)
        for state in "ABCD":
            for pred in ("activated_between", "active_between", "deactivated_between"):
                assert getattr(a, pred)("m", state, start, end) == getattr(b, pred)(
                    "m", state, start, end
                )
    for seq in rnd.sample(range(n), 20):
        assert a.state_at("m", seq).clocks == b.state_at("m", seq).clocks


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("monotonic", [True, False])
def test_append_rows_equals_append(store: Any, seed: int, monotonic: bool) -> None:
    rnd = random.Random(seed)
    n = 700
    history = _with_links(random_history("m", n, rnd, monotonic=monotonic))
    b = store.open(snapshot_every=16)
    b.put_machine(machine())
    oracle = backends.open("memory://", snapshot_every=16)
    oracle.put_machine(machine())
    pos = 0
    while pos < n:
        size = rnd.choice((1, 3, 50, 200))
        b.append_rows("m", pos, _rows(history[pos : pos + size]))
        oracle.append("m", history[pos : pos + size])
        pos += size
    _same(b, oracle, n)
    if store.scheme != "memory":
        b.close()
        _same(store.open(), oracle, n)


def test_append_rows_resend_conflict_gap_and_bad_rows(store: Any) -> None:
    b = store.open()
    b.put_machine(machine())
    history = random_history("m", 20, random.Random(4))
    b.append_rows("m", 0, _rows(history[:10]))
    b.append_rows("m", 5, _rows(history[5:12]))  # a resend overlapping what is stored
    assert b.read("m") == history[:12]
    changed = _rows(history[11:13])
    changed[0][5] = "different"
    with pytest.raises(ConflictError):
        b.append_rows("m", 11, changed)
    with pytest.raises(GapError):
        b.append_rows("m", 14, _rows(history[14:16]))
    bad = _rows(history[12:14])
    bad[1][10] = [9]  # a state index outside the 4-state schema
    with pytest.raises(BackendError, match="outside"):
        b.append_rows("m", 12, bad)
    with pytest.raises(BackendError, match="13 fields"):
        b.append_rows("m", 12, [[12, 0, 5]])
    assert b.read("m") == history[:12]  # nothing of a refused batch is stored
    b.append_rows("m", 12, _rows(history[12:20]))
    assert b.read("m") == history


def test_append_rows_max_records_and_read_only(store: Any) -> None:
    b = store.open(max_records=50)
    b.put_machine(machine())
    history = random_history("m", 300, random.Random(6))
    for pos in range(0, 300, 40):
        b.append_rows("m", pos, _rows(history[pos : pos + 40]))
    assert b.highest("m") == 299
    assert b.read("m") == history[250:]
    if store.scheme != "memory":
        b.close()
        ro = store.open(read_only=True)
        with pytest.raises(ReadOnlyError):
            ro.append_rows("m", 300, _rows([TransitionRecord("m", 300, Kind.EVENT, "x")]))


def test_group_commits_appends_together_each_all_or_nothing(store: Any) -> None:
    b = store.open()
    b.put_machine(machine())
    b.put_machine(machine("n"))
    history = random_history("m", 30, random.Random(8))
    other = random_history("n", 30, random.Random(9))
    with b.group():
        b.append("m", history[:10])
        b.append_rows("n", 0, _rows(other[:10]))
        changed = _rows(history[5:15])
        changed[0][5] = "different"
        with pytest.raises(ConflictError):
            b.append_rows("m", 5, changed)  # refused: nothing of it is stored
        with b.group():  # nested: joins the outer group
            b.append("m", history[10:20])
    assert b.read("m") == history[:20]
    assert b.read("n") == other[:10]
    if store.scheme != "memory":
        b.close()
        b = store.open()
        assert b.read("m") == history[:20]
        assert b.read("n") == other[:10]
    b.append("m", history[20:])
    assert b.read("m") == history


def test_append_rows_continues_a_reopened_history(store: Any) -> None:
    if store.scheme == "memory":
        pytest.skip("nothing to reopen")
    history = random_history("m", 400, random.Random(11))
    b = store.open()
    b.put_machine(machine())
    b.append("m", history[:200])
    b.activated_between("m", "A", 0, 1)  # builds the index; close saves it
    b.close()
    b = store.open()
    b.append_rows("m", 200, _rows(history[200:300]))
    b.append_rows("m", 300, _rows(history[300:]))
    oracle = backends.open("memory://")
    oracle.put_machine(machine())
    oracle.append("m", history)
    _same(b, oracle, 400)


def test_append_rows_resend_from_zero_after_reopen_keeps_queries_right(store: Any) -> None:
    if store.scheme == "memory":
        pytest.skip("nothing to reopen")
    history = random_history("m", 100, random.Random(12))
    b = store.open()
    b.put_machine(machine())
    b.append("m", history)
    b.close()
    b = store.open()
    b.append_rows("m", 0, _rows(history[:50]))  # a resend after a reconnect: a no-op
    oracle = backends.open("memory://")
    oracle.put_machine(machine())
    oracle.append("m", history)
    _same(b, oracle, 100)


def test_interleaved_machines_read_back_their_own_records(store: Any) -> None:
    """Batches of several machines in turn, some ids sorting before others and one a prefix
    of another (key-ordered stores append at the end only when a machine's keys sort last)."""
    ids = ["m2", "m", "m10", "a"]
    b = store.open()
    histories = {
        mid: random_history(mid, 300, random.Random(len(mid) + ord(mid[-1]))) for mid in ids
    }
    for mid in ids:
        b.put_machine(machine(mid))
    for start in range(0, 300, 50):
        for mid in ids:
            b.append_rows(mid, start, _rows(histories[mid][start : start + 50]))
    for mid in ids:
        assert b.highest(mid) == 299
        assert b.read(mid) == histories[mid]
        assert b.read(mid, 120, 130) == histories[mid][120:130]
