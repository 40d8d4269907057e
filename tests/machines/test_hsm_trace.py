"""Tracing an HSM tree: nodes are nested machines with one record per transition."""

from __future__ import annotations

import pytest

from aminspect.machines.hsm import Key, TransitionOutput
from aminspect.machines.hsm_trace import KIND, trace_tree
from tests.machines.hsm_fixtures import Data, State, k1, new_tree, set_state
from tracer.records import Kind
from tracer.sinks import MemorySink


def _tree():
    tree = new_tree("wf")
    a = tree.root.add_child(k1("a"), Data())
    a.add_child(Key("type2", "b"), Data(State.STATE2))
    tree.root.add_child(k1("c"), Data())
    return tree


def test_hsm_trace_machines_form_the_tree():
    sink = MemorySink()
    tree = _tree()
    tracer = trace_tree(tree, sink=sink, parent="app")
    assert tracer.flush(5)
    machines = sink.machines
    assert machines["wf"].parent_id == "app"
    assert machines["wf/type1:a"].parent_id == "wf"
    assert machines["wf/type1:a/type2:b"].parent_id == "wf/type1:a"
    assert machines["wf/type1:c"].parent_id == "wf"
    assert {m.kind for m in machines.values()} == {KIND}
    assert machines["wf/type1:a/type2:b"].tags["hsm.path"] == "type1:a/type2:b"
    # the init record carries the node's state
    init = sink.history("wf/type1:a/type2:b")[0]
    schema = machines["wf/type1:a/type2:b"].schema
    assert init.kind == Kind.INIT and [schema.names[i] for i in init.entered] == ["STATE2"]
    tracer.detach()


def test_hsm_trace_record_counts_equal_transition_counts():
    sink = MemorySink()
    tree = _tree()
    tracer = trace_tree(tree, sink=sink)
    a = tree.node("type1:a")
    b = tree.node("type1:a/type2:b")
    a.transition(set_state(State.STATE2), Data)
    a.transition(set_state(State.STATE3), Data)
    b.transition(lambda d: None, Data, name="touch")
    new = tree.root.add_child(k1("d"), Data())  # traced from its creation
    new.transition(set_state(State.STATE2), Data)
    with pytest.raises(RuntimeError):  # a failed transition records nothing
        a.transition(lambda d: (_ for _ in ()).throw(RuntimeError("x")), Data)
    assert tracer.flush(5)
    for node in tree.root.walk():
        records = sink.history(tracer.machine_id(node))
        # one init record, then one record per transition
        assert len(records) - 1 == node.transition_count, node
    names = [r.name for r in sink.history("wf/type1:a")]
    assert names == ["init", "to_state2", "to_state3"]
    schema = sink.machines["wf/type1:a"].schema
    last = sink.history("wf/type1:a")[-1]
    assert [schema.names[i] for i in last.exited] == ["STATE2"]
    assert [schema.names[i] for i in last.entered] == ["STATE3"]
    assert last.args["transition_count"] == 2
    touch = sink.history("wf/type1:a/type2:b")[-1]
    assert touch.name == "touch" and touch.exited == () and touch.entered == ()
    tree.node("type1:c").transition(lambda d: None, Data)  # a lambda is named "transition"
    assert tracer.flush(5)
    assert sink.history("wf/type1:c")[-1].name == "transition"
    assert sink.machines["wf/type1:d"].parent_id == "wf"
    tracer.detach()


def test_hsm_trace_delete_records_and_disposes_the_subtree():
    sink = MemorySink()
    tree = _tree()
    tracer = trace_tree(tree, sink=sink)
    tree.root.delete_child(k1("a"))
    assert tracer.flush(5)
    for mid in ("wf/type1:a", "wf/type1:a/type2:b"):
        last = sink.history(mid)[-1]
        assert last.name == "deleted" and last.entered == ()
        assert mid in sink.disposed
    assert "wf" not in sink.disposed and "wf/type1:c" not in sink.disposed
    tracer.detach()


def test_hsm_trace_never_raises_into_the_app():
    class Broken(MemorySink):
        def write(self, machine_id, records):
            raise OSError("disk full")

    sink = Broken()
    tree = _tree()
    tracer = trace_tree(tree, sink=sink)
    tree.root.transition(set_state(State.STATE2), Data)
    tracer.flush(5)
    assert "disk full" in (tracer.stats.last_error or "")
    # an observer that raises is ignored too
    tracer.on_transition = None  # type: ignore[method-assign, assignment]
    out = tree.root.transition(lambda d: TransitionOutput(), Data)
    assert out == TransitionOutput()
    tracer.detach()


