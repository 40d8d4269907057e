"""backends.copy between every pair of registered backends: an exact round trip (B-02)."""

from __future__ import annotations

import random

import pytest

import backends
from backends.base import ConflictError, MissingDependency
from backends.copy import copy_backend
from tests.contract.conftest import SCHEMES, URL_FACTORIES, _default_factory, _module_exists
from tests.contract.helpers import machine, nested_machine, random_history
from tracer.records import Kind, TransitionRecord


def _open(scheme, path, **options):
    path.mkdir(parents=True, exist_ok=True)
    url = URL_FACTORIES.get(scheme, _default_factory(scheme))(path)
    try:
        return backends.open(url, **options)
    except MissingDependency:
        if _module_exists(scheme):
            raise
        pytest.skip(f"{scheme}:// backend module not written yet")


def _content(b):
    out = {}
    for m in b.machines():
        out[m.id] = (
            (m.kind, m.parent_id, m.mach_tick, m.created, m.updated, m.tags, m.schema),
            b.highest(m.id),
            b.first(m.id),
            b.read(m.id),
            b.snapshots(m.id),
        )
    return out


def _fill(b):
    rnd = random.Random(7)
    b.put_machine(machine("a", tags={"k": "v"}))
    b.put_machine(nested_machine("h"))
    b.put_machine(machine("empty"))
    b.put_machine(machine("trimmed"))
    b.append("a", random_history("a", 300, rnd))
    b.append(
        "h",
        [
            TransitionRecord("h", 0, Kind.INIT, "init", time=1, entered=(0, 1)),
            TransitionRecord("h", 1, Kind.EVENT, "go", time=2, exited=(1,), entered=(2,)),
        ],
    )
    b.append("trimmed", random_history("trimmed", 50, rnd))
    if b.supports_delete:
        b.delete_upto("trimmed", 19)


def test_round_trip_through_every_backend_is_exact(tmp_path):
    origin = backends.open("memory://", snapshot_every=16)
    _fill(origin)
    want = _content(origin)
    current = origin
    for i, scheme in enumerate([*SCHEMES, "memory"]):
        dest = _open(scheme, tmp_path / f"hop{i}", snapshot_every=5)
        stats = copy_backend(current, dest, chunk=64)
        assert stats.machines == 4
        assert _content(dest) == want, scheme
        if current is not origin:
            current.close()
        current = dest
    # copying again changes nothing (D-07)
    again = copy_backend(origin, current)
    assert again.records == 0
    assert _content(current) == want


@pytest.fixture
def dest(store):
    return store.open(snapshot_every=4)


def test_copy_into_each_backend_with_deleted_prefix(dest):
    src = backends.open("memory://", snapshot_every=4)
    _fill(src)
    copy_backend(src, dest)
    assert _content(dest) == _content(src)
    assert dest.first("trimmed") == 20
    assert dest.state_at("trimmed", 49).clocks == src.state_at("trimmed", 49).clocks
    # the copy continues where the source would
    rec = TransitionRecord("trimmed", 50, Kind.EVENT, "x", time=10**6)
    dest.append("trimmed", [rec])
    assert dest.highest("trimmed") == 50


def test_copy_selected_machines_with_progress(dest):
    src = backends.open("memory://")
    _fill(src)
    seen = []
    stats = copy_backend(src, dest, ["a"], chunk=100, progress=lambda *a: seen.append(a))
    assert [m.id for m in dest.machines()] == ["a"]
    assert stats.records == 300
    assert seen == [("a", 100, 300), ("a", 200, 300), ("a", 300, 300)]


def test_copy_onto_a_different_history_conflicts(dest):
    src = backends.open("memory://")
    src.put_machine(machine("a"))
    src.append("a", [TransitionRecord("a", 0, Kind.INIT, "x", time=1)])
    dest.put_machine(machine("a"))
    dest.append("a", [TransitionRecord("a", 0, Kind.INIT, "y", time=1)])
    with pytest.raises(ConflictError):
        copy_backend(src, dest)
