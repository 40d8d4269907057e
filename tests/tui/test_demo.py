"""``aminspect demo`` end to end: the TUI, its ingest server and the demo shop as a real
child process streaming over WebSocket on loopback; quitting stops the child cleanly."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

import backends
from aminspect.session import MachineStatus
from aminspect.tui.launch import demo_app
from aminspect.tui.screenshots import screen_text, settle
from aminspect.tui.widgets import MachineTree

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]

# the shop's machines and the persistent ones that run next to it
WANTED = {"shop", "order", "agent", "fsm", "job", "account"}
WAIT = 30.0  # seconds the child gets to start Python, connect and stream


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_demo_streams_its_machines_and_stops_its_child_on_quit():
    backend = backends.open("memory://")
    # a fast pace: the shop ticks every ~20 ms, so a few seconds show every kind of machine
    app, child = demo_app(backend, "127.0.0.1", 0, seed=7, pace=0.02)
    app.poll_interval = 1e6  # the test applies what arrived itself (refresh_now)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert app.server is not None and app.server.address[1] != 0
            assert child.process is not None and child.process.poll() is None
            s = app.session
            deadline = time.monotonic() + WAIT
            seen: set[str] = set()
            while time.monotonic() < deadline:
                app.refresh_now()
                await settle(pilot)
                seen = {mid.split("-")[0] for mid, e in s.machines.items() if e.count > 1}
                if seen >= WANTED and any(e.errors for e in s.machines.values()):
                    break
                await asyncio.sleep(0.1)
            assert seen >= WANTED, f"only {sorted(s.machines)} arrived"
            # the shop's machines hang under it, and are live while the child streams them
            assert all(
                e.record.parent_id == "shop"
                for mid, e in s.machines.items()
                if mid.startswith(("order-", "agent-"))
            )
            # the persistent machines: FSM instances, HSM job trees, event-sourced accounts
            kinds = {e.record.kind for e in s.machines.values()}
            assert {"fsm", "arcfsm", "hsm"} <= kinds, kinds
            assert any(mid.startswith("account-") for mid in s.machines)
            assert s.machines["agent-1"].status is MachineStatus.LIVE
            assert s.machines["agent-1"].record.kind == "statemachine"
            assert s.machines["order-1"].record.kind == "transitions"
            assert any(e.errors for e in s.machines.values())  # a declined card
            rows = s.tree_rows()
            assert {r.machine_id: r.depth for r in rows}["shop"] == 0
            assert all(r.depth == 1 for r in rows if r.machine_id.startswith(("order-", "agent-")))
            text = screen_text(app)
            live = [mid for mid, e in s.machines.items() if e.status is MachineStatus.LIVE]
            assert any(f"● {mid}" in text for mid in live), text  # the tree marks live ones
            assert f"{s.selected} · seq" in text  # the log shows the selected machine
            # keyboard selection: tab reaches the machine tree, down selects the next one
            await pilot.press("tab")
            await settle(pilot)
            assert isinstance(app.focused, MachineTree)
            rows = s.tree_rows()  # nothing new is applied until the next refresh_now
            ids = [r.machine_id for r in rows]
            expected = ids[ids.index(s.selected) + 1] if s.selected in ids else ids[0]
            await pilot.press("down")
            await settle(pilot)
            assert s.selected == expected
            assert f"{expected} · seq" in screen_text(app)
            pid = child.process.pid
            await pilot.press("q")
        # the app stopped the child on its way out, before its server closed
        assert child.process.returncode == 0
        assert not pid_alive(pid)  # reaped: no zombie, no orphan
        assert child.stop() == 0 and not child.failed  # run_demo calls it again: harmless
    finally:
        child.stop()
        backend.close()
