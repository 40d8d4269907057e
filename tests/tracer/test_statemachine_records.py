"""python-statemachine adapter: the records a traced machine produces, scenario by scenario."""

from __future__ import annotations

from typing import Any

import pytest
from statemachine import State, StateChart, StateMachine

import tracer
from tracer import Kind, MemorySink, StateSpec, TransitionSpec
from tracer.adapters import statemachine as adapter

try:
    from tests.tracer.statemachine_machines import (
        SCENARIOS,
        Order,
        Quest,
        Toggle,
        Traffic,
        described,
        replay,
        run,
    )
except ImportError:  # tests/tracer is not a package: pytest put its folder on sys.path
    from statemachine_machines import (  # type: ignore[no-redef]
        SCENARIOS,
        Order,
        Quest,
        Toggle,
        Traffic,
        described,
        replay,
        run,
    )

pytestmark = pytest.mark.timeout(60)
BY_NAME = {s.name: s for s in SCENARIOS}


def records_of(name: str, **attach_kw):
    out = run(BY_NAME[name], traced=True, **attach_kw)
    sink = out.handle.dispatcher.sink
    return out, sink, described(sink, out.handle.machine_id)


def test_accepts_both_base_classes_and_nothing_else():
    assert issubclass(StateMachine, StateChart)  # 3.2.2: StateMachine derives from StateChart
    assert adapter.accepts(Toggle())  # a StateMachine
    assert adapter.accepts(Traffic())  # a StateChart
    assert not adapter.accepts(object())
    assert not adapter.accepts(Toggle)  # the class is not a machine instance


def test_machine_record_and_schema_of_a_parallel_machine_with_history():
    sink = MemorySink()
    handle = tracer.attach(Quest(), sink=sink)
    assert handle.flush(5)
    rec = sink.machines[handle.machine_id]
    assert rec.kind == "statemachine"
    assert handle.machine_id.startswith("Quest-")
    schema = rec.schema
    assert schema.states == (
        StateSpec("war", None, initial=True, parallel=True),  # first top-level state
        StateSpec("left", "war", initial=True),
        StateSpec("x", "left", initial=True),
        StateSpec("y", "left"),
        StateSpec("right", "war", initial=True),
        StateSpec("u", "right", initial=True),
        StateSpec("v", "right"),
        StateSpec("peace", None),
    )
    # The history pseudo-state is not a state; a transition to it re-enters its compound.
    assert set(schema.transitions) == {
        TransitionSpec("x", "step", "y"),
        TransitionSpec("u", "step", "v"),
        TransitionSpec("war", "truce", "peace"),
        TransitionSpec("peace", "resume", "left"),
    }
    handle.detach()


def test_schema_marks_final_states_targetless_and_eventless_transitions():
    schema, index = adapter.schema_of(Order)
    spec = {s.name: s for s in schema.states}
    assert spec["packed"].final and spec["packed"].parent == "shipping"
    assert spec["archived"].final and spec["new"].initial
    assert TransitionSpec("delivered", "unlock", None, True) in schema.transitions
    assert TransitionSpec("delivered", "", "archived") in schema.transitions  # eventless
    assert TransitionSpec("shipping", "done.state.shipping", "delivered") in schema.transitions
    assert index == {name: i for i, name in enumerate(schema.names)}


def test_schema_names_fall_back_to_dotted_paths_when_ids_collide():
    # The library itself refuses duplicate ids today; the fallback keeps schemas valid if
    # a future version allows them. Plain objects stand in for State here.
    from types import SimpleNamespace as NS

    outer_a = NS(id="a", value="a", parent=None, initial=True, final=False)
    outer_b = NS(id="b", value="b", parent=None, initial=False, final=False)
    inner_a = NS(id="idle", value="a.idle", parent=outer_a, initial=True, final=False)
    inner_b = NS(id="idle", value="b.idle", parent=outer_b, initial=True, final=False)
    for s in (outer_a, outer_b, inner_a, inner_b):
        s.transitions = []
        s.parallel = False
    machine = NS(states_map={s.value: s for s in (outer_a, outer_b, inner_a, inner_b)})
    schema, index = adapter.schema_of(machine)
    assert schema.names == ("a", "b", "a.idle", "b.idle")
    assert schema.states[3].parent == "b"
    assert index == {"a": 0, "b": 1, "a.idle": 2, "b.idle": 3}


