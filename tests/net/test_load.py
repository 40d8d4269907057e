"""Load: several tracer processes with many machines each stream into one server at once."""

from __future__ import annotations

import asyncio
import json

import pytest

from aminspect.server import IngestServer
from backends.base import Backend
from tests.net.conftest import Proc, env

pytestmark = [pytest.mark.network]


async def stream_processes(
    url: str, processes: int, machines: int, n: int
) -> list[dict[str, object]]:
    """Run tracer processes at once; returns each one's final stats."""

    async def one(i: int) -> dict[str, object]:
        proc = await asyncio.create_subprocess_exec(
            Proc.python(), "-m", "tests.net._app", "--machines", str(machines), "--n", str(n),
            "--prefix", f"p{i}", "--flush", "120", "--write-timeout", "60",
            "--buffer", str(machines * (n + 1)), "--retransmit", str(machines * (n + 1)),
            cwd=Proc.root(), env=env(url), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 300)
        assert proc.returncode == 0, err.decode()[-2000:]
        last = out.decode().strip().splitlines()[-1]
        stats: dict[str, object] = json.loads(last)
        return stats

    return list(await asyncio.gather(*(one(i) for i in range(processes))))


async def check_load(memory: Backend, processes: int, machines: int, n: int) -> None:
    async with IngestServer(memory, port=0) as srv:
        results = await stream_processes(srv.url, processes, machines, n)
        assert srv.dropped == 0
        assert srv.stored == processes * machines * (n + 1)
    for r in results:
        assert r["flushed"] and r["dropped"] == 0
    for i in range(processes):
        for k in range(machines):
            mid = f"p{i}-{k}"
            assert memory.highest(mid) == n  # init + n transitions, seqs 0..n
            records = memory.read(mid)
            assert len(records) == n + 1 and records[-1].seq == n
    assert len(memory.machines()) == processes * machines


@pytest.mark.timeout(120)
async def test_load_bounded(memory: Backend) -> None:
    await check_load(memory, processes=3, machines=20, n=300)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_load_big(memory: Backend) -> None:
    await check_load(memory, processes=4, machines=100, n=3000)
