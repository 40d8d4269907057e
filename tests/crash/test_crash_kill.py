"""D-01: kill -9 a process recording into each backend; every stream stays a prefix.

A child process (``tests/crash/_recorder.py``) appends random-sized batches of two
machines' deterministic records and prints each acknowledged seq. The test SIGKILLs it at a
random point (after a random number of acknowledgements plus a random sub-millisecond
delay, so kills land inside writes too), reopens the store and checks, per machine:
the stored records are exactly records ``0..highest`` of the deterministic history (a
prefix, none partial), nothing acknowledged is missing, and appending continues.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import backends
from tests import pg_server
from tests.crash._recorder import MACHINES, MAX_BATCH, record

ROOT = Path(__file__).resolve().parents[2]
FILE_BACKENDS = {
    "journal": lambda p: f"journal:///{p / 'h.amj'}",
    "sqlite": lambda p: f"sqlite:///{p / 'h.db'}",
    "lmdb": lambda p: f"lmdb:///{p / 'h.lmdb'}",
    # The recorder is killed, not the server: a fresh schema in the suite's test server.
    "postgresql": lambda p: pg_server.fresh_schema_url(pg_server.require().local_url),
}


def _kill_at_random(url: str, durability: str, seed: int) -> dict[str, int]:
    """Run the recorder, SIGKILL it at a random point; the acknowledged highest per machine."""
    rnd = random.Random(seed)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash._recorder", url, durability, str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # Unbuffered: communicate() below reads the pipe's descriptor directly, so lines a
        # buffered readline() had read ahead would be lost from ``acked``.
        bufsize=0,
    )
    assert proc.stdout is not None
    acked: dict[str, int] = {}
    wanted = rnd.randint(1, 150)
    try:
        for _ in range(wanted):
            line = proc.stdout.readline()
            if not line:
                break
            mid, seq = line.split()
            acked[mid.decode()] = int(seq)
        time.sleep(rnd.random() * 0.002)
        proc.send_signal(signal.SIGKILL)
        # Every complete line already printed was acknowledged before the kill.
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")[-2000:]
    for line in rest.splitlines():
        mid, seq = line.split()
        acked[mid.decode()] = int(seq)
    assert acked, "the recorder acknowledged nothing before it was killed"
    return acked


def _check_prefix(url: str, acked: dict[str, int], stored: dict[str, int]) -> None:
    """``acked``: highest acknowledged by the last run; ``stored``: highest verified
    before it (updated here)."""
    backend = backends.open(url)
    try:
        for mid in MACHINES:
            highest = backend.highest(mid)
            floor = max(acked.get(mid, -1), stored.get(mid, -1))
            # Nothing acknowledged is lost; at most one batch was in flight at the kill.
            assert highest >= floor, (mid, highest, acked, stored)
            assert highest <= floor + MAX_BATCH, (mid, highest, acked, stored)
            got = backend.read(mid)
            assert [r.seq for r in got] == list(range(highest + 1))
            assert got == [record(mid, s) for s in range(highest + 1)]
            if highest >= 0:
                assert backend.state_at(mid, highest).active() == frozenset({highest % 3})
        # The reopened store accepts the next records where the history stopped.
        nxt = backend.highest("a") + 1
        backend.append("a", [record("a", nxt), record("a", nxt + 1)])
        for mid in MACHINES:
            stored[mid] = backend.highest(mid)
    finally:
        backend.close()
    again = backends.open(url, read_only=True)
    try:
        assert again.read("a")[-2:] == [record("a", nxt), record("a", nxt + 1)]
    finally:
        again.close()


def _run(name: str, tmp_path: Path, kills: int, seed: int, modes: tuple[str, ...]) -> None:
    url = FILE_BACKENDS[name](tmp_path)
    stored: dict[str, int] = {}
    for k in range(kills):
        # A process kill keeps the page cache, so "fast" must lose nothing here either.
        acked = _kill_at_random(url, modes[k % len(modes)], seed * 1000 + k)
        _check_prefix(url, acked, stored)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(FILE_BACKENDS))
def test_kill_9_leaves_a_prefix_of_what_was_acknowledged(name: str, tmp_path: Path) -> None:
    # PostgreSQL's atomicity is the server's: fewer kills keep its part of the suite short.
    _run(name, tmp_path, kills=4 if name == "postgresql" else 8, seed=1, modes=("full",))


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(FILE_BACKENDS))
def test_kill_9_many_times(name: str, tmp_path: Path) -> None:
    _run(name, tmp_path, kills=60, seed=2, modes=("full", "fast"))
