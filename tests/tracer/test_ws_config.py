"""The WebSocket sink's configuration after acknowledged rows matches a plain replay."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracer.codec import KIND_CODES
from tracer.records import RESET_KINDS, Kind
from tracer.ws_sink import advance_config

RESET = sorted(KIND_CODES[k] for k in RESET_KINDS)
OTHER = sorted(set(KIND_CODES.values()) - set(RESET))
STATES = st.lists(st.integers(0, 6), max_size=4).map(tuple)


def row(seq: int, kind: int, exited: tuple[int, ...], entered: tuple[int, ...]) -> tuple:
    return (seq, 0, 0, 0, kind, "e", None, True, None, exited, entered, None, None)


ROWS = st.lists(st.tuples(st.sampled_from(OTHER * 5 + RESET), STATES, STATES), max_size=30).map(
    lambda specs: [row(i, k, ex, en) for i, (k, ex, en) in enumerate(specs)]
)


def replay(config: set[int], rows: list[tuple]) -> set[int]:
    out = set(config)
    for r in rows:
        if r[4] in RESET:
            out = set(r[10])
        else:
            out -= set(r[9])
            out |= set(r[10])
    return out


@given(st.sets(st.integers(0, 6)), ROWS)
def test_advance_config_equals_replaying_every_row(start: set[int], rows: list[tuple]) -> None:
    config = set(start)
    advance_config(config, rows)
    assert config == replay(start, rows)


def test_a_reentered_state_stays_active_and_a_reset_replaces_everything() -> None:
    event = KIND_CODES[Kind.EVENT]
    config = {0, 1}
    advance_config(config, [row(0, event, (1,), (1,)), row(1, event, (0,), (2,))])
    assert config == {1, 2}
    advance_config(config, [row(2, KIND_CODES[Kind.GAP], (), (3,)), row(3, event, (3,), (4,))])
    assert config == {4}
