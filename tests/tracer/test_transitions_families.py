"""The transitions adapter changes nothing: each scenario runs traced and untraced on every
class family (sync and asyncio) and must give the same results, exceptions, states and
callback order; the records of the traced run replay to the model's state."""

from __future__ import annotations

import asyncio
import enum
import gc
import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from transitions import Machine
from transitions.extensions import HierarchicalMachine, LockedMachine, MachineFactory

from tracer import Kind, MachineTime, MemorySink, attach
from tracer.adapters import transitions as adapter


class Model:
    def __init__(self, name: str = "m") -> None:
        self.name = name


SYNC = [
    MachineFactory.get_predefined(graph=g, nested=n, locked=lk)
    for g in (False, True)
    for n in (False, True)
    for lk in (False, True)
]
ASYNC = [
    MachineFactory.get_predefined(graph=g, nested=n, asyncio=True)
    for g in (False, True)
    for n in (False, True)
]


def nested(cls) -> bool:
    return hasattr(cls, "get_nested_state_names")


def make(cls, *args, **kwargs):
    if "Graph" in cls.__name__:
        kwargs["graph_engine"] = "mermaid"  # needs no graphviz package
    return cls(*args, **kwargs)


@dataclass
class Outcome:
    results: list[Any] = field(default_factory=list)
    states: list[Any] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)


@dataclass
class Run:
    machine: Any
    models: list[Any]
    steps: list[Callable[[Any, list[Any]], Any]]


def logger(log: list[str], label: str):
    def cb(*args, **kwargs):
        log.append(label)

    return cb


def state_of(models):
    return [m.state.name if isinstance(m.state, enum.Enum) else m.state for m in models]


# -- scenarios: each builds a machine and the steps a user would take --------------------------


def basic(cls, log):
    model = Model()
    model.is_ready = lambda *a, **k: log.append("cond") or len(log) > 3
    machine = make(
        cls,
        model,
        states=["A", "B", "C"],
        initial="A",
        prepare_event=logger(log, "prepare_event"),
        before_state_change=logger(log, "before_state_change"),
        after_state_change=logger(log, "after_state_change"),
        finalize_event=logger(log, "finalize_event"),
        transitions=[
            {
                "trigger": "go",
                "source": "A",
                "dest": "B",
                "conditions": "is_ready",
                "prepare": logger(log, "prepare"),
                "before": logger(log, "before"),
                "after": logger(log, "after"),
            },
            ["back", "B", "A"],
            ["stay", "A", "A"],
            ["tick", "B", None],
        ],
    )
    machine.on_enter_B(logger(log, "enter B"))
    machine.on_exit_A(logger(log, "exit A"))
    return Run(
        machine,
        [model],
        [
            lambda ms: ms[0].go(1),  # condition fails
            lambda ms: ms[0].go(2, k="v"),
            lambda ms: ms[0].tick(),
            lambda ms: ms[0].go(),  # invalid: MachineError
            lambda ms: ms[0].back(),
            lambda ms: ms[0].stay(),
            lambda ms: ms[0].to_C(),
        ],
    )


def failing(cls, log):
    model = Model()

    def boom(*a, **k):
        log.append("boom")
        raise KeyError("bad key")

    machine = make(
        cls,
        model,
        states=["A", "B"],
        initial="A",
        transitions=[
            {"trigger": "early", "source": "A", "dest": "B", "before": boom},
            {"trigger": "late", "source": "A", "dest": "B", "after": boom},
            ["back", "B", "A"],
        ],
    )
    return Run(
        machine,
        [model],
        [lambda ms: ms[0].early(), lambda ms: ms[0].late(), lambda ms: ms[0].back()],
    )


def handled(cls, log):
    """A user on_exception: the exception is handled by the machine, not raised."""
    model = Model()

    def boom(*a, **k):
        raise ValueError("handled")

    machine = make(
        cls,
        model,
        states=["A", "B"],
        initial="A",
        on_exception=logger(log, "on_exception"),
        transitions=[{"trigger": "go", "source": "A", "dest": "B", "after": boom}],
    )
    return Run(machine, [model], [lambda ms: ms[0].go()])


