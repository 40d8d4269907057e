"""The journal file format: header, checksummed msgpack frames, compact record batches.

Layout of a ``.amj`` file::

    header  16 bytes   MAGIC (8) | format version u16 LE | flags u16 LE (0) | crc32 of the 12
    frame   8 + n      length n u32 LE | crc32 u32 LE of (length bytes + payload) | payload (n)
    frame   ...

Every payload is one msgpack array whose first item is the frame type:

    [0, machine]                      MACHINE: a machine record (``codec.machine_to_list``)
    [1, mid, first_seq, count, tick, base_time, names, rows]
                                      BATCH: ``count`` records of machine ``mid`` with seqs
                                      ``first_seq ..``; see ``encode_batch`` for a row
    [2, mid, upto]                    DELETE: records of ``mid`` up to ``upto`` inclusive
                                      are deleted
    [3, mid, index, clocks, time, tick]
                                      SNAPSHOT: machine time of ``mid`` after ``[0, index)``
    [4, mid, upto]                    DELETE_SNAPSHOTS: snapshots of ``mid`` with index up
                                      to ``upto`` inclusive are deleted

Snapshots live in the journal as frames rather than in a side file: they are written in
the same ``write()`` as the batch that triggered them, so they can never describe records
the journal lost, and they cost no extra fsync. Whole-file rewrites (repair, compaction)
go through a temporary file, fsync, rename and a directory fsync (D-04).

The checksum is zlib's CRC-32, not CRC-32C: the standard library has no CRC-32C and the
format must not need a compiled extension. For the job at hand (detect torn and flipped
bytes in frames of at most a few hundred KiB) both detect every burst error up to 32 bits
and miss random damage with probability 2**-32. The length is covered by the checksum too,
so a flipped length bit cannot make a shorter or longer frame look valid.

A row packs one record in as few bytes as the common case allows. Measured on typical
event records (one state exited, one entered, four event names, microseconds apart, no
args; ``tests/unit/test_journal_framing.py`` checks the 40-byte target of SPEC §10): 13.4
bytes per record on disk in batches of 1000, 13.9 in batches of 100, 18.5 in batches of 10
and 50 for a batch of one, against 38-40 bytes for ``codec.encode_transition`` alone::

    [dt, duration, kind, name_index, exited, entered, args, accepted, error, parent_seq,
     source, mach_tick]

``dt`` is the record's time minus the previous record's (the first row against
``base_time``), ``name_index`` points into the batch's ``names`` table, and the trailing
fields are dropped while they hold their default (None, True, None, None, None, the
batch's ``tick``). The seq is implied by the row's position.
"""

from __future__ import annotations

import mmap
import re
import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import msgpack

from tracer.codec import (
    KIND_CODES,
    DecodeError,
    machine_from_list,
    machine_to_list,
    transition_from_list,
)
from tracer.records import MachineRecord, TransitionRecord

__all__ = [
    "FORMAT_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_FRAME",
    "T_BATCH",
    "T_DELETE",
    "T_DELETE_SNAPSHOTS",
    "T_MACHINE",
    "T_SNAPSHOT",
    "BatchInfo",
    "DeleteInfo",
    "DeleteSnapshotsInfo",
    "FrameError",
    "FrameInfo",
    "ScanResult",
    "SnapshotInfo",
    "check_frame",
    "check_header",
    "decode_batch",
    "decode_frame",
    "encode_batch",
    "encode_batch_rows",
    "encode_delete",
    "encode_delete_snapshots",
    "encode_frame",
    "encode_machine_frame",
    "encode_snapshot",
    "frame_info",
    "iter_payloads",
    "scan",
]

MAGIC = b"\x89AMJ\r\n\x1a\n"  # PNG-style: a non-ASCII byte and CR/LF catch text-mode copies
FORMAT_VERSION = 1
_HEAD12 = MAGIC + struct.pack("<HH", FORMAT_VERSION, 0)
HEADER = _HEAD12 + struct.pack("<I", zlib.crc32(_HEAD12))
HEADER_SIZE = len(HEADER)  # 16

