"""The session model without an App: formatting, state tree, caches, cursor and follow."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import backends
from aminspect.session import (
    MachineStatus,
    Outcome,
    PageCache,
    Session,
    called_states,
    details,
    format_duration,
    format_time,
    is_error_state,
    log_row,
    natural_key,
    outcome_of,
    state_rows,
)
from tracer.machine_time import MachineTime
from tracer.records import MachineRecord, Schema, StateSpec, TransitionRecord

SHOP = Path(__file__).resolve().parents[1] / "data" / "shop.amj"

HSM = Schema(
    (
        StateSpec("Idle", initial=True),
        StateSpec("Run", parallel=True),
        StateSpec("Run.a", "Run"),
        StateSpec("Run.a.x", "Run.a"),
        StateSpec("Run.b", "Run"),
        StateSpec("Err"),
    )
)


def rec(seq: int, kind: str = "event", name: str = "", **kw) -> TransitionRecord:
    return TransitionRecord("m", seq, kind, name, time=1_000_000_000 * seq, **kw)


@pytest.fixture
def shop():
    backend = backends.open(str(SHOP), read_only=True)
    yield backend
    backend.close()


@pytest.fixture
def mem():
    backend = backends.open("memory://", snapshot_every=4)
    backend.put_machine(MachineRecord("m", "manual", HSM, created=0, updated=0))
    yield backend
    backend.close()


def scan(s: Session) -> None:
    """What the app's background error scan does."""
    for mid, start, end in s.error_scan_plan():
        assert s.apply_errors(mid, start, end, s.count_errors(mid, start, end))


def loaded(backend) -> Session:
    s = Session(backend)
    s.apply_machines(s.fetch_machines())
    scan(s)
    return s


# -- formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "-"),
        (-5, "-"),
        (850, "850ns"),
        (1_000, "1.00µs"),
        (12_340, "12.3µs"),
        (999_999, "1000µs"),
        (4_560_000, "4.56ms"),
        (123_000_000, "123ms"),
        (1_200_000_000, "1.20s"),
        (3_600_000_000_000, "3600s"),
    ],
)
def test_format_duration(ns, text):
    assert format_duration(ns) == text
    assert len(format_duration(ns)) <= 7


def test_format_time_is_utc():
    ns = 1_767_323_045_123_456_789
    assert format_time(ns) == "03:04:05.123"
    assert format_time(ns, full=True) == "2026-01-02T03:04:05.123456789Z"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Exception", True),
        ("ErrNetwork", True),
        ("order.PaymentFailed", True),
        ("ValidationError", True),
        ("error", True),
        ("Errand", True),  # the asyncmachine Err* convention is purely by name
        ("Ready", False),
        ("shipping.failed_over", False),
    ],
)
def test_is_error_state(name, error):
    assert is_error_state(name) is error


@pytest.mark.parametrize(
    ("name", "called"),
    [
        ("+Idle,Err", {"Idle", "Err"}),
        ("-Run.a", {"Run.a"}),
        ("=Idle", {"Idle"}),
        ("to_Err", {"Err"}),
        ("Idle", {"Idle"}),
        ("start", set()),
        ("", set()),
    ],
)
def test_called_states(name, called):
    assert {HSM.names[i] for i in called_states(HSM, rec(0, name=name))} == called


def test_log_row_fields():
    r = rec(3, name="go", entered=(1, 2, 3), exited=(0,), duration=1500)
    row = log_row(HSM, r)
    assert (row.seq, row.kind, row.name, row.duration) == (3, "event", "go", "1.50µs")
    assert row.changes == "+Run +a +x -Idle"
    assert row.outcome is Outcome.ACCEPTED
    assert log_row(HSM, rec(0, "init", "init", entered=(0,))).changes == "=Idle"
    assert log_row(HSM, rec(1, accepted=False)).outcome is Outcome.REJECTED
    assert log_row(HSM, rec(1, accepted=False, error=("E", "m"))).outcome is Outcome.ERROR
    assert log_row(HSM, rec(1, entered=(99,))).changes == "+#99"


