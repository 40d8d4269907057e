"""A demo of event-sourced state: bank accounts that persist events, snapshot and restart."""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any

from aminspect.machines.es_store import Provider
from aminspect.machines.eventsourced import EventSourced, IntervalStrategy
from backends import Backend
from tracer.sinks import Sink

__all__ = ["Account", "Deposited", "FeeCharged", "Withdrawn", "open_account", "run_demo"]


@dataclasses.dataclass(frozen=True)
class Deposited:
    amount: int


@dataclasses.dataclass(frozen=True)
class Withdrawn:
    amount: int


@dataclasses.dataclass(frozen=True)
class FeeCharged:
    amount: int


@dataclasses.dataclass(frozen=True)
class Account:
    """The state: a balance in cents and how many operations made it."""

    balance: int = 0
    operations: int = 0


def _apply(state: Account, event: Any) -> Account:
    delta = event.amount if isinstance(event, Deposited) else -event.amount
    return Account(state.balance + delta, state.operations + 1)


def _labels(state: Account) -> list[str]:
    return ["overdrawn"] if state.balance < 0 else ["open"]


def open_account(
    name: str, provider: Provider, trace: Sink | str | None = None
) -> EventSourced[Account, Any]:
    """An account that snapshots every 5 events and shows ``open``/``overdrawn``.

    Raises:
        RecoveryError: its stored history cannot be replayed.
    """
    return EventSourced(
        name,
        provider,
        initial=Account(),
        apply=_apply,
        event_types=[Deposited, Withdrawn, FeeCharged],
        strategy=IntervalStrategy(5),
        states=["open", "overdrawn"],
        labels=_labels,
        trace=trace,
    )


def run_demo(
    url_or_sink: Sink | Backend | str,
    stop: threading.Event,
    *,
    pace: float = 0.4,
    seed: int = 7,
    restart_every: int = 12,
    max_steps: int | None = None,
) -> int:
    """Run two accounts until ``stop`` is set: deposits, withdrawals and fees, a snapshot
    every 5 events, and a "restart" of an account every ``restart_every`` steps (it is
    closed and recovered: snapshot + tail, shown as a ``restore`` record).

    Args:
        url_or_sink: a backend (the accounts' events are stored in it and it is what the
            inspector reads), or a tracer sink / ``ws://`` URL (the events are stored in a
            private ``memory://`` backend and traced there).
        stop: set it to end the loop.
        pace: seconds between steps (0: flat out).
        seed: the random seed.
        restart_every: steps between restarts.
        max_steps: stop after this many steps (None: until ``stop``).

    Returns:
        The number of events persisted.
    """
    rng = random.Random(seed)
    if isinstance(url_or_sink, str) or not isinstance(url_or_sink, Backend):
        provider = Provider("memory://")
        trace: Sink | str | None = url_or_sink
    else:
        provider = Provider(url_or_sink)
        trace = None
    names = ["account-alice", "account-bob"]
    accounts = {name: open_account(name, provider, trace) for name in names}
    persisted = 0
    step = 0
    try:
        while not stop.is_set() and (max_steps is None or step < max_steps):
            step += 1
            name = rng.choice(names)
            account = accounts[name]
            roll = rng.random()
            if roll < 0.45:
                event: Any = Deposited(rng.randrange(500, 5000, 100))
            elif roll < 0.9:
                event = Withdrawn(rng.randrange(500, 6000, 100))
            else:
                event = FeeCharged(rng.choice([150, 250]))
            try:
                account.persist(event)
                persisted += 1
            except Exception:
                # A demo keeps going: the next restart recovers the account.
                account.close()
                accounts[name] = open_account(name, provider, trace)
            if step % restart_every == 0:
                victim = rng.choice(names)
                accounts[victim].close()
                accounts[victim] = open_account(victim, provider, trace)
            if pace > 0:
                stop.wait(pace)
    finally:
        for account in accounts.values():
            account.close()
        provider.close()
    return persisted
