"""Property tests for HSM trees: failures change nothing, round trips keep everything."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aminspect.machines.hsm import DeleteOperation, Key, TransitionOperation, is_prefix
from aminspect.machines.hsm_tree import Tree
from tests.machines.hsm_fixtures import Data, State, new_tree, registry

OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "ok", "fail", "delete", "commit"]),
        st.integers(0, 30),
        st.sampled_from(list(State)),
    ),
    max_size=40,
)


def _boom(d: Data) -> None:
    d.state = State.STATE3
    d.notes.append("half-done")
    raise RuntimeError("fails")


def _run(ops):  # type: ignore[no-untyped-def]
    tree = new_tree()
    counter = 0
    for kind, pick, state in ops:
        nodes = list(tree.root.walk())
        node = nodes[pick % len(nodes)]
        if kind == "add":
            counter += 1
            node.add_child(Key("type1" if counter % 2 else "type2", f"n{counter}"), Data(state))
        elif kind == "ok":
            node.transition(lambda d, s=state: setattr(d, "state", s), Data)
        elif kind == "fail":
            before = (tree.to_bytes(), node.transition_count, node.dirty(), tree.root.op_log())
            try:
                node.transition(_boom, Data)
            except RuntimeError:
                pass
            after = (tree.to_bytes(), node.transition_count, node.dirty(), tree.root.op_log())
            assert after == before
            # the next read is the pre-transition data, re-read from the stored bytes
            assert node.data(Data) == node.definition.serializer.deserialize(node.persisted["data"])
            assert "half-done" not in node.data(Data).notes
        elif kind == "delete" and node.parent is not None:
            node.parent.delete_child(node.key)
        elif kind == "commit":
            tree.commit()
    return tree


@settings(max_examples=60)
@given(OPS)
def test_hsm_07_random_failures_change_nothing_and_round_trip(ops):
    tree = _run(ops)
    tree.commit()
    back = Tree.from_bytes(registry(), tree.to_bytes())
    assert back.to_dict() == tree.to_dict()
    assert [n.path for n in back.root.walk()] == [n.path for n in tree.root.walk()]
    for a, b in zip(back.root.walk(), tree.root.walk(), strict=True):
        assert a.data(Data) == b.data(Data)
        assert a.transition_count == b.transition_count


@settings(max_examples=60)
@given(OPS)
def test_hsm_10_compaction_matches_oracle(ops):
    tree = new_tree()
    counter = 0
    for kind, pick, state in ops:
        nodes = list(tree.root.walk())
        node = nodes[pick % len(nodes)]
        if kind == "add":
            counter += 1
            node.add_child(Key("type1", f"n{counter}"), Data(state))
        elif kind in ("ok", "fail"):
            node.transition(lambda d, s=state: setattr(d, "state", s), Data)
        elif kind == "delete" and node.parent is not None:
            node.parent.delete_child(node.key)
    raw = tree.root._oplog
    deleted = [op.path for op in raw if isinstance(op, DeleteOperation)]
    expected = []
    for op in raw:
        under = [d for d in deleted if is_prefix(d, op.path)]
        top_delete = isinstance(op, DeleteOperation) and min(under, key=len, default=()) == op.path
        if not under or top_delete:
            expected.append(op)
    assert tree.root.op_log() == expected
    for op in tree.root.op_log():  # what survives is live or the top-most delete
        if isinstance(op, TransitionOperation):
            assert tree.root.child(op.path).transition_count >= op.transition_count
