"""The validated FSM on PostgreSQL: the same rules through PostgresFSMStore (a real server)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from aminspect.machines.fsm import (
    FSMBuilder,
    FSMStoreError,
    InvalidStateTransition,
    InvalidType,
    RowCount,
    TransitionContext,
    UnknownStatus,
    open_fsm_store,
)
from aminspect.machines.fsm_postgres import PostgresFSMStore
from tests import pg_server
from tests.machines.test_fsm import Complete, Insert, InsertStr, S, Update, UpdateStr, shift_fsm


@pytest.fixture
def url() -> Iterator[str]:
    with pg_server.fresh_store() as u:
        yield u


@pytest.fixture
def store(url: str) -> Iterator[PostgresFSMStore]:
    s = open_fsm_store(url)
    assert isinstance(s, PostgresFSMStore)
    yield s
    s.close()


def test_pg_fsm_02_03_13_basic_flow_and_error_order(store: PostgresFSMStore) -> None:
    fsm = shift_fsm(store)  # type: ignore[arg-type]
    id = fsm.insert(Insert("insertMe"))
    assert id == 1 and fsm.insert(Insert("two")) == 2
    for frm, to, error in [
        (S.COMPLETE, S.UPDATE, InvalidStateTransition),
        (S.INIT, S.COMPLETE, InvalidType),
        ("nope", S.UPDATE, UnknownStatus),
        (S.UPDATE, "nope", UnknownStatus),
    ]:
        with pytest.raises(error):
            fsm.update(frm, to, Update(id, "x"))
    fsm.update(S.INIT, S.UPDATE, Update(id, "updateMe", 99))
    fsm.update(S.UPDATE, S.COMPLETE, Complete(id))
    got = fsm.get(id)
    assert got is not None and got.id == 1 and got.state is S.COMPLETE
    assert got.data == {"name": "updateMe", "dob": None, "amount": 99}
    events = fsm.events()
    assert [(e.seq, e.type, e.foreign_id) for e in events] == [
        (1, S.INIT, 1),
        (2, S.INIT, 2),
        (3, S.UPDATE, 1),
        (4, S.COMPLETE, 1),
    ]
    assert [e.seq for e in fsm.events(after=2, limit=1)] == [3]
    with pytest.raises(RowCount):
        fsm.update(S.INIT, S.UPDATE, Update(id))


def test_pg_fsm_08_concurrent_updaters_exactly_one_wins(url: str) -> None:
    stores = [open_fsm_store(url), open_fsm_store(url)]
    fsms = [shift_fsm(s) for s in stores]  # type: ignore[arg-type]
    ids = [fsms[0].insert(Insert(str(i))) for i in range(8)]
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
        assert sum(isinstance(r, int) for r in results) == 1, results
        assert sum(isinstance(r, RowCount) for r in results) == 1, results
    events = fsms[1].events()
    assert [e.seq for e in events] == list(range(1, 17))  # gap-free, in commit order
    assert sorted(e.foreign_id for e in events if e.type is S.UPDATE) == ids
    for s in stores:
        s.close()


class Nope(Exception):
    pass


def test_pg_fsm_09_validation_rolls_back_and_metadata_round_trips(store: PostgresFSMStore) -> None:
    def validate(ctx: TransitionContext) -> None:
        rows = ctx.query("SELECT count(*) FROM fsm_events WHERE machine = %s", ["v"])
        if rows[0][0] > 2:
            raise Nope("at most two events")

    def metadata(ctx: TransitionContext) -> bytes | str:
        return b"\x00bin" if ctx.to_state is S.INIT else f"id {ctx.id}"

    fsm = (
        FSMBuilder("v", metadata=metadata, validation=validate)
        .initial(S.INIT, Insert, next=[S.UPDATE])
        .add_state(S.UPDATE, Update, next=[S.UPDATE])
        .build(store)  # type: ignore[arg-type]
    )
    id = fsm.insert(Insert("x"))
    fsm.update(S.INIT, S.UPDATE, Update(id, "a"))
    with pytest.raises(Nope):
        fsm.update(S.UPDATE, S.UPDATE, Update(id, "b"))
    got = fsm.get(id)
    assert got is not None and got.data["name"] == "a"
    assert [e.metadata for e in fsm.events()] == [b"\x00bin", "id 1"]
    assert len(fsm.events()) == 2


def test_pg_string_ids(store: PostgresFSMStore) -> None:
    fsm = (
        FSMBuilder("s")
        .initial("a", InsertStr, ["b"])
        .add_state("b", UpdateStr)
        .build(
            store  # type: ignore[arg-type]
        )
    )
    assert fsm.insert(InsertStr("k1")) == "k1"
    fsm.update("a", "b", UpdateStr("k1", "n"))
    assert [e.foreign_id for e in fsm.events()] == ["k1", "k1"]


def test_pg_bad_urls() -> None:
    with pytest.raises(FSMStoreError, match="unknown FSM store option"):
        open_fsm_store("postgresql://u@127.0.0.1:1/db?snapshot_every=8")  # a backend option
    with pytest.raises(FSMStoreError, match='invalid URI query parameter: "colour"') as info:
        open_fsm_store("postgresql://u@127.0.0.1:1/db?colour=red")  # libpq's own check
    assert "\n" not in str(info.value)
    with pytest.raises(FSMStoreError, match="durability"):
        open_fsm_store("postgresql://u@127.0.0.1:1/db?durability=maybe")
    with pytest.raises(FSMStoreError, match=r"cannot reach .*u:\*\*\*@127.0.0.1:1"):
        open_fsm_store("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")
