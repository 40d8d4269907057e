"""ManualMachine's add/remove/set against a plain model of the documented behaviour."""

from __future__ import annotations

import random

import pytest

from tracer import Kind, MachineTime, ManualMachine, MemorySink, StateSpec, attach

STATES = [
    "Idle",
    "Busy",
    StateSpec("Fetch", "Busy"),
    StateSpec("Parse", "Busy"),
    StateSpec("Tokens", "Parse"),
    "Error",
]


class Model:
    """The documented semantics, spelled out with the schema's own helpers."""

    def __init__(self, m: ManualMachine) -> None:
        self.schema = m.schema
        self.active: frozenset[int] = frozenset()

    def closure(self, states: tuple[str, ...]) -> frozenset[int]:
        return self.schema.with_ancestors(self.schema.index(s) for s in states)

    def below(self, i: int) -> set[int]:
        out = {i}
        for j in self.schema.children(i):
            out |= self.below(j)
        return out

    def apply(self, op: str, states: tuple[str, ...]) -> tuple[str, str, list[int], list[int]]:
        if op == "add":
            entered, exited = self.closure(states) - self.active, frozenset()
            kind, name = Kind.ADD, "+" + ",".join(states)
        elif op == "remove":
            down: set[int] = set()
            for s in states:
                down |= self.below(self.schema.index(s))
            exited, entered = frozenset(down) & self.active, frozenset()
            kind, name = Kind.REMOVE, "-" + ",".join(states)
        else:
            target = self.closure(states)
            exited, entered = self.active - target, target - self.active
            kind, name = Kind.SET, "=" + ",".join(states)
        self.active = (self.active - exited) | entered
        return kind, name, sorted(exited), sorted(entered)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_add_remove_set_match_the_model(seed: int) -> None:
    rnd = random.Random(seed)
    m = ManualMachine(STATES)
    model = Model(m)
    sink = MemorySink()
    h = attach(m, sink=sink, name="m")
    names = m.schema.names
    expected = []
    for i in range(400):
        op = rnd.choice(("add", "remove", "set"))
        states = tuple(rnd.sample(names, rnd.choice((1, 1, 1, 2, 3))))
        custom = rnd.random() < 0.2
        kind, name, exited, entered = model.apply(op, states)
        args = {"i": i} if i % 7 == 0 else None
        if custom:
            name = f"n{i}"
            getattr(m, op)(*states, name=name, args=args)
        else:
            getattr(m, op)(*states, name=rnd.choice((None, "")), args=args)
        expected.append((kind, name, exited, entered, args))
        assert m.active == {names[j] for j in model.active}
        assert all(m.is_active(s) == (names.index(s) in model.active) for s in names)
    assert h.flush(10)
    recs = sink.history("m")[1:]
    assert [(r.kind, r.name, list(r.exited), list(r.entered), r.args) for r in recs] == expected
    mt = MachineTime.for_schema(m.schema)
    for r in sink.history("m"):
        mt.apply(r)
    assert mt.active() == model.active


def test_initial_states_bring_their_ancestors_and_calls_work_untraced() -> None:
    m = ManualMachine(STATES, initial=["Tokens"])
    assert m.active == {"Busy", "Parse", "Tokens"}
    m.remove("Parse")  # its descendants go too
    assert m.active == {"Busy"}
    m.add("Fetch", "Error")
    assert m.active == {"Busy", "Fetch", "Error"}
    m.set()
    assert m.active == frozenset()
    m.add()
    m.remove()
    assert m.active == frozenset()


def test_unknown_states_are_refused_and_change_nothing() -> None:
    m = ManualMachine(STATES, initial=["Idle"])
    sink = MemorySink()
    h = attach(m, sink=sink, name="m")
    for call in (
        lambda: m.add("Nope"),
        lambda: m.add("Idle", "Nope"),
        lambda: m.remove("Nope"),
        lambda: m.remove("Idle", "Nope"),
        lambda: m.set("Nope"),
        lambda: m.set("Busy", "Nope"),
        lambda: m.is_active("Nope"),
    ):
        with pytest.raises(KeyError, match="unknown state 'Nope'"):
            call()
    assert m.active == {"Idle"}
    m.add("Busy")  # the lock was released after each refusal
    assert h.flush(10)
    assert [r.kind for r in sink.history("m")] == [Kind.INIT, Kind.ADD]


def test_a_no_op_call_is_still_one_record() -> None:
    m = ManualMachine(["A", "B"], initial=["A"])
    sink = MemorySink()
    h = attach(m, sink=sink, name="m")
    m.add("A")
    m.remove("B")
    m.set("A")
    assert h.flush(10)
    recs = sink.history("m")[1:]
    assert [(r.name, r.exited, r.entered) for r in recs] == [
        ("+A", (), ()),
        ("-B", (), ()),
        ("=A", (), ()),
    ]
