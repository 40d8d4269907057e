"""Divergence check: does the current definition still reproduce a recording?"""

from __future__ import annotations

import pytest
from transitions import Machine

import backends
import tracer
from aminspect import export
from aminspect.divergence import check
from tests.e2e.machines import Quest, make_order, make_ring, make_ring_changed, make_ring_renamed

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ring_history():
    backend = backends.open("memory://")
    machine = make_ring()
    handle = tracer.attach(machine, sink=backend, name="ring")
    model = machine.models[0]
    for _ in range(9):
        model.inc()  # r0 .. r6, r0, r1, r2
    model.reset()
    handle.flush(10)
    handle.detach()
    yield backend
    backend.close()


def test_the_same_definition_agrees(ring_history):
    report = check(make_ring(), ring_history, "ring")
    assert report.ok and report.checked == 11 and report.events == 10


def test_a_changed_target_is_reported_at_its_first_record(ring_history):
    definition = make_ring_changed()
    report = check(definition, ring_history, "ring")
    d = report.divergence
    assert d is not None
    assert (d.seq, d.name, d.reason) == (4, "inc", "different-target")  # r3 -> r4 recorded
    assert d.active == ("r3",) and d.recorded == ("r4",) and d.expected == ("r5",)
    assert "now goes to r5" in d.message()
    assert not definition.models[0].entered  # pure: the definition never ran


def test_an_event_no_longer_accepted(ring_history):
    no_reset = Machine(
        states=[f"r{i}" for i in range(7)],
        initial="r0",
        transitions=[
            {"trigger": "inc", "source": f"r{i}", "dest": f"r{(i + 1) % 7}"} for i in range(7)
        ],
        auto_transitions=False,
    )
    d = check(no_reset, ring_history, "ring").divergence
    assert d is not None and (d.seq, d.reason) == (10, "not-accepted")
    assert "'reset' is no longer accepted in r2" in d.message()


def test_a_missing_state_is_reported(ring_history):
    d = check(make_ring_renamed(), ring_history, "ring").divergence
    assert d is not None and d.reason == "missing-state" and d.seq == 6  # the 6th inc enters r6
    assert d.recorded == ("r6",)


def test_nested_parallel_and_statemachine_histories_agree():
    backend = backends.open("memory://")
    order = make_order()
    h1 = tracer.attach(order, sink=backend, name="order")
    m = order.models[0]
    for event in ("start", "packed", "send", "move", "pay", "finish"):
        getattr(m, event)()
    quest = Quest()
    h2 = tracer.attach(quest, sink=backend, name="quest")
    for event in ("step", "turn", "truce", "resume", "step"):
        quest.send(event)
    h1.flush(10)
    h2.flush(10)
    h1.detach()
    h2.detach()
    assert check(make_order(), backend, "order").ok
    assert check(Quest(), backend, "quest").ok
    assert check(Quest, backend, "quest").ok  # a class is inspected without running it
    backend.close()


def test_eventless_done_state_and_internal_transitions_agree():
    from tests.e2e.machines import Shipment

    backend = backends.open("memory://")
    sm = Shipment()
    handle = tracer.attach(sm, sink=backend, name="ship")
    for event in ("start", "seal", "note"):
        sm.send(event)
    assert "archived" in sm.configuration_values
    handle.flush(10)
    handle.detach()
    names = [r.name for r in backend.read("ship")]
    assert "(eventless)" in names and "done.state.packing" in names
    report = check(Shipment, backend, "ship")
    assert report.ok, report.divergence and report.divergence.message()
    diagram = export.to_mermaid(export.visits(backend, "ship"))
    assert " : (eventless) (1)\n" in diagram and " : note (1)\n" in diagram
    assert "(observed)" not in diagram  # every record matched a declared transition
    backend.close()
