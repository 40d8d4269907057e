"""The shared query evaluator on every backend: predicate edges, every Query filter, and a
hypothesis comparison of find/count/predicates/state_at with a brute-force oracle."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.base import BackendError, Query, UnknownMachine
from tests.contract.helpers import STATES, machine, random_history
from tracer.machine_time import MachineTime, time_records
from tracer.records import Kind, TransitionRecord

A, B, C, D = range(4)


def ev(seq, t, exited=(), entered=(), name="e", kind=Kind.EVENT, **kw):
    return TransitionRecord("m", seq, kind, name, time=t, exited=exited, entered=entered, **kw)


@pytest.fixture
def edges(backend):
    """A entered at 100, B entered at 100 too, A re-entered at 150, A exited at 200."""
    backend.put_machine(machine())
    backend.append(
        "m",
        [
            ev(0, 50, name="init", kind=Kind.INIT),
            ev(1, 100, entered=(A,)),
            ev(2, 100, entered=(B,)),
            ev(3, 150, exited=(A,), entered=(A,)),
            ev(4, 200, exited=(A,)),
        ],
    )
    return backend


@pytest.mark.parametrize(
    ("pred", "start", "end", "want"),
    [
        ("active_between", 100, 101, True),  # entered at start: included
        ("active_between", 50, 100, False),  # entered at end: excluded (half-open)
        ("active_between", 160, 170, True),  # already active at start
        ("active_between", 199, 200, True),
        ("active_between", 200, 300, False),  # deactivated at exactly start
        ("active_between", 300, 400, False),
        ("active_between", 0, 10, False),  # before any record: inactive
        ("active_between", 100, 100, False),  # empty window
        ("active_between", 200, 100, False),  # reversed window
        ("inactive_between", 0, 100, True),
        ("inactive_between", 100, 150, False),  # active from the instant 100
        ("inactive_between", 150, 151, True),  # the re-entry exits momentarily
        ("inactive_between", 151, 200, False),
        ("inactive_between", 200, 201, True),
        ("activated_between", 100, 101, True),
        ("activated_between", 101, 150, False),
        ("activated_between", 150, 151, True),  # re-entry counts as activation
        ("activated_between", 0, 100, False),
        ("deactivated_between", 150, 151, True),  # ...and as deactivation
        ("deactivated_between", 151, 200, False),
        ("deactivated_between", 200, 201, True),
        ("deactivated_between", 100, 100, False),
    ],
)
def test_predicate_edges(edges, pred, start, end, want):
    assert getattr(edges, pred)("m", "A", start, end) is want


def test_predicates_for_a_state_never_entered(edges):
    assert not edges.active_between("m", "D", 0, 10**18)
    assert edges.inactive_between("m", "D", 0, 10**18)
    assert not edges.activated_between("m", "D", 0, 10**18)


def test_predicate_errors(edges):
    with pytest.raises(BackendError, match="unknown state 'Z'"):
        edges.active_between("m", "Z", 0, 1)
    with pytest.raises(UnknownMachine):
        edges.active_between("ghost", "A", 0, 1)
    with pytest.raises(BackendError, match="integers"):
        edges.active_between("m", "A", 0.5, 1)


def test_predicates_with_times_going_backwards_follow_the_same_definition(backend):
    backend.put_machine(machine())
    backend.append(
        "m",
        [ev(0, 100, entered=(A,)), ev(1, 50, exited=(A,)), ev(2, 300, entered=(A,))],
    )
    # A spans [100, 50) (empty), inactive [50, 300), active from 300.
    assert backend.activated_between("m", "A", 100, 101)
    assert not backend.active_between("m", "A", 120, 250)
    assert backend.inactive_between("m", "A", 120, 250)
    assert backend.active_between("m", "A", 300, 301)
    assert backend.deactivated_between("m", "A", 0, 60)


def _filled(backend):
    backend.put_machine(machine())
    recs = [
        ev(0, 10, name="init", kind=Kind.INIT, entered=(A,)),
        ev(1, 20, exited=(A,), entered=(B,), name="go"),
        ev(2, 30, name="go", accepted=False),
        ev(3, 40, exited=(B,), entered=(C, D), name="split", error=("E", "x")),
        ev(4, 50, exited=(D,), name="stop"),
        ev(5, 60, entered=(A, D), name="go"),
    ]
    backend.append("m", recs)
    return recs


@pytest.mark.parametrize(
    ("query", "seqs"),
    [
        (Query(), [0, 1, 2, 3, 4, 5]),
        (Query(machine_id="m"), [0, 1, 2, 3, 4, 5]),
        (Query(machine_id="m", seq_start=2, seq_end=4), [2, 3]),
        (Query(machine_id="m", time_start=20, time_end=50), [1, 2, 3]),
        (Query(machine_id="m", name="go"), [1, 2, 5]),
        (Query(machine_id="m", kinds=frozenset({"init"})), [0]),
        (Query(machine_id="m", entered=frozenset({"B"})), [1]),
        (Query(machine_id="m", entered=frozenset({"A", "D"})), [5]),
        (Query(machine_id="m", exited=frozenset({"D"})), [4]),
        (Query(machine_id="m", active=frozenset({"C"})), [3, 4, 5]),
        (Query(machine_id="m", active=frozenset({"C", "D"})), [3, 5]),
        (Query(machine_id="m", inactive=frozenset({"A"})), [1, 2, 3, 4]),
        (Query(machine_id="m", accepted=False), [2]),
        (Query(machine_id="m", has_error=True), [3]),
        (Query(machine_id="m", has_error=False, accepted=True), [0, 1, 4, 5]),
        (Query(machine_id="m", newest_first=True, limit=2), [5, 4]),
        (Query(machine_id="m", name="go", newest_first=True), [5, 2, 1]),
        (Query(machine_id="m", limit=0), []),
        (Query(machine_id="m", seq_start=9), []),
    ],
)
def test_find_filters(backend, query, seqs):
    _filled(backend)
    assert [r.seq for r in backend.find(query)] == seqs
    assert backend.count(query) == len(seqs)


def test_find_across_machines_orders_by_time(backend):
    backend.put_machine(machine("a"))
    backend.put_machine(machine("b"))
    backend.append(
        "a",
        [
            TransitionRecord("a", 0, Kind.INIT, time=5),
            TransitionRecord("a", 1, Kind.EVENT, time=30),
        ],
    )
    backend.append("b", [TransitionRecord("b", 0, Kind.INIT, time=10)])
    assert [(r.machine_id, r.seq) for r in backend.find(Query())] == [("a", 0), ("b", 0), ("a", 1)]
    newest = backend.find(Query(newest_first=True, limit=2))
    assert [(r.machine_id, r.seq) for r in newest] == [("a", 1), ("b", 0)]


def test_find_errors(backend):
    _filled(backend)
    with pytest.raises(BackendError, match="unknown state 'Z'"):
        backend.find(Query(machine_id="m", entered=frozenset({"Z"})))
    assert backend.find(Query(entered=frozenset({"Z"}))) == []  # across machines: no match
    with pytest.raises(UnknownMachine):
        backend.find(Query(machine_id="ghost"))
    with pytest.raises(BackendError, match="limit"):
        backend.find(Query(limit=-1))
    with pytest.raises(BackendError, match="seq_start"):
        backend.count(Query(seq_start="1"))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="Query"):
        backend.find({"machine_id": "m"})


def test_to_time_record_with_tracked_states(store):
    b = store.open(tracked_states=("A", "B"))
    recs = _filled(b)
    want = list(time_records(b.get_machine("m").schema, recs, tracked_states=("A", "B")))
    for rec, tr in zip(recs, want, strict=True):
        assert b.to_time_record(rec) == tr
    assert want[1].tracked == (2, 1)
    assert want[1].tracked_diff == 2


def test_tracked_states_as_url_string_option(store):
    b = store.open(tracked_states="A,C")
    assert b.tracked_states == ("A", "C")


def test_find_respects_deleted_records(store):
    b = store.open(snapshot_every=0)
    if not b.supports_delete:
        pytest.skip("backend cannot delete")
    _filled(b)
    b.delete_upto("m", 2)
    assert [r.seq for r in b.find(Query(machine_id="m"))] == [3, 4, 5]
    assert [r.seq for r in b.find(Query(machine_id="m", active=frozenset({"C"})))] == [3, 4, 5]
    assert b.count(Query(machine_id="m", inactive=frozenset({"A"}))) == 2
    assert b.active_between("m", "B", 0, 35)  # B, active before the deletion point, still is
    assert not b.active_between("m", "B", 41, 100)


# ------------------------------------------------------------------ oracle
def oracle_find(histories, q):
    out = []
    for mid in sorted(histories):
        if q.machine_id is not None and mid != q.machine_id:
            continue
        schema, records = histories[mid]
        mt = MachineTime(len(schema))
        for r in records:
            exited, entered = mt.changes(r)
            mt.apply(r, strict=False)
            ok = (
                (q.seq_start is None or r.seq >= q.seq_start)
                and (q.seq_end is None or r.seq < q.seq_end)
                and (q.time_start is None or r.time >= q.time_start)
                and (q.time_end is None or r.time < q.time_end)
                and (q.name is None or r.name == q.name)
                and (q.kinds is None or r.kind in q.kinds)
                and (q.accepted is None or r.accepted == q.accepted)
                and (q.has_error is None or (r.error is not None) == q.has_error)
            )
            for names, test in (
                (q.entered, lambda i, en=entered: i in en),
                (q.exited, lambda i, ex=exited: i in ex),
                (q.active, mt.is_active),
                (q.inactive, lambda i, mt=mt: not mt.is_active(i)),
            ):
                for n in names:
                    i = schema.get_index(n)
                    ok = ok and i is not None and test(i)
            if ok:
                out.append(r)
    if q.machine_id is None:
        out.sort(key=lambda r: (r.time, r.machine_id, r.seq))
    if q.newest_first:
        out.reverse()
    return out if q.limit is None else out[: q.limit]


def oracle_predicate(records, size, s, start, end, pred):
    if start >= end:
        return False
    mt = MachineTime(size)
    spans = []  # (lo, hi, active); None = infinite
    entered_in = exited_in = False
    prev = None
    for r in records:
        spans.append((prev, r.time, mt.is_active(s)))
        ex, en = mt.changes(r)
        if start <= r.time < end:
            entered_in |= s in en
            exited_in |= s in ex
        mt.apply(r, strict=False)
        prev = r.time
    spans.append((prev, None, mt.is_active(s)))

    def held(want):
        for lo, hi, act in spans:
            a = start if lo is None else max(lo, start)
            b = end if hi is None else min(hi, end)
            if a < b and act == want:
                return True
        return False

    return {
        "activated_between": entered_in,
        "deactivated_between": exited_in,
        "active_between": entered_in or held(True),
        "inactive_between": exited_in or held(False),
    }[pred]


state_sets = st.frozensets(st.sampled_from(STATES), max_size=2)
queries = st.builds(
    Query,
    machine_id=st.none(),  # set per example to an existing machine or None
    seq_start=st.none() | st.integers(0, 40),
    seq_end=st.none() | st.integers(0, 40),
    time_start=st.none() | st.integers(900, 1600),
    time_end=st.none() | st.integers(900, 1600),
    name=st.none() | st.sampled_from(("go", "stop", "")),
    kinds=st.none() | st.frozensets(st.sampled_from(list(Kind)), min_size=1, max_size=3),
    entered=state_sets,
    exited=state_sets,
    active=state_sets,
    inactive=state_sets,
    accepted=st.none() | st.booleans(),
    has_error=st.none() | st.booleans(),
    newest_first=st.booleans(),
    limit=st.none() | st.integers(0, 5),
)


def test_find_count_predicates_state_at_match_the_oracle(store):
    backend = store.open(snapshot_every=3)
    histories = {}
    counter = itertools.count()

    @settings(
        max_examples=50,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 2**32),
        n=st.integers(0, 40),
        monotonic=st.booleans(),
        qs=st.lists(queries, min_size=1, max_size=4),
        one_machine=st.booleans(),
        windows=st.lists(st.tuples(st.integers(900, 1700), st.integers(900, 1700)), max_size=2),
    )
    def check(seed, n, monotonic, qs, one_machine, windows):
        rnd = random.Random(seed)
        mid = f"m{next(counter)}"
        m = machine(mid)
        backend.put_machine(m)
        records = random_history(mid, n, rnd, monotonic=monotonic)
        # append in random batch sizes, with an overlapping resend now and then
        pos = 0
        while pos < n:
            size = rnd.randint(1, 7)
            back = rnd.randint(0, min(pos, 2))
            backend.append(mid, records[pos - back : pos + size])
            pos += size
        histories[mid] = (m.schema, records)
        assert backend.read(mid) == records
        for q in qs:
            if one_machine:
                q = Query(**{**_fields(q), "machine_id": mid})
            want = oracle_find(histories, q)
            got = backend.find(q)
            assert [(r.machine_id, r.seq) for r in got] == [(r.machine_id, r.seq) for r in want]
            assert got == want
            assert backend.count(q) == len(want)
        # Edges matter most: windows starting or ending at (or next to) record times.
        times = [r.time for r in records] or [1000]
        for _ in range(6):
            start = rnd.choice(times) + rnd.choice((-1, 0, 0, 1))
            end = rnd.choice((start + rnd.choice((0, 1, 5, 50)), rnd.choice(times)))
            windows.append((start, end))
        for start, end in windows:
            for s in STATES:
                for pred in (
                    "activated_between",
                    "deactivated_between",
                    "active_between",
                    "inactive_between",
                ):
                    want_p = oracle_predicate(
                        records, len(STATES), STATES.index(s), start, end, pred
                    )
                    assert getattr(backend, pred)(mid, s, start, end) is want_p, (
                        pred,
                        s,
                        start,
                        end,
                    )
        mt = MachineTime(len(STATES))
        for r in records:
            mt.apply(r, strict=False)
            assert backend.state_at(mid, r.seq).clocks == mt.clocks

    check()


def _fields(q):
    return {f: getattr(q, f) for f in Query.__dataclass_fields__}


def test_queries_after_reopen_and_delete_match_the_oracle(store):
    b = store.open(snapshot_every=7)
    if not b.persistent:
        pytest.skip("memory:// keeps nothing across opens")
    rnd = random.Random(3)
    m = machine("r")
    b.put_machine(m)
    recs = random_history("r", 300, rnd)
    b.append("r", recs)
    b.active_between("r", "A", 0, 1)  # builds (and, where supported, saves) the index
    more = random_history("r", 400, rnd)[300:]
    b.append("r", more)  # the saved index is now behind the records
    recs += more
    b.close()

    def check(backend, records):
        hist = {"r": (m.schema, records)}
        for q in (
            Query(machine_id="r", active=frozenset({"B"})),
            Query(machine_id="r", entered=frozenset({"C"}), newest_first=True, limit=7),
            Query(machine_id="r", time_start=records[len(records) // 2].time),
        ):
            assert backend.find(q) == oracle_find(hist, q)
        for _ in range(30):
            start = rnd.choice(records).time + rnd.choice((-1, 0, 1))
            end = start + rnd.choice((1, 10, 1000))
            for s in STATES:
                for pred in ("active_between", "inactive_between", "activated_between"):
                    want = oracle_predicate(records, 4, STATES.index(s), start, end, pred)
                    assert getattr(backend, pred)("r", s, start, end) is want

    again = store.open()
    check(again, recs)
    if not again.supports_delete:
        return
    again.delete_upto("r", 99)
    again.close()
    third = store.open()
    kept = third.read("r")
    assert kept == recs[100:]
    q = Query(machine_id="r", inactive=frozenset({"A"}))
    want = [r for r in oracle_find({"r": (m.schema, recs)}, q) if r.seq >= 100]
    assert third.find(q) == want
    assert third.state_at("r", 399).clocks == b_state(recs)


def b_state(records):
    mt = MachineTime(4)
    for r in records:
        mt.apply(r, strict=False)
    return mt.clocks


def test_find_across_machines_with_times_going_backwards(backend):
    backend.put_machine(machine("a"))
    backend.put_machine(machine("b"))
    backend.append(
        "a",
        [
            TransitionRecord("a", 0, Kind.INIT, time=50),
            TransitionRecord("a", 1, Kind.EVENT, time=5),
        ],
    )
    backend.append("b", [TransitionRecord("b", 0, Kind.INIT, time=10)])
    got = backend.find(Query(limit=1))
    assert [(r.machine_id, r.seq) for r in got] == [("a", 1)]
    got = backend.find(Query(limit=2, newest_first=True))
    assert [(r.machine_id, r.seq) for r in got] == [("a", 0), ("b", 0)]
