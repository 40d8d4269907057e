"""Pilot tests of the timeline panel on the fixed journal: showing it, what it draws, its
keys (zoom, pan, scale, pin, hide), clicks, and what it reads."""

from __future__ import annotations

import pytest

from aminspect.timeline import Cell, Scale
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.timeline import GLYPHS, Timeline

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)


async def open_timeline(pilot, machine_id: str = "order-1", seq: int = 30) -> Timeline:
    app = pilot.app
    app.choose(machine_id)
    await settle(pilot)
    app.session.goto(seq)
    app.refresh_cursor()
    await settle(pilot)
    await pilot.press("v")
    await settle(pilot)
    return app.query_one(Timeline)


def row_of(tl: Timeline, name: str) -> str:
    i = [r.name for r in tl.rows].index(name)
    return tl.plain_rows()[i]


async def test_v_shows_the_timeline_with_a_row_per_state(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot)
        assert shop_app.lower == "timeline" and shop_app.focused is tl
        schema = shop_app.session.machines["order-1"].record.schema
        assert [r.name for r in tl.rows] == [
            "Idle",
            "Active",
            "Active.Picking",
            "Active.Packing",
            "Shipping",
            "Shipping.Carrier",
            "Shipping.Carrier.Waiting",
            "Shipping.Carrier.InTransit",
            "Shipping.Billing",
            "Shipping.Billing.Unpaid",
            "Shipping.Billing.Paid",
            "Done",
            "PaymentFailed",
        ]
        assert len(tl.rows) == len(schema)
        # nested states indented as in the state tree
        assert row_of(tl, "Shipping.Carrier.Waiting").startswith("    Waiting")
        # the cursor's column shows the configuration after the cursor record
        col = tl.model.cursor_column()
        assert col is not None
        view = shop_app.view
        assert view is not None and view.seq == 30
        for r, cells in zip(tl.rows, tl.cells, strict=True):
            active = next(s.active for s in view.states if s.index == r.index)
            assert (cells[col] in (Cell.ON, Cell.REENTER)) == active, r.name
        text = screen_text(shop_app)
        assert "timeline · tick · 1 rec/col" in text
        assert "▼" in text and GLYPHS[Cell.ON] in text
        # v again: the diff, then back to the record details
        await pilot.press("v")
        await settle(pilot)
        assert shop_app.lower == "diff"
        await pilot.press("v")
        await settle(pilot)
        assert shop_app.lower == "details"
        assert "record order-1/0/30" in screen_text(shop_app)


async def test_the_view_follows_the_cursor_and_reads_only_its_window(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot, seq=48)
        m = tl.model
        assert m.left <= 48 < m.left + m.span_records
        window = tl.window
        assert window is not None
        assert window.start == m.left and window.end <= m.left + m.span_records
        assert len(window.records) == window.end - window.start <= m.cols
        # stepping inside the view keeps it; the cursor column moves
        col = m.cursor_column()
        cells = tl.cells
        await pilot.press("right")
        await settle(pilot)
        assert tl.window is window and m.cursor_column() == col + 1
        assert tl.cells is cells  # a step inside the view lays nothing out again
        # jumping far away brings the view along
        await pilot.press("end")
        await settle(pilot)
        assert m.left <= 96 < m.left + m.span_records
        assert tl.window is not None and tl.window.end == 97
        # another machine: its own rows, centred on its cursor
        shop_app.choose("shop")
        await settle(pilot)
        assert [r.name for r in tl.rows] == ["Closed", "Open", "Busy", "Exception"]
        assert tl.window is not None and tl.window.machine_id == "shop"


async def test_zoom_pan_centre_keys(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot, seq=50)
        m = tl.model
        assert m.per_col == 1
        await pilot.press("minus")
        await settle(pilot)
        assert m.per_col == 2 and m.cursor_column() is not None
        assert tl.window is not None and tl.window.start == m.left
        assert "2 rec/col" in screen_text(shop_app)
        await pilot.press("plus", "plus")
        await settle(pilot)
        assert m.per_col == 0.5
        assert "2 col/rec" in screen_text(shop_app)
        left = m.left
        await pilot.press("greater_than_sign")
        await settle(pilot)
        assert m.left == left + m.span_records // 2
        assert shop_app.session.cursor == 50  # panning does not move the cursor
        await pilot.press("comma", "comma")
        await settle(pilot)
        assert m.left == max(0, left - m.span_records // 2)
        await pilot.press("c")
        await settle(pilot)
        assert m.cursor_column() is not None


async def test_time_scale_toggle(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot, seq=30)
        await pilot.press("s")
        await settle(pilot)
        m = tl.model
        assert m.scale is Scale.TIME
        window = tl.window
        assert window is not None and window.scale is Scale.TIME
        assert all(window.t0 <= r.time < window.t1 for r in window.records)
        assert any(r.seq == 30 for r in window.records)
        assert m.cursor_column() is not None
        text = screen_text(shop_app)
        assert "timeline · time ·" in text and "UTC" in text
        await pilot.press("minus")
        await settle(pilot)
        assert tl.window is not None and tl.window.t1 - tl.window.t0 == m.span_ns
        await pilot.press("s")
        await settle(pilot)
        assert m.scale is Scale.TICK and tl.window is not None
        assert tl.window.scale is Scale.TICK


async def test_pin_hide_and_show_hidden(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot)
        await pilot.press("down", "down", "down")  # Active.Packing
        assert tl.chosen_row().name == "Active.Packing"
        await pilot.press("i")
        await settle(pilot)
        assert tl.rows[0].name == "Active.Packing" and tl.rows[0].pinned
        assert tl.plain_rows()[0].startswith("⚲ Packing")
        assert len(tl.cells) == len(tl.rows)
        await pilot.press("down")
        await pilot.press("h")  # hides Idle (the row below the pinned one)
        await settle(pilot)
        assert "Idle" not in [r.name for r in tl.rows]
        assert len(tl.rows) == 12
        await pilot.press("H")
        await settle(pilot)
        assert len(tl.rows) == 13 and tl.rows[0].name == "Active.Packing"
        # pins are per machine
        shop_app.choose("order-2")
        await settle(pilot)
        assert tl.rows[0].name == "Idle"


async def test_clicking_a_column_moves_the_cursor(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        tl = await open_timeline(pilot, seq=30)
        col = tl.model.cursor_column()
        x = tl._label_w + col - 3
        assert await pilot.click(Timeline, offset=(x + 1, 3))  # +1: the border
        await settle(pilot)
        assert shop_app.session.cursor == 27
        assert tl.model.cursor_column() == col - 3


async def test_usable_at_80x24(shop_app: InspectorApp):
    async with shop_app.run_test(size=(80, 24)) as pilot:
        tl = await open_timeline(pilot, seq=30)
        text = screen_text(shop_app)
        assert "timeline · tick" in text and "▼" in text
        assert tl.model.cols >= 30
        await pilot.press("z")  # the panel on the whole screen, for every row at once
        await settle(pilot)
        text = screen_text(shop_app)
        assert "PaymentFailed" in text and "machines" not in text
        await pilot.press("z")
        await settle(pilot)
        assert "machines" in screen_text(shop_app)
