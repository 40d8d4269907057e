"""Wire protocol v1 without I/O: message encoding, strict validation, handshake and seq checks.

Every frame is one binary WebSocket message holding one msgpack array whose first element
names the message (``docs/protocol.md`` documents each field). The server end is
:class:`ServerSession`, the client end :class:`ClientSession`; neither touches a socket:
callers feed them received frames and send the bytes they return.
"""

from __future__ import annotations

import gc
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import msgpack

from tracer.codec import KIND_CODES as _KIND_CODE
from tracer.codec import DecodeError, machine_from_list, machine_to_list, transition_from_list
from tracer.records import Kind, MachineRecord, TransitionRecord

__all__ = [
    "BAD_MESSAGE",
    "CONFLICT",
    "HANDSHAKE",
    "INTERNAL",
    "LIMIT",
    "SEQUENCE",
    "SUPPORTED_VERSIONS",
    "TOO_MANY_ERRORS",
    "UNAUTHORIZED",
    "UNKNOWN_MACHINE",
    "UNSUPPORTED_VERSION",
    "VERSION",
    "Ack",
    "ClientSession",
    "Dispose",
    "ErrorMessage",
    "Gap",
    "Hello",
    "Limits",
    "MachineMessage",
    "ProtocolError",
    "ServerSession",
    "Txs",
    "Welcome",
    "encode_ack",
    "encode_dispose",
    "encode_error",
    "encode_gap",
    "encode_hello",
    "encode_machine",
    "encode_txs",
    "encode_welcome",
]

VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Error codes double as WebSocket close codes (4000-4999 is the application range).
# Fatal ones close the connection after the ``error`` message; the others only reject
# the one message and the connection stays usable.
BAD_MESSAGE = 4000  # undecodable, unknown type, wrong field count or type
UNAUTHORIZED = 4001  # missing or wrong token (fatal)
HANDSHAKE = 4002  # anything but hello first, a second hello, hello timeout (fatal)
UNSUPPORTED_VERSION = 4003  # no protocol version in common (fatal)
SEQUENCE = 4004  # records out of order: a seq skipped
LIMIT = 4005  # a configured limit exceeded (batch size, states, machines)
UNKNOWN_MACHINE = 4006  # records for a machine not declared on this connection
CONFLICT = 4007  # the backend holds different records at these seqs
TOO_MANY_ERRORS = 4008  # the connection's error budget ran out (fatal)
INTERNAL = 1011  # a server bug or a storage failure (fatal)

_FATAL = frozenset({UNAUTHORIZED, HANDSHAKE, UNSUPPORTED_VERSION, TOO_MANY_ERRORS, INTERNAL})

MAX_SEQ = (1 << 63) - 1
# Every uint on the wire fits a signed 64-bit integer: what the backends store (SQLite
# INTEGER, array("q"), struct "q"). msgpack decodes up to 2**64 - 1, so it is checked here.
MAX_UINT = MAX_SEQ
_GAP_CODE = _KIND_CODE[Kind.GAP]
_KIND_NAMES = tuple(str(k) for k, _ in sorted(_KIND_CODE.items(), key=lambda kv: kv[1]))
_TYPES = ("hello", "welcome", "machine", "txs", "gap", "ack", "dispose", "error")