def nesting(queued):
    def build(cls, log):
        model = Model()

        def fire(*a, **k):
            log.append("fire")
            return model.inner()  # a coroutine on async machines: the machine awaits it

        machine = make(
            cls,
            model,
            states=["A", "B", "C"],
            initial="A",
            queued=queued,
            transitions=[
                {"trigger": "outer", "source": "A", "dest": "B", "after": fire},
                {"trigger": "inner", "source": "B", "dest": "C", "after": logger(log, "inner")},
                ["reset", "C", "A"],
            ],
        )
        return Run(
            machine,
            [model],
            [lambda ms: ms[0].outer(), lambda ms: ms[0].reset(), lambda ms: ms[0].outer()],
        )

    build.__name__ = f"nesting_queued_{queued}"
    return build


def many_models(cls, log):
    a, b, c = Model("a"), Model("b"), Model("c")
    machine = make(
        cls,
        [a, b],
        states=["A", "B", "C"],
        initial="A",
        transitions=[["go", "A", "B"], ["back", "B", "A"]],
        after_state_change=lambda *x, **k: log.append("changed"),
    )

    def add(ms):
        machine.add_model(c)
        ms.append(c)
        return True

    def remove(ms):
        machine.remove_model(ms[0])
        return True

    return Run(
        machine,
        [a, b],
        [
            lambda ms: ms[0].go(),
            lambda ms: ms[1].go(),
            lambda ms: machine.set_state("C"),
            add,
            lambda ms: ms[2].go(),
            remove,
            lambda ms: ms[1].to_A(),
            lambda ms: machine.dispatch("go"),
        ],
    )


def hierarchy(cls, log):
    model = Model()
    machine = make(
        cls,
        model,
        states=[
            "A",
            {"name": "B", "children": ["x", "y"], "initial": "x", "on_enter": logger(log, "B")},
            {
                "name": "C",
                "parallel": [
                    {"name": "1", "children": ["a", {"name": "b", "final": True}], "initial": "a"},
                    {"name": "2", "children": ["a", {"name": "b", "final": True}], "initial": "a"},
                ],
                "on_final": logger(log, "C final"),
            },
        ],
        initial="A",
        transitions=[
            ["go", "A", "B"],
            ["step", "B_x", "B_y"],
            ["split", "B", "C"],
            ["flip", "C_1_a", "C_1_b"],
            ["flip", "C_2_a", "C_2_b"],
            ["home", "C", "A"],
        ],
    )
    return Run(
        machine,
        [model],
        [
            lambda ms: ms[0].go(),
            lambda ms: ms[0].step(),
            lambda ms: ms[0].flip(),  # invalid here
            lambda ms: ms[0].split(),
            lambda ms: ms[0].flip(),
            lambda ms: machine.set_state(["C_1_a", "C_2_b"], ms[0]),
            lambda ms: ms[0].home(),
            lambda ms: ms[0].to_B_y(),
        ],
    )


SCENARIOS = [basic, failing, handled, nesting(False), nesting(True), many_models, hierarchy]


def applicable(scenario, cls) -> bool:
    return scenario is not hierarchy or nested(cls)


def cases(classes):
    return [
        pytest.param(s, c, id=f"{c.__name__}-{s.__name__}")
        for c in classes
        for s in SCENARIOS
        if applicable(s, c)
    ]


def record_result(outcome: Outcome, call: Callable[[], Any]) -> None:
    try:
        outcome.results.append(("ok", call()))
    except Exception as exc:
        outcome.results.append(("raise", type(exc).__name__, str(exc)))


async def record_result_async(outcome: Outcome, call: Callable[[], Any]) -> None:
    try:
        value = call()
        if inspect.isawaitable(value):
            value = await value
        outcome.results.append(("ok", value))
    except Exception as exc:
        outcome.results.append(("raise", type(exc).__name__, str(exc)))


def tracer_of(machine):
    return next(t for t in adapter._LIVE.values() if t.machine is machine)


