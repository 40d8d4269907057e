"""Pilot tests of the mark and the diff panel on the fixed journal."""

from __future__ import annotations

import pytest

from aminspect.tui.app import InspectorApp
from aminspect.tui.diff import DiffPane
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.timeline import Timeline

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)


async def goto(pilot, seq: int) -> None:
    pilot.app.session.goto(seq)
    pilot.app.refresh_cursor()
    await settle(pilot)


async def test_without_a_mark_the_diff_is_against_the_previous_record(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shop_app.choose("order-1")
        await settle(pilot)
        await goto(pilot, 22)
        await pilot.press("v", "v")
        await settle(pilot)
        pane = shop_app.query_one(DiffPane)
        assert shop_app.lower == "diff"
        d = pane.diff
        assert d is not None and (d.base, d.target, d.marked) == (21, 22, None)
        assert d.entered == ["Shipping.Billing.Paid"]
        assert d.exited == ["Shipping.Billing.Unpaid"]
        assert d.between == 1 and d.head == ("pay",)
        text = screen_text(shop_app)
        assert "seq 21 → 22 (previous record" in text
        assert "entered Shipping.Billing.Paid" in text
        # the diff follows the cursor
        await pilot.press("right")
        await settle(pilot)
        assert pane.diff is not None and (pane.diff.base, pane.diff.target) == (22, 23)


async def test_mark_then_move_shows_what_changed_in_between(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shop_app.choose("order-1")
        await settle(pilot)
        await goto(pilot, 22)
        await pilot.press("b")  # from the details: the mark opens the diff
        await settle(pilot)
        assert shop_app.marks == {"order-1": 22} and shop_app.lower == "diff"
        await goto(pilot, 30)
        pane = shop_app.query_one(DiffPane)
        d = pane.diff
        assert d is not None and (d.base, d.target, d.marked) == (22, 30, 22)
        backend = shop_app.session.backend
        before, after = backend.state_at("order-1", 22), backend.state_at("order-1", 30)
        schema = shop_app.session.machines["order-1"].record.schema
        for i, name in enumerate(schema.names):
            assert (name in d.entered) == (not before.is_active(i) and after.is_active(i))
            assert (name in d.exited) == (before.is_active(i) and not after.is_active(i))
        assert d.between == 8 and d.errors == 1 and d.refused == 1
        recs = backend.read("order-1", 22, 31)
        assert d.elapsed == recs[-1].time - recs[0].time
        text = screen_text(shop_app)
        assert "diff · mark 22" in text
        assert "seq 22 (mark) → 30 (cursor)" in text
        assert "8 records: deliver, reset, start" in text
        assert "1 error(s), 1 not accepted" in text
        # the cursor before the mark: the same two points, the other way round in words
        await goto(pilot, 10)
        assert pane.diff is not None and (pane.diff.base, pane.diff.target) == (10, 22)
        assert "seq 10 (cursor) → 22 (mark)" in screen_text(shop_app)
        # b on the marked record clears the mark
        await goto(pilot, 22)
        await pilot.press("b")
        await settle(pilot)
        assert shop_app.marks == {}
        assert pane.diff is not None and pane.diff.marked is None


async def test_the_mark_is_per_machine_and_shown_on_the_timeline(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shop_app.choose("order-1")
        await settle(pilot)
        await goto(pilot, 25)
        await pilot.press("b")
        await settle(pilot)
        await goto(pilot, 30)
        await pilot.press("v")  # diff -> details
        await pilot.press("v")  # -> timeline
        await settle(pilot)
        tl = shop_app.query_one(Timeline)
        assert shop_app.lower == "timeline" and tl.mark == 25
        axis = tl.axis_text(tl.size.width).plain
        assert "◆" in axis and "▼" in axis
        assert axis.index("◆") == axis.index("▼") - 5
        assert "mark 25" in screen_text(shop_app)
        shop_app.choose("order-2")
        await settle(pilot)
        assert tl.mark is None and "◆" not in tl.axis_text(tl.size.width).plain


async def test_mark_without_records_says_so(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shop_app.session.selected = None
        await pilot.press("b")
        await pilot.pause()
        assert shop_app.marks == {}
