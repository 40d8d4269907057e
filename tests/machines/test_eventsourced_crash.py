"""J-10 under kill -9: every event a child process acknowledged is there after reopening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aminspect.machines.es_store import Provider
from aminspect.machines.eventsourced import EventSourced, IntervalStrategy

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import sys
    from aminspect.machines.eventsourced import EventSourced, IntervalStrategy
    obj = EventSourced("acct", sys.argv[1], initial=0, apply=lambda s, e: s + e["n"],
                       strategy=IntervalStrategy(7))
    print("start", obj.index, flush=True)
    while True:
        i = obj.persist({"n": 1})
        print("ack", i, flush=True)
    """
)


def add(state: int, event: dict[str, int]) -> int:
    return state + event["n"]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_J10_kill_9_keeps_every_acknowledged_event(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if kind == "sqlite" else f"{tmp_path / 'c.amj'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acked = -1
    for kill_after in (25, 40):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert child.stdout is not None
            first = child.stdout.readline().split()
            assert first[0] == "start" and int(first[1]) >= acked + 1  # one more may land
            for _ in range(kill_after):
                _, index = child.stdout.readline().split()
                acked = int(index)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(10)
            if child.stdout is not None:
                child.stdout.close()
    with Provider(url) as p:
        obj = EventSourced("acct", p, initial=0, apply=add, strategy=IntervalStrategy(7))
        assert obj.highest >= acked  # acknowledged ones are all there (one more may be)
        assert obj.state == obj.index  # whole events only, each applied once
        assert [e.index for e in p.read_events("acct")] == list(range(obj.index))
