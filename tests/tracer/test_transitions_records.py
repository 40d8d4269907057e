"""The transitions adapter: what each kind of activity records, and that tracing is safe."""

from __future__ import annotations

import enum
import pickle
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import Machine, MachineError
from transitions.extensions import HierarchicalMachine, LockedMachine

from tracer import Kind, MachineTime, MemorySink, attach
from tracer.adapters import transitions as adapter


class Model:
    pass


def history(handle, sink, machine_id=None):
    assert handle.flush(5)
    mid = machine_id or handle.machine_id
    records = sink.history(mid)
    assert [r.seq for r in records] == list(range(len(records)))
    return records


def wait_until(predicate, timeout=5.0) -> bool:
    """Dispose runs on the sender thread and flush() does not wait for it."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def names(sink, machine_id, idx):
    schema = sink.machines[machine_id].schema
    return [schema.names[i] for i in idx]


def summary(sink, records):
    """(kind, name, exited names, entered names, accepted) per record."""
    return [
        (
            r.kind,
            r.name,
            names(sink, r.machine_id, r.exited),
            names(sink, r.machine_id, r.entered),
            r.accepted,
        )
        for r in records
    ]


def replayed(sink, records) -> set[str]:
    schema = sink.machines[records[0].machine_id].schema
    mt = MachineTime.for_schema(schema)
    for r in records:
        mt.apply(r)
    return {schema.names[i] for i in mt.active()}


def leaves(state) -> set[str]:
    if isinstance(state, list):
        out: set[str] = set()
        for s in state:
            out |= leaves(s)
        return out
    return {state.name if isinstance(state, enum.Enum) else state}


def expected_active(sink, machine_id, state) -> set[str]:
    schema = sink.machines[machine_id].schema
    idx = schema.with_ancestors(schema.index(s) for s in leaves(state))
    return {schema.names[i] for i in idx}


def flat(model=None, **kw):
    return Machine(
        model if model is not None else Model(),
        states=["A", "B", "C"],
        initial="A",
        transitions=[["go", "A", "B"], ["back", "B", "A"], ["stay", "A", "A"]],
        **kw,
    )


HSM_STATES = [
    "A",
    {"name": "B", "children": ["x", "y"], "initial": "x"},
    {
        "name": "C",
        "parallel": [
            {"name": "1", "children": ["a", "b"], "initial": "a"},
            {"name": "2", "children": ["a", "b"], "initial": "a"},
        ],
    },
]
HSM_TRANSITIONS = [
    ["go", "A", "B"],
    ["step", "B_x", "B_y"],
    ["split", "B", "C"],
    ["flip", "C_1_a", "C_1_b"],
    ["flip", "C_2_a", "C_2_b"],
    ["home", "C", "A"],
]


def test_flat_events_init_and_args():
    sink = MemorySink()
    m = flat()
    model = m.models[0]
    h = attach(m, sink=sink)
    assert model.go(1, x="y") is True
    assert model.back() is True
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "go", ["A"], ["B"], True),
        (Kind.EVENT, "back", ["B"], ["A"], True),
    ]
    assert recs[1].args == {"args": [1], "kwargs": {"x": "y"}}
    assert recs[2].args is None
    assert all(r.duration > 0 for r in recs[1:])
    assert all(r.parent_seq is None and r.error is None for r in recs)
    assert replayed(sink, recs) == {"A"} == expected_active(sink, h.machine_id, model.state)
    machine = sink.machines[h.machine_id]
    assert machine.kind == "transitions"
    assert machine.id.startswith("Model-")
    h.detach()


def test_schema_of_flat_and_nested_machines():
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    h.flush(5)
    schema = sink.machines[h.machine_id].schema
    assert schema.names == ("A", "B", "C")
    assert [s.initial for s in schema.states] == [True, False, False]
    ts = {(t.source, t.event, t.dest) for t in schema.transitions}
    assert {("A", "go", "B"), ("B", "back", "A"), ("A", "stay", "A"), ("C", "to_A", "A")} <= ts
    h.detach()

    hm = HierarchicalMachine(
        states=[
            *HSM_STATES,
            {
                "name": "D",
                "children": ["p", {"name": "q", "final": True}],
                "initial": "p",
                "transitions": [["inner", "p", "q"], ["tick", "p", None]],
            },
        ],
        transitions=HSM_TRANSITIONS,
        initial="A",
    )
    h = attach(hm, sink=sink)
    h.flush(5)
    schema = sink.machines[h.machine_id].schema
    by_name = {s.name: s for s in schema.states}
    assert schema.names[:5] == ("A", "B", "B_x", "B_y", "C")
    assert by_name["B_x"].parent == "B" and by_name["B_x"].initial
    assert by_name["C"].parallel and not by_name["B"].parallel
    assert by_name["C_2_b"].parent == "C_2"
    assert by_name["D_q"].final and not by_name["D_p"].final
    ts = {(t.source, t.event, t.dest, t.internal) for t in schema.transitions}
    assert ("D_p", "inner", "D_q", False) in ts  # declared inside D: global names
    assert ("D_p", "tick", None, True) in ts
    assert ("C_1_a", "flip", "C_1_b", False) in ts
    h.detach()


def test_hsm_nested_parallel_and_forced_writes():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="A")
    h = attach(hm, sink=sink)
    model.go()
    model.step()
    model.split()
    assert model.state == ["C_1_a", "C_2_a"]
    model.flip()  # handled by both regions: one record
    assert model.state == ["C_1_b", "C_2_b"]
    hm.set_state(["C_1_a", "C_2_b"], model)
    model.home()
    model.to("B_y")  # HierarchicalMachine.to_state: a transition with no prepare/finalize
    model.to_A()  # auto transitions are normal events
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "go", ["A"], ["B", "B_x"], True),
        (Kind.EVENT, "step", ["B_x"], ["B_y"], True),
        (Kind.EVENT, "split", ["B", "B_y"], ["C", "C_1", "C_1_a", "C_2", "C_2_a"], True),
        (Kind.EVENT, "flip", ["C_1_a", "C_2_a"], ["C_1_b", "C_2_b"], True),
        (Kind.FORCED, "set_state", ["C_1_b"], ["C_1_a"], True),
        (Kind.EVENT, "home", ["C", "C_1", "C_1_a", "C_2", "C_2_b"], ["A"], True),
        (Kind.FORCED, "to_state", ["A"], ["B", "B_y"], True),
        (Kind.EVENT, "to_A", ["B", "B_y"], ["A"], True),
    ]
    assert recs[5].args == {"args": [["C_1_a", "C_2_b"]]}
    assert recs[7].args == {"args": ["B_y"]}
    assert replayed(sink, recs) == expected_active(sink, h.machine_id, model.state)
    h.detach()


def test_initial_given_as_a_nested_path():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="B_y")
    h = attach(hm, sink=sink)
    recs = history(h, sink)
    assert summary(sink, recs) == [(Kind.INIT, "init", [], ["B", "B_y"], True)]
    schema = sink.machines[h.machine_id].schema
    assert [s.name for s in schema.states if s.initial and s.parent is None] == ["B"]
    h.detach()


def test_initial_parallel_configuration_is_the_init_record():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="C")
    h = attach(hm, sink=sink)
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["C", "C_1", "C_1_a", "C_2", "C_2_a"], True)
    ]
    h.detach()


def test_invalid_trigger_failed_condition_and_ignored_trigger():
    sink = MemorySink()
    model = Model()
    m = Machine(
        model,
        states=["A", "B", {"name": "Q", "ignore_invalid_triggers": True}],
        initial="A",
        transitions=[
            ["go", "A", "B", "never"],
            ["back", "B", "A"],
            ["quiet", "Q", "A"],
        ],
    )
    model.never = lambda: False
    h = attach(m, sink=sink)
    with pytest.raises(MachineError) as info:
        model.back(5)
    assert model.go() is False
    m.set_state("Q", model)
    assert model.back() is False  # ignored in Q
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "back", [], [], False),
        (Kind.EVENT, "go", [], [], False),
        (Kind.FORCED, "set_state", ["A"], ["Q"], True),
        (Kind.EVENT, "back", [], [], False),
    ]
    assert recs[1].error == ("MachineError", str(info.value))
    assert recs[1].args == {"args": [5]}
    assert recs[2].error is None and recs[4].error is None
    h.detach()


def test_hsm_invalid_trigger_is_named():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="A")
    h = attach(hm, sink=sink)
    with pytest.raises(MachineError):
        model.flip()
    recs = history(h, sink)
    assert recs[-1].name == "flip" and not recs[-1].accepted
    assert recs[-1].error[0] == "MachineError"
    h.detach()


class Boom(Exception):
    pass


def test_exception_in_callback_is_recorded_and_still_raised():
    sink = MemorySink()
    model = Model()

    def explode(*args, **kwargs):
        raise Boom("no luck")

    m = Machine(
        model,
        states=["A", "B"],
        initial="A",
        transitions=[
            {"trigger": "early", "source": "A", "dest": "B", "before": explode},
            {"trigger": "late", "source": "A", "dest": "B", "after": explode},
        ],
    )
    h = attach(m, sink=sink)
    with pytest.raises(Boom, match="no luck"):
        model.early()
    assert model.state == "A"
    with pytest.raises(Boom, match="no luck"):
        model.late()
    assert model.state == "B"
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "early", [], [], False),
        (Kind.EVENT, "late", ["A"], ["B"], False),
    ]
    assert recs[1].error == ("Boom", "no luck") == recs[2].error
    assert replayed(sink, recs) == {"B"}
    h.detach()


def test_internal_and_external_self_transitions():
    sink = MemorySink()
    model = Model()
    m = Machine(
        model,
        states=["A", "B"],
        initial="A",
        transitions=[["tick", "A", None], ["again", "A", "A"]],
    )
    h = attach(m, sink=sink)
    assert model.tick() and model.again()
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "tick", [], [], True),
        (Kind.EVENT, "again", ["A"], ["A"], True),  # exited and entered again
    ]
    clocks = MachineTime.for_schema(sink.machines[h.machine_id].schema)
    for r in recs:
        clocks.apply(r)
    assert clocks.clocks[0] == 3
    h.detach()


def nesting_machine(queued: bool):
    model = Model()
    order: list[str] = []

    def fire_inner():
        order.append("outer.after")
        model.inner()
        order.append("outer.after.done")

    m = Machine(
        model,
        states=["A", "B", "C"],
        initial="A",
        queued=queued,
        transitions=[
            {"trigger": "outer", "source": "A", "dest": "B", "after": fire_inner},
            {"trigger": "inner", "source": "B", "dest": "C"},
        ],
    )
    return m, model, order


@pytest.mark.parametrize("queued", [False, True])
def test_nested_trigger_has_parent_seq(queued):
    sink = MemorySink()
    m, model, _ = nesting_machine(queued)
    h = attach(m, sink=sink)
    assert model.outer() is True
    assert model.state == "C"
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "outer", ["A"], ["B"], True),
        (Kind.EVENT, "inner", ["B"], ["C"], True),
    ]
    assert recs[1].parent_seq is None
    assert recs[2].parent_seq == 1
    assert replayed(sink, recs) == {"C"}
    h.detach()


def test_nested_trigger_before_the_parent_writes_comes_first():
    sink = MemorySink()
    model = Model()
    m = Machine(
        model,
        states=["A", "B", "C"],
        initial="A",
        transitions=[
            {"trigger": "outer", "source": "A", "dest": "C", "before": lambda: model.inner()},
            {"trigger": "inner", "source": "A", "dest": "B"},
        ],
    )
    h = attach(m, sink=sink)
    model.outer()
    assert model.state == "C"
    recs = history(h, sink)
    # inner changed the machine first, so it comes first; outer is its parent.
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "inner", ["A"], ["B"], True),
        (Kind.EVENT, "outer", ["B"], ["C"], True),
    ]
    assert recs[1].parent_seq == 2 and recs[2].parent_seq is None
    assert replayed(sink, recs) == {"C"}
    h.detach()


def test_forced_write_inside_an_event_is_its_child():
    sink = MemorySink()
    model = Model()
    m = Machine(model, states=["A", "B", "C"], initial="A")
    m.add_transition("go", "A", "B", after=lambda: m.set_state("C", model))
    h = attach(m, sink=sink)
    model.go()
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "go", ["A"], ["B"], True),
        (Kind.FORCED, "set_state", ["B"], ["C"], True),
    ]
    assert recs[2].parent_seq == 1
    h.detach()


def test_failed_forced_write_is_recorded_and_raised():
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    with pytest.raises(ValueError):
        m.set_state("nope", m.models[0])
    recs = history(h, sink)
    assert recs[-1].kind == Kind.FORCED and not recs[-1].accepted
    assert recs[-1].error[0] == "ValueError"
    h.detach()


def test_several_models_each_get_a_channel():
    sink = MemorySink()
    a, b = Model(), Model()
    m = flat([a, b])
    h = attach(m, sink=sink)
    assert len(h.machine_ids) == 2 and len(set(h.machine_ids)) == 2
    a.go()
    b.go()
    b.back()
    m.set_state("C")  # model=None: every model is forced
    c = Model()
    m.add_model(c)
    c.go()
    m.remove_model(a)
    assert h.flush(5)
    ra, rb = (history(h, sink, mid) for mid in h.machine_ids)
    assert [r.name for r in ra] == ["init", "go", "set_state"]
    assert [r.name for r in rb] == ["init", "go", "back", "set_state"]
    late = [mid for mid in sink.machines if mid not in h.machine_ids and sink.history(mid)]
    rc = [sink.history(mid) for mid in late if sink.history(mid)[-1].name == "go"]
    assert len(rc) == 1
    assert summary(sink, rc[0]) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "go", ["A"], ["B"], True),
    ]
    assert wait_until(lambda: h.machine_ids[0] in sink.disposed)  # the removed model
    assert h.machine_ids[1] not in sink.disposed
    h.detach()
    late_id = rc[0][0].machine_id
    assert wait_until(lambda: {late_id, h.machine_ids[1]} <= sink.disposed)


def test_machine_as_its_own_model_uses_the_machine_class_name():
    sink = MemorySink()
    m = Machine(states=["A", "B"], initial="A", transitions=[["go", "A", "B"]])
    h = attach(m, sink=sink)
    m.go()
    recs = history(h, sink)
    assert h.machine_id.startswith("Machine-")
    assert [r.name for r in recs] == ["init", "go"]
    h.detach()


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


def test_enum_states():
    sink = MemorySink()
    model = Model()
    m = Machine(model, states=Colour, initial=Colour.RED, transitions=[["go", "RED", "GREEN"]])
    h = attach(m, sink=sink)
    model.go()
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["RED"], True),
        (Kind.EVENT, "go", ["RED"], ["GREEN"], True),
    ]
    h.detach()


def test_may_trigger_records_nothing():
    sink = MemorySink()
    m = flat()
    model = m.models[0]
    h = attach(m, sink=sink)
    assert model.may_go() is True
    assert model.may_back() is False
    model.go()
    recs = history(h, sink)
    assert [r.name for r in recs] == ["init", "go"]
    h.detach()


def test_send_event_true_still_recorded_and_callbacks_get_event_data():
    sink = MemorySink()
    seen = []
    model = Model()
    m = Machine(
        model,
        states=["A", "B"],
        initial="A",
        send_event=True,
        transitions=[{"trigger": "go", "source": "A", "dest": "B", "after": seen.append}],
    )
    h = attach(m, sink=sink)
    model.go(7)
    recs = history(h, sink)
    assert recs[-1].args == {"args": [7]}
    assert seen[0].event.name == "go"
    h.detach()


def test_detach_restores_the_machine_exactly():
    m = flat()
    keys = set(vars(m))
    lists = {
        n: list(getattr(m, n)) for n in ("prepare_event", "before_state_change", "finalize_event")
    }
    sink = MemorySink()
    h = attach(m, sink=sink)
    assert set(vars(m)) > keys
    m.models[0].go()
    assert h.flush(5)
    h.detach()
    assert set(vars(m)) == keys
    for n, before in lists.items():
        assert getattr(m, n) == before
    count = len(sink.history(h.machine_id))
    m.models[0].back()
    h.flush(5)
    assert len(sink.history(h.machine_id)) == count
    assert wait_until(lambda: h.machine_id in sink.disposed)


def test_detach_keeps_user_instance_overrides():
    m = flat()

    def custom_set_state(state, model=None):
        Machine.set_state(m, state, model)

    m.set_state = custom_set_state
    h = attach(m, sink=MemorySink())
    h.detach()
    assert m.set_state is custom_set_state


def test_traced_machine_pickles_and_the_copy_works():
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    m.models[0].go()
    copy = pickle.loads(pickle.dumps(m))
    assert copy.models[0].state == "B"
    assert copy.models[0].back() is True
    assert copy.models[0].state == "A"
    copy.set_state("C", copy.models[0])
    assert copy.models[0].state == "C"
    with pytest.raises(MachineError):
        copy.models[0].back()
    recs = history(h, sink)
    assert [r.name for r in recs] == ["init", "go"]  # the copy is not traced
    h.detach()


def test_attach_twice_traces_into_both():
    s1, s2 = MemorySink(), MemorySink()
    m = flat()
    h1 = attach(m, sink=s1)
    h2 = attach(m, sink=s2)
    m.models[0].go()
    assert [r.name for r in history(h1, s1)] == ["init", "go"]
    assert [r.name for r in history(h2, s2)] == ["init", "go"]
    h2.detach()
    h1.detach()
    assert not any(k in vars(m) for k in ("set_state", "resolve_callable", "add_model"))


class BrokenSink(MemorySink):
    def write(self, machine_id, records):
        raise OSError("disk on fire")


def test_a_failing_sink_never_reaches_the_app():
    sink = BrokenSink()
    m = flat()
    h = attach(m, sink=sink)
    for _ in range(3):
        assert m.models[0].go() and m.models[0].back()
    h.flush(5)
    assert "disk on fire" in (h.stats.last_error or "")
    assert m.models[0].state == "A"
    h.detach()


def test_a_failing_sanitizer_never_reaches_the_app():
    def bad(args, kwargs):
        raise RuntimeError("secret")

    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink, sanitizer=bad)
    assert m.models[0].go(1) is True
    recs = history(h, sink)
    assert recs[-1].args == "<sanitizer failed: RuntimeError>"
    h.detach()


def test_internal_errors_are_swallowed_and_reported(monkeypatch):
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    tracer_obj = adapter._LIVE[max(adapter._LIVE)]

    def broken(*args):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(tracer_obj, "changes", broken)
    assert m.models[0].go() is True  # fails in finalize
    m.set_state("C", m.models[0])  # fails in the set_state wrapper
    assert m.models[0].state == "C"
    assert "adapter bug" in (h.stats.last_error or "")
    monkeypatch.undo()
    m.models[0].to_A()
    # The half-built records were still committed: the channel is not stuck.
    assert [r.name for r in history(h, sink)] == ["init", "go", "set_state", "to_A"]
    h.detach()


def test_locked_machine_from_several_threads():
    sink = MemorySink()
    model = Model()
    m = LockedMachine(
        model,
        states=["A", "B"],
        initial="A",
        transitions=[["flip", "A", "B"], ["flip", "B", "A"]],
    )
    h = attach(m, sink=sink)
    per_thread = 300

    def work():
        for _ in range(per_thread):
            model.flip()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    recs = history(h, sink)
    assert len(recs) == 1 + 4 * per_thread
    assert h.stats.dropped == 0
    assert replayed(sink, recs) == {model.state}
    h.detach()


def test_unknown_state_added_after_attach_is_reported_not_raised():
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    m.add_state("D")
    m.set_state("D", m.models[0])
    assert m.models[0].state == "D"
    h.flush(5)
    assert "'D' is not in the schema" in (h.stats.last_error or "")
    h.detach()


def test_user_on_exception_handles_and_the_error_is_still_recorded():
    sink = MemorySink()
    handled = []
    model = Model()

    def boom():
        raise ValueError("caught by the machine")

    m = Machine(
        model,
        states=["A", "B"],
        initial="A",
        on_exception=lambda *a, **k: handled.append(1),
        transitions=[{"trigger": "go", "source": "A", "dest": "B", "after": boom}],
    )
    h = attach(m, sink=sink)
    assert model.go() is False  # handled: not raised, exactly as untraced
    assert handled == [1]
    recs = history(h, sink)
    assert recs[-1].error == ("ValueError", "caught by the machine")
    assert not recs[-1].accepted
    h.detach()


def test_custom_model_attribute_and_two_machines_on_one_model():
    sink = MemorySink()
    model = Model()
    m1 = Machine(model, states=["A", "B"], initial="A", transitions=[["go", "A", "B"]])
    m2 = Machine(
        model,
        states=["off", "on"],
        initial="off",
        model_attribute="power",
        transitions=[["switch", "off", "on"]],
    )
    h1 = attach(m1, sink=sink)
    h2 = attach(m2, sink=sink)
    model.switch()
    model.go()
    r1, r2 = history(h1, sink), history(h2, sink)
    assert summary(sink, r1)[1:] == [(Kind.EVENT, "go", ["A"], ["B"], True)]
    assert summary(sink, r2)[1:] == [(Kind.EVENT, "switch", ["off"], ["on"], True)]
    h1.detach()
    h2.detach()


def test_sanitizer_redacts_args():
    sink = MemorySink()
    m = flat()
    h = attach(
        m, sink=sink, sanitizer=lambda args, kwargs: {"n": len(args), "keys": sorted(kwargs)}
    )
    m.models[0].go("password", token="x")
    recs = history(h, sink)
    assert recs[-1].args == {"n": 1, "keys": ["token"]}
    h.detach()


def test_trigger_on_another_machine_records_its_source():
    sink = MemorySink()
    worker = Model()
    wm = Machine(
        worker, states=["idle", "busy"], initial="idle", transitions=[["start", "idle", "busy"]]
    )
    boss = Model()
    bm = Machine(boss, states=["A", "B"], initial="A")
    bm.add_transition("delegate", "A", "B", after=lambda: worker.start())
    hw = attach(wm, sink=sink)
    hb = attach(bm, sink=sink)
    boss.delegate()
    rw, rb = history(hw, sink), history(hb, sink)
    assert rw[-1].name == "start" and rw[-1].parent_seq is None
    assert rw[-1].source == (hb.machine_id, rb[-1].seq)
    hw.detach()
    hb.detach()


def test_to_state_inside_an_event_is_a_forced_child():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="A")
    hm.on_enter_B_x(lambda: model.to("B_y"))
    h = attach(hm, sink=sink)
    model.go()
    assert model.state == "B_y"
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [
        (Kind.EVENT, "go", ["A"], ["B", "B_x"], True),
        (Kind.FORCED, "to_state", ["B_x"], ["B_y"], True),
    ]
    assert recs[2].parent_seq == 1
    assert replayed(sink, recs) == {"B", "B_y"}
    h.detach()


class BlockingSink(MemorySink):
    """Holds the sender in write() until released, so the bounded buffer overflows."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, machine_id, records):
        self.release.wait(10)
        super().write(machine_id, records)


