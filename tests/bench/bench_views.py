"""Timeline and diff benchmark: the cost of one redraw's reads on a long journal.

Run: ``.venv/bin/python tests/bench/bench_views.py [--records N] [--samples K]``

Writes a journal of N records of a 13-state nested machine (the shop's order schema),
opens it read-only as ``aminspect open`` does, and at K random cursors measures what the
TUI's workers do when the cursor moves or the user zooms: reading a tick window (64
columns at 1 and at 256 records per column), a time window (found by bisection), laying
the window out as cells, and the diff against the previous record and against a mark
far away. Prints median and 95th percentile wall ms and median CPU ms. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import backends
from aminspect.diff import load_diff
from aminspect.session import Session
from aminspect.timeline import (
    TICK_ZOOMS,
    Scale,
    TimelineModel,
    load_window,
    timeline_rows,
    window_cells,
)
from tests.data.make_journals import ORDER_STATES, ORDER_TRANSITIONS
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

CYCLE = [  # (exited, entered) names of one order's life, repeated
    ((), ("Idle",)),
    (("Idle",), ("Active", "Active.Picking")),
    (("Active.Picking",), ("Active.Packing",)),
    (
        ("Active", "Active.Packing"),
        (
            "Shipping",
            "Shipping.Carrier",
            "Shipping.Carrier.Waiting",
            "Shipping.Billing",
            "Shipping.Billing.Unpaid",
        ),
    ),
    (("Shipping.Carrier.Waiting",), ("Shipping.Carrier.InTransit",)),
    (("Shipping.Billing.Unpaid",), ("Shipping.Billing.Paid",)),
    (
        (
            "Shipping",
            "Shipping.Carrier",
            "Shipping.Carrier.InTransit",
            "Shipping.Billing",
            "Shipping.Billing.Paid",
        ),
        ("Done",),
    ),
    (("Done",), ("Idle",)),
]


def build(path: str, n: int) -> None:
    schema = Schema(tuple(ORDER_STATES), tuple(ORDER_TRANSITIONS))
    ix = schema.index
    with backends.open(path, durability="fast") as b:
        b.put_machine(MachineRecord("order", "manual", schema, created=1, updated=1))
        batch: list[TransitionRecord] = []
        t = 1_767_323_045_000_000_000
        for seq in range(n):
            if seq == 0:
                exited, entered = (), (ix("Idle"),)
                kind = Kind.INIT
            else:
                ex, en = CYCLE[1 + (seq - 1) % (len(CYCLE) - 1)]
                exited = tuple(ix(s) for s in ex)
                entered = tuple(ix(s) for s in en)
                kind = Kind.EVENT
            t += 1_000_000 + (seq * 7919) % 3_000_000
            batch.append(
                TransitionRecord("order", seq, kind, "go", time=t, exited=exited, entered=entered)
            )
            if len(batch) == 1000:
                b.append("order", batch)
                batch = []
        if batch:
            b.append("order", batch)


def measure(fn: Callable[[], object], samples: int) -> tuple[float, float, float]:
    """Median and p95 wall ms, and median CPU ms (on a shared machine the wall time
    includes waiting for a core; the CPU time is what the work costs)."""
    wall, cpu = [], []
    for _ in range(samples):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    wall.sort()
    p95 = wall[min(len(wall) - 1, int(len(wall) * 0.95))]
    return statistics.median(wall), p95, statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=50)
    args = ap.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "long.amj")
        t0 = time.perf_counter()
        build(path, n)
        print(f"built {n:,} records in {time.perf_counter() - t0:.1f} s")
        backend = backends.open(path, read_only=True)
        session = Session(backend)
        session.apply_machines(session.fetch_machines())
        schema = session.machines["order"].record.schema
        rows = timeline_rows(schema)
        rnd = random.Random(1)
        cursors = [rnd.randrange(n) for _ in range(args.samples)]
        results: list[tuple[str, float, float, float]] = []

        def tick(zoom: float) -> Callable[[], object]:
            it = iter(cursors * 2)

            def run() -> object:
                m = TimelineModel(cols=64, tick_zoom=TICK_ZOOMS.index(zoom))
                m.set_cursor("order", n, 0, next(it), 0)
                spec = m.spec()
                assert spec is not None
                w = load_window(backend, spec, n, 0, session.clocks_at)
                return window_cells(w, m, rows)

            return run

        def timescale() -> object:
            seq = rnd.randrange(n)
            rec = backend.read("order", seq, seq + 1)[0]
            m = TimelineModel(cols=64, scale=Scale.TIME)
            m.set_cursor("order", n, 0, seq, rec.time)
            spec = m.spec()
            assert spec is not None
            w = load_window(backend, spec, n, 0, session.clocks_at)
            return window_cells(w, m, rows)

        def diff_prev() -> object:
            seq = rnd.randrange(1, n)
            return load_diff(backend, schema, "order", seq, None, session.clocks_at)

        def diff_far() -> object:
            seq = rnd.randrange(n // 2, n)
            return load_diff(backend, schema, "order", seq, seq // 3, session.clocks_at)

        for name, fn in [
            ("tick window, 64 cols x 1 rec", tick(1)),
            ("tick window, 64 cols x 128 rec", tick(128)),
            ("time window, 64 cols x 1 ms", timescale),
            ("diff vs previous record", diff_prev),
            ("diff vs a mark far away", diff_far),
        ]:
            results.append((name, *measure(fn, args.samples)))
        backend.close()
    print(f"\n{n:,} records, journal, read-only, {args.samples} random cursors each")
    print(f"{'operation (read + lay out)':<34} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>8}")
    for name, med, p95, cpu in results:
        print(f"{name:<34} {med:>10.2f} {p95:>8.2f} {cpu:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