def test_details_show_every_field():
    r = rec(
        7,
        name="pay",
        args={"amount": 12.5},
        accepted=False,
        error=("PaymentError", "card declined"),
        entered=(5,),
        exited=(0,),
        parent_seq=6,
        source=("shop", 3),
        duration=2_000_000,
    )
    d = {line.label: line.value for line in details(HSM, r)}
    assert d["id"] == "m/0/7"
    assert d["outcome"] == "error"
    assert d["error"] == "PaymentError: card declined"
    assert d["args"] == "{'amount': 12.5}"
    assert d["entered"] == "Err" and d["exited"] == "Idle"
    assert d["parent_seq"] == "6" and d["source"] == "shop seq 3"
    assert d["duration"] == "2.00ms" and d["time"] == "1970-01-01T00:00:07.000000000Z"
    plain = {line.label: line.value for line in details(HSM, rec(0))}
    assert plain["error"] == plain["args"] == plain["source"] == plain["parent_seq"] == "-"


def test_state_rows_tree_order_markers_and_parallel_regions():
    clocks = [2, 1, 1, 1, 0, 0]
    r = rec(1, name="+Run.a", entered=(1, 2, 3), exited=(0,))
    rows = state_rows(HSM, clocks, r)
    assert [(x.label, x.depth) for x in rows] == [
        ("Idle", 0),
        ("Run", 0),
        ("a", 1),
        ("x", 2),
        ("b", 1),
        ("Err", 0),
    ]
    by = {x.name: x for x in rows}
    assert by["Run"].parallel and by["Run"].active and by["Run"].entered
    assert by["Run.a"].region and by["Run.b"].region and not by["Run.a.x"].region
    assert by["Run.a"].called and not by["Run"].called
    assert by["Idle"].exited and not by["Idle"].active and by["Idle"].clock == 2
    assert by["Err"].error and not by["Idle"].error
    assert by["Idle"].initial
    # no record: no markers
    assert not any(x.entered or x.exited or x.called for x in state_rows(HSM, clocks))


# -- page cache ---------------------------------------------------------------------------


def test_page_cache_reads_only_missing_pages_and_evicts_lru(shop):
    cache = PageCache(page_size=10, max_pages=3)
    assert cache.get("order-1", 5) is None
    assert cache.load(shop, "order-1", 5, 25) == 3  # pages 0, 1, 2
    assert cache.get("order-1", 24).seq == 24
    assert cache.load(shop, "order-1", 0, 30) == 0
    assert cache.load(shop, "order-1", 30, 31) == 1  # evicts page 0
    assert cache.get("order-1", 0) is None and cache.get("order-1", 30).seq == 30
    assert cache.records("order-1", 29, 31)[1].seq == 30
    assert cache.reads == 4
    cache.clear("order-1")
    assert cache.get("order-1", 30) is None


def test_page_cache_rereads_a_growing_last_page(mem):
    mem.append("m", [rec(0, "init", entered=(0,))])
    cache = PageCache(page_size=8)
    cache.load(mem, "m", 0, 1)
    mem.append("m", [rec(1, "set", entered=(5,), exited=(0,))])
    assert cache.missing("m", 0, 2) == [0]
    cache.load(mem, "m", 0, 2)
    assert cache.get("m", 1).seq == 1


# -- machines and the tree -----------------------------------------------------------------


def test_machine_tree_nests_by_parent_and_searches(shop):
    s = loaded(shop)
    rows = s.tree_rows()
    assert [(r.machine_id, r.depth) for r in rows] == [
        ("shop", 0),
        ("order-1", 1),
        ("order-2", 1),
    ]
    assert rows[0].has_children and not rows[1].has_children
    assert (rows[1].count, rows[1].errors) == (97, 2)
    found = s.tree_rows("ORDER-2")
    assert [(r.machine_id, r.match) for r in found] == [("shop", False), ("order-2", True)]
    assert s.tree_rows("nothing") == []
    s.search = "order"
    assert len(s.tree_rows()) == 3


def test_orphans_and_parent_cycles_are_roots(mem):
    mem.put_machine(MachineRecord("a", "manual", HSM, parent_id="b"))
    mem.put_machine(MachineRecord("b", "manual", HSM, parent_id="a"))
    mem.put_machine(MachineRecord("c", "manual", HSM, parent_id="gone"))
    s = loaded(mem)
    rows = [(r.machine_id, r.depth) for r in s.tree_rows()]
    # c's parent is unknown: a root; a and b only reach each other: a becomes the root
    assert rows == [("c", 0), ("m", 0), ("a", 0), ("b", 1)]
    # a cycle must not hang the search either
    assert [(r.machine_id, r.match) for r in s.tree_rows("b")] == [("a", False), ("b", True)]


