"""python-statemachine machines and one scenario runner shared by the statemachine tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from statemachine import State, StateChart, StateMachine
from statemachine.state import HistoryState

import tracer
from tracer import MachineTime, MemorySink, TransitionRecord


class Logged:
    """Mixin: every user callback appends to ``self.log`` so tests can compare the order."""

    def _log(self, *item: Any) -> None:
        self.__dict__.setdefault("log", []).append(item)

    def on_enter_state(self, state: Any, event: Any) -> None:
        self._log("enter", state.id, str(event))

    def on_exit_state(self, state: Any, event: Any) -> None:
        self._log("exit", state.id, str(event))


class Toggle(Logged, StateMachine):
    a = State(initial=True)
    b = State()
    go = a.to(b) | b.to(a)
    stay = a.to.itself(internal=True) | b.to.itself(internal=True)

    def before_go(self, *args: Any, **kwargs: Any) -> str:
        self._log("before_go", args, kwargs.get("k"))
        return "before"

    def on_go(self) -> str:
        self._log("on_go")
        return "went"

    def after_go(self) -> None:
        self._log("after_go")

    @a.exit
    def leaving_a(self) -> None:  # a decorator callback (ADAPTERS P10, issue #465)
        self._log("leaving_a")


class Document:
    """A user's domain model holding the state in its own field."""

    def __init__(self) -> None:
        self.status = None


def toggle_on_model() -> Toggle:
    return Toggle(model=Document(), state_field="status")


class Traffic(Logged, StateChart):
    green = State(initial=True)
    yellow = State()
    red = State()
    cycle = green.to(yellow) | yellow.to(red) | red.to(green)
    emergency = green.to(red, cond="allowed") | yellow.to(red)
    allowed = False

    def on_cycle(self, source: Any, target: Any) -> str:
        return f"{source.id}->{target.id}"


class Order(Logged, StateChart):
    """Compound states, a final child, a ``done.state`` transition and an eventless one."""

    class shipping(State.Compound):
        packing = State(initial=True)
        packed = State(final=True)
        pack = packing.to(packed)

    new = State(initial=True)
    delivered = State()
    archived = State(final=True)
    start = new.to(shipping)
    done_state_shipping = shipping.to(delivered)
    archive = delivered.to(archived, cond="may_archive")
    may_archive = False
    unlock = delivered.to.itself(internal=True, on="open_archive")

    def open_archive(self) -> None:
        self.may_archive = True

    # Eventless: taken as soon as may_archive holds.
    delivered.to(archived, cond="may_archive")


class Quest(Logged, StateChart):
    """Parallel regions, one event firing in both (P7), and a shallow history state."""

    class war(State.Parallel):
        class left(State.Compound):
            x = State(initial=True)
            y = State()
            step = x.to(y)
            h = HistoryState()

        class right(State.Compound):
            u = State(initial=True)
            v = State()
            step = u.to(v)

    peace = State()
    truce = war.to(peace)
    resume = peace.to(war.left.h)


class Failing(Logged, StateChart):
    """A StateChart whose entry callback raises: the error becomes ``error.execution``."""

    idle = State(initial=True)
    busy = State()
    broken = State()
    work = idle.to(busy)
    error_execution = busy.to(broken)
    reset = broken.to(idle) | busy.to(idle)

    def on_enter_busy(self) -> None:
        raise RuntimeError("busy failed")


class Raising(Logged, StateMachine):
    """A StateMachine whose transition action raises: the exception reaches the caller."""

    idle = State(initial=True)
    busy = State()
    work = idle.to(busy)
    crash = idle.to(busy, on="explode")
    back = busy.to(idle)

    def explode(self) -> None:
        raise ValueError("boom")


class Chained(Logged, StateChart):
    """An entry callback sends another event; run-to-completion queues it (P9)."""

    one = State(initial=True)
    two = State()
    three = State()
    first = one.to(two)
    second = two.to(three)
    restart = three.to(one)

    def on_enter_two(self) -> None:
        self.send("second", by="two")


class Finite(Logged, StateMachine):
    start = State(initial=True)
    end = State(final=True)
    finish = start.to(end)


class AsyncToggle(Logged, StateChart):
    off = State(initial=True)
    on = State()
    flip = off.to(on) | on.to(off)

    async def on_flip(self) -> str:
        await asyncio.sleep(0)
        return "flipped"


# -- one scenario runner ---------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    factory: Callable[[], Any]
    steps: list[tuple[Any, ...]]  # ("send", event, *args) or ("call", event) or ("force", v)
    pickles: bool = True


@dataclass
class Outcome:
    results: list[Any] = field(default_factory=list)
    configurations: list[list[Any]] = field(default_factory=list)
    log: list[Any] = field(default_factory=list)
    history: list[TransitionRecord] = field(default_factory=list)
    handle: Any = None
    sm: Any = None


