"""Pilot tests of the inspector on a fixed journal: every key, what the screen shows and
what the session model holds afterwards."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from aminspect.session import MachineStatus
from aminspect.tui.app import InspectorApp
from aminspect.tui.screens import GoToSeqScreen, HelpScreen
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.widgets import DetailsPane, MachineTree, TransitionLog

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)


async def select(pilot, machine_id: str) -> None:
    pilot.app.choose(machine_id)
    await settle(pilot)


async def test_opens_on_the_first_root_machine_at_its_last_record(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        s = shop_app.session
        assert s.selected == "shop"
        assert s.cursor == 28 and s.follow
        text = screen_text(shop_app)
        assert "tests/data/shop.amj  (read-only)" in text
        assert "shop · seq 28/28 · following" in text
        # machine tree: nested by parent, counts and error markers
        assert "· shop 29" in text
        assert "order-1 97 !2" in text and "order-2 49 !1" in text
        # state tree at the cursor: Closed was entered and is the called state
        assert "● Closed + *" in text
        assert "record shop/0/28" in text
        assert shop_app.view is not None and shop_app.view.seq == 28


async def test_step_keys_move_the_cursor_and_every_view(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        s = shop_app.session
        await pilot.press("left")
        await settle(pilot)
        assert s.cursor == 27 and not s.follow
        assert shop_app.view is not None and shop_app.view.seq == 27
        text = screen_text(shop_app)
        assert "record shop/0/27" in text
        assert "states @ 27" in text
        assert "shop · seq 27/28" in text and "following" not in text
        for key, expected in [
            ("k", 26),
            ("up", 25),
            ("j", 26),
            ("down", 27),
            ("right", 28),
            ("right", 28),  # clamped at the last record
        ]:
            await pilot.press(key)
            await settle(pilot)
            assert s.cursor == expected, key
            assert shop_app.view is not None and shop_app.view.seq == expected
        assert not s.follow  # reaching the end by stepping does not follow again


async def test_jump_first_last_keys(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "order-1")
        s = shop_app.session
        assert s.cursor == 96
        for key, expected in [
            ("pageup", 46),
            ("pageup", 0),
            ("pagedown", 50),
            ("K", 0),
            ("J", 50),
            ("end", 96),
            ("home", 0),
            ("G", 96),
            ("g", 0),
        ]:
            await pilot.press(key)
            await settle(pilot)
            assert s.cursor == expected, key
            assert shop_app.view is not None and shop_app.view.seq == expected
        await pilot.press("G")
        assert s.follow  # "last" follows the tail again


async def test_go_to_seq(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "order-1")
        await pilot.press("colon")
        await pilot.pause()
        assert isinstance(shop_app.screen, GoToSeqScreen)
        await pilot.press(*"500", "enter")
        await pilot.pause()
        assert isinstance(shop_app.screen, GoToSeqScreen)
        assert "out of range: 0..96" in screen_text(shop_app)
        inp = shop_app.screen.query_one(Input)
        inp.value = ""
        await pilot.press(*"42", "enter")
        await settle(pilot)
        assert not isinstance(shop_app.screen, GoToSeqScreen)
        assert shop_app.session.cursor == 42
        assert "record order-1/0/42" in screen_text(shop_app)
        # escape cancels and leaves the cursor alone
        await pilot.press("colon")
        await pilot.pause()
        await pilot.press("left")  # arrows edit the input, they do not step
        await pilot.press("escape")
        await settle(pilot)
        assert shop_app.session.cursor == 42


async def test_follow_toggle(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        s = shop_app.session
        await pilot.press("home")
        await settle(pilot)
        assert s.cursor == 0 and not s.follow
        await pilot.press("f")
        await settle(pilot)
        assert s.follow and s.cursor == 28
        await pilot.press("f")
        assert not s.follow and s.cursor == 28


async def test_play_pause(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        s = shop_app.session
        await pilot.press("p")  # at the end: playing starts over from the first record
        await settle(pilot)
        assert s.playing and s.cursor == 0 and not s.follow
        assert "playing" in screen_text(shop_app)
        shop_app.action_play_tick()  # the play timer's tick, without waiting for it
        shop_app.action_play_tick()
        await settle(pilot)
        assert s.cursor == 2 and shop_app.view is not None and shop_app.view.seq == 2
        await pilot.press("p")
        await settle(pilot)
        assert not s.playing
        shop_app.action_play_tick()
        assert s.cursor == 2  # paused: ticks do nothing
        await pilot.press("p")
        assert s.playing and s.cursor == 2  # resumes where it paused
        await pilot.press("end")  # any move ... "last" keeps playing off? stepping stops it
        await pilot.press("left")
        assert not s.playing
        await pilot.press("p")
        for _ in range(5):
            shop_app.action_play_tick()
        await settle(pilot)
        assert s.cursor == 28 and not s.playing  # stops at the last record


async def test_search_as_you_type(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert isinstance(shop_app.focused, Input)
        await pilot.press(*"der-2")
        await pilot.pause()
        ids = [r.machine_id for r in shop_app.session.tree_rows()]
        assert ids == ["shop", "order-2"]  # the parent stays for context
        text = screen_text(shop_app)
        assert "order-2 49" in text and "order-1" not in text
        # step keys type into the search box instead of moving the cursor
        await pilot.press("left", "home")
        assert shop_app.session.cursor == 28
        await pilot.press("enter")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"
        assert isinstance(shop_app.focused, MachineTree)
        await pilot.press("slash", "escape")
        assert isinstance(shop_app.focused, MachineTree)


async def test_machine_tree_keys_and_brackets(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = shop_app.query_one(MachineTree)
        tree.focus()
        await pilot.pause()
        await pilot.press("down", "enter")
        await settle(pilot)
        assert shop_app.session.selected == "order-1"
        assert "order-1 · seq 96/96" in screen_text(shop_app)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert shop_app.session.selected == "shop"  # wraps around
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"


async def test_cursor_per_machine_is_kept(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("home")
        await select(pilot, "order-1")
        assert shop_app.session.cursor == 96
        await select(pilot, "shop")
        assert shop_app.session.cursor == 0


async def test_state_tree_at_the_cursor_marks_parallel_regions_and_errors(
    shop_app: InspectorApp,
):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(pilot, "order-1")
        shop_app.session.goto(20)  # "ship": into the parallel Shipping state
        shop_app.refresh_cursor()
        await settle(pilot)
        text = screen_text(shop_app)
        assert "● Shipping ∥ +" in text
        assert "◆ Carrier +" in text and "◆ Billing +" in text
        assert "○ Packing -" in text
        assert "○ PaymentFailed !" in text
        rows = {r.name: r for r in shop_app.view.states}
        assert rows["Shipping"].active and rows["Shipping"].parallel
        assert rows["Shipping.Carrier"].region and rows["Shipping.Carrier"].entered
        assert rows["Active"].exited and rows["Active"].clock == 6
        # the failed payment: an error row in the log and the error in the details
        shop_app.session.goto(30)
        shop_app.refresh_cursor()
        await settle(pilot)
        text = screen_text(shop_app)
        assert "PaymentError: card declined" in text
        assert shop_app.view.row.outcome.value == "error"


async def test_help_lists_every_key(shop_app: InspectorApp):
    async with shop_app.run_test(size=(100, 60)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(shop_app.screen, HelpScreen)
        text = screen_text(shop_app)
        bindings = list(InspectorApp.BINDINGS) + list(TransitionLog.BINDINGS)
        for keys, description in shop_app.key_table():
            assert f"{keys}" in text and description in text, description
        assert len(shop_app.key_table()) >= 15
        assert all(b.key for b in bindings)
        await pilot.press("left")  # modal: the cursor does not move underneath
        assert shop_app.session.cursor == 28
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(shop_app.screen, HelpScreen)
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(shop_app.screen, HelpScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        assert not isinstance(shop_app.screen, HelpScreen)


async def test_command_palette_runs_actions_and_selects_machines(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"first")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert shop_app.session.cursor == 0
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"order-2")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"


def test_every_palette_action_and_binding_has_a_method():
    app = InspectorApp.__new__(InspectorApp)
    titles = [title for title, _help, _action in InspectorApp.palette_actions(app)]
    assert len(titles) == len(set(titles))
    actions = [a for _t, _h, a in InspectorApp.palette_actions(app)]
    actions += [b.action for b in InspectorApp.BINDINGS]
    actions += [b.action.removeprefix("app.") for b in TransitionLog.BINDINGS]
    for action in actions:
        name = action.split("(")[0]
        assert callable(getattr(InspectorApp, f"action_{name}", None)), action
    # every bound action is offered in the palette too
    bound = {b.action.split("(")[0] for b in InspectorApp.BINDINGS} - {"escape"}
    offered = {a.split("(")[0] for a in actions[: len(titles)]}
    assert bound <= offered, bound - offered


async def test_mouse_click_selects_row_and_machine(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        log = shop_app.query_one(TransitionLog)
        top, _ = log.visible_window()
        # row 1 of the log's content is its header; row 3 shows seq top + 1
        assert await pilot.click(TransitionLog, offset=(5, 3 + 1))
        await settle(pilot)
        assert shop_app.session.cursor == top + 2
        tree = shop_app.query_one(MachineTree)
        line = [r.machine_id for r in shop_app.session.tree_rows()].index("order-2")
        assert await pilot.click(MachineTree, offset=(6, 1 + line))
        await settle(pilot)
        assert shop_app.session.selected == "order-2"
        assert tree.cursor_line == line


async def test_usable_at_80x24_and_on_the_light_theme(shop_app: InspectorApp):
    async with shop_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = screen_text(shop_app)
        assert "shop · seq 28/28" in text
        assert "states @ 28" in text and "record shop/0/28" in text
        assert "? Help" in text and "^p palette" in text
        await pilot.press("t")
        await settle(pilot)
        assert shop_app.theme == "textual-light"
        assert screen_text(shop_app) == text  # same content, other colours
        await pilot.press("t")
        assert shop_app.theme == "textual-dark"


async def test_quit_key(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert shop_app.return_code == 0


async def test_statuses_in_the_tree(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert {e.status for e in shop_app.session.machines.values()} == {MachineStatus.RECORDED}


async def test_tab_cycles_the_panels_starting_with_the_machines(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        order = []
        for _ in range(4):
            await pilot.press("tab")
            order.append(type(shop_app.focused).__name__)
        assert order == ["MachineTree", "StateTree", "DetailsPane", "TransitionLog"]
        await pilot.press("shift+tab")
        assert isinstance(shop_app.focused, DetailsPane)
        # the search box is left out of the cycle; / reaches it
        await pilot.press("slash")
        assert isinstance(shop_app.focused, Input)
        await pilot.press("tab")
        assert isinstance(shop_app.focused, TransitionLog)


async def test_moving_in_the_machine_tree_selects_at_once(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = shop_app.query_one(MachineTree)
        await pilot.press("tab", "down")
        await settle(pilot)
        assert shop_app.session.selected == "order-1"
        assert "order-1 · seq 96/96" in screen_text(shop_app)
        await pilot.press("down")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"
        await pilot.press("up", "up")
        await settle(pilot)
        assert shop_app.session.selected == "shop"
        # selected elsewhere (brackets, palette): the tree's cursor follows
        shop_app.log_view.focus()
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert shop_app.session.selected == "order-2"
        assert tree.cursor_node is not None and tree.cursor_node.data == "order-2"


async def test_a_rebuilt_tree_keeps_its_cursor_on_the_selection(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tree = shop_app.query_one(MachineTree)
        tree.focus()
        await select(pilot, "order-2")
        tree.show_rows([], None)  # a new set of machines, as when one arrives live
        shop_app._refresh_tree()
        await settle(pilot)
        assert tree.cursor_node is not None and tree.cursor_node.data == "order-2"
        assert shop_app.session.selected == "order-2"


async def test_escape_clears_the_search_filter(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"order-2", "enter")
        await settle(pilot)
        assert [r.machine_id for r in shop_app.session.tree_rows()] == ["shop", "order-2"]
        assert shop_app.machine_tree.border_title == "machines ~ order-2"
        await pilot.press("escape")  # from the tree: the filter goes, the selection stays
        await settle(pilot)
        assert len(shop_app.session.tree_rows()) == 3
        assert shop_app.machine_tree.border_title == "machines"
        assert shop_app.session.selected == "order-2"