class ProtocolError(Exception):
    """A message that breaks the protocol; becomes an ``error`` message.

    Attributes:
        code: one of the error codes above (also the close code when fatal).
        reason: one line saying what was wrong.
        fatal: whether the connection must close.
        machine_id: the machine the error concerns, when there is one.
    """

    def __init__(
        self, code: int, reason: str, *, fatal: bool | None = None, machine_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.fatal = code in _FATAL if fatal is None else fatal
        self.machine_id = machine_id


@dataclass(frozen=True, slots=True)
class Limits:
    """What a server accepts; safe defaults. The server announces them in ``welcome``."""

    max_frame: int = 8 * 1024 * 1024  # bytes per WebSocket message
    max_machines: int = 10_000  # machines declared per connection
    max_states: int = 4096  # states per machine schema
    max_batch: int = 10_000  # records per txs message
    max_errors: int = 100  # recoverable errors before the connection is closed
    hello_timeout: float = 10.0  # seconds the client has to send hello

    def to_wire(self) -> dict[str, int]:
        return {
            "max_frame": self.max_frame,
            "max_machines": self.max_machines,
            "max_states": self.max_states,
            "max_batch": self.max_batch,
        }


# -- messages --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    versions: tuple[int, ...]
    client: str
    host: str
    pid: int
    token: str | None = field(repr=False)
    machines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Welcome:
    version: int
    server: str
    highest: dict[str, int]
    limits: dict[str, int]


@dataclass(frozen=True, slots=True)
class MachineMessage:
    machine: MachineRecord
    clocks: tuple[int, ...] | None


@dataclass(frozen=True, slots=True)
class Txs:
    """A batch of one machine's records from ``first`` on.

    ``records`` are the decoded records; a session made with ``rows=True`` leaves it empty
    and gives ``rows`` instead: the records' positional wire form (``codec``'s 13-field
    lists, every field checked as for ``records``), for a backend's ``append_rows``.
    """

    machine_id: str
    first: int
    records: list[TransitionRecord]
    rows: list[list[Any]] | None = None

    @property
    def last(self) -> int:
        n = len(self.records) if self.rows is None else len(self.rows)
        return self.first + n - 1


@dataclass(frozen=True, slots=True)
class Gap:
    machine_id: str
    seq: int
    dropped: int
    record: TransitionRecord  # the GAP record stored at ``seq``


@dataclass(frozen=True, slots=True)
class Ack:
    highest: dict[str, int]


@dataclass(frozen=True, slots=True)
class Dispose:
    machine_id: str


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    code: int
    reason: str
    fatal: bool
    machine_id: str | None


ClientMessage = Hello | MachineMessage | Txs | Gap | Dispose
ServerMessage = Welcome | Ack | ErrorMessage


# -- encoding --------------------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode_hello(
    client: str,
    host: str,
    pid: int,
    token: str | None,
    machines: Iterable[str],
    versions: Sequence[int] = SUPPORTED_VERSIONS,
) -> bytes:
    return _pack(["hello", list(versions), client, host, pid, token, list(machines)])


def encode_welcome(
    version: int, server: str, highest: Mapping[str, int], limits: Limits | Mapping[str, int]
) -> bytes:
    lim = limits.to_wire() if isinstance(limits, Limits) else dict(limits)
    return _pack(["welcome", version, server, dict(highest), lim])


def encode_machine(machine: MachineRecord, clocks: Sequence[int] | None = None) -> bytes:
    return _pack(["machine", machine_to_list(machine), None if clocks is None else list(clocks)])


def _record_fields(
    rec: TransitionRecord, seq_shift: int, sources: Mapping[str, int]
) -> tuple[Any, ...]:
    # codec.transition_to_list for a renumbered record (msgpack packs tuples as arrays).
    src = rec.source
    parent = rec.parent_seq
    return (
        rec.seq + seq_shift,
        rec.mach_tick,
        rec.time,
        rec.duration,
        _KIND_CODE[rec.kind],
        rec.name,
        rec.args,
        rec.accepted,
        rec.error,
        rec.exited,
        rec.entered,
        None if parent is None else parent + seq_shift,
        None if src is None else (src[0], src[1] + sources.get(src[0], 0)),
    )


_NO_SHIFTS: Mapping[str, int] = {}