def test_first_machine_is_selected_and_cursor_defaults_to_last(shop):
    s = loaded(shop)
    assert s.selected == "shop" and s.cursor == 28 and s.follow
    with pytest.raises(KeyError, match="unknown machine 'nope'"):
        s.select("nope")


# -- cursor, follow and play ----------------------------------------------------------------


def test_cursor_moves_clamp_and_follow(shop):
    s = loaded(shop)
    s.select("order-1")
    assert s.step(-1) == 95 and not s.follow
    assert s.step(-500) == 0
    assert s.step(50) == 50
    assert s.goto(1000) == 96 and not s.follow  # reaching the end does not follow
    assert s.first() == 0
    assert s.last() == 96 and s.follow
    s.set_follow(False)
    s.goto(10)
    s.set_follow(True)
    assert s.cursor == 96
    # per-machine cursors when not following
    s.goto(5)
    s.select("shop")
    s.goto(3)
    s.select("order-1")
    assert s.cursor == 5
    assert s.describe() == "order-1 · seq 5/96"


def test_play(shop):
    s = loaded(shop)
    assert s.toggle_play() and s.cursor == 0 and not s.follow  # from the end: restart
    assert s.play_tick() and s.cursor == 1
    assert s.describe() == "shop · seq 1/28 · playing"
    assert not s.toggle_play() and not s.play_tick() and s.cursor == 1
    s.toggle_play()
    while s.play_tick():
        pass
    assert s.cursor == 28 and not s.playing


def test_no_machine_and_empty_machine(mem):
    s = Session(mem)
    assert s.cursor == -1 and s.goto(3) == -1 and s.describe() == "no machine"
    s.apply_machines(s.fetch_machines())
    assert s.selected == "m" and s.cursor == -1 and s.goto(3) == -1
    assert not s.toggle_play()
    view = s.view("m", -1)
    assert view.seq == -1 and view.record is None and not any(r.active for r in view.states)
    assert s.describe() == "m · no records · following"


def test_live_updates_follow_the_tail_and_count_errors(mem):
    s = loaded(mem)
    mem.append("m", [rec(0, "init", entered=(0,))])
    s.apply_machines(s.fetch_machines(["m"]))
    scan(s)
    assert s.cursor == 0
    mem.append("m", [rec(1, "set", entered=(5,), exited=(0,), error=("E", "x"))])
    mem.append("m", [rec(2, "set", entered=(0,), exited=(5,), error=("E", "y"))])
    assert s.apply_machines(s.fetch_machines(["m"]))
    assert s.machines["m"].errors == 0  # counted by the background scan, not the refresh
    assert s.error_scan_plan() == [("m", 1, 3)]
    assert not s.apply_errors("m", 2, 3, 1)  # a scan must continue what was counted
    scan(s)
    assert s.cursor == 2 and s.machines["m"].errors == 2 and s.error_scan_plan() == []
    s.step(-1)
    mem.append("m", [rec(3, "set", entered=(5,), exited=(0,))])
    s.apply_machines(s.fetch_machines(["m"]))
    scan(s)
    assert s.count == 4 and s.cursor == 1  # not following: the cursor stays
    assert s.machines["m"].errors == 2
    assert not s.apply_machines(s.fetch_machines(["m"]))  # nothing new


def test_live_statuses(shop):
    s = loaded(shop)
    assert s.set_live({"order-1"})
    assert s.machines["order-1"].status is MachineStatus.LIVE
    assert s.set_live(set())
    assert s.machines["order-1"].status is MachineStatus.DISCONNECTED
    assert s.machines["shop"].status is MachineStatus.RECORDED
    assert not s.set_live(set())


# -- machine time at the cursor -------------------------------------------------------------


def oracle(backend, machine_id: str) -> list[tuple[int, ...]]:
    schema = backend.get_machine(machine_id).schema
    mt = MachineTime.for_schema(schema)
    out = []
    for r in backend.read(machine_id):
        mt.apply(r, strict=False)
        out.append(tuple(mt.clocks))
    return out


