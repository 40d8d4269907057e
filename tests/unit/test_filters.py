"""The log's filters and the filtered view, against a brute-force oracle, and the session's
navigation over the filtered set."""

from __future__ import annotations

import random

import pytest

import backends
from aminspect.filters import (
    FilteredView,
    LogFilter,
    RecordSummary,
    compile_filter,
    next_change,
    parse_names,
    state_indexes,
    touched,
)
from aminspect.session import Session
from tracer.records import MachineRecord, Schema, StateSpec, TransitionRecord

pytestmark = pytest.mark.timeout(60)

SCHEMA = Schema(
    (
        StateSpec("Idle", initial=True),
        StateSpec("Busy"),
        StateSpec("Busy.Paid", "Busy"),
        StateSpec("Done.Paid"),
        StateSpec("Failed"),
    )
)
NAMES = ["start", "pay", "ship", "cancel", "retry"]


def rec(seq: int, **kw: object) -> TransitionRecord:
    kw.setdefault("name", "e")
    kw.setdefault("kind", "event")
    return TransitionRecord("m", seq, time=seq, **kw)  # type: ignore[arg-type]


def random_history(n: int, seed: int) -> list[TransitionRecord]:
    rnd = random.Random(seed)
    out = [rec(0, kind="init", name="init", entered=(0,))]
    for seq in range(1, n):
        roll = rnd.random()
        if roll < 0.1:
            out.append(rec(seq, name="pay", accepted=False, error=("PaymentError", "no")))
        elif roll < 0.2:
            out.append(rec(seq, name="ship", accepted=False, error=("MachineError", "refused")))
        elif roll < 0.3:
            out.append(rec(seq, name=rnd.choice(NAMES), accepted=False))
        elif roll < 0.33:
            out.append(rec(seq, kind="restore", name="restore", entered=(1, 2)))
        else:
            a, b = rnd.sample(range(len(SCHEMA)), 2)
            kind = rnd.choice(["event", "event", "set", "add"])
            out.append(rec(seq, kind=kind, name=rnd.choice(NAMES), exited=(a,), entered=(b,)))
    return out


def test_predicates_of_each_filter():
    ok = rec(1, name="pay", exited=(0,), entered=(1, 2))
    refused = rec(2, name="ship", accepted=False, error=("MachineError", "no"))
    guarded = rec(3, name="ship", accepted=False)
    failed = rec(4, name="pay", accepted=False, error=("PaymentError", "declined"))
    crashed = rec(5, kind="set", name="+Failed", entered=(4,), error=("ValueError", "x"))
    init = rec(0, kind="init", name="init", entered=(0,))
    every = [init, ok, refused, guarded, failed, crashed]

    def shown(flt: LogFilter) -> list[int]:
        match = compile_filter(flt, SCHEMA)
        return [r.seq for r in every if match(r)]

    assert shown(LogFilter()) == [0, 1, 2, 3, 4, 5]
    assert shown(LogFilter(hide_rejected=True)) == [0, 1, 5]
    # a library's refusal is the reason an event was not accepted, not an error
    assert shown(LogFilter(errors_only=True)) == [4, 5]
    assert shown(LogFilter(kinds=frozenset({"set", "init"}))) == [0, 5]
    assert shown(LogFilter(events=frozenset({"ship"}))) == [2, 3]
    # full and short names, any case; a short name matches every state ending in it
    assert shown(LogFilter(states=frozenset({"busy.paid"}))) == [1]
    assert shown(LogFilter(states=frozenset({"Paid"}))) == [1]
    assert shown(LogFilter(states=frozenset({"Idle"}))) == [0, 1]  # init's config counts
    assert shown(LogFilter(search="PAY")) == [1, 4]  # event names
    assert shown(LogFilter(search="fail")) == [5]  # a touched state's name
    assert shown(LogFilter(search="init")) == [0]  # the kind
    assert shown(LogFilter(hide_rejected=True, events=frozenset({"pay"}))) == [1]
    assert state_indexes(SCHEMA, frozenset({"paid"})) == {2, 3}
    assert touched(init) == (0,) and set(touched(ok)) == {0, 1, 2}


def test_filter_description_and_parts():
    flt = LogFilter(
        errors_only=True,
        hide_rejected=True,
        kinds=frozenset({"set"}),
        events=frozenset({"pay", "ship"}),
        states=frozenset({"Paid"}),
        search=" card ",
        machine="order",
    )
    assert flt.describe() == (
        "errors · accepted · kind set · event pay,ship · state Paid · ~card · machine ~order"
    )
    assert flt.hides_records and flt.record_part().machine == ""
    assert not LogFilter(machine="order").hides_records
    assert LogFilter().describe() == ""
    assert parse_names("a, b  c,,") == {"a", "b", "c"}


