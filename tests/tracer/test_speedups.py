"""The C hot path (tracer/_speedups.c) records what the pure-Python hooks record, leaks
nothing and survives its own failures.

Every other tracer test runs on whichever path is installed (the C one when it was
built); ``.ci/run`` also runs the tracer tests with ``AMINSPECT_PURE_PYTHON=1``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from transitions import Machine, MachineError

from tracer import MemorySink, attach
from tracer._accel import speedups

try:
    from tests.tracer.speedups_scenario import build
except ImportError:  # tests/tracer is not a package: pytest put its folder on sys.path
    from speedups_scenario import build  # type: ignore[no-redef]

needs_c = pytest.mark.skipif(speedups is None, reason="the C hot path is not built here")
SCENARIO = Path(__file__).with_name("speedups_scenario.py")
ROOT = Path(__file__).resolve().parents[2]


def _toggle() -> tuple[Any, Any]:
    """A flat machine of the scenario (idle -> start -> busy -> stop -> idle, and more)."""
    machine, (model,) = build(Machine, "toggle")
    return machine, model


def _live_tracers(machine: Any) -> list[Any]:
    from tracer.adapters.transitions import _LIVE

    return [t for t in _LIVE.values() if t.machine is machine]


def _scenario(pure: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("AMINSPECT_PURE_PYTHON", None)
    if pure:
        env["AMINSPECT_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, str(SCENARIO)], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@needs_c
def test_c_and_python_hooks_record_the_same() -> None:
    c, py = _scenario(pure=False), _scenario(pure=True)
    assert c["speedups"] and not py["speedups"]
    assert {"ProcessHook", "SetStateHook"} <= set(c["hooks"])
    assert c["errors"] == py["errors"] == [None, None, None]
    # nested, forced, raised, refused and cross-machine records: all there, all equal
    flat = c["records"]["flat"]
    assert {r[1] for r in flat} == {"init", "event", "forced"}
    assert any(r[8] is not None for r in flat) and any(r[5] for r in flat)
    assert any(r[9] for r in c["records"]["other"])
    assert c["records"] == py["records"]


@needs_c
def test_attach_installs_c_hooks_and_detach_removes_them() -> None:
    machine, model = _toggle()
    before = dict(vars(machine))
    handle = attach(machine, sink=MemorySink())
    assert type(machine._process) is speedups.ProcessHook
    assert type(machine.set_state) is speedups.SetStateHook
    model.start()
    handle.detach()
    assert vars(machine) == before


def test_hooks_leak_no_reference_and_keep_no_event_alive() -> None:
    # (Both paths. An event a record holds lives until the sender is done with it; the
    # sender once kept its last batch, and so those events, alive while it waited.)
    from tracer.adapters.transitions import _Event

    class Discard(MemorySink):  # keeps no record: what stays referenced is ours
        def write_rows(self, machine_id: str, first_seq: int, rows: Any) -> None:
            pass

    machine, model = _toggle()
    handle = attach(machine, sink=Discard())
    (tracer,) = _live_tracers(machine)
    (mt,) = tracer.models.values()
    name = machine.events["start"].name
    watched = [model, machine, name, mt, handle.channels[0], mt.current, tracer]

    def run(n: int) -> None:
        for _ in range(n):
            model.start(1, key="v")
            model.stop()
            with contextlib.suppress(MachineError):
                model.stop()  # invalid: raises through the hook
            machine.set_state("busy", model=model)
            machine.set_state("idle", model=model)

    run(50)
    handle.flush(5)
    gc.collect()
    counts = [sys.getrefcount(o) for o in watched]
    run(500)
    handle.flush(5)
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == counts
    assert sum(type(o) is _Event for o in gc.get_objects()) == 0
    handle.detach()


@needs_c
def test_a_failure_inside_the_c_hook_is_reported_and_the_trigger_goes_on() -> None:
    machine, model = _toggle()
    sink = MemorySink()
    handle = attach(machine, sink=sink)
    # Poison the tracer's cache of moves for idle -> busy: building that record fails
    # inside C (the hook's own cache has not seen the move yet).
    (tracer,) = _live_tracers(machine)
    idle, busy = tracer.config("idle"), tracer.config("busy")
    tracer.change_cache[(idle, busy, frozenset())] = ("not", "a move")
    assert model.start() is True
    assert model.state == "busy"
    model.stop()
    assert handle.flush(5)
    stats = handle.stats
    assert stats.last_error is not None and "a change is" in stats.last_error
    records = sink.history(handle.machine_id)
    assert [(r.name, r.exited, r.entered) for r in records] == [
        ("init", (), (0,)),
        ("start", (), ()),  # salvaged: named and in its place, its change lost
        ("stop", (1,), (0,)),
    ]
    assert stats.captured == stats.sent == 3
    handle.detach()


@needs_c
def test_event_and_model_trace_behave_like_their_python_twins() -> None:
    ev = speedups.Event()
    assert ev.position == ev.seq == -1
    with pytest.raises(AttributeError):
        ev.before  # noqa: B018 - an unset field raises, as an unset slot does
    assert ev.capture is ev and ev.seq == -2  # naming it makes it want its seq back
    with pytest.raises(TypeError):
        ev.first_write(object())


@needs_c
def test_bulk_rows_takes_only_the_usual_batch() -> None:
    class Holder:
        seq = -2

    holder = Holder()

    def item(pos: int, parent: Any = None, key: int = 7, hold: Any = None) -> tuple[Any, ...]:
        return (
            key, pos, hold, parent, None, 1, 2, "go", 100 + pos, 5, None, True, None, (0,),
            (1,), 3,
        )  # fmt: skip

    rows = speedups.bulk_rows([item(4), item(5, hold=holder)], 7, 4, 10, 1000)
    assert rows == [
        (10, 3, 1104, 5, 2, "go", None, True, None, (0,), (1,), None, None),
        (11, 3, 1105, 5, 2, "go", None, True, None, (0,), (1,), None, None),
    ]
    assert holder.seq == 11
    assert speedups.bulk_rows([item(4), item(6)], 7, 4, 0, 0) is None  # out of order
    assert speedups.bulk_rows([item(4, parent=holder)], 7, 4, 0, 0) is None  # nested
    assert speedups.bulk_rows([item(4, key=8)], 7, 4, 0, 0) is None  # another channel
    assert speedups.bulk_rows([], 7, 4, 0, 0) == []


@needs_c
def test_plain_records_and_rows_are_born_untracked() -> None:
    # What a young collection would do at its first pass, done at birth: no collection
    # walks the records waiting in the buffer, nor the rows a sink keeps.
    machine, model = _toggle()
    handle = attach(machine, sink=MemorySink())
    d = handle.dispatcher
    model.start()
    model.stop()
    gc.collect()  # the moves' cached (exited, entered) tuples are untracked by now
    gc.disable()
    try:
        with d._lock:  # the sender cannot take the buffer meanwhile
            model.start()
            model.stop(payload={"a": 1})  # a dict argument may be in a cycle: tracked
            plain, with_args = list(d._buffer)[-2:]
        assert not gc.is_tracked(plain)
        assert gc.is_tracked(with_args)
        rows = speedups.bulk_rows([plain, with_args], plain[0], plain[1], 0, 0)
        assert rows is not None
        assert [gc.is_tracked(r) for r in rows] == [False, True]
    finally:
        gc.enable()
    handle.detach()


@needs_c
def test_hooks_refuse_links_of_the_wrong_kind() -> None:
    # The hot path reads its links with the concrete dict API: a wrong one must be an
    # error at construction, never a crash at the first trigger.
    with pytest.raises(TypeError, match="links"):
        speedups.ProcessHook(1, 2)
    with pytest.raises(TypeError, match="must be a dict"):
        speedups.SetStateHook(*([None] * speedups.LINKS))