def test_dropped_records_become_a_gap_that_replays_to_the_right_state():
    sink = BlockingSink()
    model = Model()
    m = Machine(
        model,
        states=["A", "B", "C"],
        initial="A",
        transitions=[["next", "A", "B"], ["next", "B", "C"], ["next", "C", "A"]],
    )
    h = attach(m, sink=sink, buffer_size=8)
    for _ in range(100):
        model.next()
    sink.release.set()
    recs = history(h, sink)
    assert any(r.kind == Kind.GAP for r in recs)
    assert h.stats.dropped > 0
    assert replayed(sink, recs) == {model.state}
    h.detach()


def test_locked_hierarchical_machine_from_several_threads():
    from transitions.extensions import LockedHierarchicalMachine

    sink = MemorySink()
    model = Model()
    m = LockedHierarchicalMachine(
        model,
        states=HSM_STATES,
        initial="A",
        transitions=[
            ["go", "A", "B"],
            ["step", "B_x", "B_y"],
            ["split", "B", "C"],
            ["home", "C", "A"],
        ],
    )
    h = attach(m, sink=sink)

    def work():
        for _ in range(50):
            for trigger in ("go", "step", "split", "home"):
                try:
                    model.trigger(trigger)
                except MachineError:
                    pass  # another thread moved the model on first

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    recs = history(h, sink)
    assert len(recs) == 1 + 3 * 50 * 4
    assert replayed(sink, recs) == expected_active(sink, h.machine_id, model.state)
    h.detach()


