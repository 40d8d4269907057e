"""HSM-15: persisting whole trees and rehydrating them lazily, in memory and in SQLite."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import msgpack
import pytest

from aminspect.machines.hsm import (
    Key,
    Node,
    NotFound,
    NotRegistered,
    SerializationError,
    StaleState,
    Task,
    TransitionOutput,
    VersionedTransition,
)
from aminspect.machines.hsm_store import (
    MemoryTreeStore,
    SQLiteTreeStore,
    StoreError,
    load_tree,
    save_tree,
)
from aminspect.machines.hsm_tree import Tree
from tests.machines.hsm_fixtures import DEF1, Data, State, k1, new_tree, registry, set_state

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryTreeStore() if request.param == "memory" else SQLiteTreeStore(str(tmp_path / "t.db"))
    yield s
    s.close()


def _deep_tree() -> Tree:
    tree = new_tree("job-1")
    a = tree.root.add_child(k1("a"), Data(State.STATE2, ["x"]))
    b = a.add_child(Key("type2", "b"), Data())
    c = b.add_child(k1("c"), Data())
    c.transition(set_state(State.STATE3), Data)
    c.transition(lambda d: TransitionOutput((Task("t", deadline=7.5, data={"n": 1}),)), Data)
    c.transition(lambda d: TransitionOutput((Task("call", destination="svc", data=[1]),)), Data)
    tree.root.add_child(k1("z"), Data())
    return tree


def test_hsm_15_round_trip_deep_path(store):
    tree = _deep_tree()
    commit = save_tree(store, tree)
    assert commit is not None and commit.vt == VersionedTransition(0, 1)
    back = load_tree(store, registry(), "job-1")
    assert back.transition_count == 1 and back.history == [VersionedTransition(0, 1)]
    c = back.node("type1:a/type2:b/type1:c")
    assert c.data(Data) == Data(State.STATE3)
    assert c.transition_count == 3
    assert c.initial_vt == VersionedTransition(0, 1)
    assert c.last_update_vt == VersionedTransition(0, 1)
    assert back.node([k1("a")]).data(Data) == Data(State.STATE2, ["x"])
    assert [n.path for n in back.root.walk()] == [n.path for n in tree.root.walk()]
    assert back.timers == {7.5: {("t", c.path): Task("t", deadline=7.5, data={"n": 1})}}
    [out] = back.outbound
    assert out.task == Task("call", destination="svc", data=[1]) and out.path == c.path
    assert back.validate_ref(out.ref) is c  # the persisted reference is still current
    assert back.to_dict() == tree.to_dict()


def test_hsm_15_persisted_form_is_nested_maps():
    tree = _deep_tree()
    tree.commit()
    doc = msgpack.unpackb(tree.to_bytes(), raw=False)
    root = doc["root"]
    a = root["children"]["type1"]["a"]
    assert set(a) == {"data", "children", "initial_vt", "last_update_vt", "transition_count"}
    c = a["children"]["type2"]["b"]["children"]["type1"]["c"]
    assert c["transition_count"] == 3
    assert DEF1.serializer.deserialize(c["data"]) == Data(State.STATE3)


def test_hsm_15_rehydration_is_lazy():
    tree = _deep_tree()
    tree.commit()
    back = Tree.from_bytes(registry(), tree.to_bytes())
    assert back.root._children == {}  # nothing loaded yet
    node = back.node([k1("a")])
    assert not node._loaded  # data decoded on first access only
    node.data()
    assert node._loaded
    assert list(back.root._children) == [k1("a")]


def test_hsm_15_missing_or_empty_children_tolerated():
    leaf = {"data": DEF1.serializer.serialize(Data()), "transition_count": 0}  # no children key
    empty = {"data": DEF1.serializer.serialize(Data()), "children": {}}
    root = Node.new_root(registry(), "type1", Data(), {"type1": {"leaf": leaf, "empty": empty}})
    assert root.child([k1("leaf")]).children() == []
    assert root.child([k1("empty")]).children() == []
    root.child([k1("leaf")]).add_child(k1("new"), Data())
    assert "type1" in leaf["children"]


def test_hsm_15_save_again_after_changes(store):
    tree = _deep_tree()
    save_tree(store, tree)
    assert save_tree(store, tree) is None  # nothing changed: nothing committed
    tree.node("type1:z").transition(set_state(State.STATE2), Data)
    save_tree(store, tree)
    back = load_tree(store, registry(), "job-1")
    assert back.transition_count == 2
    assert back.node("type1:z").data(Data).state is State.STATE2
    assert store.ids() == ["job-1"]


def test_hsm_15_concurrent_writer_is_stale_state(store):
    tree = _deep_tree()
    save_tree(store, tree)
    other = load_tree(store, registry(), "job-1")
    other.root.transition(set_state(State.STATE2), Data)
    save_tree(store, other)
    tree.root.transition(set_state(State.STATE3), Data)
    with pytest.raises(StaleState, match="changed in the store"):
        save_tree(store, tree)
    assert load_tree(store, registry(), "job-1").root.data(Data).state is State.STATE2
    fresh = new_tree("job-1")  # a new tree under an existing id is a conflict too
    with pytest.raises(StaleState):
        save_tree(store, fresh)


def test_hsm_15_bad_input(store, tmp_path):
    with pytest.raises(NotFound, match="nope"):
        load_tree(store, registry(), "nope")
    with pytest.raises(SerializationError, match="not an HSM tree"):
        Tree.from_bytes(registry(), b"\xc1garbage")
    with pytest.raises(SerializationError, match="not an HSM tree"):
        Tree.from_bytes(registry(), msgpack.packb([1, 2]))
    doc = new_tree().to_dict()
    doc["format"] = 99
    with pytest.raises(SerializationError, match="format 99"):
        Tree.from_bytes(registry(), msgpack.packb(doc))
    doc["format"] = 1
    doc["root_type"] = "ghost"
    with pytest.raises(NotRegistered):
        Tree.from_bytes(registry(), msgpack.packb(doc))
    assert store.delete("nope") is False


def test_hsm_15_sqlite_bad_file(tmp_path):
    bad = tmp_path / "not.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="cannot open HSM store"):
        SQLiteTreeStore(str(bad))
    with pytest.raises(StoreError):
        SQLiteTreeStore(str(tmp_path / "missing-dir" / "x.db"))


def test_hsm_15_sqlite_write_is_one_transaction(tmp_path):
    path = str(tmp_path / "t.db")
    store = SQLiteTreeStore(path)
    tree = _deep_tree()
    save_tree(store, tree)
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, transition_count FROM hsm_trees").fetchall()
    finally:
        db.close()
    assert rows == [("job-1", 1)]
    store.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from aminspect.machines.hsm_store import SQLiteTreeStore, save_tree
    from tests.machines.hsm_fixtures import Data, State, k1, new_tree
    store = SQLiteTreeStore(sys.argv[1])
    tree = new_tree("crash")
    n = 0
    while True:
        n += 1
        tree.root.add_child(k1(f"n{n}"), Data(State.STATE2, ["x" * 2000]))
        save_tree(store, tree)
        print(n, flush=True)
    """
)


def test_hsm_15_sqlite_survives_a_killed_writer(tmp_path):
    path = str(tmp_path / "crash.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, path], stdout=subprocess.PIPE, text=True, cwd=str(ROOT)
    )
    try:
        assert proc.stdout is not None
        for _ in range(30):  # let it commit a few trees, then kill it mid-stream
            proc.stdout.readline()
        proc.kill()
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    store = SQLiteTreeStore(path)
    tree = load_tree(store, registry(), "crash")
    n = tree.transition_count
    assert n >= 30
    assert len(tree.root.children()) == n  # every committed save is whole
    assert all(c.data(Data).state is State.STATE2 for c in tree.root.children())
    store.close()
