"""Fuzz the live server with malformed frames while a good tracer streams alongside."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import tracer
from aminspect.server import IngestServer
from backends.base import Backend
from tracer.codec import machine_to_list, transition_to_list
from tracer.protocol import (
    Limits,
    encode_gap,
    encode_hello,
    encode_machine,
    encode_txs,
)
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord
from tracer.ws_sink import WebSocketSink

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

FRAMES = 10_000
PER_CONNECTION = 90  # below the default error budget (100), so most connections survive
SCHEMA = Schema.flat(["idle", "busy", "done"], initial="idle")
WEIRD: list[Any] = [
    None, True, -1, 2**63, -(2**63), 1.5, "", "x" * 300, b"\x00", [], {}, [[[]]], {"a": 1},
    msgpack.ExtType(5, b"zz"), 2**64 - 1, "txs", "hello",
]  # fmt: skip


def rec(mid: str, seq: int) -> TransitionRecord:
    return TransitionRecord(mid, seq, Kind.EVENT, "go", time=seq, exited=(0,), entered=(1,))


def valid_frames() -> list[bytes]:
    m = MachineRecord("fz", "manual", SCHEMA)
    return [
        encode_machine(m),
        encode_txs("fz", [rec("fz", i) for i in range(3)]),
        encode_gap("fz", 0, 5, 0, 1, [1]),
        encode_hello("c", "h", 1, None, ["fz"]),
        msgpack.packb(["dispose", "fz"]),
    ]


def wrong_types(rng: random.Random) -> bytes:
    """A message of a known type with one field (or record field) of a wrong type."""
    kind = rng.choice(["txs", "machine", "gap", "dispose", "hello"])
    if kind == "txs":
        fields: list[Any] = ["txs", "fz", 0, [transition_to_list(rec("fz", 0))]]
        if rng.random() < 0.5:
            fields[3][0][rng.randrange(13)] = rng.choice(WEIRD)
        else:
            fields[rng.randrange(1, 4)] = rng.choice(WEIRD)
    elif kind == "machine":
        lst = machine_to_list(MachineRecord("fz", "manual", SCHEMA))
        lst[rng.randrange(9)] = rng.choice(WEIRD)
        fields = ["machine", lst, None]
    elif kind == "gap":
        fields = ["gap", "fz", 0, 1, 0, 0, [0]]
        fields[rng.randrange(1, 7)] = rng.choice(WEIRD)
    elif kind == "dispose":
        fields = ["dispose", rng.choice(WEIRD)]
    else:
        fields = ["hello", [1], "c", "h", 1, None, []]
        fields[rng.randrange(1, 7)] = rng.choice(WEIRD)
    if rng.random() < 0.2:  # wrong field count
        fields = fields[:-1] if rng.random() < 0.5 else [*fields, 0]
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


def huge_lengths(rng: random.Random) -> bytes:
    """Headers announcing far more data than the frame holds, and deep nesting."""
    return rng.choice(
        [
            b"\xdd\xff\xff\xff\xff",  # array32 of 4G elements
            b"\x94\xa3txs\xdb\xff\xff\xff\xffab",  # str32 of 4G bytes
            b"\x94\xa3txs\xa1m\x00\xdd\x7f\xff\xff\xff\x90",  # records: array of 2G
            b"\xc6\xff\xff\xff\xff",  # bin32
            b"\xdf\xff\xff\xff\xff",  # map32
            b"\x91" * 5000 + b"\xc0",  # nesting deeper than any parser stack
            b"\xc7\xff\x05" + b"\x00" * 10,  # ext8 with a length past the end
            b"\x94\xa3txs\xa1m\x00\x91\xdc\xff\xff",  # record array16 of 65535 fields
        ]
    )


def mutated(rng: random.Random, valid: list[bytes]) -> bytes:
    data = bytearray(rng.choice(valid))
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randrange(len(data))
        if op < 0.5:
            data[pos] = rng.randrange(256)
        elif op < 0.75:
            del data[pos:]
            if not data:
                data = bytearray(b"\x90")
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def make_frames(seed: int = 1234) -> list[bytes | str]:
    rng = random.Random(seed)
    valid = valid_frames()
    frames: list[bytes | str] = []
    for i in range(FRAMES):
        pick = i % 5
        if pick == 0:
            frames.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))))
        elif pick == 1:
            frames.append(mutated(rng, valid))
        elif pick == 2:
            frames.append(wrong_types(rng))
        elif pick == 3:
            frames.append(huge_lengths(rng))
        else:
            frames.append(rng.choice([mutated(rng, valid), "text frame", wrong_types(rng)]))
    return frames


def is_hello(frame: bytes | str) -> bool:
    """Frames that decode as a hello: fatal on an open connection, so they are sent as
    the first frame of a connection of their own."""
    try:
        msg = msgpack.unpackb(frame, strict_map_key=False)
    except Exception:
        return False
    return isinstance(msg, list) and bool(msg) and msg[0] == "hello"


async def fuzz_connection(url: str, frames: list[bytes | str], tag: int) -> dict[str, int]:
    """Send frames on one open connection, then a sentinel; count the server's answers."""
    counts = {"error": 0, "ack": 0, "closed": 0}
    sentinel = f"sentinel-{tag}"
    async with connect(url, max_size=None) as ws:
        await ws.send(encode_hello("fuzz", "h", tag, None, []))
        assert msgpack.unpackb(await ws.recv())[0] == "welcome"
        await ws.send(encode_machine(MachineRecord("fz", "manual", SCHEMA)))
        try:
            for frame in frames:
                await ws.send(frame)
            await ws.send(encode_machine(MachineRecord(sentinel, "manual", SCHEMA)))
            while True:
                msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 20), strict_map_key=False)
                assert msg[0] in ("error", "ack"), msg
                counts[msg[0]] += 1
                if msg[0] == "error":
                    assert isinstance(msg[2], str) and msg[2], msg
                if msg[0] == "ack" and sentinel in msg[1]:
                    break
        except ConnectionClosed:
            counts["closed"] += 1
            assert ws.close_code == 1009 or (ws.close_code or 0) >= 4000, ws.close_code
    return counts


