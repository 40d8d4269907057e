"""``replay`` into a live recorder (a real IngestServer on loopback, in a thread)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

import backends
from aminspect.server import IngestServer
from tests.cli.conftest import digest

pytestmark = [pytest.mark.timeout(120), pytest.mark.network]


class LiveServer:
    """An ingest server on 127.0.0.1 (free port) running its own loop in a thread."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()
        self.server = IngestServer(backend, "127.0.0.1", 0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.url = self.server.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live(tmp_path) -> Iterator[LiveServer]:
    backend = backends.open(str(tmp_path / "live.amj"))
    server = LiveServer(backend)
    yield server
    server.stop()
    backend.close()


def test_replay_makes_an_identical_recording_and_is_idempotent(run, journal, live):
    before = digest(journal)
    out = run("replay", journal, "--to", live.url, "--as-fast-as-possible", "--json").output
    assert json.loads(out) == {"machines": 4, "records": 26, "skipped": 0}
    expected = run("export", journal, "-f", "jsonl").output
    live.backend.flush()
    got = [json.loads(line) for line in expected.splitlines()]
    stored = []
    for m in live.backend.machines():
        from aminspect.export import machine_to_json, record_to_json

        stored.append(machine_to_json(m))
        stored.extend(record_to_json(r, m.schema) for r in live.backend.read(m.id))
    assert stored == got
    # D-07: a second replay stores nothing twice
    again = run("replay", journal, "--to", live.url, "--as-fast-as-possible").output
    assert "replayed 0 records of 4 machines" in again and "(26 already there)" in again
    assert sum(live.backend.highest(m.id) + 1 for m in live.backend.machines()) == 26
    assert digest(journal) == before


def test_replay_paced_by_speed(run, journal, live):
    # the session spans a few ms; at speed 1000 pacing costs nothing noticeable
    out = run("replay", journal, "--to", live.url, "--speed", "1000", "-m", "quest").output
    assert out.strip() == f"replayed 4 records of 1 machine to {live.url}"
    assert [m.id for m in live.backend.machines()] == ["quest"]
