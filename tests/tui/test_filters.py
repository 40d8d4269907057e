"""Pilot tests of the log's filters: the keys, the filter screen, search-as-you-type, the
change jumps, and that a filtered million-row log still reads only what it shows."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox, Input
from textual.worker import WorkerCancelled

import backends
from aminspect.filters import LogFilter
from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.filter_bar import FilterScreen, SearchBar
from aminspect.tui.screenshots import screen_text
from aminspect.tui.widgets import StateTree, TransitionLog
from tracer.records import MachineRecord, Schema, TransitionRecord

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)
ORDER1_ERRORS = [30, 70]  # pay failed: card declined
ORDER1_REFUSED = [2, 10, 18, 26, 34, 42, 50, 58, 66, 74, 82, 90]


async def settle(pilot) -> None:
    """Wait until no worker runs and their messages were handled. A filter scan reports
    while it runs and each report may start (and cancel) a view worker, so wait again
    until nothing is left (``screenshots.settle`` stops at the first cancelled one)."""
    app = pilot.app
    for _ in range(200):
        await pilot.pause()
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:
            continue
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            break
    await pilot.pause()


async def until(pilot, condition) -> None:
    """Pause until ``condition()`` holds (the search filters once typing pauses)."""
    for _ in range(100):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not met in 5 s")


async def order1(pilot) -> InspectorApp:
    app = pilot.app
    app.choose("order-1")
    await settle(pilot)
    return app


def log_seqs(app: InspectorApp) -> list[int]:
    log = app.log_view
    start, end = log.visible_window()
    return [log.seq_at(r) for r in range(start, end)]


async def test_errors_only_key_filters_the_log_and_moves_over_it(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        s = app.session
        await pilot.press("e")
        await settle(pilot)
        assert s.filter == LogFilter(errors_only=True)
        assert log_seqs(app) == ORDER1_ERRORS
        assert s.cursor == 70 and app.view is not None and app.view.seq == 70
        text = screen_text(app)
        assert "2 shown, 95 hidden · filter: errors" in text
        assert "card declined" in text  # the details of the error at the cursor
        await pilot.press("left")
        await settle(pilot)
        assert s.cursor == 30
        await pilot.press("left")  # the first shown record: it stays
        await settle(pilot)
        assert s.cursor == 30
        await pilot.press("end")
        await settle(pilot)
        assert s.cursor == 70 and s.follow
        await pilot.press("home")
        await settle(pilot)
        assert s.cursor == 30
        await pilot.press("e")  # again: every record is back, the cursor stays
        await settle(pilot)
        assert s.filtered is None and s.cursor == 30
        assert "filter:" not in screen_text(app)
        await pilot.press("left")
        await settle(pilot)
        assert s.cursor == 29


async def test_hide_not_accepted_and_clear(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        s = app.session
        await pilot.press("x")
        await settle(pilot)
        fv = s.filtered
        assert fv is not None and fv.complete
        hidden = set(ORDER1_REFUSED) | set(ORDER1_ERRORS)
        assert fv.total == 97 - len(hidden)
        assert not hidden & set(log_seqs(app))
        assert "✗" not in screen_text(app)
        s.goto(20)
        app.refresh_cursor()
        await settle(pilot)
        await pilot.press("pagedown")
        await settle(pilot)
        shown = [q for q in range(97) if q not in hidden]
        assert s.cursor == shown[shown.index(20) + 50]
        await pilot.press("X")
        await settle(pilot)
        assert s.filter == LogFilter() and s.filtered is None


async def test_filter_screen_enter_applies_from_a_checkbox(shop_app: InspectorApp):
    """Shift+tab up to "errors only", space ticks it, enter applies (a focused checkbox
    took enter to toggle itself)."""
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        await pilot.press("F")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FilterScreen)
        await pilot.press("shift+tab", "space")
        await pilot.pause()
        assert screen.query_one("#filter-errors", Checkbox).value
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, FilterScreen)
        assert app.session.filter == LogFilter(errors_only=True)


async def test_filter_screen_sets_every_filter(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        s = app.session
        await pilot.press("F")
        await pilot.pause()
        assert isinstance(app.screen, FilterScreen)
        screen = app.screen
        await pilot.press(*"event", "tab")
        await pilot.press(*"ship,pay", "tab")
        await pilot.press(*"paid", "tab", "tab")  # states, then past the search field
        await pilot.press(*"order")
        screen.query_one("#filter-hide-rejected", Checkbox).value = True
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, FilterScreen)
        assert s.filter == LogFilter(
            hide_rejected=True,
            kinds=frozenset({"event"}),
            events=frozenset({"ship", "pay"}),
            states=frozenset({"paid"}),
            machine="order",
        )
        paid = s.machines["order-1"].record.schema.index("Shipping.Billing.Paid")
        expected = [
            r.seq
            for r in s.backend.read("order-1")
            if r.accepted and r.name in ("ship", "pay") and paid in (*r.entered, *r.exited)
        ]
        fv = s.filtered
        assert fv is not None and expected
        assert [fv.seq_at(i) for i in range(fv.total)] == expected  # the accepted pays
        # the parent stays for context, dimmed
        assert [r.machine_id for r in s.tree_rows() if r.match] == ["order-1", "order-2"]
        text = screen_text(app)
        assert f"{len(expected)} shown, {97 - len(expected)} hidden · filter: accepted" in text
        # escape cancels; ctrl+r clears the form
        await pilot.press("F")
        await pilot.pause()
        await pilot.press("escape")
        await settle(pilot)
        assert s.filter.hide_rejected
        await pilot.press("F")
        await pilot.pause()
        assert app.screen.query_one("#filter-events", Input).value == "pay, ship"
        await pilot.press("ctrl+r", "ctrl+s")
        await settle(pilot)
        assert s.filter == LogFilter() and len(s.tree_rows()) == 3


async def test_search_as_you_type(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        s = app.session
        bar = app.main_screen.query_one(SearchBar)
        row = app.main_screen.query_one("#log-search-row")
        assert not row.display
        await pilot.press("n")
        await pilot.pause()
        assert bar.has_focus and row.display
        await pilot.press("p")
        await until(pilot, lambda: s.filter.search == "p")  # pack, pay, Picking, Paid...
        await pilot.press("a", "y")
        await until(pilot, lambda: s.filter.search == "pay")
        await settle(pilot)
        fv = s.filtered
        assert fv is not None and fv.complete
        rows = [s.row("order-1", q) for q in log_seqs(app)]
        # pay events, and records that touched (Un)paid / PaymentFailed
        assert rows and all(
            r is not None
            and ("pay" in r.name or "paid" in r.changes.lower() or "Payment" in r.changes)
            for r in rows
        )
        await pilot.press("enter")  # keeps the search, back to the log
        await settle(pilot)
        assert isinstance(app.focused, TransitionLog) and row.display
        await pilot.press("left")
        await settle(pilot)
        assert s.cursor in [fv.seq_at(i) for i in range(fv.total)]
        await pilot.press("n")
        await pilot.pause()
        await pilot.press("escape")  # clears the search and hides the bar
        await settle(pilot)
        assert s.filter.search == "" and s.filtered is None and not row.display


async def test_jumps_to_the_changes_of_the_selected_state(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        s = app.session
        await pilot.press("right_curly_bracket")  # no state selected yet: a hint
        await settle(pilot)
        assert s.cursor == 96
        tree = app.state_tree
        app._focus_now(tree)
        await pilot.press("down", "down")  # Idle, Active
        await settle(pilot)
        assert app.selected_state == "Active" and tree.selected_state == 1
        s.goto(10)
        app.refresh_cursor()
        await settle(pilot)
        records = s.backend.read("order-1")
        changes = [r.seq for r in records if 1 in (*r.entered, *r.exited)]
        await pilot.press("right_curly_bracket")
        await settle(pilot)
        nxt = min(c for c in changes if c > 10)
        assert s.cursor == nxt
        await pilot.press("left_curly_bracket")
        await settle(pilot)
        before = [c for c in changes if c < nxt]
        assert s.cursor == before[-1]
        await pilot.press("left_curly_bracket")
        await settle(pilot)
        assert s.cursor == before[-2]
        # choosing another machine drops the selection (state indexes differ)
        app.choose("shop")
        await settle(pilot)
        assert app.selected_state is None and tree.selected_state is None


async def test_clicking_a_filtered_row_and_the_palette(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        app = await order1(pilot)
        app.apply_filter(LogFilter(events=frozenset({"pay"})))
        await settle(pilot)
        seqs = log_seqs(app)
        assert len(seqs) >= 3
        # the border, the column header, then the rows: the second shown row
        await pilot.click(TransitionLog, offset=(5, 3))
        await settle(pilot)
        assert app.session.cursor == seqs[1]
        actions = {a for _t, _h, a in app.palette_actions()}
        assert {"filter", "toggle_errors", "search_log", "change(1)"} <= actions
        keys = dict((d, k) for k, d in app.key_table())
        assert keys["filter: errors only on/off"] == "e"


async def test_a_filtered_long_history_reads_only_what_it_shows():
    backend = backends.open("memory://")
    n = 60_000
    backend.put_machine(MachineRecord("long", "manual", Schema.flat(["A", "B"]), 0, 0))
    records = [TransitionRecord("long", 0, "init", "init", time=0, entered=(0,))]
    for seq in range(1, n):
        a, b = (0, 1) if seq % 2 else (1, 0)
        failed = seq % 1000 == 0
        records.append(
            TransitionRecord(
                "long",
                seq,
                "set",
                "boom" if failed else "go",
                time=seq,
                exited=(a,),
                entered=(b,),
                error=("ValueError", "x") if failed else None,
            )
        )
    backend.append("long", records)
    app = InspectorApp(Session(backend), play_interval=1e6)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            s = app.session
            await pilot.press("e")
            await settle(pilot)
            reads = s.pages.reads
            fv = s.filtered
            assert fv is not None and fv.complete and fv.total == 59
            assert s.cursor == 59_000
            text = screen_text(app)
            assert "59 shown, 59,941 hidden" in text and "boom" in text
            await pilot.press("pageup")
            await settle(pilot)
            assert s.cursor == 9_000
            # the rows on screen are 1000 records apart: at most one page per row
            # (the background error count summarised the records, so the filter itself
            # read none), never the pages in between
            assert fv.reads == 0
            assert s.pages.reads - reads <= app.log_view.page_height + 2
            assert isinstance(app.state_tree, StateTree)
    finally:
        backend.close()
