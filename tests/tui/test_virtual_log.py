"""The transition log is a virtual list: it reads only the pages it shows, so a long
history scrolls like a short one."""

from __future__ import annotations

import pytest
from textual.events import MouseScrollDown

import backends
from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.widgets import TransitionLog
from tracer.records import MachineRecord, Schema, TransitionRecord

pytestmark = pytest.mark.timeout(90)

N = 50_000


@pytest.fixture(scope="module")
def long_history():
    backend = backends.open("memory://")
    backend.put_machine(MachineRecord("long", "manual", Schema.flat(["A", "B"]), 0, 0))
    records = [TransitionRecord("long", 0, "init", "init", time=0, entered=(0,))]
    for seq in range(1, N):
        a, b = (0, 1) if seq % 2 else (1, 0)
        records.append(
            TransitionRecord("long", seq, "set", f"go{seq}", time=seq, exited=(a,), entered=(b,))
        )
    for start in range(0, N, 10_000):
        backend.append("long", records[start : start + 10_000])
    yield backend
    backend.close()


async def test_only_visible_pages_are_read(long_history):
    app = InspectorApp(Session(long_history), play_interval=1e6)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        s = app.session
        assert s.cursor == N - 1
        assert f"▶{N - 1}" in screen_text(app).replace(" ", "")
        for key in ("home", "end", "pageup", "home"):
            await pilot.press(key)
            await settle(pilot)
        s.goto(N // 2)
        app.refresh_cursor()
        await settle(pilot)
        text = screen_text(app)
        assert f"go{N // 2}" in text and "…" not in text
        # scrolling with the wheel loads the rows it reveals, and leaves the cursor alone
        log = app.query_one(TransitionLog)
        before, _ = log.visible_window()
        # Pilot has no wheel helper: post the wheel events the way its click does
        for _ in range(20):
            await pilot._post_mouse_events([MouseScrollDown], TransitionLog, (5, 5))
        await settle(pilot)
        top, end = log.visible_window()
        assert top >= before + 20 and s.cursor == N // 2
        assert f"go{end - 1}" in screen_text(app)
        # a handful of 256-record pages out of ~200, not the history
        assert s.pages.reads <= 12, s.pages.reads
