"""python-statemachine adapter on async machines (AsyncEngine): records and identity."""

from __future__ import annotations

import pytest

import tracer
from tracer import Kind, MemorySink

try:
    from tests.tracer.statemachine_machines import (
        ASYNC_SCENARIOS,
        AsyncToggle,
        arun,
        described,
        replay,
    )
except ImportError:  # tests/tracer is not a package: pytest put its folder on sys.path
    from statemachine_machines import (  # type: ignore[no-redef]
        ASYNC_SCENARIOS,
        AsyncToggle,
        arun,
        described,
        replay,
    )

pytestmark = pytest.mark.timeout(60)
BY_NAME = {s.name: s for s in ASYNC_SCENARIOS}


@pytest.mark.parametrize("before", [False, True], ids=["after-activation", "before-activation"])
@pytest.mark.parametrize("scenario", ASYNC_SCENARIOS, ids=lambda s: s.name)
async def test_async_traced_run_is_identical_to_untraced(scenario, before):
    untraced = await arun(scenario, traced=False)
    traced = await arun(scenario, traced=True, attach_before_activation=before)
    assert (traced.results, traced.configurations, traced.log) == (
        untraced.results,
        untraced.configurations,
        untraced.log,
    )
    sink = traced.handle.dispatcher.sink
    assert replay(sink, traced.handle.machine_id, traced.history) == {
        s.id for s in traced.sm.configuration
    }
    traced.handle.detach()


async def test_attach_before_activation_records_the_initial_entry():
    sink = MemorySink()
    sm = AsyncToggle()
    assert type(sm._engine).__name__ == "AsyncEngine"
    handle = tracer.attach(sm, sink=sink)
    await sm.activate_initial_state()
    assert await sm.send("flip") == "flipped"
    assert handle.flush(5)
    assert described(sink, handle.machine_id) == [
        (0, "init", "init", [], [], True, None, None),  # nothing active yet
        (1, "event", "__initial__", [], ["off"], True, None, None),
        (2, "event", "flip", ["off"], ["on"], True, None, None),
    ]
    handle.detach()


async def test_async_records_errors_not_allowed_and_parent_seq():
    out = await arun(BY_NAME["async-raising"], traced=True)
    recs = described(out.handle.dispatcher.sink, out.handle.machine_id)
    assert out.results[:2] == [
        ("raised", "TransitionNotAllowed", "Can't nope when in Idle."),
        ("raised", "ValueError", "async boom"),
    ]
    assert recs == [
        (0, "init", "init", [], ["idle"], True, None, None),
        (1, "event", "nope", [], [], False, "TransitionNotAllowed", None),
        (2, "event", "crash", [], [], True, "ValueError", None),
        (3, "event", "work", ["idle"], ["busy"], True, None, None),
        (4, "event", "back", ["busy"], ["idle"], True, None, None),
    ]
    out.handle.detach()
    out = await arun(BY_NAME["async-chained"], traced=True)
    recs = described(out.handle.dispatcher.sink, out.handle.machine_id)
    assert [(r[2], r[7]) for r in recs] == [
        ("init", None),
        ("first", None),
        ("second", 1),
        ("restart", None),
    ]
    assert all(r.kind in (Kind.INIT, Kind.EVENT) for r in out.history)
    out.handle.detach()


async def test_async_detach_restores_the_engine():
    sm = AsyncToggle()
    await sm.activate_initial_state()
    engine_attrs = dict(vars(sm._engine))
    handle = tracer.attach(sm, sink=MemorySink())
    assert await sm.send("flip") == "flipped"
    handle.detach()
    assert vars(sm._engine).keys() == engine_attrs.keys()
    assert await sm.send("flip") == "flipped"
    assert handle.flush(5)
    assert len(handle.dispatcher.sink.history(handle.machine_id)) == 2


async def test_lazy_activation_by_the_first_event():
    sink = MemorySink()
    sm = AsyncToggle()
    handle = tracer.attach(sm, sink=sink)
    assert await sm.send("flip") == "flipped"  # activates the initial state first
    assert handle.flush(5)
    assert described(sink, handle.machine_id) == [
        (0, "init", "init", [], [], True, None, None),
        (1, "event", "__initial__", [], ["off"], True, None, None),
        (2, "event", "flip", ["off"], ["on"], True, None, None),
    ]
    handle.detach()
