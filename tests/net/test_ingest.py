"""The ingest server and the WebSocket sink on loopback: end to end, resume, events, errors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import backends
import tracer
from aminspect.server import (
    Connected,
    IngestServer,
    InsecureBind,
    MachineDeclared,
    Stored,
    parse_listen,
)
from backends.base import Backend
from tracer.protocol import (
    BAD_MESSAGE,
    CONFLICT,
    HANDSHAKE,
    LIMIT,
    SEQUENCE,
    UNKNOWN_MACHINE,
    Limits,
    encode_gap,
    encode_hello,
    encode_machine,
    encode_txs,
)
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord
from tracer.ws_sink import WebSocketSink

pytestmark = [pytest.mark.network, pytest.mark.timeout(60)]

SCHEMA = Schema.flat(["idle", "busy", "done"], initial="idle")


def rec(mid: str, seq: int, name: str = "go") -> TransitionRecord:
    return TransitionRecord(mid, seq, Kind.EVENT, name, time=1000 + seq, exited=(0,), entered=(1,))


def run_app(url: str, n: int, name: str = "m", **sink_kw: Any) -> tuple[Any, WebSocketSink]:
    """Trace a ManualMachine through a fresh sink (call in a thread)."""
    sink = WebSocketSink(url, **sink_kw)
    m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])
    h = tracer.attach(m, sink=sink, name=name)
    for i in range(n):
        m.set(("busy", "done", "idle")[i % 3])
    assert h.flush(20)
    h.detach()
    return h, sink


class Raw:
    """A hand-driven protocol client for checking the server's answers."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def recv(self) -> list[Any]:
        frame = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(frame, bytes)
        msg: list[Any] = msgpack.unpackb(frame)
        return msg

    async def ask(self, frame: bytes | str) -> list[Any]:
        await self.ws.send(frame)
        return await self.recv()


async def raw_client(url: str, token: str | None = None, machines: tuple[str, ...] = ()) -> Raw:
    ws = await connect(url, max_size=None)
    raw = Raw(ws)
    welcome = await raw.ask(encode_hello("raw", "h", 1, token, machines))
    assert welcome[0] == "welcome", welcome
    return raw


async def declare(raw: Raw, mid: str = "m") -> int:
    ack = await raw.ask(encode_machine(MachineRecord(mid, "manual", SCHEMA)))
    assert ack[0] == "ack"
    highest: int = ack[1][mid]
    return highest


# -- end to end ---------------------------------------------------------------------------


async def test_manual_machine_end_to_end(server: IngestServer, memory: Backend) -> None:
    local = tracer.MemorySink()
    m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])

    def app() -> tuple[Any, Any]:
        h_ws = tracer.attach(m, url=server.url, name="e2e")
        h_local = tracer.attach(m, sink=local, name="e2e")
        for i in range(3000):
            m.set(("busy", "done", "idle")[i % 3], args={"i": i})
        assert h_ws.flush(20) and h_local.flush(20)
        return h_ws, h_local

    h_ws, h_local = await asyncio.to_thread(app)
    stored = memory.read("e2e")
    assert len(stored) == 3001 and memory.highest("e2e") == 3000

    def strip(r: TransitionRecord) -> tuple[Any, ...]:  # two captures: times differ
        t = r.as_tuple()
        return t[:5] + t[6:]

    assert [strip(r) for r in stored] == [strip(r) for r in local.history("e2e")]
    assert memory.get_machine("e2e").schema == m.schema
    stats = h_ws.stats
    assert (stats.captured, stats.sent, stats.dropped, stats.last_error) == (3001, 3001, 0, None)
    assert server.stored == 3001 and server.dropped == 0
    h_ws.detach()
    h_local.detach()


@pytest.mark.parametrize("scheme", ["journal", "sqlite"])
async def test_file_backends(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}:///{tmp_path}/rec.{'amj' if scheme == 'journal' else 'db'}"
    backend = backends.open(url)
    async with IngestServer(backend, port=0) as srv:
        await asyncio.to_thread(run_app, srv.url, 2000, "f")
    backend.close()
    again = backends.open(url)
    assert again.highest("f") == 2000
    assert [r.seq for r in again.read("f")] == list(range(2001))
    again.close()


async def test_continues_after_stored_history(server: IngestServer, memory: Backend) -> None:
    await asyncio.to_thread(run_app, server.url, 10, "again")
    await asyncio.to_thread(run_app, server.url, 5, "again")
    stored = memory.read("again")
    assert [r.seq for r in stored] == list(range(17))
    assert stored[11].kind == Kind.INIT  # the second process starts with its own init


