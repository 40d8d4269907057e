"""The Arc FSM (ARC-01) and the mermaid export of both kinds (GEN-01, golden files)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from aminspect.machines.fsm import (
    ArcFSM,
    ArcFSMBuilder,
    FSMBuilder,
    IDRuleError,
    IDTypeMismatch,
    InvalidStateTransition,
    MisconfiguredOption,
    NoInitialState,
    RowCount,
    SQLiteFSMStore,
)

GOLDEN = Path(__file__).parent / "golden"


@dataclass
class Insert:
    name: str


@dataclass
class Insert2:
    name: str
    amount: int


@dataclass
class Move:
    id: int


@pytest.fixture
def store(tmp_path: Path) -> SQLiteFSMStore:
    s = SQLiteFSMStore(str(tmp_path / "arc.db"))
    yield s  # type: ignore[misc]
    s.close()


def shift_arc(store: SQLiteFSMStore) -> ArcFSM:
    """luno/shift's arc test machine: two inserters for Init, and Update -> Init."""
    return (
        ArcFSMBuilder("users")
        .insert("init", Insert)
        .insert("init", Insert2)
        .update("init", "update", Move)
        .update("update", "init", Move)
        .build(store)
    )


def test_arc_01_several_inserters_and_an_edge_back_to_initial(store: SQLiteFSMStore) -> None:
    fsm = shift_arc(store)
    id1 = fsm.insert("init", Insert("insert"))
    assert id1 == 1
    fsm.update("init", "update", Move(id1))
    fsm.update("update", "init", Move(id1))
    assert [e.type for e in fsm.events() if e.foreign_id == id1] == ["init", "update", "init"]
    id2 = fsm.insert("init", Insert2("insert2", 99))
    assert id2 == 2
    assert [e.type for e in fsm.events() if e.foreign_id == id2] == ["init"]
    got = fsm.get(id2)
    assert got is not None and got.state == "init" and got.data == {"name": "insert2", "amount": 99}
    assert fsm.is_valid_transition("update", "init")
    assert not fsm.is_valid_transition("init", "init")
    assert not fsm.is_valid_transition("nope", "init")


def test_arc_01_every_routing_error_is_invalid_state_transition(store: SQLiteFSMStore) -> None:
    fsm = shift_arc(store)
    id = fsm.insert("init", Insert("x"))
    cases = [
        (lambda: fsm.insert("update", Insert("x")), "invalid insert status and payload"),
        (lambda: fsm.insert("init", Move(1)), "invalid insert status and payload"),
        (lambda: fsm.insert("ghost", Insert("x")), "invalid insert status and payload"),
        (lambda: fsm.update("ghost", "init", Move(id)), "invalid update from status"),
        (lambda: fsm.update(7, "init", Move(id)), "invalid update from status"),
        (lambda: fsm.update("init", "update", Insert("x")), "invalid update to status and payload"),
        (lambda: fsm.update("init", "ghost", Move(id)), "invalid update to status and payload"),
        (lambda: fsm.update("init", "init", Move(id)), "invalid update to status and payload"),
    ]
    for call, message in cases:
        with pytest.raises(InvalidStateTransition) as info:
            call()
        assert type(info.value) is InvalidStateTransition
        assert info.value.reason == message
    with pytest.raises(InvalidStateTransition) as info:
        fsm.update("init", "ghost", Move(id))
    assert (info.value.from_state, info.value.to_state) == ("init", "ghost")
    assert len(fsm.events()) == 1
    # the compare-and-set is the same as the FSM's
    fsm.update("init", "update", Move(id))
    with pytest.raises(RowCount):
        fsm.update("init", "update", Move(id))


def test_arc_01_build_rules(store: SQLiteFSMStore) -> None:
    with pytest.raises(NoInitialState):
        ArcFSMBuilder("a").update("x", "y", Move).build(store)
    with pytest.raises(IDRuleError):
        ArcFSMBuilder("a").insert("x", Insert).update("x", "y", Insert)

    @dataclass
    class MoveStr:
        id: str

    with pytest.raises(IDTypeMismatch):
        ArcFSMBuilder("a").insert("x", Insert).update("x", "y", Move).update(
            "y", "x", MoveStr
        ).build(store)
    with pytest.raises(MisconfiguredOption):
        ArcFSMBuilder("a", validation=True).insert("x", Insert).build(store)


# -- GEN-01 -----------------------------------------------------------------------------------
@dataclass
class Create:
    name: str = ""


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    assert path.read_text(encoding="utf-8") == text, f"mermaid output differs from {path}"


def test_gen_01_fsm_mermaid_golden() -> None:
    fsm = (
        FSMBuilder("m")
        .initial("CREATED", Create, next=["PENDING", "FAILED"])
        .add_state("PENDING", Move, next=["FAILED", "COMPLETED", "FAILED"])  # repeated edge
        .add_state("FAILED", Move)
        .add_state("COMPLETED", Move)
        .build(":memory:")
    )
    text = fsm.mermaid()
    _golden("fsm.mmd", text)
    assert text.count("PENDING-->FAILED") == 1  # de-duplicated
    assert "[*]-->CREATED" in text and "COMPLETED-->[*]" in text and "FAILED-->[*]" in text


def test_gen_01_arcfsm_mermaid_golden() -> None:
    @dataclass
    class Move2:
        id: int

    fsm = (
        ArcFSMBuilder("a")
        .insert("CREATED", Create)
        .insert("CREATED", Insert)  # a second inserter: one start marker
        .update("CREATED", "PENDING", Move)
        .update("CREATED", "PENDING", Move2)  # another payload type: one edge
        .update("PENDING", "COMPLETED", Move)
        .update("PENDING", "FAILED", Move)
        .update("CREATED", "FAILED", Move)
        .build(":memory:")
    )
    text = fsm.mermaid()
    _golden("arcfsm.mmd", text)
    assert "-->[*]" not in text  # no terminal markers for an ArcFSM
    assert text.count("CREATED-->PENDING") == 1 and text.count("[*]-->CREATED") == 1


def test_gen_01_names_that_are_not_mermaid_ids() -> None:
    fsm = (
        FSMBuilder("m")
        .initial("new order", Create, next=["paid"])
        .add_state("paid", Move)
        .build(":memory:")
    )
    _golden("fsm_labels.mmd", fsm.mermaid("TB"))
    with pytest.raises(ValueError, match="direction"):
        fsm.mermaid("sideways")
