"""HSM tree behaviours HSM-01..HSM-14 and HSM-16 (BEHAVIOURS.md §5.2)."""

from __future__ import annotations

import pytest

from aminspect.machines.hsm import (
    AlreadyExists,
    Collection,
    DeleteOperation,
    DuplicateRegistration,
    HSMError,
    IncompatibleType,
    InitialTransitionMismatch,
    InvalidState,
    InvalidTask,
    InvalidTransition,
    Key,
    MachineDef,
    MsgpackSerializer,
    Node,
    NotFound,
    NotRegistered,
    SerializationError,
    StaleReference,
    StaleState,
    StaleTransition,
    Task,
    TransitionDef,
    TransitionOperation,
    TransitionOutput,
    VersionedTransition,
    compact,
    compare,
    format_path,
    is_prefix,
    parse_path,
    staleness_check,
)
from aminspect.machines.hsm_tree import Tree, access
from tests.machines.hsm_fixtures import (
    DEF1,
    STATES,
    Clock,
    Data,
    Other,
    State,
    k1,
    new_root,
    new_tree,
    registry,
    set_state,
)

VT = VersionedTransition


# -- HSM-01 registry ------------------------------------------------------------------------
def test_hsm_01_duplicate_machine_type():
    reg = registry()
    with pytest.raises(DuplicateRegistration, match="type1"):
        reg.register_machine(MachineDef("type1", MsgpackSerializer(Data), STATES))


def test_hsm_01_duplicate_task_and_event():
    reg = registry()
    reg.register_task("timer")
    with pytest.raises(DuplicateRegistration):
        reg.register_task("timer")
    reg.register_event("started", dict)
    assert reg.event("started") is dict
    with pytest.raises(DuplicateRegistration):
        reg.register_event("started")


def test_hsm_01_not_registered_on_root_add_and_lookup():
    reg = registry()
    with pytest.raises(NotRegistered, match="nope"):
        Node.new_root(reg, "nope", Data())
    root = new_root(reg)
    with pytest.raises(NotRegistered):
        root.add_child(Key("not-found", "x"), Data())
    with pytest.raises(NotRegistered):
        root.child([Key("not-found", "x")])
    with pytest.raises(NotRegistered):
        reg.task("missing")
    with pytest.raises(NotRegistered):
        reg.event("missing")


# -- HSM-02 keys and paths ------------------------------------------------------------------
def test_hsm_02_keys_paths_and_display():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(Key("type2", "l2"), Data())
    assert root.path == ()
    assert format_path(root.path) == "<root>"
    assert l1.path == (k1("l1"),)
    assert l2.path == (k1("l1"), Key("type2", "l2"))
    assert format_path(l2.path) == "type1:l1/type2:l2"
    assert parse_path("type1:l1/type2:l2") == l2.path
    assert parse_path("<root>") == ()
    with pytest.raises(ValueError, match="type:id"):
        parse_path("justtext")


def test_hsm_02_prefix_compares_keys_not_strings():
    node1, node10 = (k1("node1"),), (k1("node10"),)
    assert not is_prefix(node1, node10)
    assert is_prefix(node1, (*node1, k1("child")))
    assert is_prefix((), node10)
    assert not is_prefix((*node1, k1("x")), node1)


# -- HSM-03 add_child -----------------------------------------------------------------------
def test_hsm_03_add_child():
    root = new_root()
    with pytest.raises(SerializationError, match="invalid state type"):
        root.add_child(k1("bad"), "data")
    child = root.add_child(k1("id"), Data())
    assert child.initial_vt == VT(1, 3)
    assert child.last_update_vt == VT(1, 3)
    assert child.transition_count == 0
    assert child.dirty()
    assert root.dirty()
    with pytest.raises(AlreadyExists):
        root.add_child(k1("id"), Data())


# -- HSM-04 child lookups -------------------------------------------------------------------
def test_hsm_04_child_is_cached_and_missing_is_not_found():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(k1("l2"), Data())
    assert root.child([k1("l1"), k1("l2")]) is l2
    assert root.child([k1("l1")]) is l1
    with pytest.raises(NotFound, match="type1:l3"):
        root.child([k1("l3")])


