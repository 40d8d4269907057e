"""The filter keys as a user presses them: the log shows the filtered rows, the header how
many are hidden, the scroll range and the scroll bar follow the rows shown, and a key whose
rows keep the scroll bar does not lay the screen out again."""

from __future__ import annotations

import pytest

from aminspect.filters import LogFilter
from aminspect.session import JUMP, Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import screen_text
from aminspect.tui.widgets import TransitionLog
from backends.base import Backend
from tests.tui.conftest import MIXED_N
from tests.tui.test_filters import settle

pytestmark = pytest.mark.timeout(90)

N = MIXED_N
ERRORS = [seq for seq in range(1, N) if seq % 7 and seq % 11 == 0]
REFUSED = [seq for seq in range(1, N) if seq % 7 == 0 or seq % 11 == 0]


def shown(log: TransitionLog) -> list[int]:
    """The seqs of the rows on screen."""
    start, end = log.visible_window()
    return [log.seq_at(r) for r in range(start, end)]


def assert_scroll_range(log: TransitionLog, rows: int) -> None:
    """The scroll range is the rows and the column header; the bar shows that range and
    its thumb sits where the log is scrolled (not where it was before)."""
    assert log.count == rows
    assert log.virtual_size.height == rows + 1
    assert log.max_scroll_y == max(0, rows + 1 - log.scrollable_content_region.height)
    needs_bar = rows + 1 > log.scrollable_content_region.height
    assert log.show_vertical_scrollbar == needs_bar
    if needs_bar:
        bar = log.vertical_scrollbar
        assert bar.window_virtual_size == rows + 1
        assert bar.position == log.scroll_y


async def test_filter_keys_show_the_filtered_rows_and_scroll_over_them(mixed_history: Backend):
    app = InspectorApp(Session(mixed_history), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        log = app.log_view
        s = app.session
        s.goto(N // 2)
        app.refresh_cursor()
        await settle(pilot)
        assert_scroll_range(log, N)

        await pilot.press("e")
        await settle(pilot)
        assert s.filter == LogFilter(errors_only=True)
        assert_scroll_range(log, len(ERRORS))
        assert set(shown(log)) <= set(ERRORS) and s.cursor in shown(log)
        text = screen_text(app)
        assert f"{len(ERRORS):,} shown, {N - len(ERRORS):,} hidden · filter: errors" in text
        assert "took" in text.splitlines()[2]  # the column header is not cut by a stale bar

        # the cursor keys and the scroll range cover the filtered rows only
        await pilot.press("home")
        await settle(pilot)
        assert s.cursor == ERRORS[0] and log.scroll_y == 0
        assert shown(log) == ERRORS[: log.page_height]
        assert_scroll_range(log, len(ERRORS))
        await pilot.press("pagedown")
        await settle(pilot)
        assert s.cursor == ERRORS[JUMP]
        await pilot.press("end")
        await settle(pilot)
        assert s.cursor == ERRORS[-1] and log.scroll_y == log.max_scroll_y
        assert shown(log)[-1] == ERRORS[-1]
        assert_scroll_range(log, len(ERRORS))
        # scrolling with the wheel (the cursor stays) reaches the first error
        log.scroll_home(animate=False, immediate=True)
        await settle(pilot)
        assert shown(log)[0] == ERRORS[0] and s.cursor == ERRORS[-1]
        assert_scroll_range(log, len(ERRORS))

        # errors that were accepted: none; the bar goes and the header says so
        await pilot.press("x")
        await settle(pilot)
        assert_scroll_range(log, 0)
        text = screen_text(app)
        assert f"0 shown, {N:,} hidden" in text and "no record shown" in text
        assert "took" in text.splitlines()[2]
        await pilot.press("e")  # hide not accepted only
        await settle(pilot)
        assert_scroll_range(log, N - len(REFUSED))
        assert not set(shown(log)) & set(REFUSED)

        # clearing every filter restores the whole log and its scroll range
        await pilot.press("X")
        await settle(pilot)
        assert s.filter == LogFilter()
        assert_scroll_range(log, N)
        rows = shown(log)
        assert rows == list(range(rows[0], rows[0] + log.page_height))
        assert s.cursor in rows
        assert "hidden" not in screen_text(app).splitlines()[0]


async def test_filter_keys_lay_out_only_when_the_scroll_bar_comes_or_goes(mixed_history: Backend):
    app = InspectorApp(Session(mixed_history), play_interval=1e6)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        layouts: list[object] = []
        app.screen.screen_layout_refresh_signal.subscribe(app.screen, layouts.append)
        log = app.log_view
        for key in ("e", "x"):
            # on: no row is known until the scan finds them (the bar goes), then it
            # comes back: one layout each
            layouts.clear()
            await pilot.press(key)
            await settle(pilot)
            assert log.show_vertical_scrollbar
            assert len(layouts) == 2, key
            # off: only the row count changes
            layouts.clear()
            await pilot.press(key)
            await settle(pilot)
            assert layouts == [], key
            assert_scroll_range(log, N)
