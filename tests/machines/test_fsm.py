"""The validated FSM: BEHAVIOURS FSM-01..FSM-14 (luno/shift), on a real SQLite file."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from pathlib import Path

import pytest

from aminspect.machines.fsm import (
    FSM,
    DuplicateID,
    EdgeIntoInitial,
    FSMBuilder,
    FSMBuildError,
    FSMError,
    IDRuleError,
    IDTypeMismatch,
    InvalidStateTransition,
    InvalidType,
    MisconfiguredOption,
    NoInitialState,
    RowCount,
    SQLiteFSMStore,
    StateAlreadyAdded,
    TimestampRequired,
    TransitionContext,
    UndeclaredState,
    UnknownStatus,
    UnreachableState,
)


class S(StrEnum):
    INIT = "init"
    UPDATE = "update"
    COMPLETE = "complete"


class Other(StrEnum):
    UNKNOWN = "unknown"


@dataclass
class Insert:
    name: str
    dob: datetime | None = None


@dataclass
class Update:
    id: int
    name: str = ""
    amount: int = 0


@dataclass
class Complete:
    id: int


def shift_fsm(store: SQLiteFSMStore, **kw: object) -> FSM:
    """luno/shift's test machine: Init(insert) -> Update -> Complete."""
    return (
        FSMBuilder("users")
        .initial(S.INIT, Insert, next=[S.UPDATE])
        .add_state(S.UPDATE, Update, next=[S.COMPLETE])
        .add_state(S.COMPLETE, Complete)
        .build(store, **kw)  # type: ignore[arg-type]
    )


@pytest.fixture
def store(tmp_path: Path) -> SQLiteFSMStore:
    s = SQLiteFSMStore(str(tmp_path / "fsm.db"))
    yield s  # type: ignore[misc]
    s.close()


def event_types(fsm: FSM) -> list[str]:
    return [e.type.value for e in fsm.events()]


# -- FSM-01 ---------------------------------------------------------------------------------
def test_fsm_01_state_already_added() -> None:
    b = FSMBuilder("m").initial(S.INIT, Insert, next=[S.UPDATE]).add_state(S.UPDATE, Update)
    with pytest.raises(StateAlreadyAdded, match="state already added"):
        b.add_state(S.UPDATE, Complete)
    with pytest.raises(StateAlreadyAdded, match="state already added"):
        b.add_state(S.INIT, Update)  # the initial one too
    with pytest.raises(StateAlreadyAdded, match="state already added"):
        b.initial(S.COMPLETE, Insert)  # a second initial state
    # a plain str and the Enum member with that value are the same state
    with pytest.raises(StateAlreadyAdded):
        b.add_state("update", Update)


# -- FSM-02 ---------------------------------------------------------------------------------
def test_fsm_02_insert_creates_instances_update_finds_by_id(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    id1 = fsm.insert(Insert("insertMe"))
    id2 = fsm.insert(Insert("other"))
    assert (id1, id2) == (1, 2)
    fsm.update(S.INIT, S.UPDATE, Update(id1, "updateMe", 99))
    a, b = fsm.get(id1), fsm.get(id2)
    assert a is not None and b is not None
    assert a.state is S.UPDATE and a.data == {"name": "updateMe", "dob": None, "amount": 99}
    assert b.state is S.INIT and b.data == {"name": "other", "dob": None}
    fsm.update(S.UPDATE, S.COMPLETE, Complete(id1))
    assert fsm.get(id1).state is S.COMPLETE  # type: ignore[union-attr]
    assert event_types(fsm) == ["init", "init", "update", "complete"]
    assert [i.id for i in fsm.instances(S.INIT)] == [id2]
    assert fsm.get(99) is None


# -- FSM-03 ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("from_state", "to_state", "error"),
    [
        (S.INIT, S.UPDATE, None),
        (S.COMPLETE, S.UPDATE, InvalidStateTransition),
        (S.INIT, S.COMPLETE, InvalidType),  # Init->Complete with the wrong payload
        (Other.UNKNOWN, S.UPDATE, UnknownStatus),  # unknown 'from'
        (S.UPDATE, Other.UNKNOWN, UnknownStatus),  # unknown 'to'
    ],
    ids=["valid", "invalid-transition", "invalid-type", "unknown-from", "unknown-to"],
)
def test_fsm_03_update_error_order(
    store: SQLiteFSMStore, from_state: Enum, to_state: Enum, error: type[FSMError] | None
) -> None:
    fsm = shift_fsm(store)
    id = fsm.insert(Insert("insertMe"))
    payload = Update(id, "updateMe", 99)
    if error is None:
        fsm.update(from_state, to_state, payload)
        assert event_types(fsm) == ["init", "update"]
        return
    with pytest.raises(error) as info:
        fsm.update(from_state, to_state, payload)
    assert type(info.value) is error
    assert (info.value.from_state, info.value.to_state) == (from_state.value, to_state.value)
    assert f"from={from_state.value!r}" in str(info.value)
    assert event_types(fsm) == ["init"]  # nothing written