_FRAME_HEAD = struct.Struct("<II")
FRAME_HEAD_SIZE = _FRAME_HEAD.size  # 8
_LEN = struct.Struct("<I")
# A batch of the tracer's largest size (4096 records) with big args stays far below this;
# a larger length can only be damage, so the scanner does not read that far.
MAX_FRAME = 64 * 1024 * 1024

T_MACHINE = 0
T_BATCH = 1
T_DELETE = 2
T_SNAPSHOT = 3
T_DELETE_SNAPSHOTS = 4

_KINDS_BY_CODE: dict[int, str] = {code: str(kind) for kind, code in KIND_CODES.items()}
_DEFAULT_TAIL: tuple[Any, ...] = (None, True, None, None, None)  # args .. source
_ROW_MIN = 6  # dt, duration, kind, name_index, exited, entered
_ROW_MAX = 12


Buf = bytes | bytearray | memoryview | mmap.mmap  # what the scanner reads frames from


class FrameError(ValueError):
    """A frame whose bytes are not a valid frame (bad length, checksum or payload)."""


def _crc(length_bytes: bytes, payload: bytes | memoryview) -> int:
    return zlib.crc32(payload, zlib.crc32(length_bytes))


def encode_frame(payload: bytes) -> bytes:
    """Wrap a msgpack payload as a frame: length, checksum, payload.

    Raises:
        FrameError: the payload is empty or larger than MAX_FRAME.
    """
    n = len(payload)
    if not 0 < n <= MAX_FRAME:
        raise FrameError(f"frame payload of {n} bytes (must be 1..{MAX_FRAME})")
    length = _LEN.pack(n)
    return length + _LEN.pack(_crc(length, payload)) + payload


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def encode_machine_frame(machine: MachineRecord) -> bytes:
    """A MACHINE frame holding ``machine``."""
    return encode_frame(_pack([T_MACHINE, machine_to_list(machine)]))


def encode_delete(machine_id: str, upto: int) -> bytes:
    """A DELETE frame: records of ``machine_id`` up to ``upto`` inclusive are gone."""
    return encode_frame(_pack([T_DELETE, machine_id, upto]))


def encode_snapshot(
    machine_id: str, index: int, clocks: Sequence[int], time: int, mach_tick: int
) -> bytes:
    """A SNAPSHOT frame: machine time of ``machine_id`` after records ``[0, index)``."""
    return encode_frame(_pack([T_SNAPSHOT, machine_id, index, list(clocks), time, mach_tick]))


def encode_delete_snapshots(machine_id: str, upto: int) -> bytes:
    """A DELETE_SNAPSHOTS frame: snapshots with index up to ``upto`` inclusive are gone."""
    return encode_frame(_pack([T_DELETE_SNAPSHOTS, machine_id, upto]))


def encode_batch(machine_id: str, records: Sequence[TransitionRecord]) -> bytes:
    """A BATCH frame holding ``records`` (one machine, contiguous seqs, at least one).

    Raises:
        ValueError: the records are empty, of another machine, or not contiguous.
        KeyError: a record has an unknown kind.
        TypeError: ``args`` cannot be packed by msgpack.
    """
    if not records:
        raise ValueError("a batch holds at least one record")
    first = records[0]
    tick = first.mach_tick
    base_time = first.time
    names: dict[str, int] = {}
    kinds = KIND_CODES
    rows: list[list[Any]] = []
    prev_time = base_time
    seq = first.seq
    for rec in records:
        if rec.machine_id != machine_id:
            raise ValueError(f"record of {rec.machine_id!r} in a batch of {machine_id!r}")
        if rec.seq != seq:
            raise ValueError(f"{machine_id}: batch seqs not contiguous at {rec.seq} (want {seq})")
        seq += 1
        index = names.get(rec.name)
        if index is None:
            index = names[rec.name] = len(names)
        t = rec.time
        row: list[Any]
        if (
            rec.args is None
            and rec.accepted is True
            and rec.error is None
            and rec.parent_seq is None
            and rec.source is None
            and rec.mach_tick == tick
        ):
            # The common record: every optional field at its default, nothing to trim.
            row = [
                t - prev_time,
                rec.duration,
                kinds[rec.kind],
                index,
                rec.exited,  # msgpack packs tuples as arrays
                rec.entered,
            ]
        else:
            row = [
                t - prev_time,
                rec.duration,
                kinds[rec.kind],
                index,
                list(rec.exited),
                list(rec.entered),
                rec.args,
                rec.accepted,
                None if rec.error is None else [rec.error[0], rec.error[1]],
                rec.parent_seq,
                None if rec.source is None else [rec.source[0], rec.source[1]],
                rec.mach_tick,
            ]
            # Drop trailing defaults (None, True, None, None, None, the batch's tick).
            if row[11] == tick:
                n = 11
                while n > _ROW_MIN and _is_default(row[n - 1], n - 1):
                    n -= 1
                del row[n:]
        prev_time = t
        rows.append(row)
    return encode_frame(
        _pack([T_BATCH, machine_id, first.seq, len(records), tick, base_time, list(names), rows])
    )