class Top(enum.Enum):
    A = 1
    B = 2


class Sub(enum.Enum):
    x = 1
    y = 2


def test_nested_enum_states():
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(
        model,
        states=[Top.A, {"name": Top.B, "children": Sub, "initial": Sub.x}],
        initial=Top.A,
        transitions=[["go", Top.A, Top.B], ["step", "B_x", "B_y"]],
    )
    h = attach(hm, sink=sink)
    model.go()
    model.step()
    assert model.state is Sub.y
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "go", ["A"], ["B", "B_x"], True),
        (Kind.EVENT, "step", ["B_x"], ["B_y"], True),
    ]
    assert h.stats.last_error is None
    h.detach()


def test_custom_separator():
    from transitions.extensions.nesting import NestedState

    class DotState(NestedState):
        separator = "."

    class DotMachine(HierarchicalMachine):
        state_cls = DotState

    sink = MemorySink()
    model = Model()
    m = DotMachine(
        model,
        states=["A", {"name": "B", "children": ["x", "y"], "initial": "x"}],
        initial="A",
        transitions=[["go", "A", "B"], ["step", "B.x", "B.y"]],
    )
    h = attach(m, sink=sink)
    model.go()
    model.step()
    model.to_B.x()  # the FunctionWrapper path of custom separators
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "go", ["A"], ["B", "B.x"], True),
        (Kind.EVENT, "step", ["B.x"], ["B.y"], True),
        (Kind.EVENT, "to_B.x", ["B.y"], ["B.x"], True),
    ]
    h.detach()


