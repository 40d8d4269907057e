"""HSM tree costs: transitions (untraced vs traced, alternated), save and lazy load of a tree.

Run: ``.venv/bin/python tests/bench/bench_hsm.py`` (prints a table of medians).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aminspect.machines.hsm import Key, TransitionOutput
from aminspect.machines.hsm_store import SQLiteTreeStore, load_tree, save_tree
from aminspect.machines.hsm_trace import trace_tree
from tests.machines.hsm_fixtures import Data, State, new_tree, registry
from tracer.sinks import MemorySink

N = 2000


def flip(d: Data) -> TransitionOutput:
    d.state = State.STATE2 if d.state is State.STATE1 else State.STATE1
    return TransitionOutput()


def transitions(traced: bool) -> float:
    tree = new_tree()
    node = tree.root.add_child(Key("type1", "a"), Data())
    tracer = trace_tree(tree, sink=MemorySink()) if traced else None
    t0 = time.perf_counter()
    for _ in range(N):
        node.transition(flip, Data)
    dt = (time.perf_counter() - t0) / N * 1e6
    if tracer is not None:
        tracer.flush(5)
        tracer.detach()
    return dt


def wide_tree(n: int):  # type: ignore[no-untyped-def]
    tree = new_tree("big")
    for i in range(n // 10):
        parent = tree.root.add_child(Key("type1", f"p{i}"), Data())
        for j in range(9):
            parent.add_child(Key("type2", f"c{j}"), Data(State.STATE2, ["x"]))
    return tree


def main() -> None:
    rows = []
    untraced, traced = [], []
    for _ in range(5):  # alternate so machine noise hits both alike
        untraced.append(transitions(False))
        traced.append(transitions(True))
    rows.append(("transition, untraced (us)", statistics.median(untraced)))
    rows.append(("transition, traced (us)", statistics.median(traced)))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteTreeStore(str(Path(tmp) / "b.db"))
        for n in (100, 1000, 10000):
            tree = wide_tree(n)
            saves, loads, deep = [], [], []
            for _ in range(5):
                tree.root.transition(flip, Data)
                t0 = time.perf_counter()
                save_tree(store, tree)
                saves.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                back = load_tree(store, registry(), "big")
                loads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                back.node("type1:p3/type2:c4").data()
                deep.append(time.perf_counter() - t0)
                tree.stored_count = back.transition_count
            size = len(tree.to_bytes())
            rows.append(
                (
                    f"save {n} nodes, sqlite (ms) [{size // 1024} KiB]",
                    statistics.median(saves) * 1e3,
                )
            )
            rows.append((f"load {n} nodes, lazy (ms)", statistics.median(loads) * 1e3))
            rows.append((f"first deep read after load (us), {n}", statistics.median(deep) * 1e6))
            store.delete("big")
        store.close()
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