def encode_txs(
    machine_id: str,
    records: Sequence[TransitionRecord],
    seq_shift: int = 0,
    sources: Mapping[str, int] = _NO_SHIFTS,
) -> bytes:
    """A txs message for records of one machine with contiguous seqs.

    Args:
        machine_id: the machine the records belong to.
        records: at least one record, contiguous seqs.
        seq_shift: added to every seq and parent_seq (a client renumbering its records).
        sources: per machine id, the shift to add to ``source`` seqs.

    Returns:
        The frame's bytes.
    """
    if seq_shift or sources:
        rows = [_record_fields(r, seq_shift, sources) for r in records]
    else:
        # The common case, inlined: this runs once per shipped record (~2x faster than
        # building lists with codec.transition_to_list).
        codes = _KIND_CODE
        rows = [
            (
                r.seq,
                r.mach_tick,
                r.time,
                r.duration,
                codes[r.kind],
                r.name,
                r.args,
                r.accepted,
                r.error,
                r.exited,
                r.entered,
                r.parent_seq,
                r.source,
            )
            for r in records
        ]
    return _pack(["txs", machine_id, records[0].seq + seq_shift, rows])


def encode_gap(
    machine_id: str,
    seq: int,
    dropped: int,
    mach_tick: int,
    time_ns: int,
    entered: Iterable[int],
) -> bytes:
    return _pack(["gap", machine_id, seq, dropped, mach_tick, time_ns, sorted(entered)])


def encode_ack(highest: Mapping[str, int]) -> bytes:
    return _pack(["ack", dict(highest)])


def encode_dispose(machine_id: str) -> bytes:
    return _pack(["dispose", machine_id])


def encode_error(code: int, reason: str, fatal: bool, machine_id: str | None = None) -> bytes:
    return _pack(["error", code, reason, fatal, machine_id])


# -- decoding --------------------------------------------------------------------------


def _bad(reason: str, machine_id: str | None = None) -> ProtocolError:
    return ProtocolError(BAD_MESSAGE, reason, machine_id=machine_id)


