"""The record summary filled from a backend's query index (``Backend.index_columns``):
every filter and the error count answer exactly as ``compile_filter`` over the records,
on every file and memory backend, without reading the records (issue 7), also telling a
library's refusal from an error (the index's ``refusals``)."""

from __future__ import annotations

import tempfile
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from aminspect.filters import FilteredView, LogFilter, RecordSummary, compile_filter
from aminspect.session import Outcome, Session, outcome_of
from backends.base import IndexColumns
from tracer.codec import transition_to_list
from tracer.records import MachineRecord, Schema, StateSpec, TransitionRecord

pytestmark = pytest.mark.timeout(300)

SCHEMA = Schema(
    (
        StateSpec("Idle", initial=True),
        StateSpec("Busy"),
        StateSpec("Busy.Paid", "Busy"),
        StateSpec("Busy.Packed", "Busy"),
        StateSpec("Done.Paid"),
        StateSpec("Failed"),
    )
)
NAMES = ("start", "pay", "ship", "cancel", "retry", "")
KINDS = ("event", "event", "forced", "set", "add", "remove")
RESETS = ("init", "restore", "gap")

# scheme -> URL of an empty store in a directory
URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda p: "memory://",
    "sqlite": lambda p: f"sqlite:///{p / 'h.db'}",
    "lmdb": lambda p: f"lmdb:///{p / 'h.lmdb'}",
    "journal": lambda p: f"journal:///{p / 'h.amj'}",
}

FILTERS = [
    LogFilter(errors_only=True),
    LogFilter(hide_rejected=True),
    LogFilter(errors_only=True, hide_rejected=True),
    LogFilter(kinds=frozenset({"set", "restore", "nope"})),
    LogFilter(kinds=frozenset({"init", "gap"})),
    LogFilter(events=frozenset({"pay", "ship"})),
    LogFilter(events=frozenset({""})),
    LogFilter(states=frozenset({"Paid"})),  # two states of that short name
    LogFilter(states=frozenset({"Idle", "Failed"})),
    LogFilter(search="re"),  # restore, retry, remove, Failed...
    LogFilter(search="busy", errors_only=True),
    LogFilter(search="IDLE", hide_rejected=True),
]


# one op: (what, name, kind, exit picks, enter picks, error type)
op = st.tuples(
    st.sampled_from(
        [
            "ok",
            "ok",
            "ok",
            "refused",
            "refused-accepted",
            "failed",
            "failed-accepted",
            "no",
            "reset",
        ]
    ),
    st.sampled_from(NAMES),
    st.sampled_from(KINDS),
    st.lists(st.integers(0, 5), max_size=3),
    st.lists(st.integers(0, 5), max_size=3),
    st.sampled_from(["MachineError", "TransitionNotAllowed", "PaymentError", "KeyError"]),
)


def history(ops: Sequence[tuple[Any, ...]], mid: str = "m") -> list[TransitionRecord]:
    """Consistent records: events exit active states and enter inactive ones."""
    active: set[int] = {0}
    out = [TransitionRecord(mid, 0, "init", "init", time=1, entered=(0,))]
    for seq, (what, name, kind, outs, ins, err) in enumerate(ops, start=1):
        t = 1 + seq
        if what == "reset":
            active = set(ins) or {0}
            kind = RESETS[seq % 3]
            out.append(TransitionRecord(mid, seq, kind, kind, time=t, entered=tuple(active)))
        elif what == "ok":
            exited = tuple(sorted({i for i in outs if i in active}))
            rest = active - set(exited)
            entered = tuple(sorted({i for i in ins if i not in rest}))
            active = rest | set(entered)
            out.append(
                TransitionRecord(mid, seq, kind, name, time=t, exited=exited, entered=entered)
            )
        elif what == "refused":
            refusal = ("MachineError", "TransitionNotAllowed")[seq % 2]
            out.append(
                TransitionRecord(
                    mid, seq, "event", name, time=t, accepted=False, error=(refusal, "no")
                )
            )
        elif what == "refused-accepted":  # a refusal type, yet accepted: an error
            refusal = ("MachineError", "TransitionNotAllowed")[seq % 2]
            out.append(
                TransitionRecord(mid, seq, kind, name, time=t, accepted=True, error=(refusal, "x"))
            )
        elif what == "failed":  # a real error, or a refusal when err is a refusal type
            out.append(
                TransitionRecord(mid, seq, kind, name, time=t, accepted=False, error=(err, "x"))
            )
        elif what == "failed-accepted":  # raised after the change: accepted and an error
            out.append(
                TransitionRecord(mid, seq, kind, name, time=t, accepted=True, error=(err, "x"))
            )
        else:
            out.append(TransitionRecord(mid, seq, kind, name, time=t, accepted=False))
    return out


