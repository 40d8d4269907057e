"""The diff model agrees with the shared query API (``state_at``, ``find``, ``count``) on
random histories, and formats what it found."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from aminspect.diff import HEAD, SCAN_LIMIT, diff_lines, format_elapsed, load_diff
from backends.base import Query
from tests.contract.helpers import STATES, machine, random_history
from tracer.records import Kind, TransitionRecord

pytestmark = pytest.mark.timeout(120)

_ids = itertools.count()


@pytest.fixture(scope="module")
def store():
    backend = backends.open("memory://", snapshot_every=5)
    yield backend
    backend.close()


def test_diff_agrees_with_state_at_and_find(store):
    @settings(max_examples=80, derandomize=True)
    @given(
        seed=st.integers(0, 2**32),
        n=st.integers(1, 60),
        cursor=st.integers(0, 59),
        mark=st.none() | st.integers(0, 59),
    )
    def check(seed, n, cursor, mark):
        rnd = random.Random(seed)
        mid = f"d{next(_ids)}"
        store.put_machine(machine(mid))
        records = random_history(mid, n, rnd)
        store.append(mid, records)
        cursor = min(cursor, n - 1)
        mark = None if mark is None else min(mark, n - 1)
        clocks_at = lambda m, s: store.state_at(m, s).clocks  # noqa: E731
        d = load_diff(store, machine(mid).schema, mid, cursor, mark, clocks_at)
        if mark is None or mark == cursor:
            assert (d.base, d.target, d.marked) == (cursor - 1, cursor, None)
        else:
            assert (d.base, d.target) == (min(mark, cursor), max(mark, cursor))
            assert d.marked == mark
        before = store.state_at(mid, d.base)
        after = store.state_at(mid, d.target)
        q = {"machine_id": mid, "seq_start": d.base + 1, "seq_end": d.target + 1}
        for i, name in enumerate(STATES):
            a, b = before.is_active(i), after.is_active(i)
            assert (name in d.entered) == (not a and b)
            assert (name in d.exited) == (a and not b)
            moved = store.count(Query(**q, entered=frozenset({name}))) + store.count(
                Query(**q, exited=frozenset({name}))
            )
            change = [c for c in d.changes if c.name == name]
            assert moved == (change[0].new - change[0].old if change else 0)
            if change:
                assert (change[0].old, change[0].new) == (before.clocks[i], after.clocks[i])
        assert d.between == store.count(Query(**q)) == d.target - d.base
        assert list(d.head) == [r.name or r.kind for r in store.find(Query(**q, limit=HEAD))]
        assert d.errors == store.count(Query(**q, has_error=True))
        assert d.refused == store.count(Query(**q, accepted=False, has_error=False))
        assert d.target_record == records[d.target]
        if d.base >= 0:
            assert d.elapsed == records[d.target].time - records[d.base].time
        else:
            assert d.elapsed is None
        lines = dict(diff_lines(d))
        assert lines["events"].startswith(f"{d.between} record")
        assert lines["entered"] == (", ".join(d.entered) or "-")

    check()


def test_far_apart_reads_only_the_ends_and_the_first_records():
    mid = "far"
    rnd = random.Random(1)
    records = random_history(mid, SCAN_LIMIT + 500, rnd)
    backend = backends.open("memory://", snapshot_every=64)
    backend.put_machine(machine(mid))
    backend.append(mid, records)
    reads = []

    class Counting:
        def read(self, machine_id, start=0, end=None):
            reads.append(end - start)
            return backend.read(machine_id, start, end)

    clocks_at = lambda m, s: backend.state_at(m, s).clocks  # noqa: E731
    d = load_diff(Counting(), machine(mid).schema, mid, len(records) - 1, 0, clocks_at)
    assert d.between == len(records) - 1
    assert d.errors is None and d.refused is None  # too many to scan
    assert len(d.head) == HEAD and sum(reads) <= HEAD + 2
    lines = dict(diff_lines(d))
    assert f"(+{d.between - HEAD:,})" in lines["events"]
    assert "outcomes" not in lines
    backend.close()


def test_lines_name_the_mark_and_show_args_and_duration():
    mid = "m"
    recs = [
        TransitionRecord(mid, 0, Kind.INIT, "init", time=1_000, entered=(0,)),
        TransitionRecord(mid, 1, Kind.EVENT, "go", time=3_000, exited=(0,), entered=(1,)),
        TransitionRecord(
            mid, 2, Kind.EVENT, "pay", time=2_501_000, duration=5_000, args={"n": 1}, entered=(2,)
        ),
    ]
    backend = backends.open("memory://")
    backend.put_machine(machine(mid))
    backend.append(mid, recs)
    clocks_at = lambda m, s: backend.state_at(m, s).clocks  # noqa: E731
    d = load_diff(backend, machine(mid).schema, mid, 0, 2, clocks_at)
    lines = dict(diff_lines(d))
    assert lines["between"] == "seq 0 (cursor) → 2 (mark)"
    assert lines["entered"] == "B, C" and lines["exited"] == "A"
    assert lines["clocks"] == "A 1→2, B 0→1, C 0→1"
    assert lines["events"] == "2 records: go, pay"
    assert lines["elapsed"] == "2.50ms" and lines["took"] == "5.00µs"
    assert lines["args"] == "{'n': 1}"
    prev = dict(diff_lines(load_diff(backend, machine(mid).schema, mid, 0, None, clocks_at)))
    assert prev["between"].startswith("seq -1 → 0 (previous record")
    assert prev["elapsed"] == "-"
    assert format_elapsed(0) == "0" and format_elapsed(-2000) == "-2.00µs"
    assert format_elapsed(748 * 10**9) == "12m28s" and format_elapsed(7_500 * 10**9) == "2h05m"
    backend.close()
