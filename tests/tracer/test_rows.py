"""Sinks that take rows: MemorySink keeps rows and builds records lazily; the sender
hands rows only to sinks whose ``write_rows`` is at least as derived as their ``write``."""

from __future__ import annotations

import threading

import pytest

from tracer import Kind, ManualMachine, MemorySink, attach
from tracer.codec import KIND_CODES, transition_from_list, transition_to_list
from tracer.core import _takes_rows
from tracer.records import TransitionRecord
from tracer.sinks import RowSink, row_to_record


class RecordsOnly(MemorySink):
    """A MemorySink subclass that overrides only ``write``: it must see every record."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def write(self, machine_id, records):
        assert all(isinstance(r, TransitionRecord) for r in records)
        self.seen += len(records)
        super().write(machine_id, records)


def _row(seq: int, kind: str = Kind.EVENT, **kw) -> tuple:
    rec = TransitionRecord("m", seq, kind, "go", 3, 1_000 + seq, 5, exited=(0,), entered=(1,))
    for k, v in kw.items():
        setattr(rec, k, v)
    fields = transition_to_list(rec)
    return tuple(tuple(f) if isinstance(f, list) else f for f in fields)


def test_row_to_record_matches_codec_for_every_kind():
    for kind in KIND_CODES:
        row = _row(0, kind, error=("E", "boom"), source=("x", 4), parent_seq=None, args={"a": 1})
        assert row_to_record("m", row) == transition_from_list("m", list(row))
        assert row_to_record("m", row).kind == kind


def test_memory_sink_keeps_rows_and_builds_records_when_read():
    sink = MemorySink()
    assert isinstance(sink, RowSink)
    sink.write_rows("m", 0, [_row(0), _row(1)])
    sink.write(
        "m", [TransitionRecord("m", 2, Kind.EVENT, "go", 3, 1_002, 5, exited=(0,), entered=(1,))]
    )
    sink.write_rows("m", 3, [_row(3)])
    assert sink.wait_for("m", 4, 1)
    assert [r.seq for r in sink.history("m")] == [0, 1, 2, 3]
    assert sink.records["m"][0] == transition_from_list("m", list(_row(0)))
    assert sink.history("nobody") == [] and "nobody" not in sink.records


@pytest.mark.parametrize(
    ("first", "rows", "message"),
    [
        (1, [(1,)], "expected seq 0, got 1"),
        (0, [(0,), (2,)], "expected seq 1, got 2"),
        (5, [(0,)], "expected seq 0, got first_seq 5"),
    ],
)
def test_memory_sink_refuses_rows_out_of_sequence(first, rows, message):
    sink = MemorySink()
    with pytest.raises(ValueError, match=message):
        sink.write_rows("m", first, rows)
    assert sink.history("m") == []


def test_sender_gives_rows_only_to_sinks_whose_write_rows_is_as_derived_as_write():
    class Rows(RecordsOnly):
        def write_rows(self, machine_id, first_seq, rows):
            MemorySink.write_rows(self, machine_id, first_seq, rows)

    assert _takes_rows(MemorySink()) and _takes_rows(Rows())
    assert not _takes_rows(RecordsOnly())
    assert not _takes_rows(object())


def _flips(sink) -> list[TransitionRecord]:
    m = ManualMachine(["Off", "On"], initial=["Off"])
    h = attach(m, sink=sink, name="flip")
    for i in range(300):
        m.event("flip", exited=list(m.active), entered=["On" if "Off" in m.active else "Off"])
        if i % 7 == 0:
            m.set("Off", args={"i": i})
    assert h.flush(5)
    h.detach()
    return sink.history("flip")


def _comparable(records: list[TransitionRecord]) -> list[tuple]:
    return [(*r.as_tuple()[:5], *r.as_tuple()[7:]) for r in records]  # not time, duration


def test_rows_and_records_paths_store_the_same_history():
    records_only = RecordsOnly()
    via_records = _flips(records_only)
    via_rows = _flips(MemorySink())
    assert records_only.seen == len(via_records) == len(via_rows) == 1 + 300 + 43
    assert _comparable(via_rows) == _comparable(via_records)


def test_rows_path_numbers_nested_and_concurrent_records():
    sink = MemorySink()
    m = ManualMachine(["Off", "On"], initial=["Off"])
    h = attach(m, sink=sink, name="threads")

    def work() -> None:
        for _ in range(200):
            m.set("On" if "Off" in m.active else "Off")

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert h.flush(5)
    recs = sink.history("threads")
    assert [r.seq for r in recs] == list(range(601))
    assert h.stats.sent == 601 and h.stats.dropped == 0


@pytest.mark.parametrize(("shift", "sources"), [(0, {}), (7, {}), (0, {"other": 3}), (2, {"m": 2})])
def test_websocket_rows_encode_to_the_same_txs_bytes_as_records(shift, sources):
    from tracer.protocol import encode_txs
    from tracer.ws_sink import _encode_txs, _to_row

    recs = [
        TransitionRecord("m", 4, Kind.EVENT, "go", 1, 10, 2, {"a": 1}, True, None, (0,), (1,)),
        TransitionRecord(
            "m", 5, Kind.FORCED, "x", 1, 11, 0, None, False, ("E", "m"), (1,), (0,), 4, ("other", 9)
        ),
        TransitionRecord("m", 6, Kind.GAP, "dropped", 1, 12, args={"dropped": 3}, entered=(0,)),
    ]
    rows = [_to_row(r) for r in recs]
    assert _encode_txs("m", rows, shift, sources) == encode_txs("m", recs, shift, sources)