def test_flat_statemachine_events_args_and_internal_transition():
    out, sink, recs = records_of("toggle")
    assert recs == [
        (0, "init", "init", [], ["a"], True, None, None),
        (1, "event", "go", ["a"], ["b"], True, None, None),
        (2, "event", "go", ["b"], ["a"], True, None, None),
        (3, "event", "stay", [], [], True, None, None),  # targetless: accepted, no change
    ]
    history = out.history
    assert [r.seq for r in history] == list(range(len(history)))
    assert history[1].args == {"args": [1], "kwargs": {"k": "v"}}
    assert history[2].args is None
    assert all(r.duration > 0 for r in history[1:])
    assert replay(sink, out.handle.machine_id, history) == {s.id for s in out.sm.configuration}


def test_not_allowed_events_are_recorded_and_still_raised():
    out, _, recs = records_of("toggle-unknown")
    assert out.results[0] == ("raised", "TransitionNotAllowed", "Can't nope when in A.")
    assert recs[1] == (1, "event", "nope", [], [], False, "TransitionNotAllowed", None)
    assert out.history[1].error == ("TransitionNotAllowed", "Can't nope when in A.")
    # A terminated StateMachine refuses at queueing time: recorded the same way.
    out, _, recs = records_of("toggle-not-allowed")
    assert recs[-1] == (2, "event", "finish", [], [], False, "TransitionNotAllowed", None)


def test_statechart_ignores_silently_and_records_ignored_only_when_asked():
    _, _, recs = records_of("traffic")
    assert [r[2] for r in recs] == ["init", "cycle", "cycle"]
    _, _, recs = records_of("traffic", options={"record_ignored": True})
    assert recs == [
        (0, "init", "init", [], ["green"], True, None, None),
        (1, "event", "cycle", ["green"], ["yellow"], True, None, None),
        (2, "event", "nope", [], [], False, None, None),
        (3, "event", "cycle", ["yellow"], ["red"], True, None, None),
        (4, "event", "x", [], [], False, None, None),
    ]
    # A guard that fails is the same as no transition: ignored.
    _, _, recs = records_of("traffic-guard", options={"record_ignored": True})
    assert [(r[2], r[5]) for r in recs] == [("init", True), ("emergency", False), ("cycle", True)]


def test_compound_final_done_state_internal_self_transition_and_eventless():
    out, sink, recs = records_of("order")
    assert recs == [
        (0, "init", "init", [], ["new"], True, None, None),
        (1, "event", "start", ["new"], ["shipping", "packing"], True, None, None),
        (2, "event", "pack", ["packing"], ["packed"], True, None, None),
        # Queued by the engine while `pack` ran: its child.
        (3, "event", "done.state.shipping", ["packed", "shipping"], ["delivered"], True, None, 2),
        # Internal self-transition with entries (StateChart): shown as exited and re-entered.
        (4, "event", "unlock", ["delivered"], ["delivered"], True, None, None),
        # Eventless: enabled by the step before it (the guard became true in `unlock`).
        (5, "event", "(eventless)", ["delivered"], ["archived"], True, None, 4),
    ]
    assert replay(sink, out.handle.machine_id, out.history) == {"archived"}


def test_parallel_regions_one_record_per_trigger_and_history():
    out, sink, recs = records_of("quest")
    assert recs == [
        (0, "init", "init", [], ["war", "left", "x", "right", "u"], True, None, None),
        # P7: one event, two transitions; exits innermost first, entries outermost first.
        (1, "event", "step", ["u", "x"], ["y", "v"], True, None, None),
        (2, "event", "truce", ["v", "y", "right", "left", "war"], ["peace"], True, None, None),
        # Shallow history restores `y` in the left region; the right one starts over.
        (3, "event", "resume", ["peace"], ["war", "left", "right", "y", "u"], True, None, None),
        (4, "event", "truce", ["y", "u", "right", "left", "war"], ["peace"], True, None, None),
    ]
    assert replay(sink, out.handle.machine_id, out.history) == {"peace"}


