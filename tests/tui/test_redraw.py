"""What keeps a key's redraw small: log rows drawn from segments, titles and the scroll
bar repainted only when they change, the views a step or jump reaches prefetched."""

from __future__ import annotations

import pytest
from rich.style import Style
from textual.geometry import Region
from textual.strip import Strip

from aminspect.session import JUMP, LogRow, Outcome, Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.widgets import TransitionLog
from backends.base import Backend
from tests.tui.conftest import MIXED_N

pytestmark = pytest.mark.timeout(90)

N = MIXED_N


def cells(strip: Strip) -> list[tuple[str, Style | None]]:
    """Every cell of a strip with its style (segment boundaries do not matter)."""
    return [(ch, seg.style) for seg in strip for ch in seg.text]


async def test_row_strips_match_rich_rendering(mixed_history: Backend) -> None:
    app = InspectorApp(Session(mixed_history), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        log = app.query_one(TransitionLog)
        s = app.session
        extra = [
            LogRow(1, "12:00:00.000", "event", "x" * 40, "+" + "a" * 60, Outcome.ACCEPTED, "1ms"),
            LogRow(2, "12:00:00.000", "event", "", "", Outcome.ERROR, ""),
            LogRow(3, "12:00:00.000", "event", "naïve", "+é", Outcome.REJECTED, "2ms"),
        ]
        checked = 0
        for width in (20, 40, 63, 64, 80, 118, 200):
            rows: list[tuple[int, LogRow | None]] = [(r.seq, r) for r in extra]
            rows += [(seq, s.row("m", seq)) for seq in range(N - 30, N)]
            rows.append((N + 5, None))
            for seq, row in rows:
                for cursor in (False, True):
                    log.cursor_seq = seq if cursor else -1
                    fast = log.row_strip(row, seq, width, cursor)
                    slow = log.rich_row_strip(row, seq, width, cursor)
                    if fast is not None:
                        checked += 1
                        assert cells(fast) == cells(slow), (width, cursor, row)
                        assert fast.cell_length == width
        assert checked > 300  # most rows take the fast path


async def test_prefetch_and_titles(mixed_history: Backend) -> None:
    app = InspectorApp(Session(mixed_history), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        s = app.session
        s.goto(N // 2)
        app.refresh_cursor()
        await settle(pilot)
        # a step or a jump either way is answered from the caches
        for delta in (-1, 1, -JUMP, JUMP):
            assert s.cached_view("m", N // 2 + delta) is not None, delta
        await pilot.press("pageup")
        await settle(pilot)
        assert s.cursor == N // 2 - JUMP
        text = screen_text(app)
        # the titles that follow the cursor are repainted (their border line only)
        assert f"states @ {s.cursor}" in text
        assert f"seq {s.cursor}/{N - 1}" in text
        assert s.cached_view("m", s.cursor - JUMP) is not None
        # with a filter, the shown records a step and a jump away
        await pilot.press("e")
        await settle(pilot)
        fv = s.filtered
        assert fv is not None and fv.complete
        await pilot.press("left")
        await settle(pilot)
        for delta in (-1, 1, -JUMP, JUMP):
            target = fv.step(s.cursor, delta)
            assert target is not None
            assert s.cached_view("m", target) is not None, delta


async def test_scroll_bar_follows_the_log(mixed_history: Backend) -> None:
    app = InspectorApp(Session(mixed_history), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        bar = app.query_one(TransitionLog).vertical_scrollbar
        region = Region(0, 0, bar.size.width, bar.size.height)
        seen = []
        for key in ("home", "pagedown", "end", "pageup"):
            await pilot.press(key)
            await settle(pilot)
            drawn = [cells(strip) for strip in bar.render_lines(region)]
            bar.refresh()  # what a full repaint draws: the bar was not left stale
            assert [cells(strip) for strip in bar.render_lines(region)] == drawn, key
            seen.append(drawn)
        assert seen[0] != seen[2]  # the thumb moved from the top to the bottom