def test_set_state_for_a_tuple_of_models():
    sink = MemorySink()
    a, b = Model(), Model()
    m = flat([a, b])
    h = attach(m, sink=sink)
    m.set_state("B", (a, b))
    assert h.flush(5)
    for mid in h.machine_ids:
        assert summary(sink, sink.history(mid))[-1] == (
            Kind.FORCED,
            "set_state",
            ["A"],
            ["B"],
            True,
        )
    h.detach()


def test_a_machine_dropped_without_detach_is_collected_and_disposed():
    import gc
    import weakref

    sink = MemorySink()
    model = Model()
    m = flat(model)
    h = attach(m, sink=sink)
    model.go()
    assert h.flush(5)
    ref = weakref.ref(m)
    del m, model
    gc.collect()
    assert ref() is None
    assert wait_until(lambda: h.machine_id in sink.disposed)


@pytest.mark.parametrize("queued", [False, True])
def test_trigger_on_another_model_of_the_same_machine_records_its_source(queued):
    sink = MemorySink()
    a, b = Model(), Model()
    m = Machine([a, b], states=["A", "B"], initial="A", queued=queued)
    m.add_transition("go", "A", "B", after=lambda: b.go() if b.state == "A" else None)
    h = attach(m, sink=sink)
    a.go()
    ra, rb = (history(h, sink, mid) for mid in h.machine_ids)
    assert [r.name for r in ra] == [r.name for r in rb] == ["init", "go"]
    assert rb[1].source == (h.machine_ids[0], 1) and rb[1].parent_seq is None
    h.detach()