@pytest.mark.parametrize("seed", range(6))
def test_filtered_view_agrees_with_a_brute_force_oracle(seed: int):
    history = random_history(700, seed)
    rnd = random.Random(seed)
    flt = rnd.choice(
        [
            LogFilter(errors_only=True),
            LogFilter(hide_rejected=True),
            LogFilter(events=frozenset({"pay", "ship"})),
            LogFilter(states=frozenset({"Paid"}), kinds=frozenset({"event"})),
            LogFilter(search="re"),
            LogFilter(search="zzz"),  # nothing shown
        ]
    )
    match = compile_filter(flt, SCHEMA)
    expected = [r.seq for r in history if match(r)]

    def read(machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        assert machine_id == "m"
        return history[start:end]

    fv = FilteredView("m", SCHEMA, flt, 0, len(history), block=64)
    # part-scanned: what is known is a prefix of the answer, in order
    fv.scan_next(read, 3)
    assert not fv.complete and fv.scanned == 192
    known = [fv.seq_at(i) for i in range(fv.total)]
    assert known == [s for s in expected if s < 192]
    assert fv.hidden == 192 - len(known)
    assert fv.is_shown(500) is None
    fv.scan_all(read)
    assert fv.complete and fv.progress == 1.0
    assert [fv.seq_at(i) for i in range(fv.total)] == expected
    assert fv.hidden == len(history) - len(expected)
    with pytest.raises(IndexError):
        fv.seq_at(fv.total)
    shown = set(expected)
    for seq in rnd.sample(range(len(history)), 60):
        assert fv.is_shown(seq) is (seq in shown)
        before = [s for s in expected if s <= seq]
        after = [s for s in expected if s > seq]
        assert fv.index_at_or_before(seq) == len(before) - 1
        assert fv.nearest(seq) == (before[-1] if before else (after[0] if after else None))
        for delta in (1, -1, 5, -50):
            got = fv.step(seq, delta)
            if not expected:
                assert got is None
                continue
            # a hidden seq sits between the rows around it
            if seq in shown:
                i = expected.index(seq) + delta
            elif delta > 0:
                i = len(before) - 1 + delta
            else:
                i = len(before) + delta
            assert got == expected[max(0, min(len(expected) - 1, i))]


def test_a_live_view_rescans_its_short_last_block():
    history = random_history(300, 11)
    flt = LogFilter(hide_rejected=True)
    match = compile_filter(flt, SCHEMA)

    def read(machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        return history[start:end]

    fv = FilteredView("m", SCHEMA, flt, 0, 100, block=64)
    fv.scan_all(read)
    assert fv.scanned == 100
    fv.grow(0, 100)  # no change: nothing to do
    assert fv.complete
    fv.grow(0, 300)
    assert not fv.complete and fv.scanned == 64  # the short block [64, 100) is dropped
    fv.scan_all(read)
    assert [fv.seq_at(i) for i in range(fv.total)] == [r.seq for r in history if match(r)]


def test_next_change_finds_the_nearest_record_touching_a_state():
    history = random_history(200, 3)
    states = frozenset({2})
    fwd = next_change(history[50:], states)
    assert fwd is not None and 2 in touched(fwd)
    assert all(2 not in touched(r) for r in history[50 : fwd.seq])
    back = next_change(history[:50], states, backwards=True)
    assert back is not None and all(2 not in touched(r) for r in history[back.seq + 1 : 50])
    assert next_change([], states) is None


@pytest.fixture
def session():
    backend = backends.open("memory://")
    backend.put_machine(MachineRecord("m", "manual", SCHEMA, 0, 0))
    backend.put_machine(MachineRecord("other", "manual", SCHEMA, 0, 0))
    history = random_history(2000, 5)
    backend.append("m", history)
    backend.append("other", [TransitionRecord("other", 0, "init", "init", entered=(0,))])
    s = Session(backend)
    s.apply_machines(s.fetch_machines())
    s.select("m")
    yield s, history
    backend.close()


def test_session_moves_over_the_filtered_set(session):
    s, history = session
    flt = LogFilter(errors_only=True)
    match = compile_filter(flt, SCHEMA)
    shown = [r.seq for r in history if match(r)]
    assert s.cursor == 1999 and s.follow
    s.set_filter(flt)
    fv = s.filtered
    assert fv is not None and fv.total == 0  # nothing scanned yet: the cursor stays
    assert s.filter_status() == "0 shown, 0 hidden · filtering 0% · filter: errors"
    while s.scan_filter(blocks=1):
        pass
    s.snap_cursor()
    assert s.cursor == shown[-1]  # following: the last shown record
    rows, row, seq_of = s.log_rows()
    assert rows == len(shown) and row == len(shown) - 1 and seq_of is not None
    assert seq_of(0) == shown[0]
    assert s.filter_status() == (
        f"{len(shown):,} shown, {2000 - len(shown):,} hidden · filter: errors"
    )
    s.step(-1)
    assert s.cursor == shown[-2] and not s.follow
    s.step(-50)
    assert s.cursor == shown[-52]
    s.first()
    assert s.cursor == shown[0]
    s.step(-1)
    assert s.cursor == shown[0]
    target = shown[10] + 1  # hidden: go to lands on the shown record before it
    s.goto(target)
    assert s.cursor == shown[10]
    s.last()
    assert s.cursor == shown[-1] and s.follow
    # play walks shown records only and stops at the last
    s.goto(shown[-3])
    assert s.toggle_play()
    assert s.play_tick() and s.cursor == shown[-2]
    assert s.play_tick() and s.cursor == shown[-1] and not s.playing
    # a different filter is a new view; no filter: the log is every record again
    s.set_filter(LogFilter())
    assert s.filtered is None and s.log_rows()[0] == 2000 and s.log_rows()[2] is None
    s.step(-1)
    assert s.cursor == shown[-1] - 1


def test_a_hidden_cursor_moves_to_the_nearest_shown_record(session):
    s, history = session
    s.set_follow(False)
    s.goto(1000)
    flt = LogFilter(hide_rejected=True)
    s.set_filter(flt)
    while s.scan_filter():
        pass
    s.snap_cursor()
    match = compile_filter(flt, SCHEMA)
    assert s.cursor == max(r.seq for r in history[:1001] if match(r))


def test_find_change_respects_the_filter(session):
    s, history = session
    s.set_follow(False)
    seq = s.goto(1000)
    name = "Busy.Paid"
    nxt = s.find_change("m", name, seq)
    prev = s.find_change("m", name, seq, backwards=True)
    changes = [r.seq for r in history if 2 in touched(r)]
    assert nxt == min(c for c in changes if c > seq)
    assert prev == max(c for c in changes if c < seq)
    assert s.find_change("m", name, 1999) is None
    s.set_filter(LogFilter(kinds=frozenset({"restore"})))
    restores = [r.seq for r in history if r.kind == "restore" and 2 in touched(r)]
    assert s.find_change("m", name, seq) == min(c for c in restores if c > seq)
    with pytest.raises(backends.BackendError, match="unknown state"):
        s.find_change("m", "Nope", seq)


def test_machine_filter_narrows_the_machine_tree(session):
    s, _ = session
    assert [r.machine_id for r in s.tree_rows()] == ["m", "other"]
    s.set_filter(LogFilter(machine="OTH"))
    assert [r.machine_id for r in s.tree_rows()] == ["other"]
    assert s.filtered is None  # the machine part hides no record
    s.search = "x"
    assert s.tree_rows() == []


@pytest.mark.parametrize("seed", range(4))
def test_record_summary_answers_as_the_records_do(seed: int):
    history = random_history(900, seed)
    summary = RecordSummary(0, len(SCHEMA))
    summary.offer(history[:300])
    summary.offer(history[500:600])  # not contiguous: ignored
    summary.offer(history[250:900])  # overlaps: only the new part is added
    assert summary.end == 900 and summary.covers(0, 900) and not summary.covers(0, 901)
    filters = [
        LogFilter(errors_only=True),
        LogFilter(hide_rejected=True),
        LogFilter(errors_only=True, hide_rejected=True),
        LogFilter(kinds=frozenset({"set", "restore", "nope"})),
        LogFilter(events=frozenset({"pay", "ship"})),
        LogFilter(states=frozenset({"Paid"})),
        LogFilter(search="re"),  # restore, retry, Failed...
        LogFilter(search="IDLE", hide_rejected=True),
    ]
    for flt in filters:
        match = compile_filter(flt, SCHEMA)
        assert summary.matches(flt, SCHEMA, 100, 800) == [
            r.seq for r in history[100:800] if match(r)
        ], flt
    errors = compile_filter(LogFilter(errors_only=True), SCHEMA)
    assert summary.errors(0, 900) == sum(1 for r in history if errors(r))
    # a view scans covered blocks without reading
    fv = FilteredView("m", SCHEMA, LogFilter(events=frozenset({"pay"})), 0, 900, block=64)

    def no_read(machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        raise AssertionError("read")

    fv.scan_next(no_read, 100, summary=summary)
    assert fv.complete and fv.reads == 0
    assert [fv.seq_at(i) for i in range(fv.total)] == [r.seq for r in history if r.name == "pay"]


def test_record_summary_stays_bounded():
    history = random_history(300, 1)
    summary = RecordSummary(0, len(SCHEMA), limit=100)
    summary.offer(history)
    assert summary.full and summary.end == 100
    summary.offer(history[100:])
    assert summary.end == 100
    big = Schema(tuple(StateSpec(f"S{i}") for i in range(65)))
    assert RecordSummary(0, len(big)).full  # masks hold 64 states


def test_a_filter_follows_records_as_they_arrive(session):
    s, _ = session
    flt = LogFilter(events=frozenset({"pay"}))
    s.set_filter(flt)
    while s.scan_filter():
        pass
    s.snap_cursor()
    fv = s.filtered
    assert fv is not None
    before = fv.total
    more = [rec(seq, name="pay" if seq % 2 else "x") for seq in range(2000, 2101)]
    more = [TransitionRecord("m", r.seq, r.kind, r.name, time=r.time) for r in more]
    s.backend.append("m", more)
    s.apply_machines(s.fetch_machines(["m"]))
    assert s.filtered is fv and not fv.complete  # grown: the short last block again
    while s.scan_filter():
        pass
    assert s.snap_cursor() and s.cursor == 2099  # following: the newest shown record
    assert fv.total == before + 50
