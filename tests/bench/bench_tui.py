"""TUI targets (SPEC §10, issue 7): first screen of a 1M-record journal, key redraws, live.

Run: ``.venv/bin/python tests/bench/bench_tui.py [--records N] [--journal PATH] [--rate R]``

Builds a journal of N records (default 1,000,000; ``--journal`` keeps it for the next run),
opens it read-only in the headless app and prints a table with median and p95:

* open -> first screen: from ``backends.open`` to the first screen update that shows the
  last record's state tree, log and details (target 1.5 s);
* keys: from posting the key event to the app (what the terminal driver does when a
  key arrives: ``App.simulate_key``, so the bindings are part of it) to the screen update
  that shows its result, as a terminal would get it (the compositor's update rendered to
  escape sequences): step, jump by 50, first/last, and the filter keys (errors only, hide
  not accepted) with, separately, how long filtering the whole history takes (target
  30 ms for the redraw); go to seq and search are timed from the action. ``cpu`` is the
  UI thread's CPU time for the same span: on a loaded machine wall times wait for a core,
  CPU times do not. Keys come at most 25 a second (``KEY_GAP`` after the previous frame,
  a keyboard's auto-repeat rate). Textual draws at most 60 frames a second: a key that
  arrives within 16.7 ms of the last frame waits for the next one. Pressing the next key
  the moment a frame is out (as this script did before) measured that wait on every
  key; the "back-to-back" row still shows it;
* first filter after open: a fresh open, then ``x`` (hide not accepted) or ``e``
  (errors only) the moment the first screen is out: key -> redraw and key -> whole
  history filtered; and open -> the header's error count complete (issue 7: the record
  summary comes from the backend's query index instead of reading every record);
* live: a tracer streams R records/s into the app's ingest server (stored in a journal)
  while a key is pressed every 100 ms: key -> screen latency (target p95 100 ms), the
  event loop's lag, and the process's memory at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
BASE_TIME = 1_767_323_045_000_000_000


def build(path: Path, n: int) -> float:
    """Write ``n`` records of one machine; returns seconds taken.

    Idle and Work alternate; every 13th record is a refused event (no change) and every
    101st an event that failed with an error, so the filters have something to hide.
    """
    t0 = time.perf_counter()
    backend = backends.open(str(path), durability="fast")
    backend.put_machine(MachineRecord("bench", "manual", Schema(STATES), created=0, updated=0))
    batch: list[TransitionRecord] = []
    working = False
    for seq in range(n):
        t = BASE_TIME + seq * 1000
        if seq == 0:
            r = TransitionRecord("bench", 0, "init", "init", time=t, entered=(0,))
        elif seq % 101 == 0:
            r = TransitionRecord(
                "bench", seq, "event", "pay", time=t, accepted=False,
                error=("PaymentError", "card declined"), duration=5000,
            )  # fmt: skip
        elif seq % 13 == 0:
            r = TransitionRecord("bench", seq, "event", "ship", time=t, accepted=False)
        elif not working:
            r = TransitionRecord(
                "bench", seq, "event", "work", time=t, exited=(0,), entered=(1, 2, 3),
                duration=1200, args={"n": seq},
            )  # fmt: skip
            working = True
        else:
            r = TransitionRecord(
                "bench", seq, "event", "rest", time=t, exited=(1, 2, 3), entered=(0,),
                duration=800,
            )  # fmt: skip
            working = False
        batch.append(r)
        if len(batch) == 1000:  # about what the WebSocket sink sends per message
            backend.append("bench", batch)
            batch = []
    if batch:
        backend.append("bench", batch)
    backend.close()
    return time.perf_counter() - t0


# seconds from one frame to the next key: 25 keys a second, a keyboard's auto-repeat
KEY_GAP = 0.04


class TimedApp(InspectorApp):
    """Records when each view is applied and when each screen update is produced.

    In a headless run the driver writes nothing; ``_display`` renders the update to the
    escape sequences a terminal driver would write, so that cost is counted too.
    """

    shown_at: float = 0.0
    displayed_at: float = 0.0
    displayed_cpu: float = 0.0
    frame: asyncio.Event | None = None  # set on every screen update
    handled = 0  # keys (and timed actions) handled so far

    def action_step(self, delta: int) -> None:
        self.handled += 1
        super().action_step(delta)

    def action_first(self) -> None:
        self.handled += 1
        super().action_first()

    def action_last(self) -> None:
        self.handled += 1
        super().action_last()

    def action_toggle_errors(self) -> None:
        self.handled += 1
        super().action_toggle_errors()

    def action_toggle_rejected(self) -> None:
        self.handled += 1
        super().action_toggle_rejected()

    def show_view(self, view):  # type: ignore[no-untyped-def]
        super().show_view(view)
        self.shown_at = time.perf_counter()

    def _display(self, screen, renderable):  # type: ignore[no-untyped-def]
        super()._display(screen, renderable)
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(self.console)
            self.displayed_at = time.perf_counter()
            self.displayed_cpu = time.thread_time()
            if self.frame is not None:
                self.frame.set()


def fmt(values: list[float], unit: str = "ms") -> str:
    """``median X, p95 Y`` of a sample."""
    v = sorted(values)
    p95 = v[min(len(v) - 1, round(len(v) * 0.95) - 1)]
    return f"median {statistics.median(v):6.1f} {unit}, p95 {p95:6.1f} {unit}"


async def timed(
    pilot: Any,
    app: TimedApp,
    act: Callable[[], object],
    done: Callable[[], bool],
    gap: float = KEY_GAP,
) -> tuple[float, float]:
    """Run ``act`` (``gap`` s after the last frame) and wait for the first screen update
    after ``done()`` holds.

    Returns:
        (wall ms, UI-thread CPU ms) from the action to that update.
    """
    if app.frame is None:
        app.frame = asyncio.Event()
    wait = app.displayed_at + gap - time.perf_counter()
    if wait > 0:
        await asyncio.sleep(wait)
    handled = app.handled
    start, cpu = time.perf_counter(), time.thread_time()
    act()
    deadline = start + 30
    while time.perf_counter() < deadline:
        # no await between the check and the wait: _display runs on this loop
        app.frame.clear()
        if (
            app.handled > handled  # the key was handled (not a frame drawn before it)
            and done()
            and app.displayed_at > start
            and app.displayed_at >= app.shown_at
        ):
            break
        try:
            await asyncio.wait_for(app.frame.wait(), max(0.001, deadline - time.perf_counter()))
        except TimeoutError:
            break
    return (app.displayed_at - start) * 1000, (app.displayed_cpu - cpu) * 1000


def press(app: TimedApp, key: str) -> Callable[[], object]:
    """An act for ``timed``: the key arrives as from the terminal."""
    return lambda: app.simulate_key(key)


async def keys(
    pilot: Any,
    app: TimedApp,
    label: str,
    act: Callable[[], object],
    rounds: int = 100,
    gap: float = KEY_GAP,
) -> list[tuple[str, str]]:
    """Press a cursor key ``rounds`` times; the rows of its wall and CPU times."""
    walls, cpus = [], []
    for _ in range(rounds):

        def shown() -> bool:
            return app.view is not None and app.view.seq == app.session.cursor

        wall, cpu = await timed(pilot, app, act, shown, gap)
        walls.append(wall)
        cpus.append(cpu)
    return [(f"{label}", fmt(walls)), (f"{label} (UI cpu)", fmt(cpus))]


async def run(path: Path, n: int, rounds: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    backend = backends.open(str(path), read_only=True)
    opened = time.perf_counter()
    app = TimedApp(Session(backend), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.view is None or app.displayed_at < app.shown_at:
            await asyncio.sleep(0.001)
        rows.append(
            (
                "open -> first screen",
                f"{(app.displayed_at - t0) * 1000:.0f} ms "
                f"(backends.open {(opened - t0) * 1000:.0f} ms)",
            )
        )
        await settle(pilot)
        s = app.session
        rows += await keys(pilot, app, "step back (←)", press(app, "left"), rounds)
        rows += await keys(pilot, app, "step forward (→)", press(app, "right"), rounds)
        rows += await keys(pilot, app, "jump back 50 (PgUp)", press(app, "pageup"), rounds)
        rows += await keys(pilot, app, "jump fwd 50 (PgDn)", press(app, "pagedown"), rounds)
        back_to_back = await keys(
            pilot, app, "step (←), back-to-back", press(app, "left"), rounds, 0
        )
        rows += back_to_back
        walls = []
        for k in range(10):
            target = (k * 7919 * 97) % n

            def go(target: int = target) -> None:
                app.handled += 1
                s.goto(target)
                app.refresh_cursor()

            wall, _ = await timed(
                pilot, app, go, lambda t=target: app.view is not None and app.view.seq == t
            )
            walls.append(wall)
        rows.append(("go to a random seq (:)", fmt(walls)))
        ends: dict[str, list[float]] = {"first (Home)": [], "last (End)": []}
        for k in range(20):
            label = "first (Home)" if k % 2 == 0 else "last (End)"
            action = press(app, "home" if k % 2 == 0 else "end")
            wall, _ = await timed(
                pilot, app, action, lambda: app.view is not None and app.view.seq == s.cursor
            )
            ends[label].append(wall)
        rows += [(label, fmt(v)) for label, v in ends.items()]
        rows.append(("backend page reads (all of the above)", str(s.pages.reads)))
        rows += await filters(pilot, app, n, rounds)
    backend.close()
    return rows


async def after_open(path: Path, key: str) -> list[tuple[str, str]]:
    """A fresh open: the first filter key pressed once the first screen is out (``e`` or
    ``x``): key -> redraw and key -> whole history filtered; for ``""``, how long after
    open the header's error count is complete. The record summary is made then (from
    the backend's query index when it has one, else by reading every record)."""
    t0 = time.perf_counter()
    backend = backends.open(str(path), read_only=True)
    app = TimedApp(Session(backend), play_interval=1e6)
    rows: list[tuple[str, str]] = []
    async with app.run_test(size=(120, 40)) as pilot:
        while app.view is None or app.displayed_at < app.shown_at:
            await asyncio.sleep(0.001)
        s = app.session

        async def counted() -> None:
            while any(e.scanned < e.count for e in s.machines.values()):
                await asyncio.sleep(0.005)

        if not key:
            await counted()
            errors = sum(e.errors for e in s.machines.values())
            rows.append(
                (
                    "open -> error count complete",
                    f"{(time.perf_counter() - t0) * 1000:.0f} ms ({errors:,} errors)",
                )
            )
        else:
            start = time.perf_counter()
            wall, cpu = await timed(pilot, app, press(app, key), lambda: s.filtered is not None)
            await wait_filtered(app)
            total = (time.perf_counter() - start) * 1000
            fv = s.filtered
            shown = f"{fv.total:,} shown" if fv is not None else ""
            rows.append(
                (
                    f"first filter after open ({key}): key -> redraw",
                    f"{wall:.1f} ms (cpu {cpu:.1f})",
                )
            )
            rows.append(
                (f"first filter after open ({key}): whole history", f"{total:.0f} ms ({shown})")
            )
            await counted()  # its workers post to the app until then
        await settle(pilot)
    backend.close()
    return rows