def encode_batch_rows(machine_id: str, rows: Sequence[Sequence[Any]]) -> bytes:
    """``encode_batch`` for records in their positional wire form (``codec``'s 13 fields,
    kind as its code, already checked; contiguous seqs): the same frame bytes, without
    building records.

    Raises:
        ValueError: no rows.
        TypeError: ``args`` cannot be packed by msgpack.
    """
    if not rows:
        raise ValueError("a batch holds at least one record")
    head = rows[0]
    first, tick, base_time = head[0], head[1], head[2]
    n = len(rows)
    cols = list(zip(*rows, strict=True))
    ticks, times, durations, kinds, name_col = cols[1:6]
    if (
        # Every optional field at its default (the rows' types are checked, so ``count``,
        # which compares with ==, cannot mistake 1 for True): the usual batch is built
        # column by column in C loops; tuples pack as the same msgpack arrays as lists.
        ticks.count(tick) == n
        and cols[7].count(True) == n  # accepted
        and all(cols[i].count(None) == n for i in (6, 8, 11, 12))  # args, error, links
    ):
        table: dict[Any, Any] = dict.fromkeys(name_col)  # names in first-appearance order
        if len(table) == 1:
            indexes: Iterable[int] = repeat(0, n)
        else:
            for i, name in enumerate(table):
                table[name] = i
            indexes = map(table.__getitem__, name_col)
        deltas = [t - p for t, p in zip(times, (base_time, *times[:-1]), strict=True)]
        short = list(zip(deltas, durations, kinds, indexes, cols[9], cols[10], strict=False))
        return encode_frame(
            _pack([T_BATCH, machine_id, first, n, tick, base_time, list(table), short])
        )
    names: dict[str, int] = {}
    out: list[list[Any]] = []
    append = out.append
    prev_time = base_time
    for _, rtick, t, duration, kind, name, args, accepted, error, ex, en, parent, src in rows:
        index = names.get(name)
        if index is None:
            index = names[name] = len(names)
        if (
            args is None
            and accepted is True
            and error is None
            and parent is None
            and src is None
            and rtick == tick
        ):
            append([t - prev_time, duration, kind, index, ex, en])
        else:
            row = [
                t - prev_time,
                duration,
                kind,
                index,
                list(ex),
                list(en),
                args,
                accepted,
                None if error is None else [error[0], error[1]],
                parent,
                None if src is None else [src[0], src[1]],
                rtick,
            ]
            if rtick == tick:
                n = 11
                while n > _ROW_MIN and _is_default(row[n - 1], n - 1):
                    n -= 1
                del row[n:]
            append(row)
        prev_time = t
    return encode_frame(
        _pack([T_BATCH, machine_id, first, len(rows), tick, base_time, list(names), out])
    )


def _is_default(value: Any, position: int) -> bool:
    default = _DEFAULT_TAIL[position - _ROW_MIN]
    if default is True:
        return value is True
    return value is None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """Index data of a BATCH frame, read without decoding its rows."""

    machine_id: str
    first_seq: int
    count: int