def test_hsm_04_lazy_load_from_persisted_children():
    persisted = {
        "type1": {
            "p1": {"transition_count": 1, "data": DEF1.serializer.serialize(Data(State.STATE2))}
        }
    }
    root = Node.new_root(registry(), "type1", Data(), persisted, Clock())
    child = root.child([k1("p1")])
    assert child.key == k1("p1")
    assert child.transition_count == 1
    assert child.data(Data).state is State.STATE2
    assert root.child([k1("p1")]) is child


# -- HSM-05 typed data ----------------------------------------------------------------------
def test_hsm_05_incompatible_type():
    root = new_root()
    with pytest.raises(IncompatibleType):
        root.data(str)
    assert root.data(Data) == Data(State.STATE1)
    with pytest.raises(IncompatibleType):
        root.transition(lambda d: None, Other)


# -- HSM-06 successful transitions ----------------------------------------------------------
def test_hsm_06_transition_counts_before_user_code():
    root = new_root()
    seen = []

    def fn(d: Data) -> None:
        seen.append((root.transition_count, root.last_update_vt))
        d.state = State.STATE2

    root.transition(fn, Data)
    assert seen == [(1, VT(1, 3))]
    assert root.transition_count == 1
    assert root.last_update_vt == VT(1, 3)
    assert DEF1.serializer.deserialize(root.persisted["data"]) == Data(State.STATE2)
    assert root.dirty()
    ops = root.op_log()
    assert ops == [TransitionOperation((), TransitionOutput(), 1)]


def test_hsm_06_maintains_child_cache_and_log():
    persisted = {
        "type1": {
            "persisted": {
                "transition_count": 1,
                "data": DEF1.serializer.serialize(Data()),
                "children": {
                    "type1": {
                        "persisted-child": {
                            "transition_count": 2,
                            "data": DEF1.serializer.serialize(Data(State.STATE2)),
                        }
                    }
                },
            }
        }
    }
    root = Node.new_root(registry(), "type1", Data(), persisted, Clock())
    child = root.add_child(k1("cached"), Data())
    assert root.dirty()
    root.clear_transaction_state()
    assert not root.dirty()
    assert root.child([k1("cached")]) is child
    child.transition(set_state(State.STATE2), Data)
    assert root.dirty()
    [op] = root.op_log()
    assert isinstance(op, TransitionOperation)
    assert op.transition_count == 1 and op.path == (k1("cached"),)
    deep = root.child([k1("persisted"), k1("persisted-child")])
    deep.transition(set_state(State.STATE3), Data)
    assert deep.dirty() and deep.transition_count == 3
    root.clear_transaction_state()
    assert not root.dirty() and root.op_log() == []


# -- HSM-07 failed transitions --------------------------------------------------------------
def test_hsm_07_failed_transition_changes_nothing():
    root = new_root()

    def boom(d: Data) -> None:
        d.state = State.STATE2  # mutated in place, must not survive
        d.notes.append("x")
        raise RuntimeError("test")

    with pytest.raises(RuntimeError, match="test"):
        root.transition(boom, Data)
    assert root.transition_count == 0
    assert root.last_update_vt == VT()
    assert root.data(Data) == Data(State.STATE1)
    assert not root.dirty()
    assert root.op_log() == []


def test_hsm_07_failed_serialization_changes_nothing():
    root = new_root()

    def poison(d: Data) -> None:
        d.state = State.STATE3
        d.notes.append(object())  # type: ignore[arg-type]

    with pytest.raises(SerializationError):
        root.transition(poison, Data)
    assert root.transition_count == 0
    assert root.data(Data) == Data()
    assert not root.dirty() and root.op_log() == []


def test_hsm_07_wrong_return_type_rolls_back():
    root = new_root()
    with pytest.raises(TypeError, match="TransitionOutput"):
        root.transition(lambda d: 42)  # type: ignore[arg-type, return-value]
    assert root.transition_count == 0 and not root.dirty()