ACTIONS = ["go", "step", "split", "flip", "home", "to_A", "to_B_y", "to_C_2_b", "force", "to"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(ACTIONS), max_size=25))
def test_random_activity_replays_to_the_model_state(actions):
    """Whatever the user does (valid, invalid, forced), the records replay to the state."""
    sink = MemorySink()
    model = Model()
    hm = HierarchicalMachine(model, states=HSM_STATES, transitions=HSM_TRANSITIONS, initial="A")
    h = attach(hm, sink=sink)
    expected = 1
    try:
        for action in actions:
            expected += 1
            try:
                if action == "force":
                    hm.set_state(["C_1_b", "C_2_a"], model)
                elif action == "to":
                    model.to("B_x")
                else:
                    model.trigger(action)
            except MachineError:
                if action == "to":  # refused from a parallel state before any write
                    expected -= 1
        recs = history(h, sink)
        assert len(recs) == expected
        assert replayed(sink, recs) == expected_active(sink, h.machine_id, model.state)
    finally:
        h.detach()
        h.dispatcher.close(5)


class Fragile:
    """A model whose state cannot be read once ``broken`` is set."""

    broken = False

    @property
    def state(self):
        if self.broken:
            raise RuntimeError("state unavailable")
        return self._state

    @state.setter
    def state(self, value):
        self._state = value


