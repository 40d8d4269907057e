"""Snapshot strategies: when a backend saves the machine time it has just reached."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["AnyStrategy", "IntervalStrategy", "SnapshotStrategy", "TimeStrategy"]


@runtime_checkable
class SnapshotStrategy(Protocol):
    """Asked once per appended record ``index``: save a snapshot at ``index`` now?

    A snapshot at ``index`` covers records ``[0, index)`` (S-01): it is taken after record
    ``index`` is written and before it is applied.
    """

    def should_snapshot(self, index: int) -> bool: ...


class IntervalStrategy:
    """Every ``n`` records (ST-01): true iff ``n > 0`` and ``index % n == 0``.

    Index 0 triggers; ``n <= 0`` never triggers (and never divides by zero).
    """

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def should_snapshot(self, index: int) -> bool:
        n = self.n
        return n > 0 and index % n == 0

    def __repr__(self) -> str:
        return f"IntervalStrategy({self.n})"


class TimeStrategy:
    """Every ``seconds`` (ST-02): true when ``clock() - last >= seconds``, then ``last`` resets.

    The clock is read only when asked (that is, when a record is appended); ``last``
    starts at the clock's value when the strategy is made.

    Args:
        seconds: the minimum time between snapshots.
        clock: seconds as a float, ``time.monotonic`` by default; tests inject a fake.
    """

    __slots__ = ("_clock", "last", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float] | None = None) -> None:
        self.seconds = seconds
        self._clock = clock if clock is not None else time.monotonic
        self.last = self._clock()

    def should_snapshot(self, index: int) -> bool:
        now = self._clock()
        if now - self.last >= self.seconds:
            self.last = now
            return True
        return False

    def __repr__(self) -> str:
        return f"TimeStrategy({self.seconds})"


class AnyStrategy:
    """Triggers when any of its strategies does (each is asked every time, so a time
    strategy's ``last`` stays current)."""

    __slots__ = ("strategies",)

    def __init__(self, *strategies: SnapshotStrategy) -> None:
        self.strategies = strategies

    def should_snapshot(self, index: int) -> bool:
        hits = [s.should_snapshot(index) for s in self.strategies]
        return any(hits)
