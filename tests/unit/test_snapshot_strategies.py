"""Snapshot strategies: every-N records (ST-01) and every-T seconds (ST-02)."""

from __future__ import annotations

import pytest

from backends.snapshots import AnyStrategy, IntervalStrategy, TimeStrategy


@pytest.mark.parametrize(
    ("n", "true", "false"),
    [
        (4, [0, 4, 8], [1, 2, 3, 5]),
        (5, [0], [1, 2, 3, 4]),
        (1, [0, 1, 2, 3], []),
    ],
)
def test_interval_triggers_on_multiples_including_zero(n, true, false):
    s = IntervalStrategy(n)
    assert all(s.should_snapshot(i) for i in true)
    assert not any(s.should_snapshot(i) for i in false)


@pytest.mark.parametrize("n", [0, -1, -4])
def test_interval_of_zero_or_less_never_triggers_and_never_divides_by_zero(n):
    s = IntervalStrategy(n)
    assert not any(s.should_snapshot(i) for i in range(10))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_strategy_sequence_0_50_100_100_200_ms():
    clock = FakeClock()
    s = TimeStrategy(0.100, clock)
    got = []
    for ms in (0, 50, 100, 100, 200):
        clock.now = ms / 1000
        got.append(s.should_snapshot(len(got)))
    assert got == [False, False, True, False, True]


def test_time_strategy_reads_the_clock_only_when_asked():
    calls = []

    def clock() -> float:
        calls.append(1)
        return 0.0

    s = TimeStrategy(1.0, clock)
    assert len(calls) == 1  # the starting point
    s.should_snapshot(0)
    assert len(calls) == 2


def test_any_strategy_asks_every_strategy_each_time():
    clock = FakeClock()
    t = TimeStrategy(1.0, clock)
    s = AnyStrategy(IntervalStrategy(4), t)
    assert s.should_snapshot(0)  # the interval hit; the time strategy was still asked
    clock.now = 1.0
    assert s.should_snapshot(1)  # time
    assert t.last == 1.0
    assert not s.should_snapshot(2)
