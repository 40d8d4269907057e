"""The ingest server lets go of a machine nobody traces any more (a detached tracer, a
closed connection), so the backend releases it: on PostgreSQL another recorder may then
take the machine over (D-08 refuses two recorders at once, not one after another)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

import backends
import tracer
from aminspect.server import IngestServer
from backends.postgres import PostgresBackend
from tests import pg_server
from tracer.ws_sink import WebSocketSink

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]


@pytest.fixture
async def pg_server_over_pg() -> AsyncIterator[tuple[IngestServer, PostgresBackend, str]]:
    with pg_server.fresh_store() as url:
        backend = backends.open(url)
        assert isinstance(backend, PostgresBackend)
        srv = IngestServer(backend, port=0)
        await srv.start()
        try:
            yield srv, backend, url
        finally:
            await srv.stop()
            backend.close()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def traced(sink: WebSocketSink, name: str) -> tuple[tracer.ManualMachine, tracer.TraceHandle]:
    m = tracer.ManualMachine(["idle", "busy"], initial=["idle"])
    return m, tracer.attach(m, sink=sink, name=name)


async def test_detach_and_disconnect_release_the_claims(
    pg_server_over_pg: tuple[IngestServer, PostgresBackend, str],
) -> None:
    srv, backend, url = pg_server_over_pg
    sink = WebSocketSink(srv.url)
    (a, ha), (b, hb) = traced(sink, "a"), traced(sink, "b")
    for m in (a, b):
        m.set("busy")
    assert await asyncio.to_thread(ha.flush, 20) and await asyncio.to_thread(hb.flush, 20)
    assert backend.claimed() == {"a", "b"}

    # Detached while the connection stays: "a" is let go after its records are stored.
    ha.detach()
    await until(lambda: backend.claimed() == {"b"})
    with backends.open(url, claim_wait=0) as other:
        assert other.highest("a") == 1  # init + set: nothing lost before the release
        other.append("a", other.read("a")[-1:])  # an identical re-append: it may write

    # The tracer's process goes away without detaching: the connection's machines go too.
    sink.close()
    await until(lambda: backend.claimed() == frozenset())
    assert [r.seq for r in backend.read("b")] == [0, 1]
    hb.detach()


async def test_a_machine_another_connection_traces_stays_claimed(
    pg_server_over_pg: tuple[IngestServer, PostgresBackend, str],
) -> None:
    srv, backend, _ = pg_server_over_pg
    first, second = WebSocketSink(srv.url), WebSocketSink(srv.url)
    _, h1 = traced(first, "shared")
    assert await asyncio.to_thread(h1.flush, 20)
    # A reconnecting tracer may declare the machine on a new connection before the old
    # one is seen closing: the old connection's end must not release it.
    second_conn = await asyncio.to_thread(lambda: traced(second, "shared"))
    await until(lambda: sum("shared" in ms for ms in srv.machines_per_connection.values()) == 2)
    first.close()
    await until(lambda: len(srv.machines_per_connection) == 1)
    await asyncio.sleep(0.2)  # the writer ran what the close queued
    assert backend.claimed() == {"shared"}
    second.close()
    await until(lambda: backend.claimed() == frozenset())
    second_conn[1].detach()
    h1.detach()
