"""Machines that end and come back under the same id, over a real WebSocket connection.

Regression: a machine's last records and its dispose went out in one round with the
dispose first, and a machine traced again under the id of one detached in the same batch
had its registration undone by that dispose. The server then refused the records as
undeclared and the sink reconnected, which showed every other machine on the connection
as disconnected for a moment.
"""

from __future__ import annotations

import asyncio

import pytest

import tracer
from aminspect.server import IngestServer, Rejected
from backends.base import Backend
from tracer.core import dispatcher_for
from tracer.ws_sink import WebSocketSink

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]


def refusals(server: IngestServer) -> list[Rejected]:
    seen: list[Rejected] = []
    server.add_listener(lambda ev: seen.append(ev) if isinstance(ev, Rejected) else None)
    return seen


async def test_records_then_detach_at_once_reach_the_server_before_the_dispose(
    server: IngestServer, memory: Backend
) -> None:
    refused = refusals(server)

    def app() -> WebSocketSink:
        sink = WebSocketSink(server.url)
        bystander = tracer.ManualMachine(["a", "b"], initial=["a"])
        tracer.attach(bystander, sink=sink, name="bystander")
        for i in range(20):
            m = tracer.ManualMachine(["a", "b"], initial=["a"])
            h = tracer.attach(m, sink=sink, name=f"short-{i}")
            m.set("b")
            m.set("a")
            h.detach()  # no flush: records and dispose leave in one round
        bystander.set("b")
        assert dispatcher_for(sink).flush(20)  # records handed over and acknowledged
        return sink

    sink = await asyncio.to_thread(app)
    try:
        assert refused == []
        assert sink.reconnects == 0
        for i in range(20):
            assert [r.name for r in memory.read(f"short-{i}", 0, None)][1:] == ["=b", "=a"]
        assert "bystander" in server.machines_per_connection[server.connections[0].id]
    finally:
        await asyncio.to_thread(sink.close)


async def test_a_machine_traced_again_under_the_same_id_continues_its_history(
    server: IngestServer, memory: Backend
) -> None:
    refused = refusals(server)

    def app() -> WebSocketSink:
        sink = WebSocketSink(server.url)
        for _ in range(5):
            m = tracer.ManualMachine(["a", "b"], initial=["a"])
            h = tracer.attach(m, sink=sink, name="again")
            m.set("b")
            h.detach()  # the next attach lands in the same sender batch
        assert dispatcher_for(sink).flush(20)  # records handed over and acknowledged
        return sink

    sink = await asyncio.to_thread(app)
    try:
        assert refused == []
        assert sink.reconnects == 0
        kinds = [r.kind for r in memory.read("again", 0, None)]
        assert kinds == ["init", "set"] * 5
    finally:
        await asyncio.to_thread(sink.close)