async def wait_filtered(app: TimedApp) -> None:
    fv = app.session.filtered
    while fv is not None and not fv.complete:
        await asyncio.sleep(0.005)


async def filters(pilot: Any, app: TimedApp, n: int, rounds: int) -> list[tuple[str, str]]:
    """Filter keys: key -> redraw, and how long the whole history takes to filter.

    The first filter reads the history (unless the background error count already
    summarised it); later ones scan the record summary it left.
    """
    s = app.session
    rows: list[tuple[str, str]] = []
    s.goto(n // 2)
    app.refresh_cursor()
    await settle(pilot)
    summary = s.summary("bench")
    assert summary is not None
    rows.append(("summarised by the error count at this point", f"{summary.end:,} records"))
    start = time.perf_counter()
    wall, cpu = await timed(pilot, app, press(app, "e"), lambda: s.filter.errors_only)
    await wait_filtered(app)
    total = (time.perf_counter() - start) * 1000
    rows.append(("first filter (e): key -> redraw", f"{wall:.1f} ms (UI cpu {cpu:.1f} ms)"))
    rows.append(("first filter (e): whole history filtered", f"{total:.0f} ms"))
    app.action_toggle_errors()
    await settle(pilot)

    async def toggle(label: str, action: Callable[[], object]) -> None:
        redraw, total, cpus = [], [], []
        for _ in range(6):  # on, off, on, off...
            start = time.perf_counter()
            wall, cpu = await timed(pilot, app, action, lambda: True)
            redraw.append(wall)
            cpus.append(cpu)
            fv = s.filtered
            await wait_filtered(app)
            if fv is not None:
                total.append((time.perf_counter() - start) * 1000)
            await settle(pilot)
        rows.append((f"{label}: key -> redraw", fmt(redraw)))
        rows.append((f"{label}: key -> redraw (UI cpu)", fmt(cpus)))
        rows.append((f"{label}: whole history filtered", fmt(total)))

    await toggle("errors only (e)", press(app, "e"))
    await toggle("hide not accepted (x)", press(app, "x"))
    app.action_toggle_errors()
    await wait_filtered(app)
    await settle(pilot)
    fv = s.filtered
    assert fv is not None
    rows.append(("errors only: rows shown / hidden", f"{fv.total:,} / {fv.hidden:,}"))
    rows += await keys(pilot, app, "filtered: step back", press(app, "left"), rounds)
    rows += await keys(pilot, app, "filtered: jump back 50", press(app, "pageup"), rounds)
    app.action_clear_filters()
    await settle(pilot)
    # search as you type: each keystroke filters again from scratch
    app.action_search_log()
    await settle(pilot)
    walls = []
    for ch in "pay":
        wall, _ = await timed(pilot, app, lambda c=ch: _type(app, c), lambda: True)
        walls.append(wall)
    start = time.perf_counter()
    while s.filter.search != "pay":  # it filters once typing pauses (SEARCH_DELAY)
        await asyncio.sleep(0.005)
    await wait_filtered(app)
    rows.append(("search 'pay' typed: key -> redraw", fmt(walls)))
    rows.append(
        (
            "search: whole history filtered after the last key",
            f"{(time.perf_counter() - start) * 1000:.0f} ms",
        )
    )
    app.action_clear_filters()
    await settle(pilot)
    return rows


def _type(app: InspectorApp, ch: str) -> None:
    from aminspect.tui.filter_bar import SearchBar

    bar = app.main_screen.query_one(SearchBar)
    bar.insert_text_at_cursor(ch)
    if isinstance(app, TimedApp):
        app.handled += 1


def rss_mb() -> float:
    """The process's resident memory now."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def run_live(rate: int, seconds: float, tmp: Path) -> list[tuple[str, str]]:
    from aminspect.server import IngestServer
    from tracer import ManualMachine, attach
    from tracer.ws_sink import WebSocketSink

    backend = backends.open(str(tmp / "live.amj"), durability="fast")
    server = IngestServer(backend, "127.0.0.1", 0)
    app = TimedApp(Session(backend, live=True), server=server, play_interval=1e6)
    gaps: list[float] = []
    walls: list[float] = []
    rss: list[float] = []
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
        rss.append(rss_mb())

        async def lag() -> None:
            while not task.done():
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                gaps.append(time.perf_counter() - t0 - 0.01)

        lagger = asyncio.create_task(lag())
        k = 0
        while not task.done():
            await asyncio.sleep(0.1)
            if app.session.selected is None:
                continue
            delta = -1 if k % 4 < 2 else 1
            k += 1
            wall, _ = await timed(
                pilot,
                app,
                press(app, "left" if delta < 0 else "right"),
                lambda: app.view is not None and app.view.seq == app.session.cursor,
                gap=0,  # a key every 100 ms already
            )
            walls.append(wall)
        sent = await task
        await lagger
        rss.append(rss_mb())
        app.refresh_now()
        await settle(pilot)
        shown = app.session.count
    backend.close()
    return [
        ("live: records sent", f"{sent:,} at {rate:,}/s for {seconds:.0f} s (journal)"),
        ("live: records shown", f"{shown:,}"),
        ("live: key -> screen", fmt(walls) + f" ({len(walls)} keys)"),
        (
            "live: event-loop lag",
            fmt([g * 1000 for g in gaps]) + f", max {max(gaps) * 1000:.0f} ms",
        ),
        ("live: process memory", f"{rss[0]:.0f} MB -> {rss[-1]:.0f} MB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--journal", type=Path, default=None, help="reuse or keep this journal")
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=100, help="presses per key")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument(
        "--only-open", action="store_true", help="only the fresh-open rows (first filter)"
    )
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = args.journal or Path(tmp) / "bench.amj"
        if path.exists():
            rows.append(("journal", f"{path} (reused), {path.stat().st_size / 1e6:.0f} MB"))
        else:
            built = build(path, args.records)
            rows.append(
                (
                    "journal",
                    f"{args.records:,} records, {path.stat().st_size / 1e6:.0f} MB, "
                    f"built in {built:.1f} s",
                )
            )
        for key in ("x", "e", ""):
            rows += asyncio.run(after_open(path, key))
        if not args.only_open:
            rows += asyncio.run(run(path, args.records, args.rounds))
        if not (args.skip_live or args.only_open):
            rows += asyncio.run(run_live(args.rate, args.seconds, Path(tmp)))
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  -----")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