def test_clocks_at_any_order_match_a_full_replay(shop):
    s = loaded(shop)
    for mid in ("order-1", "shop"):
        expected = oracle(shop, mid)
        seqs = list(range(len(expected)))
        random.Random(7).shuffle(seqs)
        for seq in seqs:
            assert s.view(mid, seq).states == s.view(mid, seq).states
            assert s.clocks_at(mid, seq) == expected[seq], (mid, seq)
        # walking backwards uses the undo cache and stays exact
        fresh = loaded(shop)
        for seq in reversed(range(len(expected))):
            view = fresh.view(mid, seq)
            assert (
                tuple(r.clock for r in sorted(view.states, key=lambda r: r.index))
                == (expected[seq])
            )


def test_view_marks_what_a_reset_record_changed(mem):
    mem.append(
        "m",
        [
            rec(0, "init", entered=(0,)),
            rec(1, "event", "go", entered=(1, 2, 3, 4), exited=(0,)),
            rec(2, "gap", entered=(5,)),  # the whole configuration after: only Err
        ],
    )
    s = loaded(mem)
    view = s.view("m", 2)
    by = {r.name: r for r in view.states}
    assert by["Err"].entered and by["Err"].active
    assert by["Run"].exited and by["Run.a.x"].exited and not by["Idle"].exited
    assert view.row is not None and view.row.changes == "=Err"
    assert dict((d.label, d.value) for d in view.details)["kind"] == "gap"


def test_deleted_records_are_skipped(mem):
    mem.append("m", [rec(0, "init", entered=(0,))])
    for seq in range(1, 10):
        a, b = (0, 5) if seq % 2 else (5, 0)
        mem.append("m", [rec(seq, "set", entered=(b,), exited=(a,), error=("E", "x"))])
    mem.delete_upto("m", 5)
    s = loaded(mem)
    entry = s.machines["m"]
    assert (entry.first, entry.count, entry.errors) == (6, 10, 4)
    assert s.first() == 6 and s.step(-3) == 6
    assert s.load_rows("m", 0, 10) == 1 and s.pages.get("m", 5) is None
    assert s.view("m", 6).record.seq == 6


# -- refusals and natural order ------------------------------------------------------------


@pytest.mark.parametrize("exc", ["MachineError", "TransitionNotAllowed"])
def test_a_library_refusal_is_not_accepted_not_an_error(exc):
    r = rec(1, name="ship", accepted=False, error=(exc, "Can't ship from waiting"))
    assert outcome_of(r) is Outcome.REJECTED
    assert log_row(HSM, r).outcome is Outcome.REJECTED
    lines = {line.label: line.value for line in details(HSM, r)}
    assert lines["reason"] == f"{exc}: Can't ship from waiting" and "error" not in lines
    # the same exception out of an accepted record, or any other exception, is an error
    assert outcome_of(rec(1, error=(exc, "m"))) is Outcome.ERROR
    assert outcome_of(rec(1, accepted=False, error=("PaymentDeclined", "m"))) is Outcome.ERROR
    assert {line.label for line in details(HSM, rec(1))} >= {"error"}


def test_refusals_are_not_counted_as_errors(mem):
    s = loaded(mem)
    mem.append(
        "m",
        [
            rec(0, "init", entered=(0,)),
            rec(1, name="go", accepted=False, error=("MachineError", "no")),
            rec(2, name="go", accepted=False, error=("ValueError", "boom")),
        ],
    )
    s.apply_machines(s.fetch_machines(["m"]))
    scan(s)
    assert s.machines["m"].errors == 1


def test_natural_order_of_machine_ids(mem):
    names = ["order-10", "order-2", "shop", "order-1", "Order-3", "agent-1", "order-11"]
    assert sorted(names, key=natural_key) == [
        "agent-1",
        "order-1",
        "order-2",
        "Order-3",
        "order-10",
        "order-11",
        "shop",
    ]
    for name in names:
        mem.put_machine(MachineRecord(name, "manual", HSM, created=0, updated=0))
    s = loaded(mem)
    assert [r.machine_id for r in s.tree_rows()] == sorted(["m", *names], key=natural_key)
