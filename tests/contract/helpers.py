"""Builders shared by the contract tests: machines and consistent random histories."""

from __future__ import annotations

import random
from typing import Any

from tracer.machine_time import MachineTime
from tracer.records import Kind, MachineRecord, Schema, StateSpec, TransitionRecord

STATES = ("A", "B", "C", "D")


def machine(mid: str = "m", states: tuple[str, ...] = STATES, **kw: Any) -> MachineRecord:
    return MachineRecord(mid, "manual", Schema.flat(states), created=1, updated=1, **kw)


def nested_machine(mid: str = "h") -> MachineRecord:
    schema = Schema(
        (
            StateSpec("P"),
            StateSpec("P_x", parent="P"),
            StateSpec("P_y", parent="P"),
            StateSpec("Q"),
        )
    )
    return MachineRecord(mid, "manual", schema, created=1, updated=1)


def counter_records(mid: str, n: int, start: int = 0, t0: int = 1_000) -> list[TransitionRecord]:
    """Non-idempotent history: each record toggles A (exit or enter), so every record moves
    A's clock by one and an off-by-one in a snapshot index changes the result (S-02)."""
    out = []
    for seq in range(start, start + n):
        if seq == 0:
            out.append(TransitionRecord(mid, 0, Kind.INIT, "init", time=t0, entered=(0,)))
            continue
        # seq odd: A is active (entered at even seqs) -> exit; seq even -> enter
        if seq % 2 == 1:
            out.append(
                TransitionRecord(
                    mid, seq, Kind.EVENT, "off", time=t0 + seq * 10, exited=(0,), entered=(1,)
                )
            )
        else:
            out.append(
                TransitionRecord(
                    mid, seq, Kind.EVENT, "on", time=t0 + seq * 10, exited=(1,), entered=(0,)
                )
            )
    return out


def random_history(
    mid: str,
    n: int,
    rnd: random.Random,
    nstates: int = len(STATES),
    monotonic: bool = True,
) -> list[TransitionRecord]:
    """A consistent random history: events exit active states and enter inactive ones,
    with re-entries, reset kinds, rejected events and errors mixed in."""
    mt = MachineTime(nstates)
    out: list[TransitionRecord] = []
    t = 1_000
    names = ("go", "stop", "tick", "")
    for seq in range(n):
        active = sorted(mt.active())
        inactive = [i for i in range(nstates) if i not in active]
        roll = rnd.random()
        if seq == 0 or roll < 0.08:
            kind = rnd.choice((Kind.INIT, Kind.RESTORE, Kind.GAP)) if seq else Kind.INIT
            conf = tuple(sorted(rnd.sample(range(nstates), rnd.randint(0, nstates))))
            exited: tuple[int, ...] = ()
            entered = conf
        else:
            kind = rnd.choice((Kind.EVENT, Kind.EVENT, Kind.ADD, Kind.REMOVE, Kind.FORCED))
            ex = rnd.sample(active, rnd.randint(0, len(active))) if active else []
            en = rnd.sample(inactive, rnd.randint(0, len(inactive))) if inactive else []
            if ex and rnd.random() < 0.2:
                en.append(ex[0])  # re-entry: exited and entered in one record
            exited, entered = tuple(sorted(ex)), tuple(sorted(set(en)))
        step = rnd.choice((0, 0, 1, 5, 10, 100))
        t = t + step if monotonic else max(0, t + rnd.randint(-50, 50))
        accepted = rnd.random() > 0.1
        error = ("ValueError", "boom") if rnd.random() < 0.05 else None
        rec = TransitionRecord(
            mid,
            seq,
            kind,
            rnd.choice(names),
            time=t,
            accepted=accepted,
            error=error,
            exited=exited,
            entered=entered,
            args={"i": seq} if rnd.random() < 0.3 else None,
        )
        mt.apply(rec)
        out.append(rec)
    return out