SCENARIOS = [
    Scenario("toggle", Toggle, [("send", "go", 1, {"k": "v"}), ("call", "go"), ("send", "stay")]),
    Scenario("toggle-not-allowed", Finite, [("send", "finish"), ("send", "finish")]),
    Scenario("toggle-unknown", Toggle, [("send", "nope"), ("send", "go")]),
    Scenario(
        "traffic", Traffic, [("send", "cycle"), ("send", "nope"), ("call", "cycle"), ("send", "x")]
    ),
    Scenario("traffic-guard", Traffic, [("send", "emergency"), ("send", "cycle")]),
    Scenario(
        "order", Order, [("send", "start"), ("send", "pack"), ("send", "unlock"), ("send", "x")]
    ),
    Scenario(
        "quest",
        Quest,
        [("send", "step"), ("send", "truce"), ("send", "resume"), ("send", "truce")],
        pickles=False,  # history_values hold InstanceStates, which do not pickle (untraced too)
    ),
    Scenario("failing", Failing, [("send", "work"), ("send", "reset"), ("send", "work")]),
    Scenario("raising", Raising, [("send", "crash"), ("send", "work"), ("send", "back")]),
    Scenario("chained", Chained, [("send", "first"), ("send", "restart"), ("call", "first")]),
    Scenario("forced", Toggle, [("send", "go"), ("force", "a"), ("send", "go"), ("force", "a")]),
    Scenario(
        "model",
        toggle_on_model,
        [("send", "go", 2), ("force", "a"), ("call", "go"), ("send", "go")],
    ),
]


def _step(sm: Any, step: tuple[Any, ...]) -> Any:
    kind, *rest = step
    if kind == "force":
        sm.current_state_value = rest[0]
        return None
    event, *args = rest
    kwargs = {}
    if args and isinstance(args[-1], dict):
        kwargs = args.pop()
    if kind == "send":
        return sm.send(event, *args, **kwargs)
    return getattr(sm, event)(*args, **kwargs)


def run(scenario: Scenario, traced: bool, sink: MemorySink | None = None, **attach_kw: Any):
    """Drive the scenario's machine like a user; optionally traced. Returns an Outcome."""
    sm = scenario.factory()
    out = Outcome(sm=sm)
    if traced:
        sink = sink if sink is not None else MemorySink()
        out.handle = tracer.attach(sm, sink=sink, **attach_kw)
    for step in scenario.steps:
        try:
            out.results.append(("ok", _step(sm, step)))
        except Exception as exc:
            out.results.append(("raised", type(exc).__name__, str(exc)))
        out.configurations.append(list(sm.configuration_values))
    out.log = list(sm.__dict__.get("log", []))
    if traced:
        out.handle.flush(5)
        out.history = sink.history(out.handle.machine_id)
    return out


def replay(sink: MemorySink, machine_id: str, records: list[TransitionRecord]) -> set[str]:
    """The active state names after applying every record (strictly) from zero clocks."""
    schema = sink.machines[machine_id].schema
    mt = MachineTime.for_schema(schema)
    for r in records:
        mt.apply(r)
    return {schema.names[i] for i in mt.active()}


def described(sink: MemorySink, machine_id: str) -> list[tuple[Any, ...]]:
    """(seq, kind, name, exited names, entered names, accepted, error type, parent_seq)."""
    names = sink.machines[machine_id].schema.names
    return [
        (
            r.seq,
            str(r.kind),
            r.name,
            [names[i] for i in r.exited],
            [names[i] for i in r.entered],
            r.accepted,
            None if r.error is None else r.error[0],
            r.parent_seq,
        )
        for r in sink.history(machine_id)
    ]


class AsyncRaising(Logged, StateMachine):
    idle = State(initial=True)
    busy = State()
    work = idle.to(busy)
    back = busy.to(idle)
    crash = idle.to(busy, on="explode")

    async def on_work(self) -> str:
        await asyncio.sleep(0)
        return "working"

    async def explode(self) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")


class AsyncChained(Logged, StateChart):
    one = State(initial=True)
    two = State()
    three = State()
    first = one.to(two)
    second = two.to(three)
    restart = three.to(one)

    async def on_enter_two(self) -> None:
        await asyncio.sleep(0)
        await self.send("second")  # inside the loop: queued, returns None at once


ASYNC_SCENARIOS = [
    Scenario("async-toggle", AsyncToggle, [("send", "flip"), ("call", "flip"), ("send", "x")]),
    Scenario(
        "async-raising",
        AsyncRaising,
        [("send", "nope"), ("send", "crash"), ("send", "work"), ("send", "back")],
    ),
    Scenario("async-chained", AsyncChained, [("send", "first"), ("send", "restart")]),
]


async def arun(
    scenario: Scenario,
    traced: bool,
    sink: MemorySink | None = None,
    attach_before_activation: bool = False,
    **attach_kw: Any,
) -> Outcome:
    """The async twin of ``run``: awaits activation and every step."""
    sm = scenario.factory()
    out = Outcome(sm=sm)
    if traced:
        sink = sink if sink is not None else MemorySink()
    if traced and attach_before_activation:
        out.handle = tracer.attach(sm, sink=sink, **attach_kw)
    await sm.activate_initial_state()
    if traced and not attach_before_activation:
        out.handle = tracer.attach(sm, sink=sink, **attach_kw)
    for step in scenario.steps:
        try:
            result = _step(sm, step)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            out.results.append(("ok", result))
        except Exception as exc:
            out.results.append(("raised", type(exc).__name__, str(exc)))
        out.configurations.append(list(sm.configuration_values))
    out.log = list(sm.__dict__.get("log", []))
    if traced:
        assert out.handle.flush(5)
        out.history = sink.history(out.handle.machine_id)
    return out