# -- HSM-08 deleted nodes -------------------------------------------------------------------
def test_hsm_08_deleted_nodes_are_unusable():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(k1("l2"), Data())
    l3 = l2.add_child(k1("l3"), Data())
    l1.add_child(k1("l2_sibling"), Data())
    l2.transition(set_state(State.STATE2), Data)
    l1.delete_child(k1("l2"))
    for node in (l2, l3):
        assert node.deleted
        with pytest.raises(InvalidState):
            node.transition(set_state(State.STATE3), Data)
    with pytest.raises(InvalidState):
        l2.delete_child(k1("l3"))
    with pytest.raises(InvalidState):
        l2.add_child(k1("new"), Data())
    with pytest.raises(NotFound):
        l1.delete_child(k1("nonexistent"))
    with pytest.raises(NotFound):
        l1.delete_child(k1("l2"))
    with pytest.raises(InvalidState):
        l2.op_log()
    ops = root.op_log()
    assert len(ops) == 1 and isinstance(ops[0], DeleteOperation)
    assert l1.child_keys() == [k1("l2_sibling")]


# -- HSM-09 dirty and clear -----------------------------------------------------------------
def test_hsm_09_clear_transaction_state():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    root.transition(set_state(State.STATE2), Data)
    root.delete_child(l1.key)
    assert root.op_log()
    assert root.dirty()
    root.clear_transaction_state()
    assert root.op_log() == []
    assert not root.dirty()
    with pytest.raises(InvalidState):
        l1.transition(set_state(State.STATE2), Data)


def test_hsm_09_dirty_reports_any_loaded_node():
    root = new_root()
    a = root.add_child(k1("a"), Data())
    b = a.add_child(k1("b"), Data())
    root.clear_transaction_state()
    assert not root.dirty()
    b.transition(set_state(State.STATE2), Data)
    assert root.dirty() and a.dirty() and b.dirty()


# -- HSM-10 operation log compaction (Temporal's 8 compaction tests) ------------------------
def _paths(ops):
    return [(type(op).__name__, op.path) for op in ops]


def test_hsm_10_compaction_delete_child_keeps_only_the_delete():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(k1("l2"), Data())
    l2.transition(set_state(State.STATE2), Data)
    l1.delete_child(l2.key)
    assert _paths(root.op_log()) == [("DeleteOperation", l2.path)]


def test_hsm_10_compaction_preserves_unrelated_operations():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(k1("l2"), Data())
    sib = l1.add_child(k1("l2_sibling"), Data())
    l2.transition(set_state(State.STATE2), Data)
    sib.transition(set_state(State.STATE2), Data)
    l1.delete_child(l2.key)
    assert _paths(root.op_log()) == [
        ("TransitionOperation", sib.path),
        ("DeleteOperation", l2.path),
    ]


def test_hsm_10_compaction_outputs_with_deletion():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    l2 = l1.add_child(k1("l2"), Data())
    root.transition(set_state(State.STATE2), Data)
    l2.transition(set_state(State.STATE2), Data)
    root.delete_child(l1.key)
    assert _paths(root.op_log()) == [
        ("TransitionOperation", ()),
        ("DeleteOperation", l1.path),
    ]


def test_hsm_10_compaction_delete_deep_hierarchy():
    root = new_root()
    nodes, current = [], root
    for i in range(5):
        current = current.add_child(k1(f"node{i}"), Data())
        nodes.append(current)
    for n in nodes:
        n.transition(set_state(State.STATE2), Data)
    nodes[1].delete_child(k1("node2"))
    ops = root.op_log()
    transitions = [op for op in ops if isinstance(op, TransitionOperation)]
    deletes = [op for op in ops if isinstance(op, DeleteOperation)]
    assert [op.path for op in transitions] == [nodes[0].path, nodes[1].path]
    assert [op.path for op in deletes] == [nodes[2].path]


def test_hsm_10_compaction_mixed_operations_before_deletion():
    root = new_root()
    l1 = root.add_child(k1("l1"), Data())
    for _ in range(3):
        l1.transition(set_state(State.STATE2), Data)
    assert [op.transition_count for op in root.op_log()] == [1, 2, 3]
    root.delete_child(l1.key)
    assert _paths(root.op_log()) == [("DeleteOperation", l1.path)]