def test_errors_caught_as_events_are_stored_on_the_record_that_raised():
    out, _, recs = records_of("failing")
    assert recs[1] == (1, "event", "work", ["idle"], ["busy"], True, "RuntimeError", None)
    assert out.history[1].error == ("RuntimeError", "busy failed")
    assert recs[2] == (2, "event", "error.execution", ["busy"], ["broken"], True, None, 1)
    assert out.history[2].args["kwargs"]["error"] == "RuntimeError('busy failed')"


def test_unhandled_error_execution_is_recorded_as_not_accepted():
    class Lonely(StateChart):
        idle = State(initial=True)
        busy = State(final=True)
        work = idle.to(busy, before="fail")

        def fail(self) -> None:
            raise KeyError("nothing")

    sink = MemorySink()
    sm = Lonely()
    handle = tracer.attach(sm, sink=sink)
    assert sm.send("work") is None
    assert handle.flush(5)
    recs = described(sink, handle.machine_id)
    # The failing `before` stopped the step before any state change; nothing handles
    # error.execution, so the error lands on a not-accepted error.execution record.
    assert recs == [
        (0, "init", "init", [], ["idle"], True, None, None),
        (1, "event", "error.execution", [], [], False, "KeyError", None),
    ]
    handle.detach()


def test_errors_that_propagate_are_recorded_and_the_rollback_respected():
    out, sink, recs = records_of("raising")
    assert out.results[0] == ("raised", "ValueError", "boom")
    assert recs[1] == (1, "event", "crash", [], [], True, "ValueError", None)
    assert out.history[1].error == ("ValueError", "boom")
    assert recs[2][2:5] == ("work", ["idle"], ["busy"])
    assert replay(sink, out.handle.machine_id, out.history) == {"idle"}


def test_an_after_callback_raising_adds_a_follow_up_record():
    class LateFailure(StateMachine):
        idle = State(initial=True)
        busy = State()
        work = idle.to(busy)
        back = busy.to(idle)

        def after_work(self) -> None:
            raise RuntimeError("late")

    sink = MemorySink()
    sm = LateFailure()
    handle = tracer.attach(sm, sink=sink)
    with pytest.raises(RuntimeError, match="late"):
        sm.send("work")
    sm.send("back")
    assert handle.flush(5)
    # after_transition (ours) runs after the user's after_<event>: the record is still
    # open when it raises, so it carries the error (the state change stands).
    assert described(sink, handle.machine_id) == [
        (0, "init", "init", [], ["idle"], True, None, None),
        (1, "event", "work", ["idle"], ["busy"], True, "RuntimeError", None),
        (2, "event", "back", ["busy"], ["idle"], True, None, None),
    ]
    handle.detach()

    class Grumpy:
        """Another listener, added after the tracer: its after_transition runs after ours."""

        def after_transition(self, event: Any) -> None:
            if event == "work":
                raise RuntimeError("grumpy")

    class Plain(StateMachine):
        idle = State(initial=True)
        busy = State()
        work = idle.to(busy)
        back = busy.to(idle)

    sm = Plain()
    handle = tracer.attach(sm, sink=sink)
    sm.add_listener(Grumpy())
    with pytest.raises(RuntimeError, match="grumpy"):
        sm.send("work")
    assert handle.flush(5)
    assert described(sink, handle.machine_id)[1:] == [
        (1, "event", "work", ["idle"], ["busy"], True, None, None),
        (2, "event", "work", [], [], True, "RuntimeError", 1),  # the follow-up
    ]
    handle.detach()


def test_statechart_after_callback_error_lands_on_its_record():
    class LateChart(StateChart):
        idle = State(initial=True)
        busy = State()
        work = idle.to(busy)
        back = busy.to(idle)

        def after_work(self) -> None:
            raise RuntimeError("late")

    sink = MemorySink()
    sm = LateChart()
    handle = tracer.attach(sm, sink=sink)
    assert sm.send("work") is None  # caught as an event
    sm.send("back")
    assert handle.flush(5)
    assert described(sink, handle.machine_id)[1:] == [
        (1, "event", "work", ["idle"], ["busy"], True, "RuntimeError", None),
        (2, "event", "back", ["busy"], ["idle"], True, None, None),
    ]
    handle.detach()


