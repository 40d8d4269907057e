"""Tracer overhead: untraced vs traced into the in-process sink, alternating runs.

Run: ``.venv/bin/python tests/bench/bench_overhead.py [--events N] [--rounds R]``

Prints ops/s (median of the rounds) and the traced/untraced ratio per machine kind, timed
on the wall clock (the target) and as process CPU time of the loop plus the flush (both
threads: what tracing costs in total, and much less sensitive to other load on a shared
machine). Target (SPEC §10): a flat transitions Machine keeps at least 80% of its
untraced speed.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from tracer import MemorySink, attach


class Model:
    pass


def flat_transitions() -> tuple[Any, Callable[[], None]]:
    from transitions import Machine

    model = Model()
    machine = Machine(
        model,
        states=["idle", "busy"],
        transitions=[["start", "idle", "busy"], ["stop", "busy", "idle"]],
        initial="idle",
    )

    def step() -> None:
        model.start()  # type: ignore[attr-defined]
        model.stop()  # type: ignore[attr-defined]

    return machine, step


def nested_transitions() -> tuple[Any, Callable[[], None]]:
    from transitions.extensions import HierarchicalMachine

    model = Model()
    machine = HierarchicalMachine(
        model,
        states=["idle", {"name": "busy", "children": ["fetch", "parse"], "initial": "fetch"}],
        transitions=[
            ["start", "idle", "busy"],
            ["next", "busy_fetch", "busy_parse"],
            ["stop", "busy", "idle"],
        ],
        initial="idle",
    )

    def step() -> None:
        model.start()  # type: ignore[attr-defined]
        model.next()  # type: ignore[attr-defined]
        model.stop()  # type: ignore[attr-defined]

    return machine, step


def statemachine() -> tuple[Any, Callable[[], None]]:
    from statemachine import State, StateMachine

    class Toggle(StateMachine):
        idle = State(initial=True)
        busy = State()
        start = idle.to(busy)
        stop = busy.to(idle)

    sm = Toggle()

    def step() -> None:
        sm.start()
        sm.stop()

    return sm, step


KINDS: dict[str, tuple[Callable[[], tuple[Any, Callable[[], None]]], int]] = {
    # name -> (factory, events per step)
    "transitions Machine (flat)": (flat_transitions, 2),
    "transitions HierarchicalMachine": (nested_transitions, 3),
    "python-statemachine StateMachine": (statemachine, 2),
}

_SHORT = {
    "transitions Machine (flat)": "flat",
    "transitions HierarchicalMachine": "hsm",
    "python-statemachine StateMachine": "statemachine",
}


def run_once(
    factory: Callable[[], tuple[Any, Callable[[], None]]], steps: int, traced: bool
) -> tuple[float, float]:
    """(wall seconds of the loop, process CPU seconds of the loop and the flush)."""
    machine, step = factory()
    handle = None
    if traced:
        # buffer large enough that nothing is dropped: this measures capture cost
        handle = attach(machine, sink=MemorySink(), buffer_size=10 * steps + 100)
    gc.collect()
    cpu = time.process_time()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    if handle is not None:
        handle.flush(30)
    cpu = time.process_time() - cpu
    if handle is not None:
        assert handle.stats.dropped == 0, handle.stats
        handle.detach()
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run")
    parser.add_argument("--rounds", type=int, default=7, help="alternating run pairs")
    parser.add_argument(
        "--only", choices=["flat", "hsm", "statemachine"], help="time one machine kind"
    )
    opts = parser.parse_args()
    kinds = KINDS
    if opts.only:
        kinds = {k: v for k, v in KINDS.items() if opts.only in _SHORT[k]}
    print(
        f"{'machine':36} {'untraced ops/s':>15} {'traced ops/s':>13} {'ratio':>7} {'CPU ratio':>10}"
    )
    for label, (factory, per_step) in kinds.items():
        steps = max(1, opts.events // per_step)
        run_once(factory, min(steps, 500), True)  # warm up imports and caches
        plain, traced, plain_cpu, traced_cpu = [], [], [], []
        for _ in range(opts.rounds):
            wall, cpu = run_once(factory, steps, False)
            plain.append(wall)
            plain_cpu.append(cpu)
            wall, cpu = run_once(factory, steps, True)
            traced.append(wall)
            traced_cpu.append(cpu)
        ops_plain = steps * per_step / statistics.median(plain)
        ops_traced = steps * per_step / statistics.median(traced)
        cpu_ratio = statistics.median(plain_cpu) / statistics.median(traced_cpu)
        print(
            f"{label:36} {ops_plain:15,.0f} {ops_traced:13,.0f} {ops_traced / ops_plain:7.0%}"
            f" {cpu_ratio:10.0%}"
        )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