def test_hsm_10_compaction_multiple_deleted_paths():
    root = new_root()
    b1 = root.add_child(k1("branch1"), Data())
    b2 = root.add_child(k1("branch2"), Data())
    c1 = b1.add_child(k1("b1child"), Data())
    c2 = b2.add_child(k1("b2child"), Data())
    b1.transition(set_state(State.STATE2), Data)
    b2.transition(set_state(State.STATE2), Data)
    b1.delete_child(c1.key)
    b2.delete_child(c2.key)
    assert _paths(root.op_log()) == [
        ("TransitionOperation", b1.path),
        ("TransitionOperation", b2.path),
        ("DeleteOperation", c1.path),
        ("DeleteOperation", c2.path),
    ]


def test_hsm_10_compaction_path_prefix_edge_cases():
    root = new_root()
    node1 = root.add_child(k1("node1"), Data())
    node10 = root.add_child(k1("node10"), Data())
    node11 = root.add_child(k1("node11"), Data())
    child1 = node1.add_child(k1("child1"), Data())
    deep = child1.add_child(k1("node1"), Data())
    for n in (node1, node10, node11, child1, deep):
        n.transition(set_state(State.STATE2), Data)
    root.delete_child(node1.key)
    assert _paths(root.op_log()) == [
        ("TransitionOperation", node10.path),
        ("TransitionOperation", node11.path),
        ("DeleteOperation", node1.path),
    ]
    root.transition(set_state(State.STATE2), Data)
    assert ("TransitionOperation", ()) in _paths(root.op_log())


def test_hsm_10_compaction_complex_hierarchical_deletions():
    root = new_root()
    parent = root.add_child(k1("parent"), Data())
    c1 = parent.add_child(k1("child1"), Data())
    c2 = parent.add_child(k1("child2"), Data())
    g1 = c1.add_child(k1("grandchild1"), Data())
    g2 = c2.add_child(k1("grandchild2"), Data())
    for n in (parent, c1, c2, g1, g2):
        n.transition(set_state(State.STATE2), Data)
    c1.delete_child(g1.key)  # a delete under a later-deleted ancestor is dropped too
    root.delete_child(parent.key)
    assert _paths(root.op_log()) == [("DeleteOperation", parent.path)]


def test_hsm_10_compaction_order_preservation():
    root = new_root()
    n1 = root.add_child(k1("node1"), Data())
    n2 = root.add_child(k1("node2"), Data())
    n1.transition(lambda d: None, Data)
    n2.transition(lambda d: None, Data)
    root.delete_child(n1.key)
    n2.transition(lambda d: None, Data)
    assert _paths(root.op_log()) == [
        ("TransitionOperation", n2.path),
        ("DeleteOperation", n1.path),
        ("TransitionOperation", n2.path),
    ]


def test_hsm_10_compact_function_and_root_only_log():
    root = new_root()
    child = root.add_child(k1("a"), Data())
    with pytest.raises(InvalidState, match="root"):
        child.op_log()
    assert compact([]) == []


# -- HSM-11 walk and collections ------------------------------------------------------------
def test_hsm_11_walk_visits_every_node_sorted():
    root = new_root()
    l1_1 = root.add_child(k1("l1_1"), Data())
    l1_1.add_child(k1("l2_2"), Data())
    root.add_child(Key("type2", "l1_3"), Data(State.STATE2))
    root.add_child(k1("l1_2"), Data())
    walked = [format_path(n.path) for n in root.walk()]
    assert walked == [
        "<root>",
        "type1:l1_1",
        "type1:l1_1/type1:l2_2",
        "type1:l1_2",
        "type2:l1_3",
    ]


