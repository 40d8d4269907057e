"""A scenario for flat ``transitions`` machines that touches every branch of the hot path;
prints its records as JSON. ``test_speedups.py`` runs it with and without the C hot path
(``AMINSPECT_PURE_PYTHON``) and expects the same output.

Run: ``.venv/bin/python tests/tracer/speedups_scenario.py``
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any

from transitions import Machine, MachineError
from transitions.extensions import LockedMachine

from tracer import MemorySink, attach
from tracer._accel import speedups


class Model:
    def __init__(self, label: str) -> None:
        self.label = label
        self.other: Any = None
        self.allow = True

    def may(self, *args: Any, **kwargs: Any) -> bool:
        return self.allow

    def explode(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError(f"{self.label} exploded")

    def chain(self, *args: Any, **kwargs: Any) -> None:
        self.finish()  # type: ignore[attr-defined]  # a nested trigger, same machine

    def cross(self, *args: Any, **kwargs: Any) -> None:
        self.other.start()  # a nested trigger of another machine

    def force(self, *args: Any, **kwargs: Any) -> None:
        self.machine.set_state("idle", model=self)  # a forced write in a callback


def build(cls: type, label: str, models: int = 1) -> tuple[Any, list[Model]]:
    ms = [Model(f"{label}{i}") for i in range(models)]
    machine = cls(
        ms,
        states=["idle", "busy", "done"],
        transitions=[
            ["start", "idle", "busy"],
            ["stop", "busy", "idle"],
            {"trigger": "again", "source": "busy", "dest": "busy"},  # exits and re-enters
            {"trigger": "poke", "source": "busy", "dest": None},  # internal: no write
            {"trigger": "guarded", "source": "idle", "dest": "busy", "conditions": "may"},
            {"trigger": "boom", "source": "idle", "dest": "busy", "after": "explode"},
            {"trigger": "nest", "source": "idle", "dest": "busy", "after": "chain"},
            ["finish", "busy", "done"],
            ["reset", "done", "idle"],
            {"trigger": "hop", "source": "idle", "dest": "busy", "after": "cross"},
            {"trigger": "forcing", "source": "idle", "dest": "busy", "after": "force"},
        ],
        initial="idle",
        auto_transitions=True,
    )
    for m in ms:
        m.machine = machine  # type: ignore[attr-defined]
    return machine, ms


def play(m: Any) -> None:
    m.start(1, two=2)
    m.again()
    m.poke("x")
    m.stop()
    m.allow = False
    m.guarded()  # a failed condition: not accepted
    m.allow = True
    m.guarded()
    m.stop()
    with contextlib.suppress(ValueError):
        m.boom()
    m.stop()
    with contextlib.suppress(MachineError):
        m.finish()  # invalid from idle: raises, recorded as not accepted
    m.nest()
    m.reset()
    m.hop()
    m.stop()
    m.forcing()
    m.to_done()  # to_state: forced
    m.machine.set_state("idle", model=m)  # forced, from outside any event


def _fields(r: Any) -> list[Any]:
    """What both paths must agree on: everything but the clock."""
    return [
        r.seq, str(r.kind), r.name, r.args, r.accepted, r.error, r.exited, r.entered,
        r.parent_seq, r.source,
    ]  # fmt: skip


def main() -> None:
    sink = MemorySink()
    handles = []
    other_machine, (other,) = build(Machine, "other")
    handles.append(attach(other_machine, sink=sink, name="other"))
    for cls, label in ((Machine, "flat"), (LockedMachine, "locked")):
        machine, models = build(cls, label, models=2)
        handles.append(attach(machine, sink=sink, name=label))
        for m in models:
            m.other = other
            play(m)
            if other.state == "busy":
                other.stop()
    for h in handles:
        assert h.flush(10)
    out = {
        "speedups": speedups is not None,
        "hooks": sorted({type(v).__name__ for v in vars(machine).values() if callable(v)}),
        "errors": [h.stats.last_error for h in handles],
        "records": {mid: [_fields(r) for r in sink.history(mid)] for mid in sorted(sink.machines)},
    }
    json.dump(out, sys.stdout, default=repr, indent=None)


if __name__ == "__main__":
    main()