class CountingReads:
    """Wraps a backend; counts the records ``read`` returns."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.records = 0

    def read(self, machine_id: str, start: int = 0, end: int | None = None) -> Any:
        out = self._backend.read(machine_id, start, end)
        self.records += len(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def check_session(s: Session, records: list[TransitionRecord], mid: str = "m") -> None:
    """Every filter and the error count from the session's summary match the records."""
    n = len(records)
    summary = s.summary(mid)
    assert summary is not None
    schema = s.machines[mid].record.schema
    assert s.count_errors(mid, 0, n) == sum(1 for r in records if outcome_of(r) is Outcome.ERROR)
    for flt in FILTERS:
        match = compile_filter(flt, schema)
        want = [r.seq for r in records if match(r)]
        fv = FilteredView(mid, schema, flt, 0, n, block=64)
        while not fv.complete:
            s.scan_view(fv, 8)
        assert [fv.seq_at(i) for i in range(fv.total)] == want, flt


@pytest.mark.parametrize("scheme", list(URLS))
@settings(max_examples=25)
@given(ops=st.lists(op, min_size=0, max_size=300), batch=st.integers(1, 97), rows=st.booleans())
def test_an_index_built_summary_answers_as_the_records_do(
    scheme: str, ops: Any, batch: int, rows: bool
):
    records = history(ops)
    with tempfile.TemporaryDirectory() as tmp:
        url = URLS[scheme](Path(tmp))
        b = backends.open(url)
        b.put_machine(MachineRecord("m", "manual", SCHEMA, created=1, updated=1))
        for i in range(0, len(records), batch):
            if rows:  # the ingest server's path: the index extends column by column
                b.append_rows("m", i, [transition_to_list(r) for r in records[i : i + batch]])
            else:
                b.append("m", records[i : i + batch])
        if scheme != "memory":  # a fresh open: the index comes from storage
            b.close()
            b = backends.open(url, read_only=True)
        try:
            counting = CountingReads(b)
            s = Session(counting)
            s.apply_machines(s.fetch_machines())
            summary = s.summary("m")
            assert summary is not None and summary.end == len(records)  # filled at once
            # only reset records were read (their touched states are stored, not indexed)
            assert counting.records <= sum(50 for r in records if r.kind in RESETS)
            filled = counting.records
            # refusals and errors come from the index: errors only and the count read nothing
            check_session(s, records)
            assert counting.records == filled
        finally:
            b.close()


def test_a_reopened_journal_is_summarised_without_reading_its_records(tmp_path: Path):
    ops = [("ok", "go", "event", [0], [1], "")] * 4000
    ops += [("refused", "pay", "event", [], [], "")] * 10
    ops += [("failed", "pay", "event", [], [], "PaymentError")] * 10
    ops += [("refused-accepted", "pay", "event", [], [], "")] * 3
    ops += [("failed", "pay", "event", [], [], "MachineError")] * 4  # refusals too
    records = history(ops)
    url = f"journal:///{tmp_path / 'h.amj'}"
    b = backends.open(url)
    b.put_machine(MachineRecord("m", "manual", SCHEMA, created=1, updated=1))
    for i in range(0, len(records), 1000):
        b.append("m", records[i : i + 1000])
    b.close()
    b = backends.open(url, read_only=True)
    counting = CountingReads(b)
    s = Session(counting)
    s.apply_machines(s.fetch_machines())
    summary = s.summary("m")
    assert summary is not None and summary.end == len(records)
    assert counting.records == 1  # the init record: its touched states are stored only
    fv = FilteredView("m", SCHEMA, LogFilter(hide_rejected=True), 0, len(records))
    while not fv.complete:
        s.scan_view(fv, 16)
    assert fv.reads == 0 and counting.records == 1 and fv.hidden == 24
    # the index tells the 14 refusals from the 10 errors not accepted: nothing is read
    assert s.count_errors("m", 0, len(records)) == 13
    errors = FilteredView("m", SCHEMA, LogFilter(errors_only=True), 0, len(records))
    while not errors.complete:
        s.scan_view(errors, 16)
    want = [r.seq for r in records if outcome_of(r) is Outcome.ERROR]
    assert [errors.seq_at(i) for i in range(errors.total)] == want and len(want) == 13
    assert errors.reads == 0 and counting.records == 1 and summary.reads == 1
    b.close()


def test_records_appended_later_are_summarised_as_before():
    b = backends.open("memory://")
    b.put_machine(MachineRecord("m", "manual", SCHEMA, created=1, updated=1))
    records = history(
        [("ok", "go", "event", [0], [1], ""), ("failed", "pay", "set", [], [], "E")] * 300
    )
    b.append("m", records[:301])
    s = Session(b)
    s.apply_machines(s.fetch_machines())
    summary = s.summary("m")
    assert summary is not None and summary.end == 301
    b.append("m", records[301:])
    s.apply_machines(s.fetch_machines())
    check_session(s, records)
    assert summary.end == len(records)  # the scans offered the new records


