"""python-statemachine adapter: the tracer never raises into the app; threads keep order."""

from __future__ import annotations

import threading

import pytest
from statemachine import State, StateChart, StateMachine

import tracer
from tracer import MemorySink

try:
    from tests.tracer.statemachine_machines import SCENARIOS, Toggle, described, replay, run
except ImportError:  # tests/tracer is not a package: pytest put its folder on sys.path
    from statemachine_machines import (  # type: ignore[no-redef]
        SCENARIOS,
        Toggle,
        described,
        replay,
        run,
    )

pytestmark = pytest.mark.timeout(60)


class BrokenSink(MemorySink):
    """A real in-memory sink whose chosen operation fails."""

    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail = fail

    def register(self, machine):
        if self.fail == "register":
            raise OSError("disk gone")
        return super().register(machine)

    def write(self, machine_id, records):
        if self.fail == "write":
            raise OSError("disk full")
        super().write(machine_id, records)


@pytest.mark.parametrize("fail", ["write", "register"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_a_failing_sink_changes_nothing_for_the_app(scenario, fail):
    untraced = run(scenario, traced=False)
    traced = run(scenario, traced=True, sink=BrokenSink(fail))
    assert (traced.results, traced.configurations, traced.log) == (
        untraced.results,
        untraced.configurations,
        untraced.log,
    )
    assert traced.history == []
    assert "disk" in (traced.handle.stats.last_error or "")
    traced.handle.detach()


@pytest.mark.parametrize("fail", ["write", "register"])
def test_a_traced_machine_keeps_working_when_its_sink_fails(fail):
    reference = Toggle()
    sm = Toggle()
    handle = tracer.attach(sm, sink=BrokenSink(fail))
    for _ in range(5):
        assert sm.send("go", 1) == reference.send("go", 1)
    with pytest.raises(sm.TransitionNotAllowed):
        sm.send("nope")
    assert sm.log == reference.log
    assert not handle.flush(2) or handle.stats.last_error is not None
    assert "disk" in (handle.stats.last_error or "")
    handle.detach()


def test_a_raising_sanitizer_is_contained():
    def sanitizer(args, kwargs):
        raise RuntimeError("secret")

    sink = MemorySink()
    sm = Toggle()
    handle = tracer.attach(sm, sink=sink, sanitizer=sanitizer)
    assert sm.send("go", "password") == ["before", "went"]
    assert handle.flush(5)
    rec = sink.history(handle.machine_id)[1]
    assert rec.args == "<sanitizer failed: RuntimeError>"
    handle.detach()


def test_a_sanitizer_redacts_arguments():
    sink = MemorySink()
    sm = Toggle()
    handle = tracer.attach(sm, sink=sink, sanitizer=lambda a, k: {"n": len(a) + len(k)})
    sm.send("go", "password", user="bob")
    assert handle.flush(5)
    assert sink.history(handle.machine_id)[1].args == {"n": 2}
    handle.detach()


@pytest.mark.parametrize("base", [StateChart, StateMachine])
def test_concurrent_senders_produce_a_consistent_history(base):
    class Counter(base):
        even = State(initial=True)
        odd = State()
        tick = even.to(odd) | odd.to(even)

    sink = MemorySink()
    sm = Counter()
    handle = tracer.attach(sm, sink=sink)
    threads = [
        threading.Thread(target=lambda: [sm.send("tick") for _ in range(200)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    handle.detach()
    assert handle.flush(5)
    history = sink.history(handle.machine_id)
    assert [r.seq for r in history] == list(range(801))
    assert [r[2] for r in described(sink, handle.machine_id)[1:]] == ["tick"] * 800
    assert replay(sink, handle.machine_id, history) == {s.id for s in sm.configuration}