@pytest.mark.parametrize("where", ["before", "cond"])
def test_errors_raised_before_any_state_change_are_not_accepted_records(where):
    def fail(self) -> bool:
        raise LookupError("early")

    class Early(StateMachine):
        idle = State(initial=True)
        busy = State()
        work = idle.to(busy, **{where: "fail"})
        back = busy.to(idle)

    Early.fail = fail
    sink = MemorySink()
    sm = Early()
    handle = tracer.attach(sm, sink=sink)
    with pytest.raises(LookupError):
        sm.send("work", 7)
    assert handle.flush(5)
    assert described(sink, handle.machine_id)[1:] == [
        (1, "event", "work", [], [], False, "LookupError", None)
    ]
    assert sink.history(handle.machine_id)[1].args == {"args": [7]}
    handle.detach()


def test_events_sent_from_callbacks_get_parent_seq():
    out, _, recs = records_of("chained")
    assert [(r[2], r[7]) for r in recs] == [
        ("init", None),
        ("first", None),
        ("second", 1),
        ("restart", None),
        ("first", None),
        ("second", 4),
    ]
    assert out.history[2].args == {"kwargs": {"by": "two"}}


def test_machines_keeping_state_on_a_user_model():
    out, _, recs = records_of("model")
    assert out.sm.model.status == "a"
    assert [r[1:5] for r in recs] == [
        ("init", "init", [], ["a"]),
        ("event", "go", ["a"], ["b"]),
        ("forced", "current_state_value", ["b"], ["a"]),
        ("event", "go", ["a"], ["b"]),
        ("event", "go", ["b"], ["a"]),
    ]


def test_direct_writes_become_forced_records():
    out, sink, recs = records_of("forced")
    assert recs[2] == (2, "forced", "current_state_value", ["b"], ["a"], True, None, None)
    # The last write has no event after it; detach notices it.
    out.handle.detach()
    assert out.handle.flush(5)
    history = sink.history(out.handle.machine_id)
    assert history[-1].kind == Kind.FORCED
    assert replay(sink, out.handle.machine_id, history) == {"a"} == set(out.sm.configuration_values)


def test_cross_machine_events_carry_source():
    class Receiver(StateChart):
        waiting = State(initial=True)
        got = State(final=True)
        ping = waiting.to(got)

    receiver = Receiver()

    class Sender(StateChart):
        idle = State(initial=True)
        sent = State(final=True)
        fire = idle.to(sent)

        def on_enter_sent(self) -> None:
            receiver.send("ping")

    sink = MemorySink()
    sender = Sender()
    h_recv = tracer.attach(receiver, sink=sink, name="recv")
    h_send = tracer.attach(sender, sink=sink, name="send")
    sender.send("fire")
    assert h_send.flush(5)
    ping = sink.history("recv")[1]
    assert (ping.name, ping.source) == ("ping", ("send", 1))
    h_recv.detach()
    h_send.detach()


def test_listener_only_mode_still_records_transitions_and_aborted_steps():
    _, _, recs = records_of("quest", options={"engine_hooks": False})
    assert [r[2:5] for r in recs] == [r[2:5] for r in records_of("quest")[2]]
    # Without the hooks a propagated error is only noticed when the next step opens.
    _, _, recs = records_of("raising", options={"engine_hooks": False})
    assert [r[2] for r in recs] == ["init", "crash", "work", "back"]
    assert recs[1][6] == "Aborted"
    # Not-accepted events are invisible without the hooks.
    _, _, recs = records_of("toggle-unknown", options={"engine_hooks": False})
    assert [r[2] for r in recs] == ["init", "go"]


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown python-statemachine option.*record_ignord"):
        tracer.attach(Toggle(), sink=MemorySink(), options={"record_ignord": True})


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_replay_of_every_scenario_matches_the_machine(scenario):
    out = run(scenario, traced=True)
    out.handle.detach()  # picks up a final direct write, if any
    assert out.handle.flush(5)
    sink = out.handle.dispatcher.sink
    history = sink.history(out.handle.machine_id)
    assert [r.seq for r in history] == list(range(len(history)))
    assert history[0].kind == Kind.INIT
    assert replay(sink, out.handle.machine_id, history) == {s.id for s in out.sm.configuration}
