"""Fixtures for the CLI tests: a recorded journal and a runner that invokes ``aminspect``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import backends
import tracer
from aminspect.cli import app
from tests.e2e.machines import Quest, make_order, make_ring


def record_session(path: Path) -> Path:
    """A journal with a 2-model ring, a nested/parallel order and a statemachine quest.

    ``ring``: 10 incs (r3) then forced to r2; ``ring-2``: 3 incs (r3);
    ``order``: start, packed, send, pay, then a refused start (an error);
    ``quest``: step, turn, truce.
    """
    backend = backends.open(str(path), snapshot_every=4)
    ring = make_ring(2)
    h1 = tracer.attach(ring, sink=backend, name="ring")
    a, b = ring.models
    for _ in range(10):
        a.inc()
    for _ in range(3):
        b.inc()
    ring.set_state("r2", a)  # a forced write: r3 -> r2
    order = make_order()
    h2 = tracer.attach(order, sink=backend, name="order")
    o = order.models[0]
    for event in ("start", "packed", "send", "pay"):
        getattr(o, event)()
    with pytest.raises(Exception, match="Can't trigger event 'start'"):
        o.start()  # not allowed in ship: a rejected record with the error
    quest = Quest()
    h3 = tracer.attach(quest, sink=backend, name="quest")
    for event in ("step", "turn", "truce"):
        quest.send(event)
    for h in (h1, h2, h3):
        assert h.flush(10)
        h.detach()
    backend.close()
    return path


@pytest.fixture(scope="session")
def session_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_session(tmp_path_factory.mktemp("rec") / "session.amj")


@pytest.fixture
def journal(session_journal: Path, tmp_path: Path) -> Path:
    """A private copy of the recorded journal (tests may damage theirs)."""
    copy = tmp_path / "session.amj"
    copy.write_bytes(session_journal.read_bytes())
    return copy


def digest(path: Path) -> str:
    """The bytes of a file, or of every file under a directory, hashed."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def run() -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(app, [str(a) for a in args])
        if code is not None:
            assert result.exit_code == code, (result.exit_code, result.output, result.exception)
        if result.exit_code != 0:
            # bad input is one clear line, never a traceback
            assert "Traceback" not in result.output
            # (typer's own usage errors keep their usual "Usage: ..." block)
            stderr = result.stderr.strip()
            if result.exit_code in (1, 2) and stderr and not stderr.startswith("Usage:"):
                assert len(stderr.splitlines()) == 1, result.stderr
        return result

    return invoke