async def fuzz_handshake(url: str, frame: bytes | str) -> str:
    """A fuzzed first frame: either a welcome (valid by chance) or an error and a close."""
    async with connect(url, max_size=None) as ws:
        await ws.send(frame)
        msg = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 20), strict_map_key=False)
        if msg[0] == "welcome":
            return "welcome"
        assert msg[0] == "error" and msg[3] is True and msg[1] in (4001, 4002, 4003), msg
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 20)
        assert ws.close_code == msg[1]
        return "refused"


async def test_fuzz_while_a_good_client_streams(memory: Backend) -> None:
    frames = make_frames()
    async with IngestServer(memory, port=0, limits=Limits(max_frame=64 * 1024)) as srv:
        good_n = 5_000
        sink = WebSocketSink(srv.url)
        m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])
        h = await asyncio.to_thread(tracer.attach, m, sink=sink, name="good")

        def stream() -> bool:
            for i in range(good_n):
                m.set(("busy", "done", "idle")[i % 3])
            return h.flush(60)

        good = asyncio.create_task(asyncio.to_thread(stream))
        hellos = [f for f in frames if is_hello(f)]
        others = [f for f in frames if not is_hello(f)]
        totals = {"error": 0, "ack": 0, "closed": 0}
        chunks = [others[i : i + PER_CONNECTION] for i in range(0, len(others), PER_CONNECTION)]
        for tag, chunk in enumerate(chunks):
            for k, v in (await fuzz_connection(srv.url, chunk, tag)).items():
                totals[k] += v
        outcomes = [await fuzz_handshake(srv.url, f) for f in hellos]
        assert outcomes.count("refused") >= len(hellos) // 2
        assert totals["closed"] == 0, totals  # no fatal error on an open connection
        # nearly every frame was answered with an error (a few mutations stay valid)
        assert totals["error"] >= 0.9 * len(others), (totals, len(others))
        # frames bigger than the limit close the connection with 1009, nothing else
        for tag in range(3):
            counts = await fuzz_connection(srv.url, [b"\x91" + b"\x00" * 70_000], 10_000 + tag)
            assert counts["closed"] == 1
        assert await good
        await asyncio.to_thread(sink.close)
        assert memory.highest("good") == good_n
        assert [r.seq for r in memory.read("good")] == list(range(good_n + 1))
        assert h.stats.dropped == 0
        assert srv.rejected >= totals["error"]
        # the server still takes new connections and records
        async with connect(srv.url) as ws:
            await ws.send(encode_hello("after", "h", 1, None, []))
            assert msgpack.unpackb(await ws.recv())[0] == "welcome"
        h.detach()