@dataclass(frozen=True, slots=True)
class DeleteInfo:
    """A DELETE frame."""

    machine_id: str
    upto: int


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A SNAPSHOT frame."""

    machine_id: str
    index: int
    clocks: tuple[int, ...]
    time: int
    mach_tick: int


@dataclass(frozen=True, slots=True)
class DeleteSnapshotsInfo:
    """A DELETE_SNAPSHOTS frame."""

    machine_id: str
    upto: int


FrameInfo = MachineRecord | BatchInfo | DeleteInfo | SnapshotInfo | DeleteSnapshotsInfo


def _unpack(payload: bytes | memoryview) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not valid msgpack: {exc}") from None


def frame_info(payload: bytes | memoryview) -> FrameInfo:
    """What a frame holds, decoding a batch's header only (the index needs no rows).

    Raises:
        DecodeError: the payload is not a well-formed frame of a known type.
    """
    try:
        if len(payload) < 256 and payload[0] == 0x96 and payload[1] == T_SNAPSHOT:
            # A snapshot (one every 128 records): one C call instead of a streaming read.
            data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            if type(data) is list and len(data) == 6:
                mid, index, clocks, t, tick = data[1:]
                if (
                    type(mid) is str
                    and mid
                    and _uint(index)
                    and type(clocks) is list
                    and (not clocks or ({type(c) for c in clocks} == {int} and min(clocks) >= 0))
                    and _uint(t)
                    and _uint(tick)
                ):
                    return SnapshotInfo(mid, index, tuple(clocks), t, tick)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_FRAME)
        unpacker.feed(payload)
        size = unpacker.read_array_header()
        ftype = unpacker.unpack() if size else None
        if ftype == T_BATCH and size == 8:
            mid, first, count = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
            if not (isinstance(mid, str) and mid and _uint(first) and _uint(count) and count):
                raise DecodeError("batch header must be [1, id, first_seq, count, ...]")
            return BatchInfo(mid, first, count)
        if ftype == T_MACHINE and size == 2:
            return machine_from_list(unpacker.unpack())
        if ftype in (T_DELETE, T_DELETE_SNAPSHOTS) and size == 3:
            mid, upto = unpacker.unpack(), unpacker.unpack()
            if not (isinstance(mid, str) and mid and _uint(upto)):
                raise DecodeError(f"delete frame must be [{ftype}, id, upto]")
            return DeleteInfo(mid, upto) if ftype == T_DELETE else DeleteSnapshotsInfo(mid, upto)
        if ftype == T_SNAPSHOT and size == 6:
            mid, index, clocks, t, tick = (unpacker.unpack() for _ in range(5))
            if not (
                isinstance(mid, str)
                and mid
                and _uint(index)
                and isinstance(clocks, list)
                and (not clocks or ({type(c) for c in clocks} == {int} and min(clocks) >= 0))
                and _uint(t)
                and _uint(tick)
            ):
                raise DecodeError("snapshot frame must be [3, id, index, clocks, time, tick]")
            return SnapshotInfo(mid, index, tuple(clocks), t, tick)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from None
    raise DecodeError(f"unknown frame type {ftype!r} with {size} items")


def _uint(value: Any) -> bool:
    return type(value) is int and value >= 0


def decode_batch(
    payload: bytes | memoryview, lo: int = 0, hi: int | None = None
) -> list[TransitionRecord]:
    """The records of a BATCH frame's payload, every field checked.

    ``lo``/``hi`` select rows ``[lo, hi)`` of the batch: only those become records (the
    rest are unpacked by msgpack's C code, which costs ~0.2 us a row against ~2 us for
    building a record), so reading a few records of a big batch stays cheap.

    Raises:
        DecodeError: naming the first bad field.
    """
    data = _unpack(payload)
    if not (isinstance(data, list) and len(data) == 8 and data[0] == T_BATCH):
        raise DecodeError("not a batch frame")
    _, mid, first, count, tick, base_time, names, rows = data
    if not (isinstance(mid, str) and _uint(first) and _uint(tick) and isinstance(names, list)):
        raise DecodeError("bad batch header")
    if not isinstance(rows, list) or len(rows) != count:
        raise DecodeError(
            f"batch claims {count} record{'' if count == 1 else 's'}, holds {len(rows)}"
        )
    if type(base_time) is not int:
        raise DecodeError("batch base time must be an integer")
    if not all(type(n) is str for n in names):
        raise DecodeError("batch names must be strings")
    if lo > 0 or (hi is not None and hi < count):
        skipped = rows[:lo]
        rows = rows[lo:hi]
        first += lo
        for row in skipped:
            if not (isinstance(row, list) and row and type(row[0]) is int):
                raise DecodeError(f"seq {first}: bad row before it")
            base_time += row[0]
    out: list[TransitionRecord] = []
    append = out.append
    kinds = _KINDS_BY_CODE
    n_names = len(names)
    t = base_time
    seq = first
    for row in rows:
        if not (isinstance(row, list) and _ROW_MIN <= len(row) <= _ROW_MAX):
            raise DecodeError(f"seq {seq}: a row has {_ROW_MIN}..{_ROW_MAX} fields")
        dt, duration, kind, index, exited, entered = row[:_ROW_MIN]
        if type(dt) is not int or type(index) is not int or not 0 <= index < n_names:
            raise DecodeError(f"seq {seq}: bad time delta or name index")
        t += dt
        # Fast path for the common row (every optional field at its default), with the
        # same checks as transition_from_list: about 2 us instead of 4.8 us per record.
        if (
            len(row) == _ROW_MIN
            and type(kind) is int
            and kind in kinds
            and type(duration) is int
            and duration >= 0
            and t >= 0
            and type(exited) is list
            and type(entered) is list
            # One state in and one out is the usual row: check it inline (saves ~1 us).
            and (
                (len(exited) == 1 and type(exited[0]) is int and exited[0] >= 0)
                or _indexes_ok(exited)
            )
            and (
                (len(entered) == 1 and type(entered[0]) is int and entered[0] >= 0)
                or _indexes_ok(entered)
            )
        ):
            append(
                TransitionRecord(
                    mid,
                    seq,
                    kinds[kind],
                    names[index],
                    tick,
                    t,
                    duration,
                    None,
                    True,
                    None,
                    tuple(exited),
                    tuple(entered),
                    None,
                    None,
                )
            )
            seq += 1
            continue
        tail = list(_DEFAULT_TAIL)
        tail[: len(row) - _ROW_MIN] = row[_ROW_MIN:11]
        rec_tick = row[11] if len(row) == _ROW_MAX else tick
        args, accepted, error, parent, source = tail
        rec = transition_from_list(
            mid,
            [
                seq,
                rec_tick,
                t,
                duration,
                kind,
                names[index],
                args,
                accepted,
                error,
                exited,
                entered,
                parent,
                source,
            ],
        )
        append(rec)
        seq += 1
    return out


def _indexes_ok(values: list[Any]) -> bool:
    return all(type(i) is int and i >= 0 for i in values)


def decode_frame(
    payload: bytes | memoryview,
) -> MachineRecord | list[TransitionRecord] | DeleteInfo | SnapshotInfo | DeleteSnapshotsInfo:
    """A frame's content, fully decoded (batches as their records).

    Raises:
        DecodeError: the payload is not a valid frame.
    """
    info = frame_info(payload)
    if isinstance(info, BatchInfo):
        return decode_batch(payload)
    return info


def check_header(data: Buf) -> None:
    """Check a journal's first HEADER_SIZE bytes.

    Raises:
        FrameError: not a journal, or a format version this code cannot read.
    """
    head = bytes(data[:HEADER_SIZE])
    if len(head) < HEADER_SIZE or head[:8] != MAGIC:
        raise FrameError("not an aminspect journal (bad magic bytes)")
    (crc,) = _LEN.unpack_from(head, 12)
    if crc != zlib.crc32(head[:12]):
        raise FrameError("journal header is damaged (checksum mismatch)")
    version, _flags = struct.unpack_from("<HH", head, 8)
    if version != FORMAT_VERSION:
        raise FrameError(f"journal format version {version} is not supported (this reads 1)")


@dataclass(slots=True)
class ScanResult:
    """What ``scan`` found after the header.

    ``frames`` are the (offset, payload length) of every good frame before ``end``.
    ``end`` is where the good frames stop. When ``bad_offset`` is set, the bytes from
    there were not a valid frame: ``torn`` tells whether they are a damaged last frame
    (nothing valid follows; safe to drop) or corruption in the middle (valid frames follow
    at ``resume_offset``).
    """

    frames: list[tuple[int, int]]
    end: int
    size: int
    bad_offset: int | None = None
    bad_reason: str = ""
    torn: bool = False
    resume_offset: int | None = None

    @property
    def tail_bytes(self) -> int:
        return self.size - self.end


def check_frame(buf: Buf, offset: int, size: int) -> tuple[int, str]:
    """The payload length of a valid frame at ``offset`` of ``buf[:size]``, or (-1, why
    it is not)."""
    if size - offset < FRAME_HEAD_SIZE:
        return -1, f"{size - offset} bytes where a frame header needs {FRAME_HEAD_SIZE}"
    n, crc = _FRAME_HEAD.unpack_from(buf, offset)
    if n == 0 or n > MAX_FRAME:
        return -1, f"impossible frame length {n}"
    start = offset + FRAME_HEAD_SIZE
    if start + n > size:
        return -1, f"frame of {n} bytes runs past the end of the file"
    if zlib.crc32(buf[start : start + n], zlib.crc32(buf[offset : offset + 4])) != crc:
        return -1, "checksum mismatch"
    return n, ""


# A payload starts with a msgpack fixarray of 2, 3, 6 or 8 items whose first item is a
# frame type; only such positions are worth a checksum when looking for frames after a
# bad one.
_CANDIDATE = re.compile(rb"(?s)(?=.{8}[\x92\x93\x96\x98][\x00-\x04])")


def _next_valid(buf: Buf, start: int, size: int) -> int | None:
    """The offset of the first valid frame at or after ``start``, if any."""
    for m in _CANDIDATE.finditer(buf, start):
        pos: int = m.start()
        if check_frame(buf, pos, size)[0] >= 0:
            return pos
    return None


def scan(buf: Buf, start: int = HEADER_SIZE) -> ScanResult:
    """Walk and verify every frame from ``start`` to the end of ``buf``.

    Stops at the first frame that is short, too long or fails its checksum. If any valid
    frame starts after it, the damage is in the middle (``torn`` False); otherwise the bad
    bytes are a torn or damaged last frame (``torn`` True).
    """
    size = len(buf)
    frames: list[tuple[int, int]] = []
    offset = start
    while offset < size:
        n, reason = check_frame(buf, offset, size)
        if n < 0:
            # Fast path: a damaged frame whose length is intact is followed by a valid one.
            resume: int | None = None
            if size - offset >= FRAME_HEAD_SIZE:
                (length,) = _LEN.unpack_from(buf, offset)
                nxt = offset + FRAME_HEAD_SIZE + length
                if 0 < length <= MAX_FRAME and nxt < size and check_frame(buf, nxt, size)[0] >= 0:
                    resume = nxt
            if resume is None:
                resume = _next_valid(buf, offset + 1, size)
            return ScanResult(
                frames,
                offset,
                size,
                bad_offset=offset,
                bad_reason=reason,
                torn=resume is None,
                resume_offset=resume,
            )
        frames.append((offset, n))
        offset += FRAME_HEAD_SIZE + n
    return ScanResult(frames, offset, size)


def iter_payloads(buf: Buf, frames: Sequence[tuple[int, int]]) -> Iterator[tuple[int, memoryview]]:
    """(offset, payload) of each scanned frame, without copying."""
    view = memoryview(buf)
    for offset, n in frames:
        start = offset + FRAME_HEAD_SIZE
        yield offset, view[start : start + n]
