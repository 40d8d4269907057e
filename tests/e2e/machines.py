"""Machines shared by the CLI, resurrection and end-to-end tests.

Every entry callback counts into ``model.entered`` so a test sees at once whether a
restore ran callbacks (it must not). ``Ring`` is a counter: ``inc`` moves r0 -> r1 ->
... -> r6 -> r0, so applying a record twice (or missing one) lands in another state.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from statemachine import State, StateChart
from statemachine.state import HistoryState
from transitions import Machine
from transitions.extensions import HierarchicalMachine

RING = [f"r{i}" for i in range(7)]


class Model:
    """A transitions model that counts the states it entered (through callbacks)."""

    def __init__(self) -> None:
        self.entered: Counter[str] = Counter()

    def count(self, event: Any) -> None:
        self.entered[str(getattr(self, "state", "?"))] += 1


def make_ring(models: int = 1) -> Machine:
    """A flat ring of 7 states with ``inc``; ``models`` models on one machine."""
    ms = [Model() for _ in range(models)]
    transitions = [
        {"trigger": "inc", "source": RING[i], "dest": RING[(i + 1) % len(RING)]}
        for i in range(len(RING))
    ]
    transitions.append({"trigger": "reset", "source": "*", "dest": "r0"})
    return Machine(
        model=ms,
        states=RING,
        initial="r0",
        transitions=transitions,
        send_event=True,
        after_state_change="count",
    )


def make_ring_changed() -> Machine:
    """The ring after a code change: ``inc`` from r3 now jumps to r5."""
    machine = make_ring()
    machine.remove_transition("inc", source="r3")
    machine.add_transition("inc", "r3", "r5")
    return machine


def make_ring_renamed() -> Machine:
    """The ring after r6 was renamed r6b."""
    states = [*RING[:-1], "r6b"]
    transitions = [
        {"trigger": "inc", "source": states[i], "dest": states[(i + 1) % len(states)]}
        for i in range(len(states))
    ]
    return Machine(
        model=Model(), states=states, initial="r0", transitions=transitions, send_event=True
    )


ORDER_STATES: list[Any] = [
    "new",
    {"name": "work", "children": ["pick", "pack"], "initial": "pick"},
    {
        "name": "ship",
        "parallel": [
            {"name": "carrier", "children": ["wait", "moving"], "initial": "wait"},
            {"name": "bill", "children": ["due", "paid"], "initial": "due"},
        ],
    },
    "done",
]
ORDER_TRANSITIONS = [
    ["start", "new", "work"],
    ["packed", "work_pick", "work_pack"],
    ["send", "work", "ship"],
    ["move", "ship_carrier_wait", "ship_carrier_moving"],
    ["pay", "ship_bill_due", "ship_bill_paid"],
    ["finish", "ship", "done"],
]


def make_order(models: int = 1) -> HierarchicalMachine:
    """Nested and parallel states (transitions HSM)."""
    ms = [Model() for _ in range(models)]
    return HierarchicalMachine(
        model=ms,
        states=ORDER_STATES,
        initial="new",
        transitions=ORDER_TRANSITIONS,
        send_event=True,
        after_state_change="count",
    )


class Quest(StateChart):
    """python-statemachine: parallel regions, a compound state with a history state."""

    class war(State.Parallel):
        class left(State.Compound):
            x = State(initial=True)
            y = State()
            z = State()
            step = x.to(y) | y.to(z)
            h = HistoryState()

        class right(State.Compound):
            u = State(initial=True)
            v = State()
            turn = u.to(v) | v.to(u)

    peace = State()
    truce = war.to(peace)
    resume = peace.to(war.left.h)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.entered: Counter[str] = Counter()
        super().__init__(*args, **kwargs)

    def on_enter_state(self, state: Any) -> None:
        self.entered[state.id] += 1


class Shipment(StateChart):
    """python-statemachine: a ``done.state`` transition, an internal self-transition and
    an eventless transition."""

    class packing(State.Compound):
        open = State(initial=True)
        sealed = State(final=True)
        seal = open.to(sealed)

    new = State(initial=True)
    delivered = State()
    archived = State(final=True)
    start = new.to(packing)
    done_state_packing = packing.to(delivered)
    note = delivered.to.itself(internal=True, on="allow")
    delivered.to(archived, cond="allowed")  # eventless: taken once allowed
    allowed = False

    def allow(self) -> None:
        self.allowed = True
