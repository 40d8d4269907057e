"""TUI targets (SPEC §10): first screen of a 1M-record journal, step redraw, live ingest.

Run: ``.venv/bin/python tests/bench/bench_tui.py [--records N] [--rate R]``

Builds a journal of N records (default 1,000,000) in a temporary directory, opens it
read-only in the headless app and prints a table:

* open -> first screen: from creating the App to the state tree, log and details of the
  last record being on screen (target 1.5 s);
* step redraw: from the step action to the new view applied and the screen composed
  (median and p95 over 200 steps back, then 200 jumps; target 30 ms);
* backend reads: pages the virtual log read for all of that;
* live: records/s streamed by a tracer into the app's ingest server while the app
  follows the tail, and the worst gap between two screen refreshes meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import backends
from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import settle
from tracer.records import MachineRecord, Schema, StateSpec, TransitionRecord

STATES = (
    StateSpec("Idle", initial=True),
    StateSpec("Work", parallel=True),
    StateSpec("Work.a", "Work"),
    StateSpec("Work.b", "Work"),
    StateSpec("Done"),
)


def build(path: Path, n: int) -> float:
    """Write ``n`` records of one machine; returns seconds taken."""
    t0 = time.perf_counter()
    backend = backends.open(str(path), durability="fast")
    backend.put_machine(MachineRecord("bench", "manual", Schema(STATES), created=0, updated=0))
    batch: list[TransitionRecord] = []
    base = 1_767_323_045_000_000_000
    for seq in range(n):
        if seq == 0:
            r = TransitionRecord("bench", 0, "init", "init", time=base, entered=(0,))
        elif seq % 2:
            r = TransitionRecord(
                "bench",
                seq,
                "event",
                "work",
                time=base + seq * 1000,
                exited=(0,),
                entered=(1, 2, 3),
                duration=1200,
                args={"n": seq},
            )
        else:
            r = TransitionRecord(
                "bench",
                seq,
                "event",
                "rest",
                time=base + seq * 1000,
                exited=(1, 2, 3),
                entered=(0,),
                duration=800,
            )
        batch.append(r)
        if len(batch) == 1000:  # about what the WebSocket sink sends per message
            backend.append("bench", batch)
            batch = []
    if batch:
        backend.append("bench", batch)
    backend.close()
    return time.perf_counter() - t0


class TimedApp(InspectorApp):
    """Records when each view reaches the screen."""

    shown_at: float = 0.0

    def show_view(self, view):  # type: ignore[no-untyped-def]
        super().show_view(view)
        # compose the screen as the driver would, so the time includes rendering
        self.screen._compositor.render_update(full=True)
        self.shown_at = time.perf_counter()


async def measure_open(path: Path) -> tuple[float, TimedApp]:
    t0 = time.perf_counter()
    backend = backends.open(str(path), read_only=True)
    app = TimedApp(Session(backend), play_interval=1e6)
    return t0, app


async def run(path: Path, n: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    t0, app = await measure_open(path)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.view is None:
            await pilot.pause()
        rows.append(("open -> first screen", f"{(app.shown_at - t0) * 1000:.0f} ms"))
        for label, delta in (("step back (1)", -1), ("jump back (50)", -50)):
            times = []
            for _ in range(200):
                start = time.perf_counter()
                app.action_step(delta)
                seq = app.session.cursor
                while app.view is None or app.view.seq != seq:
                    await pilot.pause()
                times.append((app.shown_at - start) * 1000)
            times.sort()
            rows.append(
                (
                    f"{label} redraw",
                    f"median {statistics.median(times):.1f} ms, p95 {times[189]:.1f} ms",
                )
            )
        start = time.perf_counter()
        app.session.goto(n // 2)
        app.refresh_cursor()
        while app.view is None or app.view.seq != n // 2:
            await pilot.pause()
        rows.append(("go to the middle", f"{(app.shown_at - start) * 1000:.1f} ms"))
        await settle(pilot)
        rows.append(("backend page reads", str(app.session.pages.reads)))
    app.session.backend.close()  # type: ignore[attr-defined]
    return rows


async def run_live(rate: int, seconds: float) -> list[tuple[str, str]]:
    from aminspect.server import IngestServer
    from tracer import ManualMachine, attach
    from tracer.ws_sink import WebSocketSink

    backend = backends.open("memory://")
    server = IngestServer(backend, "127.0.0.1", 0)
    app = InspectorApp(Session(backend, live=True), server=server, play_interval=1e6)
    gaps: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        machine = ManualMachine(["A", "B"], initial=["A"])
        sink = WebSocketSink(server.url)

        def produce() -> int:
            handle = attach(machine, sink=sink, name="live")
            sent = 0
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                for _ in range(rate // 100):
                    machine.set("B" if sent % 2 == 0 else "A")
                    sent += 1
                target = t0 + sent / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            handle.flush(30)
            handle.detach()
            sink.close()
            return sent

        task = asyncio.get_running_loop().run_in_executor(None, produce)
        # event-loop lag: how late a 10 ms sleep wakes up while ingesting and following
        while not task.done():
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            gaps.append(time.perf_counter() - t0 - 0.01)
        sent = await task
        app.refresh_now()
        await settle(pilot)
        shown = app.session.count
        gaps.sort()
    backend.close()
    return [
        ("live: records sent", f"{sent} at {rate}/s for {seconds:.0f} s"),
        ("live: records shown", str(shown)),
        (
            "live: event-loop lag",
            f"median {statistics.median(gaps) * 1000:.1f} ms, p99 "
            f"{gaps[int(len(gaps) * 0.99)] * 1000:.0f} ms, max {gaps[-1] * 1000:.0f} ms",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.amj"
        built = build(path, args.records)
        rows = [
            (
                "journal",
                f"{args.records:,} records, {path.stat().st_size / 1e6:.0f} MB, "
                f"built in {built:.1f} s",
            )
        ]
        rows += asyncio.run(run(path, args.records))
    rows += asyncio.run(run_live(args.rate, args.seconds))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
