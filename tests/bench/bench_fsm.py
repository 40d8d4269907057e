"""Validated FSM benchmark: transitions per second on SQLite, durable vs fast, untraced vs traced.

Run: ``.venv/bin/python tests/bench/bench_fsm.py [--instances N] [--rounds R]``

Each round inserts N instances and moves each through 3 updates (4 transactions per
instance: row + event each), in one process, alternating the variants so machine noise
spreads over all of them; the table prints the median transitions per second and the
median microseconds per transition. Tracing goes to an in-process MemorySink. Printed,
never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aminspect.machines.fsm import FSMBuilder, SQLiteFSMStore
from tracer import MemorySink


@dataclass
class New:
    name: str


@dataclass
class Step:
    id: int
    n: int


def run(path: str, durability: str, traced: bool, n: int) -> float:
    """Seconds for n instances x 4 transitions."""
    store = SQLiteFSMStore(path, durability=durability)
    kw: dict[str, Any] = {"sink": MemorySink()} if traced else {}
    fsm = (
        FSMBuilder("bench")
        .initial("new", New, next=["a"])
        .add_state("a", Step, next=["b"])
        .add_state("b", Step, next=["done"])
        .add_state("done", Step)
        .build(store, **kw)
    )
    t0 = time.perf_counter()
    for i in range(n):
        id = fsm.insert(New(str(i)))
        fsm.update("new", "a", Step(int(id), 1))
        fsm.update("a", "b", Step(int(id), 2))
        fsm.update("b", "done", Step(int(id), 3))
    elapsed = time.perf_counter() - t0
    fsm.flush(10)
    fsm.close()
    store.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    variants = [(d, t) for d in ("full", "fast") for t in (False, True)]
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    tmp = tempfile.mkdtemp(prefix="bench-fsm-")
    try:
        for r in range(args.rounds):
            for v in variants:
                path = os.path.join(tmp, f"{r}-{v[0]}-{v[1]}.db")
                times[v].append(run(path, v[0], v[1], args.instances))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = args.instances * 4
    print(f"{args.instances} instances x 4 transitions, {args.rounds} rounds (median)")
    print(f"{'durability':<11}{'traced':<8}{'transitions/s':>15}{'us/transition':>15}")
    for (d, t), ts in times.items():
        med = statistics.median(ts)
        print(f"{d:<11}{'yes' if t else 'no':<8}{per / med:>15,.0f}{med / per * 1e6:>15,.0f}")


if __name__ == "__main__":
    main()
