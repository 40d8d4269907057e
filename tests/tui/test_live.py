"""A live tracer stream into the running app: ManualMachine -> WebSocketSink -> the app's
ingest server on 127.0.0.1 port 0 -> memory backend -> the panels."""

from __future__ import annotations

import asyncio

import pytest

import backends
from aminspect.server import Disconnected, IngestServer, Stored
from aminspect.session import MachineStatus, Session
from aminspect.tui.app import InspectorApp
from aminspect.tui.screenshots import screen_text, settle
from tracer import ManualMachine, attach
from tracer.ws_sink import WebSocketSink

pytestmark = [pytest.mark.timeout(60), pytest.mark.network]


async def wait_for(sub, predicate, timeout: float = 10.0) -> None:
    """Consume ingest events until one matches (event-driven, bounded in time)."""

    async def run() -> None:
        async for event in sub:
            if predicate(event):
                return

    await asyncio.wait_for(run(), timeout)


async def test_live_stream_is_shown_and_followed():
    backend = backends.open("memory://")
    server = IngestServer(backend, "127.0.0.1", 0)
    app = InspectorApp(
        Session(backend, live=True), server=server, play_interval=1e6, poll_interval=1e6
    )
    listening: list[str] = []
    app.on_listening = listening.append
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert listening == [server.url] and server.address[1] != 0
            assert server.url in screen_text(app)
            text = screen_text(app)
            assert "waiting for tracers; run your app with" in text
            assert f"AMINSPECT_URL={server.url}" in text
            sub = server.subscribe()
            machine = ManualMachine(["Idle", "Busy", "Exception"], initial=["Idle"])
            sink = WebSocketSink(server.url)
            handle = await asyncio.to_thread(attach, machine, sink=sink, name="live-1")
            for _ in range(10):
                machine.set("Busy")
                machine.set("Idle")
            machine.event("boom", ["Idle"], ["Exception"], error=("RuntimeError", "boom"))
            assert await asyncio.to_thread(handle.flush, 10)
            await wait_for(sub, lambda e: isinstance(e, Stored) and e.last == 21)
            app.refresh_now()  # what the poll timer does
            await settle(pilot)
            s = app.session
            assert s.selected == "live-1"
            entry = s.machines["live-1"]
            assert entry.count == 22 and entry.errors == 1
            assert entry.status is MachineStatus.LIVE
            assert s.follow and s.cursor == 21
            assert app.view is not None and app.view.seq == 21
            text = screen_text(app)
            assert "● live-1 22 !1" in text
            assert "1 conn" in text
            assert "live-1 · seq 21/21 · following" in text
            assert "● Exception + !" in text

            # step back: following stops, and new records do not move the cursor
            await pilot.press("left")
            await settle(pilot)
            assert not s.follow and s.cursor == 20
            machine.set("Idle")
            assert await asyncio.to_thread(handle.flush, 10)
            await wait_for(sub, lambda e: isinstance(e, Stored) and e.last == 22)
            app.refresh_now()
            await settle(pilot)
            assert s.count == 23 and s.cursor == 20
            await pilot.press("end")  # back to the tail, following again
            await settle(pilot)
            assert s.follow and s.cursor == 22

            # the tracer goes away: the machine is marked disconnected
            handle.detach()
            await asyncio.to_thread(sink.close)
            await wait_for(sub, lambda e: isinstance(e, Disconnected))
            app.refresh_now()
            await settle(pilot)
            assert s.machines["live-1"].status is MachineStatus.DISCONNECTED
            assert "○ live-1 23" in screen_text(app)
            sub.close()
    finally:
        backend.close()


async def test_port_in_use_is_reported_in_the_header():
    backend = backends.open("memory://")
    first = IngestServer(backend, "127.0.0.1", 0)
    await first.start()
    try:
        server = IngestServer(backend, "127.0.0.1", first.address[1])
        app = InspectorApp(Session(backend, live=True), server=server, poll_interval=1e6)
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            assert app.listen_error is not None
            assert "cannot listen on 127.0.0.1" in screen_text(app)
    finally:
        await first.stop()
        backend.close()
