"""Screen captures of the TUI: text for snapshot tests, SVG files for ``screenshots/``.

Regenerate the README screenshots with::

    python -m aminspect.tui.screenshots            # writes screenshots/*.svg

It drives the app over the fixed journal ``tests/data/shop.amj`` (rebuild that with
``python tests/data/make_journals.py``), so the pictures change only when the UI does.
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

from aminspect.tui.app import InspectorApp

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


Scene = Callable[[Pilot[Any]], Awaitable[None]]

# name -> (terminal size, what to do before the capture)
SCENES: dict[str, tuple[tuple[int, int], Scene]] = {
    "log-error": ((100, 30), _scene_log),
    "parallel-states": ((100, 30), _scene_parallel),
    "small-80x24": ((80, 24), _scene_parallel),
    "light-theme": ((100, 30), _scene_light),
    "help": ((100, 30), _scene_help),
    "search": ((100, 30), _scene_search),
}


def make_app(journal: Path = JOURNAL) -> InspectorApp:
    """The app on the fixed journal, read-only, as ``aminspect open`` starts it."""
    import backends
    from aminspect.session import Session

    backend = backends.open(str(journal), read_only=True)
    return InspectorApp(Session(backend), source="tests/data/shop.amj")


async def capture(name: str, journal: Path = JOURNAL) -> tuple[str, str]:
    """Run one scene; returns (plain text, SVG) of the final screen."""
    size, scene = SCENES[name]
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
