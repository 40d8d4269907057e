"""Fixtures shared by the tracer's adapter tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _close_dispatchers() -> Iterator[None]:
    """Stop the sender threads a test started, so the suite does not pile them up.

    Each sink gets its own dispatcher thread; it stops by itself once its channels are
    detached, but a test that does not detach would leave it waiting.
    """
    from tracer import core

    before = set(map(id, list(core._dispatchers.values())))
    yield
    for d in list(core._dispatchers.values()):
        if id(d) not in before:
            d.close(5)