def test_more_than_64_states_falls_back_to_reading():
    schema = Schema(tuple(StateSpec(f"S{i}") for i in range(70)))
    b = backends.open("memory://")
    b.put_machine(MachineRecord("m", "manual", schema, created=1, updated=1))
    records = [TransitionRecord("m", 0, "init", "init", time=1, entered=(66,))]
    records += [
        TransitionRecord("m", i, "event", "go", time=i + 1, exited=(66,), entered=(66,))
        for i in range(1, 50)
    ]
    b.append("m", records)
    s = Session(b)
    s.apply_machines(s.fetch_machines())
    summary = s.summary("m")
    assert summary is not None and summary.full and summary.end == 0
    fv = FilteredView("m", schema, LogFilter(states=frozenset({"S66"})), 0, 50)
    while not fv.complete:
        s.scan_view(fv, 4)
    assert fv.total == 50 and fv.reads > 0


def columns(n: int, **kw: Any) -> IndexColumns:
    base: dict[str, Any] = dict(
        start=0,
        end=n,
        kinds=("init", "event"),
        kind=b"\x01" * n,
        accepted=b"\x01" * n,
        error=b"\x00" * n,
        names=("go",),
        name=array("I", [0] * n),
        entered=(array("q"),),
        exited=(array("q"),),
        refused=array("q"),
    )
    base.update(kw)
    return IndexColumns(**base)


def test_an_accepted_neither_true_nor_false_is_read():
    records = [TransitionRecord("m", i, "event", "go", time=i) for i in range(5)]
    records[2].accepted = "yes"  # type: ignore[assignment]  # truthy, shown
    records[3].accepted = []  # type: ignore[assignment]  # falsy, hidden
    read: list[tuple[int, int]] = []

    def reader(a: int, b: int) -> list[TransitionRecord]:
        read.append((a, b))
        return records[a:b]

    summary = RecordSummary(0, 1)
    assert summary.fill(columns(5, accepted=b"\x01\x01\x00\x00\x01"), reader)
    assert read == [(2, 4)]
    schema = Schema((StateSpec("A"),))
    match = compile_filter(LogFilter(hide_rejected=True), schema)
    want = [r.seq for r in records if match(r)]
    assert summary.matches(LogFilter(hide_rejected=True), schema, 0, 5) == want == [0, 1, 2, 4]


def test_too_many_names_or_another_start_leave_the_summary_to_the_scans():
    def no_read(a: int, b: int) -> list[TransitionRecord]:
        raise AssertionError("read")

    many = columns(3, names=tuple(f"n{i}" for i in range(65536)))
    summary = RecordSummary(0, 1)
    assert not summary.fill(many, no_read) and summary.end == 0
    assert not RecordSummary(1, 1).fill(columns(3), no_read)
    assert RecordSummary(0, 1, limit=2).fill(columns(3), no_read)
    limited = RecordSummary(0, 1, limit=2)
    limited.fill(columns(3), no_read)
    assert limited.end == 2 and limited.full


def test_refusals_and_errors_not_accepted_come_from_the_columns():
    """Records not accepted with an error are refusals (rejected) where the index lists
    them, errors otherwise: no read; an accepted refusal type is an error."""
    records = [TransitionRecord("m", i, "event", "go", time=i) for i in range(6)]
    records[1].accepted, records[1].error = False, ("MachineError", "no")
    records[2].accepted, records[2].error = False, ("PaymentError", "x")
    records[3].accepted, records[3].error = True, ("TransitionNotAllowed", "x")
    records[4].accepted = False
    schema = Schema((StateSpec("A"),))
    want = [r.seq for r in records if compile_filter(LogFilter(errors_only=True), schema)(r)]
    assert want == [2, 3]
    summary = RecordSummary(0, 1)
    assert summary.fill(
        columns(
            6,
            accepted=b"\x01\x02\x02\x01\x02\x01",
            error=b"\x00\x01\x01\x01\x00\x00",
            refused=array("q", [1]),
        ),
        lambda a, b: pytest.fail(f"read {a}..{b}"),
    )
    assert summary.reads == 0
    assert summary.errors(0, 6) == 2
    assert summary.matches(LogFilter(errors_only=True), schema, 0, 6) == want
    assert summary.matches(LogFilter(hide_rejected=True), schema, 0, 6) == [0, 3, 5]
    S = RecordSummary
    assert list(summary.outcome) == [
        S.ACCEPTED, S.REJECTED, S.ERROR, S.ACCEPTED_ERROR, S.REJECTED, S.ACCEPTED,
    ]  # fmt: skip
