"""How fast can any Python-level tracer of a flat transitions Machine be? Floors, measured.

Run: ``.venv/bin/python tests/bench/bench_floor.py [--events N] [--rounds R]``

Times the flat toggle of ``bench_overhead.py`` untraced, under hooks that do less and less
than the real tracer, and under the real tracer, in interleaved rounds (medians), and
prints µs per trigger and the share of untraced speed each keeps. The hooks sit where the
tracer's do (instance attributes ``_process`` and ``set_state``) but are not tracers:

- ``pass-through``: both hooks only call the original.
- ``open/close``: ``_process`` also opens an event as the tracer must (a slotted object on
  a per-thread stack, a clock read) and closes it; ``set_state`` passes through.
- ``minimal record``: as ``open/close``, plus one tuple per trigger (name, times, result,
  before and after state) appended to a deque that a sender thread drains every 30 ms into
  a list: the least any recorder can do, with none of the tracer's positions, nesting,
  configurations, errors or arguments.
- ``aminspect tracer``: ``attach(machine, sink=MemorySink())``.

The gap between ``minimal record`` and untraced bounds what any pure-Python tracer hooked
this way can reach on this interpreter.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_ws import flat_machine  # the same toggle as the WebSocket benchmark
from tracer import MemorySink, attach
from tracer.core import _local


class _Open:
    __slots__ = ("before", "started")


def _nothing() -> None:
    pass


def _pass_through(machine: Any) -> Callable[[], None]:
    process, set_state = machine._process, machine.set_state

    def hooked_process(trigger: Any) -> Any:
        return process(trigger)

    def hooked_set_state(state: Any, model: Any = None) -> Any:
        return set_state(state, model)

    vars(machine)["_process"] = hooked_process
    vars(machine)["set_state"] = hooked_set_state
    return _nothing


def _open_close(
    machine: Any, record: Callable[[Any, Any, int], None] | None = None
) -> Callable[[], None]:
    process, set_state = machine._process, machine.set_state
    clock = time.perf_counter_ns

    def hooked_process(trigger: Any) -> Any:
        ed = trigger.args[0]
        ev = _Open()
        ev.before = ed.model.state
        stack = _local.stack
        ev.started = clock()
        stack.append(ev)
        try:
            return process(trigger)
        finally:
            stack.pop()
            if record is not None:
                record(ev, ed, clock())

    def hooked_set_state(state: Any, model: Any = None) -> Any:
        return set_state(state, model)

    vars(machine)["_process"] = hooked_process
    vars(machine)["set_state"] = hooked_set_state
    return _nothing


def _minimal_record(machine: Any) -> Callable[[], None]:
    buffer: deque[tuple[Any, ...]] = deque()
    stored: list[tuple[Any, ...]] = []
    done = threading.Event()

    def sender() -> None:
        while not done.wait(0.03):
            while buffer:
                stored.append(buffer.popleft())
        while buffer:
            stored.append(buffer.popleft())

    def record(ev: Any, ed: Any, ended: int) -> None:
        buffer.append(
            (ed.event.name, ev.started, ended - ev.started, ed.result, ev.before, ed.model.state)
        )

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    _open_close(machine, record)

    def stop() -> None:
        done.set()
        thread.join()

    return stop


def _tracer(machine: Any) -> Callable[[], None]:
    handle = attach(machine, sink=MemorySink(), buffer_size=1_000_000)

    def stop() -> None:
        handle.flush(30)
        handle.detach()

    return stop


VARIANTS: dict[str, Callable[[Any], Callable[[], None]] | None] = {
    "untraced": None,
    "pass-through": _pass_through,
    "open/close": _open_close,
    "minimal record": _minimal_record,
    "aminspect tracer": _tracer,
}


def run_once(install: Callable[[Any], Callable[[], None]] | None, events: int) -> float:
    """µs per trigger of the toggle loop (wall clock, the loop only)."""
    machine, model = flat_machine()
    stop = install(machine) if install is not None else _nothing
    start, stop_ = model.start, model.stop
    steps = events // 2
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(steps):
        start()
        stop_()
    elapsed = time.perf_counter() - t0
    stop()
    return elapsed / (2 * steps) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000, help="triggers per run")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds")
    opts = parser.parse_args()
    for install in VARIANTS.values():  # warm up imports and caches
        run_once(install, 1000)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(opts.rounds):
        for name, install in VARIANTS.items():
            times[name].append(run_once(install, opts.events))
    base = statistics.median(times["untraced"])
    print(f"{'hooks':18} {'µs/trigger':>11} {'added µs':>9} {'keeps':>6}")
    for name, values in times.items():
        us = statistics.median(values)
        print(f"{name:18} {us:11.2f} {us - base:9.2f} {base / us:6.0%}")


if __name__ == "__main__":
    main()