def test_hsm_11_collection():
    root = new_root()
    coll: Collection[Data] = root.collection("type1", Data)
    b = coll.add("b", Data(State.STATE2))
    a = coll.add("a", Data())
    assert coll.node_of("a") is a and coll.node_of("b") is b
    assert coll.size() == 2
    assert coll.list() == [a, b]
    coll.transition("a", set_state(State.STATE2))
    assert coll.data("a") == Data(State.STATE2)
    with pytest.raises(NotFound):
        coll.data("zz")
    assert root.collection("type2").size() == 0 and root.collection("type2").list() == []


# -- HSM-12 transition definitions ----------------------------------------------------------
def _tdef(handler=None):
    return TransitionDef(frozenset({State.STATE1}), State.STATE2, handler, name="advance")


def test_hsm_12_transition_def_refuses_other_sources():
    d = Data(State.STATE3)
    with pytest.raises(InvalidTransition, match="advance"):
        _tdef().apply(d, None)
    assert d.state is State.STATE3


def test_hsm_12_destination_set_before_handler():
    seen = []

    def handler(d: Data, event: str) -> TransitionOutput:
        seen.append((d.state, event))
        return TransitionOutput((Task("t"),))

    d = Data()
    out = _tdef(handler).apply(d, "go")
    assert seen == [(State.STATE2, "go")]
    assert d.state is State.STATE2
    assert out.tasks == (Task("t"),)


def test_hsm_12_handler_failure_restores_state():
    def handler(d: Data, event: str) -> None:
        raise ValueError("nope")

    d = Data()
    with pytest.raises(ValueError):
        _tdef(handler).apply(d, "go")
    assert d.state is State.STATE1


def test_hsm_12_on_node_is_rolled_back_with_the_node():
    root = new_root()

    def handler(d: Data, event: str) -> None:
        d.notes.append(event)
        raise ValueError("nope")

    with pytest.raises(ValueError):
        _tdef(handler).on(root, "go")
    assert root.data(Data) == Data() and root.transition_count == 0
    _tdef().on(root, "go")
    assert root.data(Data).state is State.STATE2 and root.transition_count == 1


# -- HSM-13 sync ----------------------------------------------------------------------------
def _sync_node(state: State, initial: VT, last: VT) -> Node:
    node = new_root(state=state)
    node.persisted["initial_vt"] = initial.to_list()
    node.persisted["last_update_vt"] = last.to_list()
    return node


@pytest.mark.parametrize(
    ("initial", "state", "error"),
    [
        (VT(200, 23), State.STATE1, InitialTransitionMismatch),  # initial version mismatch
        (VT(100, 32), State.STATE1, InitialTransitionMismatch),  # initial count mismatch
        (VT(100, 0), State.STATE1, None),  # transition history disabled on the incoming side
        (VT(100, 23), State.STATE3, None),  # newer state
        (VT(100, 23), State.STATE1, None),  # older state: sync is a forced write
    ],
)
def test_hsm_13_sync(initial, state, error):
    current = _sync_node(State.STATE2, VT(100, 23), VT(100, 25))
    current.add_child(k1("kid"), Data(State.STATE3))
    current.clear_transaction_state()
    incoming = _sync_node(state, initial, VT(200, 50))
    count = current.transition_count
    if error is not None:
        before = dict(current.persisted)
        with pytest.raises(error):
            current.sync(incoming)
        assert current.persisted == before
        return
    current.sync(incoming)
    assert current.persisted["data"] == DEF1.serializer.serialize(Data(state))
    assert current.data(Data).state is state
    assert current.last_update_vt == VT(200, 50)
    assert current.transition_count == count + 1
    assert current.child([k1("kid")]).data(Data).state is State.STATE3  # children untouched
    [op] = current.op_log()
    assert op.path == () and len(op.output.tasks) == 2


def test_hsm_13_import_from_persisted_map():
    current = _sync_node(State.STATE2, VT(100, 23), VT(100, 25))
    incoming = _sync_node(State.STATE3, VT(100, 23), VT(100, 30))
    current.sync(dict(incoming.persisted))
    assert current.data(Data).state is State.STATE3