async def test_register_before_the_server_is_up_renumbers(memory: Backend) -> None:
    memory.put_machine(MachineRecord("late", "manual", SCHEMA))
    memory.append("late", [rec("late", i) for i in range(7)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    sink = WebSocketSink(url, sync_timeout=0.2, backoff=(0.05, 0.2))
    m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])
    h = await asyncio.to_thread(tracer.attach, m, sink=sink, name="late")
    for i in range(20):
        m.set(("busy", "done")[i % 2])
    assert not await asyncio.to_thread(h.flush, 0.3)  # nowhere to go yet
    async with IngestServer(memory, port=port):
        assert await asyncio.to_thread(h.flush, 20)
    await asyncio.to_thread(sink.close)
    stored = memory.read("late")
    assert [r.seq for r in stored] == list(range(28))
    assert stored[7].kind == Kind.INIT and stored[8].name == "=busy"
    assert h.stats.reconnects >= 1


async def test_events_and_counters(server: IngestServer) -> None:
    sub = server.subscribe()
    seen: list[Any] = []
    server.add_listener(seen.append)
    _h, sink = await asyncio.to_thread(run_app, server.url, 100, "ev")
    await asyncio.to_thread(sink.close)
    kinds = {type(e) for e in seen}
    assert {Connected, MachineDeclared, Stored} <= kinds
    assert sum(e.last - e.first + 1 for e in seen if isinstance(e, Stored)) == 101
    first = await asyncio.wait_for(anext(aiter(sub)), 5)
    assert isinstance(first, Connected)
    sub.close()
    assert server.ingest_rate > 0
    assert server.stored == 101


async def test_live_connection_properties(server: IngestServer) -> None:
    raw = await raw_client(server.url)
    await declare(raw, "a")
    await declare(raw, "b")
    (conn,) = server.connections
    assert conn.client == "raw" and conn.machines == {"a", "b"}
    assert server.machines_per_connection == {conn.id: {"a", "b"}}
    await raw.ask(encode_gap("a", 0, 12, 0, 5, [0]))
    assert server.dropped == 12 and conn.dropped == 12
    await raw.ws.close()
    for _ in range(100):
        if not server.connections:
            break
        await asyncio.sleep(0.02)
    assert server.connections == []


async def test_resend_is_stored_once(server: IngestServer, memory: Backend) -> None:
    raw = await raw_client(server.url)
    assert await declare(raw) == -1
    batch = encode_txs("m", [rec("m", i) for i in range(5)])
    assert await raw.ask(batch) == ["ack", {"m": 4}]
    assert await raw.ask(batch) == ["ack", {"m": 4}]
    overlap = encode_txs("m", [rec("m", i) for i in range(3, 8)])
    assert await raw.ask(overlap) == ["ack", {"m": 7}]
    assert [r.seq for r in memory.read("m")] == list(range(8))
    assert server.stored == 8
    # a second connection sees what is stored
    raw2 = await raw_client(server.url, machines=("m", "nothing"))
    assert await declare(raw2) == 7


async def test_welcome_names_highest(server: IngestServer, memory: Backend) -> None:
    memory.put_machine(MachineRecord("w", "manual", SCHEMA))
    memory.append("w", [rec("w", i) for i in range(3)])
    async with connect(server.url) as ws:
        await ws.send(encode_hello("raw", "h", 1, None, ["w", "x"]))
        welcome = msgpack.unpackb(await ws.recv())
    assert welcome[:4] == ["welcome", 1, "aminspect", {"w": 2, "x": -1}]
    assert welcome[4]["max_batch"] == Limits().max_batch


async def test_conflict_changes_nothing(server: IngestServer, memory: Backend) -> None:
    raw = await raw_client(server.url)
    await declare(raw)
    await raw.ask(encode_txs("m", [rec("m", 0), rec("m", 1)]))
    err = await raw.ask(encode_txs("m", [rec("m", 1, "other"), rec("m", 2)]))
    assert err[0] == "error" and err[1] == CONFLICT and err[3] is False and err[4] == "m"
    assert await raw.recv() == ["ack", {"m": 1}]
    assert [r.name for r in memory.read("m")] == ["go", "go"]
    assert await raw.ask(encode_txs("m", [rec("m", 2)])) == ["ack", {"m": 2}]


async def test_dispatcher_gap_records_become_gap_messages(
    server: IngestServer, memory: Backend
) -> None:
    sink = WebSocketSink(server.url)
    machine = MachineRecord("g", "manual", SCHEMA)

    def feed() -> None:
        assert sink.register(machine) == 0
        gap = TransitionRecord("g", 1, Kind.GAP, "dropped", time=5)
        gap.args = {"dropped": 40}
        gap.entered = (2,)
        sink.write("g", [rec("g", 0), gap, rec("g", 2)])
        assert sink.flush(10)

    await asyncio.to_thread(feed)
    await asyncio.to_thread(sink.close)
    stored = memory.read("g")
    assert [r.kind for r in stored] == [Kind.EVENT, Kind.GAP, Kind.EVENT]
    assert stored[1].args == {"dropped": 40} and stored[1].entered == (2,)
    assert server.dropped == 40 and sink.gaps_sent == 1