def test_hsm_trace_detach_and_bad_args():
    tree = _tree()
    with pytest.raises(ValueError, match="not both"):
        trace_tree(tree, sink=MemorySink(), url="ws://127.0.0.1:1")
    sink = MemorySink()
    with trace_tree(tree, sink=sink) as tracer:
        ids = tracer.machine_ids
    tracer.flush(5)
    tree.root.transition(set_state(State.STATE3), Data)  # after detach: nothing recorded
    assert tracer.flush(5)
    assert len(sink.history("wf")) == 1
    assert set(ids) <= sink.disposed


def test_hsm_demo_runs_and_traces_trees():
    import threading

    from aminspect.machines.hsm import Key
    from aminspect.machines.hsm_demo import Activity, Job, demo_registry, run_demo
    from aminspect.machines.hsm_store import MemoryTreeStore, load_tree

    sink, store = MemorySink(), MemoryTreeStore()
    run_demo(sink, threading.Event(), pace=0, jobs=3, store=store)
    assert store.ids() == ["job-1", "job-2", "job-3"]
    for tid in store.ids():
        tree = load_tree(store, demo_registry(), tid)
        assert tree.root.data(Job).state.name in ("COMPLETED", "FAILED")
        assert not tree.root.collection("timer").list()  # the deadline timer was deleted
        acts = tree.root.collection("activity", Activity).list()
        assert acts and all(a.data(Activity).state.name in ("COMPLETED", "FAILED") for a in acts)
        for node in tree.root.walk():
            mid = tid if not node.path else f"{tid}/" + "/".join(str(k) for k in node.path)
            assert len(sink.history(mid)) - 1 == node.transition_count
        assert sink.machines[f"{tid}/activity:a1"].parent_id == tid
        assert f"{tid}/timer:deadline" in sink.machines
        assert tree.root.child([Key("activity", "a1")]).transition_count >= 2
    run_demo(MemorySink(), threading.Event(), pace=0, jobs=1, store=store)  # same store again
    assert store.ids()[-1] == "job-4"
    stop = threading.Event()
    stop.set()
    run_demo(sink, stop, pace=0)  # a set event stops at once


def test_hsm_trace_loaded_tree_continues_with_restore_records():
    from aminspect.machines.hsm_store import MemoryTreeStore, load_tree, save_tree
    from tests.machines.hsm_fixtures import registry

    sink, store = MemorySink(), MemoryTreeStore()
    tree = _tree()
    first = trace_tree(tree, sink=sink)
    tree.node("type1:a").transition(set_state(State.STATE3), Data)
    save_tree(store, tree)
    first.flush(5)
    first.detach()
    back = load_tree(store, registry(), "wf")
    second = trace_tree(back, sink=sink)
    back.node("type1:a").transition(set_state(State.STATE1), Data)
    back.root.add_child(k1("new"), Data())
    assert second.flush(5)
    kinds = [r.kind for r in sink.history("wf/type1:a")]
    assert kinds == [Kind.INIT, Kind.EVENT, Kind.RESTORE, Kind.EVENT]
    restore = sink.history("wf/type1:a")[2]
    schema = sink.machines["wf/type1:a"].schema
    assert [schema.names[i] for i in restore.entered] == ["STATE3"]
    assert restore.args["transition_count"] == 1
    assert [r.kind for r in sink.history("wf/type1:new")] == [Kind.INIT]
    second.detach()


def test_the_inspector_shows_each_node_with_its_transition_count():
    """Issue 8: in the machine tree, each HSM node appears under its parent with its own
    transition count (the latest record's), also after it was deleted."""
    import backends
    from aminspect.session import HSM_KIND, Session

    assert HSM_KIND == KIND
    history = backends.open("memory://")
    tree = _tree()
    tracer = trace_tree(tree, sink=history)
    a = tree.node("type1:a")
    a.transition(set_state(State.STATE2), Data)
    a.transition(set_state(State.STATE3), Data)
    c = tree.node("type1:c")
    c.transition(set_state(State.STATE2), Data)
    tree.root.delete_child(k1("c"))
    assert tracer.flush(5)
    session = Session(history)
    session.apply_machines(session.fetch_machines())
    rows = {r.machine_id: r for r in session.tree_rows()}
    assert rows["wf/type1:a"].transitions == 2 and rows["wf/type1:a"].parent_id == "wf"
    assert rows["wf/type1:a/type2:b"].transitions == 0
    assert rows["wf/type1:a/type2:b"].depth == rows["wf/type1:a"].depth + 1
    assert rows["wf/type1:c"].transitions == 1  # its last record is "deleted"
    a.transition(set_state(State.STATE1), Data)
    assert tracer.flush(5)
    session.apply_machines(session.fetch_machines())
    assert {r.machine_id: r for r in session.tree_rows()}["wf/type1:a"].transitions == 3
    tracer.detach()
