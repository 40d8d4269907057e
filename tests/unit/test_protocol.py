"""Wire protocol v1 without sockets: both ends, every message, every rejection."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.codec import machine_to_list, transition_to_list
from tracer.protocol import (
    BAD_MESSAGE,
    HANDSHAKE,
    LIMIT,
    SEQUENCE,
    TOO_MANY_ERRORS,
    UNAUTHORIZED,
    UNKNOWN_MACHINE,
    UNSUPPORTED_VERSION,
    Ack,
    ClientSession,
    Dispose,
    ErrorMessage,
    Gap,
    Hello,
    Limits,
    MachineMessage,
    ProtocolError,
    ServerSession,
    Txs,
    Welcome,
    encode_ack,
    encode_dispose,
    encode_error,
    encode_gap,
    encode_hello,
    encode_machine,
    encode_txs,
    encode_welcome,
)
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

SCHEMA = Schema.flat(["idle", "busy", "done"], initial="idle")


def machine(mid: str = "m", n: int = 3) -> MachineRecord:
    schema = SCHEMA if n == 3 else Schema.flat([f"s{i}" for i in range(n)])
    return MachineRecord(mid, "manual", schema, created=1, updated=2)


def rec(seq: int, mid: str = "m", **kw: object) -> TransitionRecord:
    r = TransitionRecord(mid, seq, Kind.EVENT, "go", time=1000 + seq, exited=(0,), entered=(1,))
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def pack(*fields: object) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


def opened(
    limits: Limits | None = None, token: str | None = None, machines: int = 1, rows: bool = False
) -> ServerSession:
    s = ServerSession(limits or Limits(), token=token, rows=rows)
    hello = s.receive(encode_hello("c", "h", 1, token, []))
    assert isinstance(hello, Hello)
    s.welcome({})
    for i in range(machines):
        m = machine("m" if i == 0 else f"m{i}")
        assert isinstance(s.receive(encode_machine(m)), MachineMessage)
        s.machine_ready(m, -1)
    return s


def reject(session: ServerSession, frame: bytes | str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        session.receive(frame)
    return info.value


# -- handshake ---------------------------------------------------------------------------


def test_handshake_from_both_ends() -> None:
    server, client = ServerSession(token="s3cret"), ClientSession()
    hello = server.receive(encode_hello("app", "host1", 42, "s3cret", ["a", "b"], [1, 7]))
    assert isinstance(hello, Hello)
    assert (hello.client, hello.host, hello.pid, hello.machines) == ("app", "host1", 42, ("a", "b"))
    assert "s3cret" not in repr(hello)
    welcome = client.receive(server.welcome({"a": 9, "b": -1}))
    assert isinstance(welcome, Welcome)
    assert welcome.version == 1 and server.version == 1 and server.open
    assert welcome.highest == {"a": 9, "b": -1}
    assert welcome.limits["max_batch"] == Limits().max_batch
    ack = client.receive(server.machine_ready(machine("a"), 9))
    assert ack == Ack({"a": 9})


@pytest.mark.parametrize(
    ("token", "expected", "given"),
    [("s3cret", "missing token", None), ("s3cret", "wrong token", "s3creT"), ("é", "wrong", "e")],
)
def test_bad_token_is_fatal(token: str, expected: str, given: str | None) -> None:
    s = ServerSession(token=token)
    err = reject(s, encode_hello("c", "h", 1, given, []))
    assert err.code == UNAUTHORIZED and err.fatal and expected in err.reason
    assert s.closed and not s.open
    assert reject(s, encode_hello("c", "h", 1, token, [])).fatal


def test_no_token_configured_accepts_any() -> None:
    s = ServerSession()
    assert isinstance(s.receive(encode_hello("c", "h", 1, "whatever", [])), Hello)


def test_version_negotiation() -> None:
    s = ServerSession()
    err = reject(s, encode_hello("c", "h", 1, None, [], [2, 3]))
    assert err.code == UNSUPPORTED_VERSION and err.fatal and "[2, 3]" in err.reason


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",
        "text",
        pack("ack", {}),
        pack("txs", "m", 0, []),
        pack("hello"),
        pack("hello", [1], "c", "h", -1, None, []),
        pack("hello", [], "c", "h", 1, None, []),
        pack("hello", ["1"], "c", "h", 1, None, []),
        pack("hello", [1], "c", "h", 1, 5, []),
        pack("hello", [1], "c", "h", 1, None, "m"),
        pack("hello", [1], "c", "h", 1, None, [""]),
        pack("hello", [1], 3, "h", 1, None, []),
        pack("nonsense"),
        pack(),
        msgpack.packb({"type": "hello"}),
    ],
)
def test_anything_but_a_valid_hello_first_is_fatal(frame: bytes | str) -> None:
    s = ServerSession()
    err = reject(s, frame)
    assert err.code == HANDSHAKE and err.fatal and s.closed


def test_second_hello_and_early_messages() -> None:
    s = ServerSession()
    s.receive(encode_hello("c", "h", 1, None, []))
    assert reject(s, encode_machine(machine())).code == HANDSHAKE  # before welcome
    s = opened()
    err = reject(s, encode_hello("c", "h", 1, None, []))
    assert err.code == HANDSHAKE and err.fatal


def test_too_many_machines_in_hello() -> None:
    s = ServerSession(Limits(max_machines=2))
    assert reject(s, encode_hello("c", "h", 1, None, ["a", "b", "c"])).code == HANDSHAKE


# -- records -----------------------------------------------------------------------------


def test_txs_roundtrip_and_sequence() -> None:
    s = opened()
    txs = s.receive(encode_txs("m", [rec(0), rec(1), rec(2)]))
    assert isinstance(txs, Txs)
    assert (txs.first, txs.last) == (0, 2)
    assert txs.records == [rec(0), rec(1), rec(2)]
    assert s.expected("m") == 3
    # a resend overlapping what was sent is accepted (storage drops duplicates)
    assert isinstance(s.receive(encode_txs("m", [rec(1), rec(2), rec(3)])), Txs)
    assert s.expected("m") == 4
    err = reject(s, encode_txs("m", [rec(5)]))
    assert err.code == SEQUENCE and not err.fatal and err.machine_id == "m"
    assert "expects 4" in err.reason
    assert s.expected("m") == 4  # nothing changed


def test_machine_ready_sets_expected_from_storage() -> None:
    s = opened(machines=0)
    s.receive(encode_machine(machine()))
    assert reject(s, encode_txs("m", [rec(0)])).code == UNKNOWN_MACHINE  # not ready yet
    s.machine_ready(machine(), 41)
    assert reject(s, encode_txs("m", [rec(43)])).code == SEQUENCE
    assert isinstance(s.receive(encode_txs("m", [rec(42)])), Txs)


def test_encode_txs_shifts_seqs_and_sources() -> None:
    r = rec(0, parent_seq=0, source=("other", 3))
    frame = msgpack.unpackb(encode_txs("m", [r, rec(1)], 10, {"other": 100}))
    assert frame[0] == "txs" and frame[2] == 10
    assert frame[3][0][0] == 10 and frame[3][0][11] == 10 and frame[3][0][12] == ["other", 103]
    assert frame[3][0][1:11] == transition_to_list(r)[1:11]


def good_record(seq: int) -> list[object]:
    return transition_to_list(rec(seq))


def bad_field(index: int, value: object) -> bytes:
    fields = good_record(0)
    fields[index] = value
    return pack("txs", "m", 0, [fields])


@pytest.mark.parametrize(
    ("frame", "code", "words"),
    [
        (b"\x92\xa3txs", BAD_MESSAGE, "not valid msgpack"),
        ("text", BAD_MESSAGE, "text frame"),
        (pack("frobnicate", 1), BAD_MESSAGE, "unknown message type"),
        (pack(1, 2), BAD_MESSAGE, "type must be a string"),
        (msgpack.packb("txs"), BAD_MESSAGE, "array"),
        (pack("txs", "m", 0), BAD_MESSAGE, "2 fields, expected 3"),
        (pack("txs", "m", -1, [good_record(0)]), BAD_MESSAGE, "first seq"),
        (pack("txs", "m", 0, []), BAD_MESSAGE, "non-empty"),
        (pack("txs", "", 0, [good_record(0)]), BAD_MESSAGE, "machine id"),
        (pack("txs", 7, 0, [good_record(0)]), BAD_MESSAGE, "machine id"),
        (pack("txs", "zz", 0, [good_record(0)]), UNKNOWN_MACHINE, "not declared"),
        (pack("txs", "m", 0, [good_record(1)]), BAD_MESSAGE, "expected 0"),
        (pack("txs", "m", 0, [good_record(0)[:5]]), BAD_MESSAGE, "13 fields"),
        (bad_field(4, 99), BAD_MESSAGE, "kind"),
        (bad_field(4, 7), BAD_MESSAGE, "gap message"),
        (bad_field(5, 3), BAD_MESSAGE, "name"),
        (bad_field(7, 1), BAD_MESSAGE, "accepted"),
        (bad_field(8, ["x"]), BAD_MESSAGE, "error"),
        (bad_field(9, [3]), BAD_MESSAGE, "state index"),
        (bad_field(10, [-1]), BAD_MESSAGE, "state index"),
        (bad_field(10, "a"), BAD_MESSAGE, "entered"),
        (bad_field(2, "now"), BAD_MESSAGE, "time"),
        # msgpack decodes uint64, the backends store int64: beyond it is refused here
        (bad_field(2, 2**63), BAD_MESSAGE, "time 9223372036854775808 is beyond 2**63-1"),
        (bad_field(1, 2**64 - 1), BAD_MESSAGE, "mach_tick"),
        (bad_field(3, 2**63), BAD_MESSAGE, "duration"),
        (bad_field(11, 2**63), BAD_MESSAGE, "parent_seq"),
        (pack("gap", "m", 0, 1, 0, 2**63, []), BAD_MESSAGE, "from 0 to 2**63-1"),
        (bad_field(12, ["x"]), BAD_MESSAGE, "source"),
        (pack("welcome", 1, "s", {}, {}), BAD_MESSAGE, "server message"),
        (pack("ack", {}), BAD_MESSAGE, "server message"),
        (pack("machine", [1, 2, 3], None), BAD_MESSAGE, "9 fields"),
        (pack("machine", [*machine_to_list(machine())[:8], 5], None), BAD_MESSAGE, "schema"),
        (pack("machine", machine_to_list(machine()), [1]), BAD_MESSAGE, "clocks"),
        (pack("dispose", 3), BAD_MESSAGE, "machine id"),
        (pack("gap", "m", 0, 0, 0, 0, []), BAD_MESSAGE, "at least 1"),
        (pack("gap", "m", 0, 1, 0, 0, [9]), BAD_MESSAGE, "state index"),
        (pack("gap", "q", 0, 1, 0, 0, []), UNKNOWN_MACHINE, "not declared"),
        (pack("gap", "m", 3, 1, 0, 0, []), SEQUENCE, "expects 0"),
    ],
)
@pytest.mark.parametrize("rows", [False, True])
def test_bad_messages_are_recoverable(
    frame: bytes | str, code: int, words: str, rows: bool
) -> None:
    s = opened(rows=rows)
    err = reject(s, frame)
    assert err.code == code and not err.fatal
    assert words in err.reason
    assert s.open and s.expected("m") == 0
    assert isinstance(s.receive(encode_txs("m", [rec(0)])), Txs)  # still usable


def test_txs_rows_mode_gives_checked_wire_rows() -> None:
    s = opened(rows=True)
    records = [rec(0), rec(1, parent_seq=0, source=("other", 3)), rec(2)]
    txs = s.receive(encode_txs("m", records))
    assert isinstance(txs, Txs)
    assert txs.records == [] and (txs.first, txs.last) == (0, 2)
    assert txs.rows == [transition_to_list(r) for r in records]
    assert s.expected("m") == 3


def test_limits() -> None:
    limits = Limits(max_batch=2, max_states=3, max_machines=2)
    s = opened(limits)
    err = reject(s, encode_txs("m", [rec(0), rec(1), rec(2)]))
    assert err.code == LIMIT and "limit is 2" in err.reason
    err = reject(s, encode_machine(machine("big", 4)))
    assert err.code == LIMIT and err.machine_id == "big"
    s.receive(encode_machine(machine("m2")))
    s.machine_ready(machine("m2"), -1)
    err = reject(s, encode_machine(machine("m3")))
    assert err.code == LIMIT and "2 machines" in err.reason
    s.receive(encode_machine(machine("m2")))  # redeclaring a known one is fine
    err = reject(s, encode_machine(MachineRecord("m2", "manual", Schema.flat(["a", "b"]))))
    assert err.code == BAD_MESSAGE and "different number of states" in err.reason


def test_error_budget_closes() -> None:
    s = opened(Limits(max_errors=3))
    reject(s, b"x")
    reject(s, b"x")
    err = reject(s, b"x")
    assert err.code == TOO_MANY_ERRORS and err.fatal and s.closed


def test_gap_and_dispose() -> None:
    s = opened()
    s.receive(encode_txs("m", [rec(0)]))
    gap = s.receive(encode_gap("m", 1, 50, 0, 123, [2, 1, 1]))
    assert isinstance(gap, Gap)
    assert (gap.seq, gap.dropped) == (1, 50)
    assert gap.record.kind == Kind.GAP and gap.record.entered == (1, 2)
    assert gap.record.args == {"dropped": 50} and gap.record.time == 123
    assert s.expected("m") == 2
    assert s.receive(encode_dispose("m")) == Dispose("m")
    assert s.machines == []
    assert reject(s, encode_txs("m", [rec(2)])).code == UNKNOWN_MACHINE


def test_client_session_validates_server_messages() -> None:
    c = ClientSession()
    with pytest.raises(ProtocolError, match="expected welcome"):
        c.receive(encode_ack({}))
    err = c.receive(encode_error(UNAUTHORIZED, "wrong token", True))
    assert err == ErrorMessage(UNAUTHORIZED, "wrong token", True, None)
    with pytest.raises(ProtocolError, match="unsupported version"):
        c.receive(encode_welcome(9, "s", {}, Limits()))
    c.receive(encode_welcome(1, "s", {"a": -1}, Limits()))
    assert c.receive(encode_ack({"a": 5})) == Ack({"a": 5})
    with pytest.raises(ProtocolError, match="seqs"):
        c.receive(encode_ack({"a": -2}))
    with pytest.raises(ProtocolError, match="unexpected"):
        c.receive(encode_hello("c", "h", 1, None, []))


# -- fuzz --------------------------------------------------------------------------------

VALID = [
    encode_txs("m", [rec(0), rec(1)]),
    encode_machine(machine("m")),
    encode_gap("m", 0, 3, 0, 5, [1]),
    encode_dispose("m"),
]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    s = opened(Limits(max_errors=10**9))
    try:
        s.receive(data)
    except ProtocolError as exc:
        assert exc.reason and isinstance(exc.code, int)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255))))
def test_mutated_frames_only_raise_protocol_errors(
    frame: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(frame)
    for pos, value in flips:
        data[pos % len(data)] = value
    s = opened(Limits(max_errors=10**9))
    try:
        s.receive(bytes(data))
    except ProtocolError as exc:
        assert exc.reason
