"""Pilot tests of the export dialog: every format and scope, the files' contents, the
notification with the path, cancelling, and a failing export."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, RadioButton

import backends
from aminspect import export as ex
from aminspect.tui.app import InspectorApp
from aminspect.tui.export_screen import ExportScreen
from aminspect.tui.screenshots import screen_text, settle

pytestmark = pytest.mark.timeout(60)

SIZE = (100, 30)
SUFFIX = {"journal": ".amj", "jsonl": ".jsonl", "mermaid": ".mmd", "dot": ".dot"}


async def export(pilot, fmt: str, path, machine: bool) -> None:
    """Open the dialog with E, choose with the keyboard and the mouse, enter."""
    await pilot.press("E")
    await pilot.pause()
    screen = pilot.app.screen
    assert isinstance(screen, ExportScreen)
    await pilot.click(f"#fmt-{fmt}")
    await pilot.click("#scope-machine" if machine else "#scope-session")
    await pilot.pause()
    assert screen.fmt == fmt and (screen.scope is not None) == machine
    field = screen.query_one("#export-path", Input)
    assert field.value.endswith(SUFFIX[fmt])
    field.value = str(path)
    field.focus()
    await pilot.press("enter")
    await settle(pilot)


def notices(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_export_each_format_of_the_selected_machine(shop_app: InspectorApp, tmp_path):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shop_app.choose("order-1")
        await settle(pilot)
        source = shop_app.session.backend
        for fmt in ("journal", "jsonl", "mermaid", "dot"):
            out = tmp_path / ("order-1" + SUFFIX[fmt])
            await export(pilot, fmt, out, machine=True)
            assert not isinstance(shop_app.screen, ExportScreen)
            assert out.exists()
            assert any(f"wrote {out}" in n for n in notices(shop_app))
            assert shop_app.last_export is not None and shop_app.last_export.records == 97
            assert shop_app.last_export.format == fmt
            if fmt == "journal":
                with backends.open(str(out), read_only=True) as copy:
                    assert [m.id for m in copy.machines()] == ["order-1"]
                    assert copy.read("order-1") == source.read("order-1")
            elif fmt == "jsonl":
                lines = [json.loads(line) for line in out.read_text().splitlines()]
                assert lines[0]["id"] == "order-1" and len(lines) == 98
                assert [r["seq"] for r in lines[1:]] == list(range(97))
            elif fmt == "mermaid":
                assert out.read_text() == ex.to_mermaid(ex.visits(source, "order-1"))
            else:
                assert out.read_text() == ex.to_dot(ex.visits(source, "order-1"))
        # nothing but the four files: no temporaries left behind
        assert sorted(p.suffix for p in tmp_path.iterdir()) == [".amj", ".dot", ".jsonl", ".mmd"]


async def test_export_the_session_as_a_journal(shop_app: InspectorApp, tmp_path):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        out = tmp_path / "all.amj"
        await export(pilot, "journal", out, machine=False)
        with backends.open(str(out), read_only=True) as copy:
            assert sorted(m.id for m in copy.machines()) == ["order-1", "order-2", "shop"]
        assert shop_app.last_export is not None and shop_app.last_export.machines == 3


async def test_the_dialog_defaults_cancels_and_reports_errors(shop_app: InspectorApp, tmp_path):
    shop_app.export_dir = tmp_path
    async with shop_app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("E")
        await pilot.pause()
        screen = shop_app.screen
        assert isinstance(screen, ExportScreen)
        # defaults: the selected machine, as a journal, a fresh name in the directory
        assert screen.scope == "shop" and screen.fmt == "journal"
        path = screen.query_one("#export-path", Input).value
        assert path.startswith(str(tmp_path / "aminspect-shop-")) and path.endswith(".amj")
        text = screen_text(shop_app)
        assert "Export" in text and "Mermaid" in text and "session (3 machines)" in text
        screen.set_choice(fmt="dot", machine=False)
        await pilot.pause()
        path = screen.query_one("#export-path", Input).value
        assert "aminspect-session-" in path and path.endswith(".dot")
        assert screen.query_one("#scope-session", RadioButton).value
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(shop_app.screen, ExportScreen)
        assert list(tmp_path.iterdir()) == []
        # a directory that does not exist: the dialog says so and stays open
        await pilot.press("E")
        await pilot.pause()
        screen = shop_app.screen
        field = screen.query_one("#export-path", Input)
        field.value = str(tmp_path / "missing" / "x.amj")
        field.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(shop_app.screen, ExportScreen)
        assert "no such directory" in screen_text(shop_app)
        field.value = str(tmp_path / "y.amj")  # fixing the path clears the error
        await pilot.pause()
        assert "no such directory" not in screen_text(shop_app)
        # the file being inspected: refused by the export, shown as an error
        field.value = str(shop_app.session.backend.path)
        await pilot.press("enter")
        await settle(pilot)
        assert any("the file being inspected" in n for n in notices(shop_app))


async def test_enter_writes_from_wherever_the_focus_is(shop_app: InspectorApp, tmp_path):
    """E then enter writes the proposed file (the focus starts on the format buttons, which
    took enter for themselves); tab to Cancel and enter cancels."""
    shop_app.export_dir = tmp_path
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("E")
        await pilot.pause()
        screen = shop_app.screen
        assert isinstance(screen, ExportScreen)
        await pilot.press("down", "space")  # JSON Lines, picked with the keyboard
        await pilot.pause()
        assert screen.fmt == "jsonl"
        proposed = screen.query_one("#export-path", Input).value
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(shop_app.screen, ExportScreen)
        assert [p.name for p in tmp_path.iterdir()] == [proposed.rsplit("/", 1)[-1]]
        assert proposed.endswith(".jsonl")
        await pilot.press("E")
        await pilot.pause()
        screen = shop_app.screen
        screen.query_one("#export-cancel").focus()
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(shop_app.screen, ExportScreen)
        assert len(list(tmp_path.iterdir())) == 1  # cancelled: nothing more written


async def test_palette_offers_export_timeline_diff_and_mark(shop_app: InspectorApp):
    async with shop_app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        titles = [t for t, _h, _a in shop_app.palette_actions()]
        for title in ("Export…", "Show timeline", "Show diff", "Mark record", "Cycle lower panel"):
            assert title in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"show timeline")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert shop_app.lower == "timeline"
        keys = dict((d, k) for k, d in shop_app.key_table())
        assert keys["timeline: zoom in / out"] == "+ = -"
        assert keys["export the session or a machine: journal, JSONL, Mermaid, DOT"] == "E"
