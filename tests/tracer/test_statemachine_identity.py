"""python-statemachine adapter: the tracer changes nothing (results, errors, state, callbacks)."""

from __future__ import annotations

import copy
import gc
import pickle
import weakref

import pytest

import tracer
from tracer import MemorySink
from tracer.adapters import statemachine as adapter

try:
    from tests.tracer.statemachine_machines import (
        SCENARIOS,
        Chained,
        Quest,
        Toggle,
        run,
    )
    from tests.tracer.statemachine_machines import _step as step_machine
except ImportError:  # tests/tracer is not a package: pytest put its folder on sys.path
    from statemachine_machines import (  # type: ignore[no-redef]
        SCENARIOS,
        Chained,
        Quest,
        Toggle,
        run,
    )
    from statemachine_machines import _step as step_machine  # type: ignore[no-redef]

pytestmark = pytest.mark.timeout(60)


def observable(out) -> tuple:
    """Everything a user can see: returns (P1), exceptions, configurations, callback order."""
    return out.results, out.configurations, out.log


@pytest.mark.parametrize("options", [{}, {"record_ignored": True}, {"engine_hooks": False}])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_traced_run_is_identical_to_untraced(scenario, options):
    untraced = run(scenario, traced=False)
    traced = run(scenario, traced=True, options=options)
    assert observable(traced) == observable(untraced)
    traced.handle.detach()


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.pickles], ids=lambda s: s.name)
def test_traced_machine_pickles_and_the_copy_works_untraced(scenario):
    out = run(scenario, traced=True)
    data = pickle.dumps(out.sm)
    clone = pickle.loads(data)
    assert list(clone.configuration_values) == list(out.sm.configuration_values)
    # The listener travels as a plain object(): no tracer class, no callbacks.
    assert b"tracer.adapters" not in data and b"_Listener" not in data
    assert not any(isinstance(x, adapter._Listener) for x in clone.active_listeners)
    before = len(out.history)
    for step in scenario.steps:  # drive the copy: it must not record into the original
        try:
            step_machine(clone, step)
        except Exception:
            pass
    assert out.handle.flush(5)
    assert len(out.handle.dispatcher.sink.history(out.handle.machine_id)) == before
    assert copy.deepcopy(out.sm).configuration_values == out.sm.configuration_values
    out.handle.detach()


def registry_keys(sm) -> dict:
    return {k: [w.unique_key for w in ex.items] for k, ex in sm._callbacks._registry.items()}


def test_detach_leaves_the_machine_exactly_as_before():
    sm = Quest()
    before_dict = dict(vars(sm))
    before_engine = dict(vars(sm._engine))
    before_registry = registry_keys(sm)
    before_listeners = list(sm.active_listeners)
    handle = tracer.attach(sm, sink=MemorySink())
    assert registry_keys(sm) != before_registry
    sm.send("step")
    handle.detach()
    assert registry_keys(sm) == before_registry
    assert sm.active_listeners == before_listeners
    assert vars(sm).keys() == before_dict.keys()
    assert vars(sm._engine).keys() == before_engine.keys()
    for ex in sm._callbacks._registry.values():
        assert all(not str(k).endswith(f"@{id(handle)}") for k in ex.items_already_seen)
    # Later events are not recorded and behave as untraced.
    sm.send("truce")
    assert handle.flush(5)
    assert [r.name for r in handle.dispatcher.sink.history(handle.machine_id)] == [
        "init",
        "step",
    ]
    handle.detach()  # idempotent


def test_after_detach_no_tracer_object_stays_reachable_from_the_machine():
    sm = Chained()
    handle = tracer.attach(sm, sink=MemorySink())
    sm.send("first")
    listener = next(x for x in sm.active_listeners if isinstance(x, adapter._Listener))
    ref = weakref.ref(listener)
    handle.detach()
    del listener, handle
    gc.collect()
    assert ref() is None
    # And the machine still runs its own callbacks in the same order as an untraced one.
    sm.send("restart")
    fresh = Chained()
    fresh.send("first")
    fresh.send("restart")
    assert sm.log == fresh.log


def test_detach_inside_a_callback_does_not_disturb_the_step():
    class SelfDetaching(Toggle):
        handle = None

        def after_go(self) -> None:
            super().after_go()
            if self.handle is not None:
                self.handle.detach()

    sm = SelfDetaching()
    reference = SelfDetaching()
    sink = MemorySink()
    sm.handle = tracer.attach(sm, sink=sink)
    assert sm.send("go") == reference.send("go")
    assert sm.send("go") == reference.send("go")
    assert sm.log == reference.log
    assert sm.handle.flush(5)
    assert [r.name for r in sink.history(sm.handle.machine_id)] == ["init", "go"]


@pytest.mark.parametrize("first_out", [0, 1], ids=["fifo", "lifo"])
def test_two_tracers_on_one_machine_detach_in_any_order(first_out):
    sm = Chained()
    reference = Chained()
    engine_before = dict(vars(sm._engine))
    registry_before = registry_keys(sm)
    sinks = [MemorySink(), MemorySink()]
    handles = [tracer.attach(sm, sink=s) for s in sinks]
    assert sm.send("first") == reference.send("first")
    handles[first_out].detach()
    assert sm.send("restart") == reference.send("restart")
    handles[1 - first_out].detach()
    assert sm.send("first") == reference.send("first")
    assert sm.log == reference.log
    assert vars(sm._engine).keys() == engine_before.keys()
    assert registry_keys(sm) == registry_before
    for i, (h, s) in enumerate(zip(handles, sinks, strict=True)):
        assert h.flush(5)
        expected = ["init", "first", "second"] + ([] if i == first_out else ["restart"])
        assert [r.name for r in s.history(h.machine_id)] == expected


def test_a_traced_machine_dropped_without_detach_is_collected():
    # The handle keeps its machine (detach needs it); once both go, nothing else does.
    sink = MemorySink()
    sm = Chained()
    handle = tracer.attach(sm, sink=sink)
    sm.send("first")
    assert handle.flush(5)
    ref = weakref.ref(sm)
    del sm, handle
    gc.collect()
    assert ref() is None
    assert not any(entry[0]() is None for entry in adapter._keys_before.values())


def test_detach_keeps_the_engine_attributes_compact():
    # Asking for an object's __dict__ makes CPython 3.11+ keep its attributes in a real
    # dict from then on (every later lookup slower); detach once did that to the engine.
    sm = Quest()
    engine = sm._engine

    def in_a_dict() -> bool:
        return any(type(r) is dict and "sm" in r for r in gc.get_referents(engine))

    assert not in_a_dict()
    handle = tracer.attach(sm, sink=MemorySink())
    sm.send("step")
    handle.detach()
    assert not in_a_dict()
    assert "put" not in vars(engine) and in_a_dict()  # gone, and the check sees a dict
