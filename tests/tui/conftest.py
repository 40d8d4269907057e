"""Fixtures for Pilot tests: the app on the fixed journal, and a helper to let it settle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import backends
from aminspect.session import Session
from aminspect.tui.app import InspectorApp

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
