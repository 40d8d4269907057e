"""Fixtures for Pilot tests: the app on the fixed journal, and a helper to let it settle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import backends
from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from backends.base import Backend
from tracer.records import MachineRecord, Schema, TransitionRecord

DATA = Path(__file__).resolve().parents[1] / "data"
SHOP = DATA / "shop.amj"


@pytest.fixture
def shop_app() -> Iterator[InspectorApp]:
    """The inspector on ``tests/data/shop.amj``, read-only, as ``aminspect open`` runs it."""
    backend = backends.open(str(SHOP), read_only=True)
    # the play timer never fires by itself: tests tick it with action_play_tick
    app = InspectorApp(Session(backend), source="tests/data/shop.amj", play_interval=1e6)
    yield app
    backend.close()


MIXED_N = 3000  # records of ``mixed_history``


@pytest.fixture(scope="module")
def mixed_history() -> Iterator[Backend]:
    """One two-state machine, MIXED_N records in memory: every 7th refused (``nope``, no
    error), every 11th (not 7th) failed with an error (``boom``), every 500th of the rest
    a restore, the others ``go{seq}`` moving between Idle and Busy."""
    backend = backends.open("memory://")
    backend.put_machine(MachineRecord("m", "manual", Schema.flat(["Idle", "Busy"]), 0, 0))
    records = [TransitionRecord("m", 0, "init", "init", time=0, entered=(0,))]
    for seq in range(1, MIXED_N):
        a, b = (0, 1) if seq % 2 else (1, 0)
        t = seq * 1_000_000
        if seq % 7 == 0:
            r = TransitionRecord("m", seq, "event", "nope", time=t, accepted=False)
        elif seq % 11 == 0:
            r = TransitionRecord(
                "m", seq, "event", "boom", time=t, accepted=False, error=("E", "failed")
            )
        elif seq % 500 == 0:
            r = TransitionRecord("m", seq, "restore", "restore", time=t, entered=(b,))
        else:
            r = TransitionRecord(
                "m", seq, "event", f"go{seq}", time=t, exited=(a,), entered=(b,), duration=900
            )
        records.append(r)
    backend.append("m", records)
    yield backend
    backend.close()