# -- HSM-14 staleness -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "expected"),
    [
        (VT(2, 2), 0),  # equal
        (VT(2, 1), -1),  # same version, smaller count
        (VT(2, 3), 1),  # same version, larger count
        (VT(1, 10), -1),  # lower version
        (VT(3, 1), 1),  # higher version
    ],
)
def test_hsm_14_compare(a, expected):
    assert compare(a, VT(2, 2)) == expected


HISTORY = [VT(1, 3), VT(3, 6)]


@pytest.mark.parametrize(
    ("ref", "error"),
    [
        (VT(3, 7), StaleState),  # same version as last, count beyond it
        (VT(3, 4), None),  # same version, count in range
        (VT(3, 3), StaleReference),  # same version, count before its range
        (VT(4, 4), StaleState),  # newer version than the state has
        (VT(2, 4), StaleReference),  # version not in the history
        (VT(1, 4), StaleReference),  # older version, count outside its range
        (VT(1, 3), None),  # older version, count in its range
    ],
)
def test_hsm_14_staleness_check(ref, error):
    if error is None:
        staleness_check(HISTORY, ref)
    else:
        with pytest.raises(error):
            staleness_check(HISTORY, ref)


def test_hsm_14_staleness_check_empty_history():
    with pytest.raises(HSMError, match="empty"):
        staleness_check([], VT(1, 1))


def test_hsm_14_ref_count_mismatch_is_stale_reference():
    tree = new_tree()
    node = tree.root.add_child(k1("a"), Data())
    tree.commit()
    ref = tree.ref(node)
    assert tree.validate_ref(ref) is node
    node.transition(set_state(State.STATE2), Data)
    tree.commit()
    with pytest.raises(StaleReference, match="transition count"):
        tree.validate_ref(ref)


def test_hsm_14_state_mismatch_is_stale_and_invalid_transition():
    tree = new_tree()
    node = tree.root.add_child(k1("a"), Data())
    tree.commit()
    ref = tree.ref(node, state="STATE2")
    with pytest.raises(StaleTransition) as info:
        tree.validate_ref(ref)
    assert isinstance(info.value, StaleReference)
    assert isinstance(info.value, InvalidTransition)


def test_hsm_14_deleted_or_recreated_node_is_stale_reference():
    tree = new_tree()
    node = tree.root.add_child(k1("a"), Data())
    tree.commit()
    ref = tree.ref(node)
    tree.root.delete_child(k1("a"))
    tree.commit()
    with pytest.raises(StaleReference, match="deleted"):
        tree.validate_ref(ref)
    tree.root.add_child(k1("a"), Data())
    tree.commit()
    with pytest.raises(StaleReference, match="re-created"):
        tree.validate_ref(ref)


def test_hsm_14_stale_state_reloads_exactly_once():
    newer = new_tree()
    node = newer.root.add_child(k1("a"), Data())
    newer.commit()
    old_blob = newer.to_bytes()
    newer.root.transition(set_state(State.STATE2), Data)
    newer.commit()
    ref = newer.ref(node)  # made against count 2; the old copy only reached 1
    reg = registry()
    loads = []

    def load() -> Tree:
        loads.append(1)
        return Tree.from_bytes(reg, old_blob if len(loads) == 1 else newer.to_bytes())

    got = access(load, ref, lambda n: n.path)
    assert got == (k1("a"),)
    assert len(loads) == 2

    loads.clear()

    def always_old() -> Tree:
        loads.append(1)
        return Tree.from_bytes(reg, old_blob)

    with pytest.raises(StaleState):
        access(always_old, ref, lambda n: n)
    assert len(loads) == 2  # one reload, then give up


# -- HSM-16 outputs and tasks ---------------------------------------------------------------
def test_hsm_16_deadline_and_destination_are_exclusive():
    with pytest.raises(InvalidTask):
        Task("bad", deadline=1.0, destination="x")


