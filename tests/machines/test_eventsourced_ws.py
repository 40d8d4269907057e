"""An event-sourced object traced over a real WebSocket to an in-process ingest server."""

from __future__ import annotations

import asyncio
from typing import Any

import backends
from aminspect.machines.es_store import Provider
from aminspect.machines.eventsourced import EventSourced, IntervalStrategy
from aminspect.server import IngestServer
from tracer.records import Kind


def add(state: int, event: dict[str, Any]) -> int:
    return state + int(event["n"])


async def test_events_and_restores_reach_the_inspector_over_ws() -> None:
    store = backends.open("memory://")
    server = IngestServer(store, port=0)
    await server.start()
    try:

        def app() -> None:
            provider = Provider("memory://")  # the app's own event store
            for round_ in range(2):
                obj = EventSourced(
                    "wallet",
                    provider,
                    initial=0,
                    apply=add,
                    strategy=IntervalStrategy(2),
                    trace=server.url,
                )
                obj.persist({"type": "add", "n": round_ + 1}, {"type": "add", "n": 10})
                assert obj.flush(20)
                obj.close()
            provider.close()

        await asyncio.wait_for(asyncio.to_thread(app), 60)
        stored = store.read("wallet")
        assert [(r.kind, r.name) for r in stored] == [
            (Kind.INIT, "init"),
            (Kind.EVENT, "add"),
            (Kind.EVENT, "add"),
            (Kind.RESTORE, "restore"),
            (Kind.EVENT, "add"),
            (Kind.EVENT, "add"),
        ]
        assert stored[3].args == {"snapshot": 0, "replayed": 2, "highest": 1, "tick": 1}
        assert store.get_machine("wallet").kind == "eventsourced"
        assert [r.mach_tick for r in stored] == [0, 0, 0, 1, 1, 1]
    finally:
        await server.stop()
        store.close()