def test_attach_that_fails_leaves_the_machine_untouched():
    model = Fragile()
    m = flat(model)
    keys = set(vars(m))
    lists = [list(m.prepare_event), list(m.before_state_change), list(m.finalize_event)]
    model.broken = True
    with pytest.raises(RuntimeError, match="state unavailable"):
        attach(m, sink=MemorySink())
    assert set(vars(m)) == keys
    assert [list(m.prepare_event), list(m.before_state_change), list(m.finalize_event)] == lists
    model.broken = False
    assert model.go() is True


def test_prepare_list_replaced_after_attach_still_records_events():
    sink = MemorySink()
    m = flat()
    h = attach(m, sink=sink)
    m.prepare_event = []  # the user replaces the list (and our probe with it)
    m.models[0].go()
    recs = history(h, sink)
    assert summary(sink, recs)[1:] == [(Kind.EVENT, "go", ["A"], ["B"], True)]
    h.detach()


class Picky(Model):
    """A model whose state attribute refuses one value: the event's own write fails."""

    def __init__(self) -> None:
        self._state = None

    @property
    def state(self):
        return self._state

    @state.setter
    def state(self, value):
        if value == "C":
            raise RuntimeError("no C here")
        self._state = value


def test_an_event_whose_own_write_fails_records_its_error_and_no_change():
    sink = MemorySink()
    model = Picky()
    m = Machine(
        model,
        states=["A", "B", "C"],
        initial="A",
        transitions=[["go", "A", "B"], ["jump", "A", "C"]],
    )
    h = attach(m, sink=sink)
    with pytest.raises(RuntimeError, match="no C here"):
        model.jump()
    assert model.go() is True
    recs = history(h, sink)
    assert summary(sink, recs) == [
        (Kind.INIT, "init", [], ["A"], True),
        (Kind.EVENT, "jump", [], [], False),
        (Kind.EVENT, "go", ["A"], ["B"], True),
    ]
    assert recs[1].error == ("RuntimeError", "no C here")
    assert replayed(sink, recs) == {"B"}
    h.detach()


async def test_flat_machine_triggered_from_an_async_machine_records_its_source():
    """Sync events open on the thread, async ones in the task: the source crosses over."""
    from transitions.extensions.asyncio import AsyncMachine

    sink = MemorySink()
    inner_model = Model()
    inner = flat(inner_model)

    class Outer(Model):
        def kick(self) -> None:
            inner_model.go()

    outer_model = Outer()
    outer = AsyncMachine(
        outer_model, states=["A", "B"], initial="A", transitions=[["go", "A", "B"]]
    )
    outer.events["go"].add_callback("after", "kick")
    ho, hi = attach(outer, sink=sink, name="outer"), attach(inner, sink=sink, name="inner")
    assert await outer_model.go() is True
    assert inner_model.state == "B"
    ro, ri = history(ho, sink), history(hi, sink)
    assert [r.name for r in ri] == ["init", "go"]
    assert ri[1].source == ("outer", ro[1].seq) and ri[1].parent_seq is None
    ho.detach()
    hi.detach()