def _unpack_frame(frame: bytes | str) -> list[Any]:
    if isinstance(frame, str):
        raise _bad("text frame: every message is a binary frame holding msgpack")
    try:
        msg = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise _bad(f"frame is not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(msg, list) or not msg:
        raise _bad("a message is a msgpack array whose first element is its type")
    kind = msg[0]
    if not isinstance(kind, str):
        raise _bad("message type must be a string")
    if kind not in _TYPES:
        raise _bad(f"unknown message type {kind[:40]!r}")
    return msg


def _fields(msg: list[Any], count: int) -> list[Any]:
    if len(msg) != count + 1:
        raise _bad(f"{msg[0]} message has {len(msg) - 1} fields, expected {count}")
    return msg[1:]


def _nonneg(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise _bad(f"{what} must be an integer from 0 to 2**63-1")
    return value


def _text(value: Any, what: str, *, empty: bool = True, limit: int = 1024) -> str:
    if not isinstance(value, str):
        raise _bad(f"{what} must be a string")
    if not empty and not value:
        raise _bad(f"{what} must not be empty")
    if len(value) > limit:
        raise _bad(f"{what} is longer than {limit} characters")
    return value


def _machine_id(value: Any) -> str:
    return _text(value, "machine id", empty=False)


def _highest_map(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict):
        raise _bad(f"{what} must map machine ids to seqs")
    for k, v in value.items():
        if not isinstance(k, str) or type(v) is not int or v < -1:
            raise _bad(f"{what} must map machine ids to seqs (>= -1)")
    return value


def _indexes(value: Any, what: str, n_states: int) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _bad(f"{what} must be a list of state indexes")
    for i in value:
        if type(i) is not int or not 0 <= i < n_states:
            raise _bad(f"{what} holds {i!r}, not a state index below {n_states}")
    return tuple(value)


def _parse_hello(f: list[Any], limits: Limits) -> Hello:
    versions, client, host, pid, token, machines = _fields(f, 6)
    if not isinstance(versions, list) or not versions or len(versions) > 64:
        raise ProtocolError(HANDSHAKE, "hello: versions must be a non-empty list of integers")
    if not all(type(v) is int for v in versions):
        raise ProtocolError(HANDSHAKE, "hello: versions must be a non-empty list of integers")
    if token is not None and not isinstance(token, str):
        raise ProtocolError(HANDSHAKE, "hello: token must be nil or a string")
    if not isinstance(machines, list) or len(machines) > limits.max_machines:
        raise ProtocolError(
            HANDSHAKE, f"hello: machines must be a list of at most {limits.max_machines} ids"
        )
    try:
        ids = tuple(_machine_id(m) for m in machines)
        return Hello(
            tuple(versions),
            _text(client, "client"),
            _text(host, "host"),
            _nonneg(pid, "pid"),
            token,
            ids,
        )
    except ProtocolError as exc:
        raise ProtocolError(HANDSHAKE, f"hello: {exc.reason}") from None


def _parse_welcome(f: list[Any]) -> Welcome:
    version, server, highest, limits = _fields(f, 4)
    if type(version) is not int:
        raise _bad("welcome: version must be an integer")
    if not isinstance(limits, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in limits.items()
    ):
        raise _bad("welcome: limits must map names to integers")
    return Welcome(version, _text(server, "server"), _highest_map(highest, "welcome"), limits)


def _parse_machine(f: list[Any], limits: Limits) -> MachineMessage:
    fields, clocks = _fields(f, 2)
    if not isinstance(fields, list) or len(fields) != 9:
        raise _bad("machine: the record must be an array of 9 fields")
    states = fields[7]
    if isinstance(states, list) and len(states) > limits.max_states:
        raise ProtocolError(
            LIMIT,
            f"machine has {len(states)} states; the limit is {limits.max_states}",
            machine_id=fields[0] if isinstance(fields[0], str) else None,
        )
    try:
        record = machine_from_list(fields)
    except DecodeError as exc:
        raise _bad(f"machine: {exc}") from None
    except (TypeError, ValueError) as exc:  # malformed schema entries
        raise _bad(f"machine: invalid schema ({exc})") from None
    _machine_id(record.id)
    if clocks is not None:
        clocks = _indexes_any(clocks, len(record.schema))
    return MachineMessage(record, clocks)


def _indexes_any(value: Any, n: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != n:
        raise _bad(f"machine: clocks must be nil or a list of {n} non-negative integers")
    for c in value:
        if type(c) is not int or c < 0:
            raise _bad(f"machine: clocks must be nil or a list of {n} non-negative integers")
    return tuple(value)


def _parse_txs(
    f: list[Any], limits: Limits, n_states: Mapping[str, int], rows: bool = False
) -> Txs:
    mid, first, items = _fields(f, 3)
    mid = _machine_id(mid)
    first = _nonneg(first, "txs: first seq")
    if not isinstance(items, list) or not items:
        raise _bad("txs: records must be a non-empty array", mid)
    if len(items) > limits.max_batch:
        raise ProtocolError(
            LIMIT,
            f"txs holds {len(items)} records; the limit is {limits.max_batch}",
            machine_id=mid,
        )
    n = n_states.get(mid)
    if n is None:
        raise ProtocolError(
            UNKNOWN_MACHINE, f"txs for {mid!r}, not declared on this connection", machine_id=mid
        )
    if first + len(items) - 1 > MAX_SEQ:
        raise _bad(f"txs: seqs beyond {MAX_SEQ}", mid)
    if rows:
        return Txs(mid, first, [], _checked_rows(mid, first, items, n))
    return Txs(mid, first, _records(mid, first, items, n))


def _checked_rows(mid: str, first: int, items: list[Any], n: int) -> list[list[Any]]:
    """``_records``' checks without building records (the ingest server's hot path)."""
    seq = first
    for fields in items:
        if type(fields) is not list or len(fields) != 13:
            _explain(mid, seq - first, seq, fields, n)
        s, tick, t, dur, kind, name, _, acc, err, ex, en, par, src = fields
        if (
            s != seq
            or type(s) is not int
            or type(tick) is not int
            or not 0 <= tick <= MAX_UINT
            or type(t) is not int
            or not 0 <= t <= MAX_UINT
            or type(dur) is not int
            or not 0 <= dur <= MAX_UINT
            or type(kind) is not int
            or not 0 <= kind < _GAP_CODE
            or type(name) is not str
            or type(acc) is not bool
            or type(ex) is not list
            or type(en) is not list
            or (par is not None and (type(par) is not int or not 0 <= par <= MAX_UINT))
        ):
            _explain(mid, seq - first, seq, fields, n)
        for x in ex:
            if type(x) is not int or not 0 <= x < n:
                _explain(mid, seq - first, seq, fields, n)
        for x in en:
            if type(x) is not int or not 0 <= x < n:
                _explain(mid, seq - first, seq, fields, n)
        if err is not None and (
            type(err) is not list
            or len(err) != 2
            or type(err[0]) is not str
            or type(err[1]) is not str
        ):
            _explain(mid, seq - first, seq, fields, n)
        if src is not None and (
            type(src) is not list
            or len(src) != 2
            or type(src[0]) is not str
            or type(src[1]) is not int
        ):
            _explain(mid, seq - first, seq, fields, n)
        seq += 1
    return items


def _records(mid: str, first: int, items: list[Any], n: int) -> list[TransitionRecord]:
    """Build records from their positional form once ``_checked_rows`` checked every field."""
    kinds = _KIND_NAMES
    record = TransitionRecord
    return [
        record(
            mid,
            s,
            kinds[kind],
            name,
            tick,
            t,
            dur,
            args,
            acc,
            None if err is None else (err[0], err[1]),
            tuple(ex),
            tuple(en),
            par,
            None if src is None else (src[0], src[1]),
        )
        for s, tick, t, dur, kind, name, args, acc, err, ex, en, par, src in _checked_rows(
            mid, first, items, n
        )
    ]


def _explain(mid: str, i: int, seq: int, fields: Any, n: int) -> NoReturn:
    """Raise the precise error for a record the fast path refused."""
    try:
        rec = transition_from_list(mid, fields)
    except DecodeError as exc:
        raise _bad(f"txs record {i}: {exc}", mid) from None
    if rec.seq != seq:
        raise _bad(f"txs record {i} has seq {rec.seq}, expected {seq}", mid)
    for what, value in (
        ("mach_tick", rec.mach_tick),
        ("time", rec.time),
        ("duration", rec.duration),
        ("parent_seq", rec.parent_seq or 0),
    ):
        if value > MAX_UINT:
            raise _bad(f"txs record {i}: {what} {value} is beyond 2**63-1", mid)
    if rec.kind == Kind.GAP:
        raise _bad(f"txs record {i} is a gap record: send a gap message", mid)
    for x in (*rec.exited, *rec.entered):
        if x >= n:
            raise _bad(f"txs record {i} names state index {x}, the machine has {n} states", mid)
    raise _bad(f"txs record {i} is malformed", mid)  # pragma: no cover - defensive


def _parse_gap(f: list[Any], n_states: Mapping[str, int]) -> Gap:
    mid, seq, dropped, tick, time_ns, entered = _fields(f, 6)
    mid = _machine_id(mid)
    n = n_states.get(mid)
    if n is None:
        raise ProtocolError(
            UNKNOWN_MACHINE, f"gap for {mid!r}, not declared on this connection", machine_id=mid
        )
    seq = _nonneg(seq, "gap: seq")
    dropped = _nonneg(dropped, "gap: dropped")
    if dropped == 0:
        raise _bad("gap: dropped must be at least 1", mid)
    record = TransitionRecord(
        mid,
        seq,
        Kind.GAP,
        "dropped",
        _nonneg(tick, "gap: mach_tick"),
        _nonneg(time_ns, "gap: time"),
    )
    record.args = {"dropped": dropped}
    record.entered = tuple(sorted(set(_indexes(entered, "gap: entered", n))))
    return Gap(mid, seq, dropped, record)


def _parse_ack(f: list[Any]) -> Ack:
    (highest,) = _fields(f, 1)
    return Ack(_highest_map(highest, "ack"))


def _parse_dispose(f: list[Any]) -> Dispose:
    (mid,) = _fields(f, 1)
    return Dispose(_machine_id(mid))


def _parse_error(f: list[Any]) -> ErrorMessage:
    code, reason, fatal, mid = _fields(f, 4)
    if type(code) is not int or type(fatal) is not bool:
        raise _bad("error: code must be an integer and fatal a boolean")
    return ErrorMessage(
        code, _text(reason, "reason", limit=4096), fatal, None if mid is None else _machine_id(mid)
    )


# -- sessions --------------------------------------------------------------------------


class ServerSession:
    """The server end of one connection: handshake, validation and per-machine seq checks.

    Feed every received frame to :meth:`receive`; it returns a validated message or
    raises :class:`ProtocolError` (send :meth:`error` for it, close when ``fatal``).
    After a ``Hello``, look up what storage holds and send :meth:`welcome`; after a
    ``MachineMessage``, store the machine and send :meth:`machine_ready`.
    """

    def __init__(
        self,
        limits: Limits = Limits(),
        token: str | None = None,
        server: str = "aminspect",
        *,
        rows: bool = False,
    ) -> None:
        #: give ``Txs.rows`` (checked wire rows) instead of ``Txs.records``
        self.rows = rows
        self.limits = limits
        self.server = server
        self._token = None if token is None else token.encode()
        self.version: int | None = None  # set once the handshake succeeded
        self.hello: Hello | None = None
        self.errors = 0
        self.closed = False
        self._next: dict[str, int] = {}  # machine id -> next seq expected
        self._n_states: dict[str, int] = {}  # declared machines -> schema size

    @property
    def open(self) -> bool:
        return self.version is not None and not self.closed

    @property
    def machines(self) -> list[str]:
        """Machines declared on this connection and not disposed."""
        return list(self._n_states)

    def receive(self, frame: bytes | str) -> ClientMessage:
        """Decode and validate one frame.

        Returns:
            A Hello, MachineMessage, Txs, Gap or Dispose.

        Raises:
            ProtocolError: with the code and reason to send back.
        """
        if self.closed:
            raise ProtocolError(HANDSHAKE, "connection is closed")
        # A txs frame becomes tens of thousands of objects at once, none in a cycle; the
        # cyclic GC running over them (and over everything else alive) made decoding
        # ~4x slower (measured 40,000 vs 178,000 records/s), so it pauses per frame.
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._receive(frame)
        except ProtocolError as exc:
            if self.version is None:
                exc.fatal = True  # nothing but a valid hello may open a connection
                if exc.code == BAD_MESSAGE:
                    exc.code = HANDSHAKE
                    exc.reason = f"expected a valid hello: {exc.reason}"
            elif not exc.fatal:
                self.errors += 1
                if self.errors >= self.limits.max_errors:
                    exc.reason = f"{exc.reason} (error {self.errors}: closing)"
                    exc.code = TOO_MANY_ERRORS
                    exc.fatal = True
            if exc.fatal:
                self.closed = True
            raise
        finally:
            if paused:
                gc.enable()

    def _receive(self, frame: bytes | str) -> ClientMessage:
        if self.version is None and self.hello is not None:
            raise ProtocolError(HANDSHAKE, "a message arrived before welcome was sent")
        msg = _unpack_frame(frame)
        kind = msg[0]
        if self.version is None:
            if kind != "hello":
                raise ProtocolError(HANDSHAKE, f"expected hello, got {kind}")
            hello = _parse_hello(msg, self.limits)
            self._check_token(hello.token)
            common = set(hello.versions) & set(SUPPORTED_VERSIONS)
            if not common:
                raise ProtocolError(
                    UNSUPPORTED_VERSION,
                    f"no common protocol version: client speaks {list(hello.versions)}, "
                    f"server speaks {list(SUPPORTED_VERSIONS)}",
                )
            self.hello = hello
            return hello
        if kind == "txs":
            txs = _parse_txs(msg, self.limits, self._n_states, self.rows)
            self._check_seq(txs.machine_id, txs.first, txs.last)
            return txs
        if kind == "gap":
            gap = _parse_gap(msg, self._n_states)
            self._check_seq(gap.machine_id, gap.seq, gap.seq)
            return gap
        if kind == "machine":
            m = _parse_machine(msg, self.limits)
            mid = m.machine.id
            if mid not in self._n_states and len(self._n_states) >= self.limits.max_machines:
                raise ProtocolError(
                    LIMIT,
                    f"more than {self.limits.max_machines} machines on one connection",
                    machine_id=mid,
                )
            if len(m.machine.schema) != self._n_states.get(mid, len(m.machine.schema)):
                raise _bad(f"machine {mid!r} redeclared with a different number of states", mid)
            return m
        if kind == "dispose":
            d = _parse_dispose(msg)
            self._n_states.pop(d.machine_id, None)
            self._next.pop(d.machine_id, None)
            return d
        if kind == "hello":
            raise ProtocolError(HANDSHAKE, "second hello on one connection")
        raise _bad(f"{kind} is a server message")

    def _check_token(self, token: str | None) -> None:
        if self._token is None:
            return
        given = b"" if token is None else token.encode()
        # Constant time: the comparison must not tell how much of the token matched.
        if not hmac.compare_digest(given, self._token):
            raise ProtocolError(UNAUTHORIZED, "missing token" if token is None else "wrong token")

    def _check_seq(self, mid: str, first: int, last: int) -> None:
        expected = self._next.get(mid)
        if expected is None:
            raise ProtocolError(
                UNKNOWN_MACHINE, f"{mid!r} is not ready on this connection", machine_id=mid
            )
        if first > expected:
            raise ProtocolError(
                SEQUENCE,
                f"{mid!r}: records start at seq {first}, the server expects {expected}",
                machine_id=mid,
            )
        # first <= expected: a resend overlapping what is stored; storage drops duplicates.
        if last + 1 > expected:
            self._next[mid] = last + 1

    def welcome(self, highest: Mapping[str, int]) -> bytes:
        """Complete the handshake; ``highest`` is the stored highest seq per hello machine."""
        assert self.hello is not None, "welcome before hello"
        self.version = max(set(self.hello.versions) & set(SUPPORTED_VERSIONS))
        return encode_welcome(self.version, self.server, highest, self.limits)

    def machine_ready(self, machine: MachineRecord, highest: int) -> bytes:
        """The machine is stored and holds records up to ``highest``; returns the ack."""
        mid = machine.id
        if mid not in self._n_states:
            self._next[mid] = highest + 1
        self._n_states[mid] = len(machine.schema)
        return encode_ack({mid: highest})

    def storage_failed(self, machine_id: str, highest: int) -> None:
        """A batch failed to store: expect the seq after what storage holds again."""
        if machine_id in self._next:
            self._next[machine_id] = highest + 1

    def expected(self, machine_id: str) -> int | None:
        """The next seq accepted for ``machine_id`` (None when it is not ready)."""
        return self._next.get(machine_id)

    def error(self, exc: ProtocolError) -> bytes:
        return encode_error(exc.code, exc.reason, exc.fatal, exc.machine_id)


class ClientSession:
    """The client end of one connection: encodes client messages, validates server ones."""

    def __init__(self) -> None:
        self.welcome: Welcome | None = None

    def receive(self, frame: bytes | str) -> ServerMessage:
        """Decode and validate one server frame.

        Raises:
            ProtocolError: the server sent something this client cannot accept.
        """
        msg = _unpack_frame(frame)
        kind = msg[0]
        if kind == "error":
            return _parse_error(msg)
        if self.welcome is None:
            if kind != "welcome":
                raise ProtocolError(HANDSHAKE, f"expected welcome, got {kind}")
            welcome = _parse_welcome(msg)
            if welcome.version not in SUPPORTED_VERSIONS:
                raise ProtocolError(
                    UNSUPPORTED_VERSION, f"server chose unsupported version {welcome.version}"
                )
            self.welcome = welcome
            return welcome
        if kind == "ack":
            return _parse_ack(msg)
        raise ProtocolError(HANDSHAKE, f"unexpected {kind} message from the server")
