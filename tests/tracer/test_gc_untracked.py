"""Records waiting for the sender hold nothing the garbage collector tracks.

A burst of records sits in the tracer's buffer for up to a linger (30 ms) or longer. If
each one referenced a tracked object (its channel, a frozenset, a Kind member), every
collection in that time would find them alive, promote them, and soon set off a full
collection of the app's whole heap. With plain ints, strs and tuples of those, the first
collection untracks them instead (measured: TrackMany went from 2 full collections per
50,000 records to none).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from transitions import Machine

from tracer import Kind, ManualMachine, MemorySink, attach
from tracer.core import config_mask, mask_config


class _Model:
    pass


class _Held(MemorySink):
    """Once ``hold`` is set, a write blocks until ``release`` is: later records wait in
    the tracer's buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = threading.Event()
        self.release = threading.Event()

    def write_rows(self, machine_id: str, first_seq: int, rows: Any) -> None:
        if self.hold.is_set():
            self.release.wait(10)
        super().write_rows(machine_id, first_seq, rows)


@pytest.fixture
def held() -> Iterator[_Held]:
    sink = _Held()
    yield sink
    sink.release.set()


def _waiting_items(handle: Any) -> list[tuple[Any, ...]]:
    return list(handle.dispatcher._buffer)


def _flat_transitions() -> tuple[Any, Callable[[], None]]:
    model = _Model()
    machine = Machine(
        model,
        states=["idle", "busy"],
        transitions=[["start", "idle", "busy"], ["stop", "busy", "idle"], ["fail", "busy", "x"]],
        initial="idle",
        ignore_invalid_triggers=True,
    )

    def step() -> None:
        model.start()  # type: ignore[attr-defined]
        model.stop()  # type: ignore[attr-defined]
        model.stop()  # type: ignore[attr-defined]  # refused in idle: recorded, not accepted

    return machine, step


def _manual() -> tuple[Any, Callable[[], None]]:
    machine = ManualMachine(["Off", "On"], initial=["Off"])

    def step() -> None:
        machine.add("On")
        machine.remove("On")
        machine.set("Off")

    return machine, step


@pytest.mark.parametrize("make", [_flat_transitions, _manual], ids=["transitions", "manual"])
def test_waiting_records_are_untracked_after_one_collection(
    make: Callable[[], tuple[Any, Callable[[], None]]],
    held: _Held,
) -> None:
    machine, step = make()
    handle = attach(machine, sink=held, name="m")
    step()  # the tracer caches what each step records (tuples of ints) ...
    assert handle.flush(5)
    gc.collect()  # ... which the collector untracks once, as any long-lived tuple
    held.hold.set()
    step()  # the sender takes these and blocks in the sink
    handle.flush(0.2)
    for _ in range(20):
        step()
    items = _waiting_items(handle)
    assert len(items) == 60
    gc.collect()
    assert [gc.is_tracked(item) for item in items] == [False] * len(items)
    held.release.set()
    assert handle.flush(5)
    assert handle.stats.sent == handle.stats.captured == 1 + 22 * 3


def test_config_masks_round_trip() -> None:
    for config in (frozenset(), frozenset({0}), frozenset({3, 64, 200}), frozenset(range(70))):
        assert mask_config(config_mask(config)) == config
    assert config_mask(frozenset({0, 2})) == 0b101


def test_records_keep_their_kind_members() -> None:
    """Kinds travel as codes inside the tracer; sinks taking records still get Kinds."""
    got: list[Any] = []

    class RecordSink(MemorySink):
        def write(self, machine_id: str, records: Any) -> None:
            got.extend(records)
            super().write(machine_id, records)

    machine = ManualMachine(["Off", "On"], initial=["Off"])
    handle = attach(machine, sink=RecordSink(), name="m")
    machine.add("On")
    machine.event("flip", exited=["On"], entered=[])
    assert handle.flush(5)
    assert [type(r.kind) for r in got] == [Kind] * 3
    assert [r.kind for r in got] == [Kind.INIT, Kind.ADD, Kind.EVENT]