# -- attach_from_env ---------------------------------------------------------------------


async def test_attach_from_env(
    server: IngestServer, memory: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = tracer.ManualMachine(["a", "b"], initial=["a"])
    monkeypatch.delenv("AMINSPECT_URL", raising=False)
    assert tracer.attach_from_env(m) is None
    monkeypatch.setenv("AMINSPECT_URL", "http://nope")
    assert tracer.attach_from_env(m) is None  # bad URL: tracing stays off, no exception
    monkeypatch.setenv("AMINSPECT_URL", server.url)
    h = await asyncio.to_thread(tracer.attach_from_env, m, name="env")
    assert h is not None
    m.set("b")
    assert await asyncio.to_thread(h.flush, 10)
    assert memory.highest("env") == 1
    h.detach()


def test_sink_rejects_bad_urls() -> None:
    for url in ("http://x", "ws://", "localhost:6830"):
        with pytest.raises(ValueError, match="not a WebSocket URL"):
            WebSocketSink(url)
    with pytest.raises(ValueError, match="not both"):
        tracer.attach(tracer.ManualMachine(["a"]), sink=tracer.MemorySink(), url="ws://x:1")


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("7000") == ("127.0.0.1", 7000)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen("host:port")


# -- bad input on a live server -----------------------------------------------------------


async def test_bad_messages_get_errors_and_the_connection_lives(
    server: IngestServer, memory: Backend
) -> None:
    raw = await raw_client(server.url)
    await declare(raw)
    cases = [
        (b"\xc1\xc1", BAD_MESSAGE),
        ("a text frame", BAD_MESSAGE),
        (msgpack.packb(["txs", "m", 0, [[1, 2]]]), BAD_MESSAGE),
        (msgpack.packb(["what", 1]), BAD_MESSAGE),
        (encode_txs("zz", [rec("zz", 0)]), UNKNOWN_MACHINE),
        (encode_txs("m", [rec("m", 5)]), SEQUENCE),
        (encode_machine(MachineRecord("big", "manual", Schema.flat(map(str, range(5000))))), LIMIT),
    ]
    for frame, code in cases:
        err = await raw.ask(frame)
        assert err[0] == "error" and err[1] == code and err[3] is False, err
        assert isinstance(err[2], str) and err[2]
    assert await raw.ask(encode_txs("m", [rec("m", 0)])) == ["ack", {"m": 0}]
    assert memory.highest("m") == 0 and server.rejected == len(cases)


async def test_fatal_errors_close_with_a_code(server: IngestServer, memory: Backend) -> None:
    async with connect(server.url) as ws:
        await ws.send(encode_txs("m", [rec("m", 0)]))  # no hello
        err = msgpack.unpackb(await ws.recv())
        assert err[:2] == ["error", HANDSHAKE] and err[3] is True
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == HANDSHAKE
    assert memory.machines() == []


async def test_oversized_frame_closes_with_1009(memory: Backend) -> None:
    async with IngestServer(memory, port=0, limits=Limits(max_frame=10_000)) as srv:
        raw = await raw_client(srv.url)
        await declare(raw)
        await raw.ws.send(b"\x00" * 20_000)
        with pytest.raises(ConnectionClosed):
            await raw.recv()
        assert raw.ws.close_code == 1009
        raw2 = await raw_client(srv.url)  # the server still accepts
        assert await declare(raw2) == -1


async def test_hello_timeout(memory: Backend) -> None:
    srv = IngestServer(memory, port=0, limits=Limits(hello_timeout=0.2))
    async with srv, connect(srv.url) as ws:
        err = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        assert err[:2] == ["error", HANDSHAKE] and "no hello" in err[2]
        with pytest.raises(ConnectionClosed):
            await ws.recv()


async def test_error_budget(memory: Backend) -> None:
    async with IngestServer(memory, port=0, limits=Limits(max_errors=5)) as srv:
        raw = await raw_client(srv.url)
        for _ in range(4):
            assert (await raw.ask(b"junk"))[3] is False
        last = await raw.ask(b"junk")
        assert last[3] is True
        with pytest.raises(ConnectionClosed):
            await raw.recv()


# -- security ----------------------------------------------------------------------------


def test_non_loopback_requires_a_token(memory: Backend) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.1", "example.org", ""):
        with pytest.raises(InsecureBind, match="without a token"):
            IngestServer(memory, host=host, port=0)
    for host in ("127.0.0.1", "::1", "localhost", "127.1.2.3"):
        IngestServer(memory, host=host, port=0)
    IngestServer(memory, host="0.0.0.0", port=0, token="t")


async def test_token_checked_at_handshake(memory: Backend) -> None:
    async with IngestServer(memory, host="0.0.0.0", port=0, token="s3cret") as srv:
        url = f"ws://127.0.0.1:{srv.address[1]}"
        for token, words in ((None, "missing token"), ("s3crex", "wrong token")):
            async with connect(url) as ws:
                await ws.send(encode_hello("raw", "h", 1, token, ["m"]))
                err = msgpack.unpackb(await ws.recv())
                assert err[:2] == ["error", 4001] and words in err[2]
                with pytest.raises(ConnectionClosed):
                    await ws.send(encode_machine(MachineRecord("m", "manual", SCHEMA)))
                    await ws.recv()
                assert ws.close_code == 4001
        # a sink with the wrong token stores nothing and says why
        sink = WebSocketSink(url, token="nope", sync_timeout=0.5, backoff=(0.05, 0.1))
        await asyncio.to_thread(sink.register, MachineRecord("m", "manual", SCHEMA))
        for _ in range(100):
            if sink.last_error:
                break
            await asyncio.sleep(0.02)
        await asyncio.to_thread(sink.close)
        assert "wrong token" in str(sink.last_error)
        assert memory.machines() == []
        raw = await raw_client(url, token="s3cret")
        assert await declare(raw) == -1
        _h, good = await asyncio.to_thread(run_app, url, 10, "tok", token="s3cret")
        await asyncio.to_thread(good.close)
    assert memory.highest("tok") == 10


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


async def test_wss(tmp_path: Path, memory: Backend) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with IngestServer(memory, port=0, ssl=server_ctx) as srv:
        assert srv.url.startswith("wss://")
        _h, sink = await asyncio.to_thread(run_app, srv.url, 50, "tls", ssl=client_ctx)
        await asyncio.to_thread(sink.close)
        # a client that does not trust the certificate never gets through
        bad = WebSocketSink(srv.url, sync_timeout=0.3, backoff=(0.05, 0.1))
        await asyncio.to_thread(bad.register, MachineRecord("untrusted", "manual", SCHEMA))
        await asyncio.to_thread(bad.close)
        assert "CERTIFICATE_VERIFY_FAILED" in str(bad.last_error)
    assert memory.highest("tls") == 50
    assert memory.highest("untrusted") == -1


async def test_server_that_lost_acked_records_gets_an_exact_gap() -> None:
    """A restarted in-memory server holds nothing of what it acknowledged: the sink
    reports the lost records as one gap carrying the configuration, then continues."""
    first = backends.open("memory://")
    async with IngestServer(first, port=0) as srv:
        port = srv.address[1]
        sink = WebSocketSink(srv.url, backoff=(0.02, 0.1))
        m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])
        h = await asyncio.to_thread(tracer.attach, m, sink=sink, name="vol")
        for i in range(100):
            m.set(("busy", "done")[i % 2])
        assert await asyncio.to_thread(h.flush, 10)
    assert first.highest("vol") == 100
    second = backends.open("memory://")
    async with IngestServer(second, port=port):
        for _ in range(50):
            if m.is_active("busy"):
                m.remove("busy")
            else:
                m.add("busy")
        assert await asyncio.to_thread(h.flush, 20)
    await asyncio.to_thread(sink.close)
    stored = second.read("vol")
    assert [r.seq for r in stored] == list(range(51))
    gap = stored[0]
    assert gap.kind == Kind.GAP and gap.args == {"dropped": 101}
    assert gap.entered == (2,)  # "done": the configuration after the 101st record
    assert [r.name for r in stored[1:3]] == ["+busy", "-busy"]
    assert h.stats.reconnects >= 1


class SlowBackend:
    """A memory backend whose appends take a while: storage lagging behind the network."""

    def __init__(self, delay: float) -> None:
        self.inner = backends.open("memory://")
        self.delay = delay

    def append(self, machine_id: str, records: Any) -> None:
        import time

        time.sleep(self.delay)
        self.inner.append(machine_id, records)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_client_leaving_while_storage_lags() -> None:
    """A client that disconnects while its batches wait for the writer neither blocks
    the server's shutdown nor loses what was already submitted."""
    slow = SlowBackend(0.05)
    srv = IngestServer(slow, port=0)  # type: ignore[arg-type]
    await srv.start()
    raw = await raw_client(srv.url)
    await declare(raw)
    for i in range(40):  # more than the pipeline window
        await raw.ws.send(encode_txs("m", [rec("m", i)]))
    raw.ws.transport.abort()  # vanish without a close frame
    raw2 = await raw_client(srv.url)  # the server keeps serving others
    assert await declare(raw2, "other") == -1
    await asyncio.wait_for(srv.stop(), 30)
    assert srv.connections == []
    h = slow.inner.highest("m")
    assert [r.seq for r in slow.inner.read("m")] == list(range(h + 1))