def test_fsm_03_checks_run_in_order(store: SQLiteFSMStore) -> None:
    """Each check wins over the ones after it."""
    fsm = shift_fsm(store)
    # unknown 'to' beats a wrong payload type and an unknown 'from'
    with pytest.raises(UnknownStatus, match="'to'"):
        fsm.update("nope", "nope2", object())
    # a wrong payload type beats an unknown 'from'
    with pytest.raises(InvalidType):
        fsm.update("nope", S.UPDATE, Complete(1))
    # an unknown 'from' beats a transition that is not allowed
    with pytest.raises(UnknownStatus, match="'from'"):
        fsm.update("nope", S.UPDATE, Update(1))
    # states that are neither str nor Enum are unknown, not a crash
    with pytest.raises(UnknownStatus):
        fsm.update(S.INIT, 3, Update(1))
    # plain strings name the same states as the Enum members
    id = fsm.insert(Insert("x"))
    fsm.update("init", "update", Update(id))
    assert fsm.get(id).state is S.UPDATE  # type: ignore[union-attr]


def test_fsm_03_insert_checks_payload_type(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    with pytest.raises(InvalidType) as info:
        fsm.insert(Update(1))
    assert info.value.to_state == "init"
    assert fsm.events() == []


# -- FSM-04 ---------------------------------------------------------------------------------
def test_fsm_04_edge_into_initial_is_a_build_error(store: SQLiteFSMStore) -> None:
    b = (
        FSMBuilder("m")
        .initial(S.INIT, Insert, next=[S.UPDATE])
        .add_state(S.UPDATE, Update, [S.INIT])
    )
    with pytest.raises(EdgeIntoInitial) as info:
        b.build(store)
    assert (info.value.from_state, info.value.to_state) == ("update", "init")
    # the initial state looping to itself is an edge into it too
    with pytest.raises(EdgeIntoInitial):
        FSMBuilder("m2").initial(S.INIT, Insert, next=[S.INIT]).build(store)


def test_fsm_04_update_into_initial_is_refused_at_runtime(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    id = fsm.insert(Insert("x"))
    fsm.update(S.INIT, S.UPDATE, Update(id))
    with pytest.raises(InvalidType):  # the initial state's payload is the insert type
        fsm.update(S.UPDATE, S.INIT, Update(id))
    with pytest.raises(InvalidStateTransition):
        fsm.update(S.UPDATE, S.INIT, Insert("x"))


# -- FSM-05 ---------------------------------------------------------------------------------
def test_fsm_05_self_loops_and_cycles_are_allowed(store: SQLiteFSMStore) -> None:
    fsm = (
        FSMBuilder("loops")
        .initial("a", Insert, next=["b"])
        .add_state("b", Update, next=["b", "c"])
        .add_state("c", Complete, next=["b"])
        .build(store)
    )
    id = fsm.insert(Insert("x"))
    fsm.update("a", "b", Update(id, amount=1))
    fsm.update("b", "b", Update(id, amount=2))
    fsm.update("b", "c", Complete(id))
    fsm.update("c", "b", Update(id, amount=3))
    assert [e.type for e in fsm.events()] == ["a", "b", "b", "c", "b"]
    got = fsm.get(id)
    assert got is not None and got.state == "b" and got.data["amount"] == 3


# -- FSM-06 ---------------------------------------------------------------------------------
def test_fsm_06_is_valid_transition(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    assert fsm.is_valid_transition(S.INIT, S.UPDATE)
    assert fsm.is_valid_transition("update", "complete")
    assert not fsm.is_valid_transition(S.COMPLETE, S.UPDATE)
    assert not fsm.is_valid_transition(S.INIT, S.COMPLETE)
    assert not fsm.is_valid_transition(Other.UNKNOWN, S.UPDATE)  # unknown from
    assert not fsm.is_valid_transition(S.INIT, Other.UNKNOWN)
    assert not fsm.is_valid_transition(42, S.UPDATE)
    # no payload type is involved: the question is about the graph only
    assert fsm.next_states(S.INIT) == (S.UPDATE,)
    assert fsm.payload_type(S.UPDATE) is Update
    assert fsm.payload_type("nope") is None


# -- FSM-07 ---------------------------------------------------------------------------------
def _graph(name: str) -> FSMBuilder:
    b = FSMBuilder(name)
    if name == "insert-only":
        b.initial("s1", Insert)
    elif name == "insert-update":
        b.initial("s1", Insert, next=["s2"]).add_state("s2", Update)
    elif name == "unreachable":
        b.initial("s1", Insert).add_state("s2", Update)
    elif name == "cycle":  # through non-initial states; shift's 2->1 "cycle" is FSM-04
        b.initial("s1", Insert, next=["s2"]).add_state("s2", Update, next=["s3"])
        b.add_state("s3", Complete, next=["s2"])
    elif name == "loop":
        b.initial("s1", Insert, next=["s2"]).add_state("s2", Update, next=["s2"])
    return b


@pytest.mark.parametrize(
    ("graph", "error"),
    [
        ("insert-only", None),
        ("insert-update", None),
        ("unreachable", "status not reachable"),
        ("cycle", None),
        ("loop", None),
    ],
)
def test_fsm_07_reachability(store: SQLiteFSMStore, graph: str, error: str | None) -> None:
    b = _graph(graph)
    if error is not None:
        with pytest.raises(UnreachableState, match=error):
            b.build(store)
        return
    fsm = b.build(store)
    # drive every state once, as shift's TestFSM does
    id = fsm.insert(Insert("x"))
    state = "s1"
    for nxt in {
        "insert-only": [],
        "insert-update": ["s2"],
        "cycle": ["s2", "s3", "s2"],
        "loop": ["s2", "s2"],
    }[graph]:
        fsm.update(state, nxt, fsm.payload_type(nxt)(id))  # type: ignore[misc]
        state = nxt
    assert {e.type for e in fsm.events()} == {s for s in fsm.states}


def test_fsm_07_no_initial_state_and_undeclared_next(store: SQLiteFSMStore) -> None:
    with pytest.raises(NoInitialState):
        FSMBuilder("m").add_state("s2", Update).build(store)
    with pytest.raises(NoInitialState):
        FSMBuilder("m").build(store)
    with pytest.raises(UndeclaredState, match="'ghost'"):
        FSMBuilder("m").initial("s1", Insert, next=["ghost"]).build(store)
    with pytest.raises(FSMBuildError, match="non-empty str or an Enum"):
        FSMBuilder("m").initial(7, Insert)
    with pytest.raises(FSMBuildError, match="must be a dataclass"):
        FSMBuilder("m").initial("s1", dict)


# -- FSM-08 ---------------------------------------------------------------------------------
def test_fsm_08_compare_and_set(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    id = fsm.insert(Insert("x"))
    fsm.update(S.INIT, S.UPDATE, Update(id, "first"))
    with pytest.raises(RowCount) as info:  # stale: it is no longer in INIT
        fsm.update(S.INIT, S.UPDATE, Update(id, "second"))
    assert info.value.count == 0
    assert (info.value.from_state, info.value.to_state) == ("init", "update")
    assert "it is in 'update'" in str(info.value)
    with pytest.raises(RowCount, match="no such instance"):
        fsm.update(S.INIT, S.UPDATE, Update(404))
    got = fsm.get(id)
    assert got is not None and got.data["name"] == "first"
    assert event_types(fsm) == ["init", "update"]


def _race(path: str, rounds: int, shared: bool) -> None:
    stores = [SQLiteFSMStore(path)] if shared else [SQLiteFSMStore(path), SQLiteFSMStore(path)]
    fsms = [shift_fsm(stores[i % len(stores)]) for i in range(2)]
    ids = [fsms[0].insert(Insert(f"n{r}")) for r in range(rounds)]
    for id in ids:
        barrier = threading.Barrier(2, timeout=10)
        results: list[object] = [None, None]

        def run(
            i: int,
            id: int = id,
            barrier: threading.Barrier = barrier,
            results: list[object] = results,
        ) -> None:
            barrier.wait()
            try:
                results[i] = fsms[i].update(S.INIT, S.UPDATE, Update(id, f"w{i}"))
            except RowCount as exc:
                results[i] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        wins = [r for r in results if isinstance(r, int)]
        losses = [r for r in results if isinstance(r, RowCount)]
        assert len(wins) == 1 and len(losses) == 1, results
        got = fsms[0].get(id)
        assert got is not None and got.state is S.UPDATE
        winner = results.index(wins[0])
        assert got.data["name"] == f"w{winner}"
    events = fsms[0].events(limit=10_000)
    assert len(events) == 2 * rounds  # one insert + exactly one update event per instance
    assert sorted(e.foreign_id for e in events if e.type is S.UPDATE) == ids
    for s in stores:
        s.close()


@pytest.mark.parametrize("shared", [False, True], ids=["two-connections", "one-store"])
def test_fsm_08_concurrent_updaters_exactly_one_wins(tmp_path: Path, shared: bool) -> None:
    _race(str(tmp_path / "race.db"), rounds=15, shared=shared)


_CHILD = """
import sys
from dataclasses import dataclass
from datetime import datetime
from aminspect.machines.fsm import FSMBuilder, RowCount, SQLiteFSMStore

@dataclass
class Insert:
    name: str
    dob: datetime | None = None

@dataclass
class Update:
    id: int
    name: str = ""
    amount: int = 0

fsm = (
    FSMBuilder("users")
    .initial("init", Insert, next=["update"])
    .add_state("update", Update)
    .build(SQLiteFSMStore({path!r}))
)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()  # start together
try:
    fsm.update("init", "update", Update({id}, "p"))
    print("won")
except RowCount:
    print("rowcount")
"""


def test_fsm_08_two_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = str(tmp_path / "procs.db")
    with SQLiteFSMStore(path) as s:
        id = shift_fsm(s).insert(Insert("x"))
    code = _CHILD.format(path=path, id=id)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for p in procs:  # both are ready before either starts
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = sorted(p.communicate(timeout=30)[0].strip() for p in procs)
    assert outs == ["rowcount", "won"]
    with SQLiteFSMStore(path) as s:
        assert event_types(shift_fsm(s)) == ["init", "update"]


# -- FSM-09 ---------------------------------------------------------------------------------
class InsertInvalid(Exception):
    pass


class UpdateInvalid(Exception):
    pass


@dataclass
class I:  # noqa: E742 - shift's names
    i1: int = 0

    def validate(self, ctx: TransitionContext) -> None:
        if ctx.id > 1:  # type: ignore[operator]
            raise InsertInvalid("only single row permitted")


@dataclass
class U:
    id: int
    u1: bool = False

    def validate(self, ctx: TransitionContext) -> None:
        if ctx.from_state == ctx.to_state:
            raise UpdateInvalid("only single row permitted")


def test_fsm_09_validation_rolls_back_row_and_event(store: SQLiteFSMStore) -> None:
    fsm = (
        FSMBuilder("v", validation=True)
        .initial("s1", I, next=["s2"])
        .add_state("s2", U, next=["s2"])  # 2 -> 2 allowed, the validator refuses it
        .build(store)
    )
    assert fsm.insert(I()) == 1
    with pytest.raises(InsertInvalid):
        fsm.insert(I())  # second insert fails
    assert fsm.get(2) is None
    assert len(fsm.events()) == 1  # 0 extra events
    fsm.update("s1", "s2", U(1))
    with pytest.raises(UpdateInvalid):
        fsm.update("s2", "s2", U(1, True))
    assert len(fsm.events()) == 2  # 0 extra events
    got = fsm.get(1)
    assert got is not None and got.data == {"i1": 0, "u1": False}  # the row rolled back too
    # the id counter rolled back with the insert: no id was burnt
    with store.transaction() as tx:
        assert store.query(tx, "SELECT last_id FROM fsm_machines WHERE name = 'v'") == [(1,)]


def test_fsm_09_validator_sees_the_uncommitted_event(store: SQLiteFSMStore) -> None:
    seen: list[list[tuple[object, ...]]] = []

    def check(ctx: TransitionContext) -> None:
        seen.append(ctx.query("SELECT type, foreign_id FROM fsm_events WHERE machine = ?", ["w"]))
        row = ctx.instance()
        assert row is not None and row.state == (ctx.to_state.value)

    fsm = (
        FSMBuilder("w", validation=check)
        .initial(S.INIT, Insert, next=[S.UPDATE])
        .add_state(S.UPDATE, Update)
        .build(store)
    )
    id = fsm.insert(Insert("x"))
    fsm.update(S.INIT, S.UPDATE, Update(id))
    assert seen == [[("init", 1)], [("init", 1), ("update", 1)]]


# -- FSM-10 ---------------------------------------------------------------------------------
def test_fsm_10_options_without_provider_fail_at_build(store: SQLiteFSMStore) -> None:
    with pytest.raises(MisconfiguredOption, match="metadata is on") as info:
        shift_fsm_builder(metadata=True).build(store)
    assert isinstance(info.value, InvalidType)  # what shift raises at runtime
    with pytest.raises(MisconfiguredOption, match="validation is on"):
        shift_fsm_builder(validation=True).build(store)
    with pytest.raises(MisconfiguredOption, match="must be True, False or a function"):
        shift_fsm_builder(validation="yes").build(store)
    # a function for all payloads is a provider
    shift_fsm_builder(metadata=lambda ctx: None, validation=lambda ctx: None).build(store)


def shift_fsm_builder(**kw: object) -> FSMBuilder:
    return (
        FSMBuilder("users", **kw)  # type: ignore[arg-type]
        .initial(S.INIT, Insert, next=[S.UPDATE])
        .add_state(S.UPDATE, Update, next=[S.COMPLETE])
        .add_state(S.COMPLETE, Complete)
    )


def test_fsm_10_metadata_of_wrong_type_is_invalid_type(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm_builder(metadata=lambda ctx: 12).build(store)
    with pytest.raises(InvalidType, match="metadata must be bytes, str or None"):
        fsm.insert(Insert("x"))
    assert fsm.events() == [] and fsm.instances() == []


# -- FSM-11 ---------------------------------------------------------------------------------
@dataclass
class IT:
    i3: datetime
    created_at: datetime | None = None
    updated_at: datetime | int | None = None


@dataclass
class UT:
    id: int
    updated_at: datetime | int | None = None


def test_fsm_11_timestamps(store: SQLiteFSMStore) -> None:
    fsm = FSMBuilder("t").initial("s1", IT, next=["s2"]).add_state("s2", UT, ["s2"]).build(store)
    t0 = datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
    now = datetime.now(UTC)
    with pytest.raises(TimestampRequired, match="created_at is required"):
        fsm.insert(IT(now, updated_at=t0))
    with pytest.raises(TimestampRequired, match="updated_at is required"):
        fsm.insert(IT(now, created_at=t0))
    for zero in (0, datetime.min, datetime.min.replace(tzinfo=UTC)):
        with pytest.raises(TimestampRequired, match="created_at is required"):
            fsm.insert(IT(now, created_at=zero, updated_at=t0))  # type: ignore[arg-type]
    with pytest.raises(InvalidType, match="created_at must be a datetime"):
        fsm.insert(IT(now, created_at="yesterday", updated_at=t0))  # type: ignore[arg-type]
    id = fsm.insert(IT(now, created_at=t0, updated_at=t0))
    assert id == 1
    with pytest.raises(TimestampRequired, match="updated_at is required"):
        fsm.update("s1", "s2", UT(id))
    t1 = t0 + timedelta(hours=1)
    fsm.update("s1", "s2", UT(id, updated_at=t1))
    got = fsm.get(id)
    assert got is not None
    assert (got.created_at, got.updated_at) == (t0, t1)  # used as given; update: updated_at only
    fsm.update("s2", "s2", UT(id, updated_at=1_700_000_000_123_456_789))  # int ns as given
    assert fsm.get(id).updated_ns == 1_700_000_000_123_456_789  # type: ignore[union-attr]
    assert fsm.get(id).created_at == t0  # type: ignore[union-attr]
    assert len(fsm.events()) == 3


def test_fsm_11_default_times_are_now(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    before = datetime.now(UTC)
    id = fsm.insert(Insert("x"))
    got = fsm.get(id)
    assert got is not None
    assert got.created_at == got.updated_at
    assert before - timedelta(seconds=1) <= got.created_at <= datetime.now(UTC)
    fsm.update(S.INIT, S.UPDATE, Update(id))
    again = fsm.get(id)
    assert again is not None and again.created_at == got.created_at
    assert again.updated_ns >= got.updated_ns


def test_fsm_11_update_payload_may_not_set_created_at() -> None:
    @dataclass
    class Bad:
        id: int
        created_at: datetime

    with pytest.raises(FSMBuildError, match="touches only updated_at"):
        FSMBuilder("m").initial("a", Insert, ["b"]).add_state("b", Bad)


# -- FSM-12 ---------------------------------------------------------------------------------
@dataclass
class InsertStr:
    id: str | None = None
    name: str = ""


@dataclass
class UpdateStr:
    id: str
    name: str = ""


@dataclass
class FloatID:
    id: float


def test_fsm_12_id_build_rules() -> None:
    with pytest.raises(IDRuleError, match="must carry an id field"):
        FSMBuilder("m").initial("a", Insert, ["b"]).add_state("b", Insert)
    with pytest.raises(IDRuleError, match="int or str"):
        FSMBuilder("m").initial("a", Insert, ["b"]).add_state("b", FloatID)

    @dataclass
    class OptionalUpdate:
        id: int | None

    with pytest.raises(IDRuleError, match="not optional"):
        FSMBuilder("m").initial("a", Insert, ["b"]).add_state("b", OptionalUpdate)
    b = FSMBuilder("m").initial("a", InsertStr, ["b"]).add_state("b", Update)
    with pytest.raises(IDTypeMismatch, match="share one id type"):
        b.build(":memory:")
    with pytest.raises(IDTypeMismatch):
        FSMBuilder("m", id_type=str).initial("a", Insert, ["b"]).add_state("b", Update).build(
            ":memory:"
        )


def test_fsm_12_string_ids_explicit_or_assigned(store: SQLiteFSMStore) -> None:
    fsm = FSMBuilder("str").initial("a", InsertStr, ["b"]).add_state("b", UpdateStr).build(store)
    assert fsm.id_type is str
    assert fsm.insert(InsertStr("abcdef123456", "x")) == "abcdef123456"
    auto = fsm.insert(InsertStr(None, "y"))
    assert isinstance(auto, str) and len(auto) == 32
    fsm.update("a", "b", UpdateStr("abcdef123456", "z"))
    with pytest.raises(DuplicateID):
        fsm.insert(InsertStr("abcdef123456"))
    with pytest.raises(IDTypeMismatch, match="ids are str, got int"):
        fsm.update("a", "b", UpdateStr(5))  # type: ignore[arg-type]
    with pytest.raises(IDTypeMismatch):
        fsm.insert(InsertStr(5))  # type: ignore[arg-type]
    assert [e.foreign_id for e in fsm.events()] == ["abcdef123456", auto, "abcdef123456"]


def test_fsm_12_int_ids_explicit_then_assigned(store: SQLiteFSMStore) -> None:
    @dataclass
    class InsertInt:
        id: int | None = None

    fsm = FSMBuilder("ints").initial("a", InsertInt, ["b"]).add_state("b", Complete).build(store)
    assert fsm.insert(InsertInt()) == 1
    assert fsm.insert(InsertInt(10)) == 10
    assert fsm.insert(InsertInt()) == 11  # assigned ids start above explicit ones
    with pytest.raises(DuplicateID):
        fsm.insert(InsertInt(10))
    with pytest.raises(IDTypeMismatch):
        fsm.insert(InsertInt(True))  # a bool is not an int id
    with pytest.raises(IDTypeMismatch):
        fsm.update("a", "b", Complete(None))  # type: ignore[arg-type]
    assert len(fsm.events()) == 3


# -- FSM-13 ---------------------------------------------------------------------------------
@dataclass
class IM:
    i1: int = 0

    def get_metadata(self, ctx: TransitionContext) -> str:
        return str(ctx.id)


@dataclass
class UM:
    id: int

    def get_metadata(self, ctx: TransitionContext) -> str:
        return str(self.id)


def test_fsm_13_one_event_per_transition_with_metadata(store: SQLiteFSMStore) -> None:
    fsm = (
        FSMBuilder("meta", metadata=True).initial("s1", IM, ["s2"]).add_state("s2", UM).build(store)
    )
    id = fsm.insert(IM())
    fsm.update("s1", "s2", UM(id))
    events = fsm.events()
    assert len(events) == 2
    assert [e.type for e in events] == ["s1", "s2"]
    for e in events:
        assert e.foreign_id == id and e.metadata == str(e.foreign_id)


def test_fsm_13_events_stream_in_commit_order_after_a_cursor(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm(store)
    id = fsm.insert(Insert("x"))
    assert fsm.update(S.INIT, S.UPDATE, Update(id)) == 2
    assert fsm.update(S.UPDATE, S.COMPLETE, Complete(id)) == 3
    events = fsm.events()
    assert [e.seq for e in events] == [1, 2, 3]
    assert [e.type for e in events] == [S.INIT, S.UPDATE, S.COMPLETE]
    assert all(e.metadata is None for e in events)
    # consume in pages after a cursor
    cursor, seen = 0, []
    while page := fsm.events(after=cursor, limit=2):
        seen += [e.seq for e in page]
        cursor = page[-1].seq
    assert seen == [1, 2, 3]
    assert fsm.events(after=3) == []
    # another machine in the same file has its own sequence
    other = shift_fsm_builder().build(store)
    assert other.events() == events  # same name: the same journal
    third = FSMBuilder("third").initial("x", Insert).build(store)
    third.insert(Insert("y"))
    assert [e.seq for e in third.events()] == [1]


def test_fsm_13_bytes_metadata(store: SQLiteFSMStore) -> None:
    fsm = shift_fsm_builder(metadata=lambda ctx: b"\x00" + str(ctx.id).encode()).build(store)
    fsm.insert(Insert("x"))
    assert fsm.events()[0].metadata == b"\x001"


# -- FSM-14 ---------------------------------------------------------------------------------
@dataclass
class Y:
    s: str = ""


@dataclass
class YY(Y):  # a named "alias" of Y: a different type
    pass


@dataclass
class YCopy:  # the same fields, another type
    s: str = ""


def test_fsm_14_payload_types_compared_exactly(store: SQLiteFSMStore) -> None:
    fsm = FSMBuilder("exact").initial("a", Y).build(store)
    fsm.insert(Y("s"))
    fsm.insert(Y())
    for wrong in (YY(), YCopy()):
        with pytest.raises(InvalidType):
            fsm.insert(wrong)
    assert len(fsm.events()) == 2


# -- errors and the store --------------------------------------------------------------------
def test_every_error_is_an_fsm_error() -> None:
    import aminspect.machines.fsm_errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), FSMError), name


def test_payload_fields_must_be_storable(store: SQLiteFSMStore) -> None:
    @dataclass
    class Odd:
        thing: object

    fsm = FSMBuilder("odd").initial("a", Odd).build(store)
    with pytest.raises(InvalidType, match="cannot be stored"):
        fsm.insert(Odd(object()))
    fsm.insert(Odd(datetime(2026, 1, 1, tzinfo=UTC)))
    assert fsm.instances()[0].data == {"thing": "2026-01-01T00:00:00+00:00"}


def test_tables_are_plain_sql(store: SQLiteFSMStore, tmp_path: Path) -> None:
    fsm = shift_fsm(store)
    id = fsm.insert(Insert("x"))
    db = sqlite3.connect(tmp_path / "fsm.db")
    assert db.execute("SELECT id, state FROM fsm_instances").fetchall() == [(id, "init")]
    assert db.execute("SELECT seq, type, foreign_id FROM fsm_events").fetchall() == [(1, "init", 1)]
    db.close()
