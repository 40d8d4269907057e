"""Journal framing: frames and batches round-trip, damage is found, truncation keeps a prefix."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends import _framing as fr
from tracer.codec import KIND_CODES, DecodeError, encode_transition
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

KINDS = sorted(str(k) for k in KIND_CODES)
ids = st.text(min_size=1, max_size=12)
small = st.integers(min_value=0, max_value=2**63 - 1)
args = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, list[TransitionRecord]]:
    mid = draw(ids)
    first = draw(st.integers(0, 2**40))
    n = draw(st.integers(1, 12))
    ticks = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    out = []
    for k in range(n):
        out.append(
            TransitionRecord(
                machine_id=mid,
                seq=first + k,
                kind=draw(st.sampled_from(KINDS)),
                name=draw(st.sampled_from(["", "go", "back", draw(st.text(max_size=6))])),
                mach_tick=ticks[k],
                time=draw(small),  # times may go backwards: deltas are signed
                duration=draw(st.integers(0, 2**40)),
                args=draw(args),
                accepted=draw(st.booleans()),
                error=draw(st.none() | st.tuples(st.text(max_size=5), st.text(max_size=5))),
                exited=tuple(draw(st.lists(st.integers(0, 40), max_size=3))),
                entered=tuple(draw(st.lists(st.integers(0, 40), max_size=3))),
                parent_seq=draw(st.none() | st.integers(0, 2**40)),
                source=draw(st.none() | st.tuples(ids, st.integers(0, 2**40))),
            )
        )
    return mid, out


def _payload(frame: bytes) -> bytes:
    return frame[fr.FRAME_HEAD_SIZE :]


@settings(max_examples=60, deadline=None)
@given(batches())
def test_batch_round_trip(batch: tuple[str, list[TransitionRecord]]) -> None:
    mid, records = batch
    frame = fr.encode_batch(mid, records)
    assert fr.check_frame(frame, 0, len(frame)) == (len(frame) - fr.FRAME_HEAD_SIZE, "")
    info = fr.frame_info(_payload(frame))
    assert info == fr.BatchInfo(mid, records[0].seq, len(records))
    assert fr.decode_batch(_payload(frame)) == records
    assert fr.decode_frame(_payload(frame)) == records


def _frames(batch: tuple[str, list[TransitionRecord]]) -> list[bytes]:
    mid, records = batch
    m = MachineRecord(mid, "manual", Schema.flat(["A", "B"]), created=1, updated=2)
    return [
        fr.encode_machine_frame(m),
        *(fr.encode_batch(mid, records[k : k + 3]) for k in range(0, len(records), 3)),
        fr.encode_snapshot(mid, 3, [1, 2], 5, 0),
        fr.encode_delete(mid, 1),
        fr.encode_delete_snapshots(mid, 2),
    ]


@settings(max_examples=60, deadline=None)
@given(batches(), st.data())
def test_any_truncation_scans_to_a_prefix(
    batch: tuple[str, list[TransitionRecord]], data: st.DataObject
) -> None:
    frames = _frames(batch)
    whole = fr.HEADER + b"".join(frames)
    cut = data.draw(st.integers(fr.HEADER_SIZE, len(whole)))
    result = fr.scan(whole[:cut])
    ends = [fr.HEADER_SIZE]
    for f in frames:
        ends.append(ends[-1] + len(f))
    kept = max(i for i, e in enumerate(ends) if e <= cut)
    assert len(result.frames) == kept
    assert result.end == ends[kept]
    if cut == ends[kept]:
        assert result.bad_offset is None
    else:  # a torn last frame: nothing valid after it
        assert result.bad_offset == ends[kept]
        assert result.torn
        assert result.tail_bytes == cut - ends[kept]
    for (offset, n), payload in zip(result.frames, frames, strict=False):
        assert n == len(payload) - fr.FRAME_HEAD_SIZE
        assert fr.frame_info(whole[offset + 8 : offset + 8 + n]) is not None


@settings(max_examples=60, deadline=None)
@given(batches(), st.data())
def test_a_flipped_bit_is_found(
    batch: tuple[str, list[TransitionRecord]], data: st.DataObject
) -> None:
    frames = _frames(batch)
    whole = bytearray(fr.HEADER + b"".join(frames))
    which = data.draw(st.integers(0, len(frames) - 1))
    start = fr.HEADER_SIZE + sum(len(f) for f in frames[:which])
    bit = data.draw(st.integers(0, len(frames[which]) * 8 - 1))
    whole[start + bit // 8] ^= 1 << (bit % 8)
    result = fr.scan(bytes(whole))
    assert result.bad_offset == start
    assert len(result.frames) == which
    last = which == len(frames) - 1
    assert result.torn == last
    if not last:  # damage in the middle: the next frame is found
        assert result.resume_offset == start + len(frames[which])


def test_typical_records_are_small_on_disk() -> None:
    """SPEC §10: at most 40 bytes per transition on disk for typical records."""
    t = 1_767_323_045_000_000_000
    records = []
    for seq in range(1000):
        t += 1_000 + (seq * 7919) % 90_000
        records.append(
            TransitionRecord(
                "order-1",
                seq,
                Kind.EVENT,
                ("pay", "ship", "cancel", "next")[seq % 4],
                time=t,
                duration=3_000 + (seq * 104729) % 60_000,
                exited=(seq % 7,),
                entered=((seq + 1) % 7,),
            )
        )
    for size in (10, 100, 1000):
        total = sum(
            len(fr.encode_batch("order-1", records[k : k + size])) for k in range(0, 1000, size)
        )
        assert total / 1000 <= 40, (size, total / 1000)
    assert len(fr.encode_batch("order-1", records[:100])) < 100 * len(encode_transition(records[0]))


def test_encode_batch_refuses_bad_batches() -> None:
    r0 = TransitionRecord("m", 0, Kind.EVENT)
    with pytest.raises(ValueError, match="at least one"):
        fr.encode_batch("m", [])
    with pytest.raises(ValueError, match="not contiguous"):
        fr.encode_batch("m", [r0, TransitionRecord("m", 2, Kind.EVENT)])
    with pytest.raises(ValueError, match="in a batch of"):
        fr.encode_batch("m", [TransitionRecord("x", 0, Kind.EVENT)])
    with pytest.raises(TypeError):
        fr.encode_batch("m", [TransitionRecord("m", 0, Kind.EVENT, args=object())])


def test_frame_size_limits() -> None:
    with pytest.raises(fr.FrameError, match=r"1\.\."):
        fr.encode_frame(b"")
    head = (fr.MAX_FRAME + 1).to_bytes(4, "little") + b"\0" * 4
    assert fr.check_frame(head + b"x", 0, 9)[1].startswith("impossible frame length")
    assert "runs past the end" in fr.check_frame(b"\x05\0\0\0\0\0\0\0ab", 0, 10)[1]
    assert "frame header needs" in fr.check_frame(b"\x05\0", 0, 2)[1]


def _raw_frame(obj: object) -> bytes:
    return fr.encode_frame(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([9, "m", 1], "unknown frame type"),
        ([1, "", 0, 1, 0, 0, [], []], "batch header"),
        ([1, "m", 0, 0, 0, 0, [], []], "batch header"),
        ([2, "m", -1], "delete frame"),
        ([3, "m", 0, [-1], 0, 0], "snapshot frame"),
        ([0, ["m"]], "machine record"),
        ("not an array", "not valid msgpack"),
    ],
)
def test_frame_info_rejects_bad_payloads(obj: object, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        fr.frame_info(_payload(_raw_frame(obj)))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0, 0, 1, 0, [], []], [0, 0, 1, 0, [], []]], "claims 1 record, holds 2"),
        ([[0, 0, 1, 5, [], []]], "name index"),
        ([[0, 0, 99, 0, [], []]], "unknown record kind"),
        ([[0, 0, 1]], "a row has"),
        ([[0, 0, 1, 0, "x", []]], "exited must be a list"),
    ],
)
def test_decode_batch_names_the_bad_field(rows: list[object], message: str) -> None:
    payload = msgpack.packb([1, "m", 0, 1, 0, 10, ["go"], rows], use_bin_type=True)
    with pytest.raises(DecodeError, match=message):
        fr.decode_batch(payload)


def test_header_checks() -> None:
    fr.check_header(fr.HEADER)
    with pytest.raises(fr.FrameError, match="bad magic"):
        fr.check_header(b"SQLite format 3\0")
    damaged = bytearray(fr.HEADER)
    damaged[9] ^= 1
    with pytest.raises(fr.FrameError, match="damaged"):
        fr.check_header(bytes(damaged))
    future = fr.MAGIC + (2).to_bytes(2, "little") + b"\0\0"
    future += zlib.crc32(future).to_bytes(4, "little")
    with pytest.raises(fr.FrameError, match="version 2 is not supported"):
        fr.check_header(future)
