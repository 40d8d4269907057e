"""Records, schemas and their msgpack encoding."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer import Kind, MachineRecord, Schema, StateSpec, TransitionRecord, TransitionSpec
from tracer.codec import (
    DecodeError,
    decode_machine,
    decode_transition,
    encode_machine,
    encode_transition,
)

SCHEMA = Schema(
    (
        StateSpec("Idle", initial=True),
        StateSpec("Order", parallel=True),
        StateSpec("Order_payment", "Order"),
        StateSpec("Order_payment_paid", "Order_payment", final=True),
        StateSpec("Order_shipping", "Order"),
    ),
    (TransitionSpec("Idle", "place", "Order"), TransitionSpec("Order", "noop", None, True)),
)


def test_transition_ids_are_deterministic():
    r = TransitionRecord("order-1", 42, Kind.EVENT, "pay", mach_tick=3)
    assert r.id == "order-1/3/42"


def test_schema_indexes_parents_and_errors():
    assert SCHEMA.index("Order_shipping") == 4
    assert SCHEMA.ancestors(3) == [2, 1]
    assert SCHEMA.children(1) == [2, 4]
    assert SCHEMA.children(None) == [0, 1]
    with pytest.raises(KeyError, match="unknown state 'Nope'"):
        SCHEMA.index("Nope")
    with pytest.raises(ValueError, match="duplicate state names in schema: A"):
        Schema((StateSpec("A"), StateSpec("A")))
    with pytest.raises(ValueError, match="unknown parent 'X'"):
        Schema((StateSpec("A", "X"),))


def test_machine_record_round_trips():
    m = MachineRecord(
        "order-1", "transitions", SCHEMA, parent_id="shop-1", mach_tick=2, tags={"env": "test"}
    )
    back = decode_machine(encode_machine(m))
    assert back == m
    assert back.schema.transitions == SCHEMA.transitions


def test_typical_record_is_compact():
    r = TransitionRecord(
        "order-1",
        1234,
        Kind.EVENT,
        "pay",
        time=1_763_900_000_123_456_789,
        duration=15_000,
        exited=(3,),
        entered=(4,),
    )
    # machine id included; a journal batch stores it once per batch instead
    assert len(encode_transition(r)) < 50


@given(
    seq=st.integers(0, 2**63),
    name=st.text(max_size=30),
    # args are sanitized before encoding, so integers stay within msgpack's range
    args=st.none()
    | st.dictionaries(st.text(max_size=5), st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5)),
    error=st.none() | st.tuples(st.text(max_size=10), st.text(max_size=20)),
    exited=st.lists(st.integers(0, 300), max_size=5),
    parent=st.none() | st.integers(0, 1000),
    source=st.none() | st.tuples(st.text(min_size=1, max_size=8), st.integers(0, 99)),
    kind=st.sampled_from(list(Kind)),
)
def test_transition_round_trips(seq, name, args, error, exited, parent, source, kind):
    r = TransitionRecord(
        "m",
        seq,
        str(kind),
        name,
        args=args,
        error=error,
        exited=tuple(exited),
        parent_seq=parent,
        source=source,
        accepted=bool(seq % 2),
    )
    assert decode_transition(encode_transition(r)) == r


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "starts with its machine id"),
        (msgpack.packb(["m", 1]), "array of 13 fields"),
        (
            msgpack.packb(["m", -1, 0, 0, 0, 1, "", None, True, None, [], [], None, None]),
            "seq must be a non-negative integer",
        ),
        (
            msgpack.packb(["m", 0, 0, 0, 0, 99, "", None, True, None, [], [], None, None]),
            "unknown record kind 99",
        ),
        (
            msgpack.packb(["m", 0, 0, 0, 0, 1, "", None, "yes", None, [], [], None, None]),
            "accepted must be a boolean",
        ),
        (
            msgpack.packb(["m", 0, 0, 0, 0, 1, "", None, True, None, ["x"], [], None, None]),
            "exited holds 'x'",
        ),
        (
            msgpack.packb(["m", 0, 0, 0, 0, 1, "", None, True, [1], [], [], None, None]),
            "error must be nil or",
        ),
    ],
)
def test_bad_transition_bytes_are_named(payload, message):
    with pytest.raises(DecodeError, match=message):
        decode_transition(payload)


def test_bad_machine_bytes_are_named():
    with pytest.raises(DecodeError, match="array of 9 fields"):
        decode_machine(msgpack.packb([1]))
    with pytest.raises(DecodeError, match="invalid schema"):
        decode_machine(msgpack.packb(["m", "k", None, 0, 0, 0, {}, [["A", "nope", 0, 0, 0]], []]))