def test_hsm_16_ops_record_tasks_with_count_and_commit_collects_them():
    tree = new_tree()
    a = tree.root.add_child(k1("a"), Data())

    def schedule(d: Data) -> TransitionOutput:
        d.state = State.STATE2
        return TransitionOutput(
            (
                Task("timeout", deadline=100.0),
                Task("timeout", deadline=100.0),  # same type, node, deadline: one timer
                Task("call", destination="svc"),
                Task("gone", validate=lambda n: False),  # invalid at generation: dropped
            )
        )

    a.transition(schedule, Data)
    [op] = tree.root.op_log()
    assert op.transition_count == 1 and len(op.output.tasks) == 4
    commit = tree.commit()
    assert commit.vt == VT(0, 1)
    assert [r.task.type for r in commit.tasks] == ["timeout", "timeout", "call"]
    assert [r.task.type for r in commit.dropped] == ["gone"]
    assert commit.tasks[0].ref.transition_count == 1 and commit.tasks[0].ref.tree_vt == VT(0, 1)
    assert tree.timers == {100.0: {("timeout", a.path): Task("timeout", deadline=100.0)}}
    assert [r.task.destination for r in tree.outbound] == ["svc"]
    assert not tree.root.dirty() and tree.root.op_log() == []


def test_hsm_16_timers_grouped_by_deadline():
    tree = new_tree()
    a = tree.root.add_child(k1("a"), Data())
    b = tree.root.add_child(k1("b"), Data())
    a.transition(lambda d: TransitionOutput((Task("t", deadline=5.0),)), Data)
    b.transition(lambda d: TransitionOutput((Task("t", deadline=5.0),)), Data)
    b.transition(lambda d: TransitionOutput((Task("u", deadline=9.0),)), Data)
    tree.commit()
    assert sorted(tree.timers) == [5.0, 9.0]
    assert set(tree.timers[5.0]) == {("t", a.path), ("t", b.path)}


def test_hsm_16_delete_drops_timers_and_yields_tombstones():
    tree = new_tree()
    a = tree.root.add_child(k1("a"), Data())
    aa = a.add_child(k1("aa"), Data())
    keep = tree.root.add_child(k1("a10"), Data())
    for n in (a, aa, keep):
        n.transition(lambda d: TransitionOutput((Task("t", deadline=5.0),)), Data)
    aa.transition(lambda d: TransitionOutput((Task("call", destination="svc"),)), Data)
    tree.commit()
    assert len(tree.timers[5.0]) == 3 and len(tree.outbound) == 1
    tree.root.delete_child(a.key)
    commit = tree.commit()
    assert set(tree.timers[5.0]) == {("t", keep.path)}
    assert tree.outbound == []
    assert [(t.path, t.vt) for t in commit.tombstones] == [(a.path, VT(0, 2))]
    assert commit.tombstones[0].vt == commit.vt


def test_hsm_16_commit_of_nothing_changes_nothing():
    tree = new_tree()
    assert tree.commit().vt == VT(0, 0)
    assert tree.transition_count == 0 and tree.history == []


def test_hsm_14_history_tracks_failover_versions():
    tree = new_tree()
    tree.root.transition(set_state(State.STATE2), Data)
    tree.commit()
    tree.root.transition(set_state(State.STATE3), Data)
    tree.commit()
    tree.failover(5)
    tree.root.transition(set_state(State.STATE1), Data)
    tree.commit()
    assert tree.history == [VT(0, 2), VT(5, 3)]
    assert tree.root.last_update_vt == VT(5, 3)
    with pytest.raises(ValueError, match="grow"):
        tree.failover(5)


def test_hsm_06_serializer_for_a_local_dataclass():
    from dataclasses import dataclass

    @dataclass
    class Local:
        n: int = 0

    reg = registry()
    reg.register_machine(MachineDef("local", MsgpackSerializer(Local)))
    root = Node.new_root(reg, "local", Local(1))
    root.transition(lambda d: setattr(d, "n", 2), Local)
    back = Node.from_persisted(reg, "local", dict(root.persisted))
    assert back.data(Local) == Local(2)
    with pytest.raises(TypeError, match="not a dataclass"):
        MsgpackSerializer(int)
    root.persisted["data"] = b"\xc1"
    back = Node.from_persisted(reg, "local", dict(root.persisted))
    with pytest.raises(SerializationError, match="cannot deserialize"):
        back.data()