class Traced:
    """Attach, then (after the run) check every channel's records against its model."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sink = MemorySink()
        self.keys = set(vars(run.machine))
        self.handle = attach(run.machine, sink=self.sink)
        self.tracer = tracer_of(run.machine)
        self.seen: dict[str, Any] = {}

    def snapshot_models(self) -> None:
        for mt in self.tracer.models.values():
            self.seen[mt.channel.id] = mt.model

    def check(self) -> None:
        self.snapshot_models()
        assert self.handle.flush(5)
        assert self.handle.stats.last_error is None
        assert set(self.seen) == set(self.sink.machines)
        for mid, model in self.seen.items():
            records = self.sink.history(mid)
            assert [r.seq for r in records] == list(range(len(records)))
            assert records[0].kind == Kind.INIT
            schema = self.sink.machines[mid].schema
            mt = MachineTime.for_schema(schema)
            for r in records:
                mt.apply(r)
                if r.parent_seq is not None:
                    assert r.parent_seq != r.seq
            value = model.state
            leaves = value if isinstance(value, list) else [value]
            leaves = [v.name if isinstance(v, enum.Enum) else v for v in leaves]
            assert mt.active() == schema.with_ancestors(schema.index(v) for v in leaves)
        self.handle.detach()
        assert set(vars(self.run.machine)) == self.keys


def run_sync(scenario, cls, traced: bool) -> tuple[Outcome, Traced | None]:
    out = Outcome()
    run = scenario(cls, out.calls)
    t = Traced(run) if traced else None
    models = list(run.models)
    for step in run.steps:
        record_result(out, lambda step=step: step(models))
        if t is not None:
            t.snapshot_models()
        out.states.append(state_of(models))
    return out, t


async def run_async(scenario, cls, traced: bool) -> tuple[Outcome, Traced | None]:
    out = Outcome()
    run = scenario(cls, out.calls)
    t = Traced(run) if traced else None
    models = list(run.models)
    for step in run.steps:
        await record_result_async(out, lambda step=step: step(models))
        if t is not None:
            t.snapshot_models()
        out.states.append(state_of(models))
    return out, t


@pytest.mark.parametrize(("scenario", "cls"), cases(SYNC))
def test_sync_family_traced_equals_untraced(scenario, cls):
    plain, _ = run_sync(scenario, cls, traced=False)
    traced, t = run_sync(scenario, cls, traced=True)
    assert traced == plain
    assert t is not None
    t.check()


@pytest.mark.parametrize(("scenario", "cls"), cases(ASYNC))
async def test_async_family_traced_equals_untraced(scenario, cls):
    plain, _ = await asyncio.wait_for(run_async(scenario, cls, traced=False), 10)
    traced, t = await asyncio.wait_for(run_async(scenario, cls, traced=True), 10)
    assert traced == plain
    assert t is not None
    t.check()


@pytest.mark.parametrize("cls", SYNC, ids=lambda c: c.__name__)
def test_nested_parent_seq_in_every_sync_family(cls):
    for queued in (False, True):
        out = Outcome()
        run = nesting(queued)(cls, out.calls)
        t = Traced(run)
        run.models[0].outer()
        assert t.handle.flush(5)
        recs = t.sink.history(t.handle.machine_id)
        assert [(r.name, r.parent_seq) for r in recs] == [
            ("init", None),
            ("outer", None),
            ("inner", 1),
        ]
        t.check()


@pytest.mark.parametrize("cls", SYNC + ASYNC, ids=lambda c: c.__name__)
def test_traced_machine_pickles_like_untraced(cls):
    def build():
        return make(cls, Model(), states=["A", "B"], initial="A", transitions=[["go", "A", "B"]])

    try:
        pickle.dumps(build())
    except Exception as exc:  # some families do not pickle at all; tracing must not change that
        with pytest.raises(type(exc)):
            m = build()
            h = attach(m, sink=MemorySink())
            try:
                pickle.dumps(m)
            finally:
                h.detach()
        return
    m = build()
    h = attach(m, sink=MemorySink())
    copy = pickle.loads(pickle.dumps(m))
    assert copy.models[0].state == "A"
    if "Async" not in cls.__name__:
        assert copy.models[0].go() is True
        assert copy.models[0].state == "B"
    h.detach()


@pytest.mark.parametrize("cls", ASYNC, ids=lambda c: c.__name__)
async def test_async_cancelled_transition_is_recorded(cls):
    model = Model()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(*a, **k):
        started.set()
        await release.wait()

    machine = make(
        cls,
        model,
        states=["A", "B", "C"],
        initial="A",
        transitions=[
            {"trigger": "slow", "source": "A", "dest": "B", "before": slow},
            ["fast", "A", "C"],
        ],
    )
    sink = MemorySink()
    h = attach(machine, sink=sink)
    task = asyncio.create_task(model.slow())
    await asyncio.wait_for(started.wait(), 5)
    assert await model.fast() is True
    assert await asyncio.wait_for(task, 5) is False
    assert model.state == "C"
    assert h.flush(5)
    recs = sink.history(h.machine_id)
    by_name = {r.name: r for r in recs}
    assert by_name["fast"].accepted and by_name["fast"].error is None
    slow_rec = by_name["slow"]
    assert not slow_rec.accepted
    assert slow_rec.error is not None and slow_rec.error[0] == "CancelledError"
    assert slow_rec.exited == slow_rec.entered == ()
    assert [r.seq for r in recs] == list(range(len(recs)))
    h.detach()


async def test_async_concurrent_models():
    from transitions.extensions.asyncio import AsyncMachine

    models = [Model(str(i)) for i in range(5)]

    async def pause(*a, **k):
        await asyncio.sleep(0)

    machine = AsyncMachine(
        models,
        states=["A", "B"],
        initial="A",
        transitions=[
            {"trigger": "flip", "source": "A", "dest": "B", "after": pause},
            {"trigger": "flip", "source": "B", "dest": "A", "before": pause},
        ],
    )
    sink = MemorySink()
    h = attach(machine, sink=sink)

    async def work(m):
        for _ in range(20):
            await m.flip()

    await asyncio.wait_for(asyncio.gather(*(work(m) for m in models)), 10)
    assert h.flush(5)
    for mid in h.machine_ids:
        recs = sink.history(mid)
        assert len(recs) == 21
        assert all(r.accepted for r in recs)
        assert recs[-1].entered == (0,)  # back in A after an even number of flips
    h.detach()


@pytest.mark.parametrize("cls", ASYNC, ids=lambda c: c.__name__)
async def test_nested_parent_seq_in_every_async_family(cls):
    for queued in (False, True):
        out = Outcome()
        run = nesting(queued)(cls, out.calls)
        t = Traced(run)
        assert await asyncio.wait_for(run.models[0].outer(), 5) is True
        assert run.models[0].state == "C"
        assert t.handle.flush(5)
        recs = t.sink.history(t.handle.machine_id)
        assert [(r.name, r.parent_seq) for r in recs] == [
            ("init", None),
            ("outer", None),
            ("inner", 1),
        ]
        t.check()


@pytest.mark.parametrize("cls", ASYNC, ids=lambda c: c.__name__)
async def test_async_transition_cancelled_after_its_state_change(cls):
    model = Model()
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(*a, **k):
        started.set()
        await release.wait()

    machine = make(
        cls,
        model,
        states=["A", "B", "C"],
        initial="A",
        transitions=[
            {"trigger": "slow", "source": "A", "dest": "B", "after": slow},
            ["fast", "B", "C"],
        ],
    )
    sink = MemorySink()
    h = attach(machine, sink=sink)
    task = asyncio.create_task(model.slow())
    await asyncio.wait_for(started.wait(), 5)
    assert model.state == "B"
    assert await model.fast() is True
    assert await asyncio.wait_for(task, 5) is False
    assert h.flush(5)
    recs = sink.history(h.machine_id)
    schema = sink.machines[h.machine_id].schema
    got = [
        (
            r.name,
            [schema.names[i] for i in r.exited],
            [schema.names[i] for i in r.entered],
            r.accepted,
            r.error and r.error[0],
        )
        for r in recs
    ]
    assert got == [
        ("init", [], ["A"], True, None),
        ("slow", ["A"], ["B"], False, "CancelledError"),
        ("fast", ["B"], ["C"], True, None),
    ]
    h.detach()


def _attributes_in_a_dict(obj: Any) -> bool:
    """Whether CPython turned ``obj``'s attributes into a real dict (one referent the GC
    sees) instead of its compact per-instance array."""
    return any(type(r) is dict and "states" in r for r in gc.get_referents(obj))


@pytest.mark.parametrize("cls", [Machine, HierarchicalMachine, LockedMachine])
def test_attach_and_detach_keep_the_machine_attributes_compact(cls: type) -> None:
    # Asking for a machine's __dict__ makes CPython 3.11+ keep its attributes in a real
    # dict from then on, and transitions looks them up dozens of times per trigger: the
    # flat toggle ran 4-5% slower untraced, and the tracer did it on every attach.
    # A fresh subclass: CPython shares one key table among a class's instances, and
    # earlier tests (machines that are their own model get a method per trigger and
    # state) fill it up, after which any new attribute name needs a dict anyway.
    fresh = type(f"Fresh{cls.__name__}", (cls,), {})
    model = _CompactModel()
    machine = fresh(model, states=["a", "b"], transitions=[["go", "a", "b"]], initial="a")
    assert not _attributes_in_a_dict(machine)
    handle = attach(machine, sink=MemorySink())
    model.go()
    assert not _attributes_in_a_dict(machine)
    handle.detach()
    assert not _attributes_in_a_dict(machine)
    assert vars(machine) and _attributes_in_a_dict(machine)  # the check can see a dict


class _CompactModel:
    pass
