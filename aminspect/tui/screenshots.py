"""Screen captures of the TUI: text for snapshot tests, SVG files for ``screenshots/``.

Regenerate the README screenshots with::

    python -m aminspect.tui.screenshots            # writes screenshots/*.svg

It drives the app over the fixed journal ``tests/data/shop.amj`` (rebuild that with
``python tests/data/make_journals.py``), so the pictures change only when the UI does.
The ``demo`` scene shows what ``aminspect demo`` streams: the demo shop run headless with
a fixed seed, its clock and durations replaced by fixed ones.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.app import App
from textual.pilot import Pilot

from aminspect.session import natural_key
from aminspect.tui.app import InspectorApp
from backends.base import Backend

__all__ = ["SCENES", "main", "screen_text", "settle"]

ROOT = Path(__file__).resolve().parents[2]
JOURNAL = ROOT / "tests" / "data" / "shop.amj"
OUT = ROOT / "screenshots"


def screen_text(app: App[Any]) -> str:
    """The screen as plain text, one line per row, trailing spaces removed.

    The same composition ``App.export_screenshot`` renders, without styles, so a golden
    file catches what is on screen and not how a theme colours it.
    """
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    update = app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens, simplify=True
    )
    console.print(update)
    text = console.export_text(styles=False)
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(lines[:height]) + "\n"


async def settle(pilot: Pilot[Any]) -> None:
    """Wait until workers finished and the messages they posted were handled.

    A cursor move runs a view worker that posts a result, whose handler may start a
    row worker: three rounds cover that chain (no sleeping).
    """
    for _ in range(3):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def _scene_log(pilot: Pilot[Any]) -> None:
    await pilot.press("right_square_bracket")  # order-1
    await settle(pilot)
    await pilot.press("colon")
    await pilot.pause()
    await pilot.press(*"30", "enter")


async def _scene_parallel(pilot: Pilot[Any]) -> None:
    await pilot.press("right_square_bracket")
    await settle(pilot)
    await pilot.press("colon")
    await pilot.pause()
    await pilot.press(*"22", "enter")


async def _scene_help(pilot: Pilot[Any]) -> None:
    await pilot.press("question_mark")


async def _scene_light(pilot: Pilot[Any]) -> None:
    await _scene_log(pilot)
    await settle(pilot)
    await pilot.press("t")


async def _scene_search(pilot: Pilot[Any]) -> None:
    await pilot.press("slash", *"order-2")


async def _scene_demo(pilot: Pilot[Any]) -> None:
    app = pilot.app
    assert isinstance(app, InspectorApp)
    # as the live demo shows it: its tracer streams every machine but finished orders
    app.session.set_live(app.session.machines)  # streamed once, in this session...
    app.session.set_live(DEMO_LIVE)  # ...and now only these: finished orders disconnected
    app._refresh_tree()
    app.header_bar.show_live("ws://127.0.0.1:6830", 1, 6.0, 0)
    live = sorted((m for m in DEMO_LIVE if m.startswith("order-")), key=natural_key)
    app.choose(live[0])
    await settle(pilot)
    await pilot.press("tab")  # the machine tree, as a new user reaches it


async def _scene_timeline(pilot: Pilot[Any]) -> None:
    await _scene_log(pilot)
    await settle(pilot)
    await pilot.press("v")  # the lower panel: record -> timeline


async def _scene_diff(pilot: Pilot[Any]) -> None:
    await pilot.press("right_square_bracket")  # order-1
    await settle(pilot)
    await pilot.press("colon")
    await pilot.pause()
    await pilot.press(*"22", "enter")
    await settle(pilot)
    await pilot.press("b")  # mark seq 22: the lower panel shows the diff
    await settle(pilot)
    await pilot.press("colon")
    await pilot.pause()
    await pilot.press(*"30", "enter")


async def _scene_timeline_small(pilot: Pilot[Any]) -> None:
    await _scene_timeline(pilot)
    await settle(pilot)
    await pilot.press("z")  # the timeline on the whole 80x24 screen


async def _scene_filter(pilot: Pilot[Any]) -> None:
    await pilot.press("right_square_bracket")  # order-1
    await settle(pilot)
    await pilot.press("n", *"pay", "enter")  # search as you type, kept
    await settle(pilot)
    await pilot.press("x")  # and hide what was not accepted


async def _scene_filter_screen(pilot: Pilot[Any]) -> None:
    await pilot.press("right_square_bracket")
    await settle(pilot)
    await pilot.press("F")
    await pilot.pause()
    await pilot.press(*"event", "tab", *"pay, ship")


Scene = Callable[[Pilot[Any]], Awaitable[None]]

# name -> (terminal size, what to do before the capture)
SCENES: dict[str, tuple[tuple[int, int], Scene]] = {
    "log-error": ((100, 30), _scene_log),
    "parallel-states": ((100, 30), _scene_parallel),
    "small-80x24": ((80, 24), _scene_parallel),
    "light-theme": ((100, 30), _scene_light),
    "help": ((100, 30), _scene_help),
    "search": ((100, 30), _scene_search),
    "demo": ((100, 30), _scene_demo),
    "timeline": ((100, 30), _scene_timeline),
    "diff": ((100, 30), _scene_diff),
    "timeline-80x24": ((80, 24), _scene_timeline_small),
    "filter": ((100, 30), _scene_filter),
    "filter-screen": ((100, 30), _scene_filter_screen),
}

DEMO_SEED = 7
DEMO_TICKS = 50  # ~20 s at the default pace: two orders in processing, one new
DEMO_LIVE: set[str] = set()  # machines the demo still streams after DEMO_TICKS
DEMO_EPOCH = 1_767_323_045_000_000_000  # 2026-01-02T03:04:05Z


def demo_backend() -> Backend:
    """The demo shop's first ``DEMO_TICKS`` ticks in a memory backend, deterministic:
    records keep their order, wall-clock times and measured durations become fixed ones."""
    import dataclasses

    import backends
    from aminspect.demo.shop import Shop
    from tracer.sinks import MemorySink

    sink = MemorySink()
    shop = Shop(seed=DEMO_SEED, sink=sink)
    shop.run(ticks=DEMO_TICKS, pace=0)
    # what is still traced (a collected order would be disposed at a GC's whim)
    live = {mid for handle in shop.handles for mid in handle.machine_ids}
    order = sorted((r.time, mid, r.seq) for mid, rs in sink.records.items() for r in rs)
    clock = {(mid, seq): DEMO_EPOCH + k * 97_000_000 for k, (_, mid, seq) in enumerate(order)}
    backend = backends.open("memory://")
    for k, (mid, machine) in enumerate(sorted(sink.machines.items())):
        t = DEMO_EPOCH + k
        backend.put_machine(dataclasses.replace(machine, created=t, updated=t))
        backend.append(
            mid,
            [
                dataclasses.replace(
                    r,
                    time=clock[mid, r.seq],
                    # 150µs..1.05ms, from the seq: a measured duration differs every run
                    duration=150_000 + (r.seq * 137_000) % 900_000 if r.duration else 0,
                )
                for r in sink.records[mid]
            ],
        )
    DEMO_LIVE.clear()
    DEMO_LIVE.update(live)
    return backend


def make_app(journal: Path = JOURNAL) -> InspectorApp:
    """The app on the fixed journal, read-only, as ``aminspect open`` starts it."""
    import backends
    from aminspect.session import Session

    backend = backends.open(str(journal), read_only=True)
    return InspectorApp(Session(backend), source="tests/data/shop.amj")


async def capture(name: str, journal: Path = JOURNAL) -> tuple[str, str]:
    """Run one scene; returns (plain text, SVG) of the final screen."""
    size, scene = SCENES[name]
    if name == "demo":
        from aminspect.session import Session

        app = InspectorApp(Session(demo_backend()), source="aminspect demo")
    else:
        app = make_app(journal)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await scene(pilot)
        await settle(pilot)
        text = screen_text(app)
        svg = app.export_screenshot(title=f"aminspect: {name}")
    app.session.backend.close()
    return text, svg


async def _main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in SCENES:
        _, svg = await capture(name)
        path = out / f"{name}.svg"
        path.write_text(svg, encoding="utf-8", newline="\n")
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    """Write one SVG per scene into ``screenshots/`` (or the directory given)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else OUT
    asyncio.run(_main(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
