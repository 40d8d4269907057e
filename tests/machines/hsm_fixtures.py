"""Shared machine types for the HSM tests (Temporal's hsmtest, in Python)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aminspect.machines.hsm import (
    Key,
    MachineDef,
    MsgpackSerializer,
    Node,
    Registry,
    Task,
    TransitionOutput,
)
from aminspect.machines.hsm_tree import Tree


class State(enum.Enum):
    STATE1 = "state1"
    STATE2 = "state2"
    STATE3 = "state3"


@dataclass
class Data:
    state: State = State.STATE1
    notes: list[str] = field(default_factory=list)


@dataclass
class Other:
    value: int = 0


def regenerate(data: Data, node: Node) -> list[Task]:
    return [Task("regen-a"), Task("regen-b", destination="svc")]


STATES = tuple(s.name for s in State)
DEF1 = MachineDef("type1", MsgpackSerializer(Data), STATES, regenerate_tasks=regenerate)
DEF2 = MachineDef("type2", MsgpackSerializer(Data), STATES, regenerate_tasks=regenerate)
DEF_OTHER = MachineDef("other", MsgpackSerializer(Other))


def registry() -> Registry:
    reg = Registry()
    for d in (DEF1, DEF2, DEF_OTHER):
        reg.register_machine(d)
    return reg


class Clock:
    """Temporal's test backend: version 1, next transition count 3."""

    def current_version(self) -> int:
        return 1

    def next_transition_count(self) -> int:
        return 3


def new_root(reg: Registry | None = None, state: State = State.STATE1) -> Node:
    return Node.new_root(reg or registry(), "type1", Data(state), clock=Clock())


def set_state(state: State):  # type: ignore[no-untyped-def]
    def fn(d: Data) -> TransitionOutput:
        d.state = state
        return TransitionOutput()

    fn.__name__ = f"to_{state.name.lower()}"
    return fn


def k1(i: str) -> Key:
    return Key("type1", i)


def new_tree(tree_id: str = "t") -> Tree:
    return Tree(registry(), "type1", Data(), tree_id=tree_id)
