"""The timeline model: spans and cells agree with the shared query API (``state_at`` and
the four time predicates) on random histories; zoom, pan, pins and hides."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import backends
from aminspect.timeline import (
    MAX_WINDOW_RECORDS,
    TICK_ZOOMS,
    TIME_ZOOMS,
    Cell,
    Scale,
    TimelineModel,
    WindowSpec,
    format_zoom,
    load_window,
    seq_at_time,
    spans,
    tick_cells,
    time_cells,
    timeline_rows,
    window_cells,
)
from tests.contract.helpers import STATES, machine, nested_machine, random_history
from tracer.records import Kind, TransitionRecord

pytestmark = pytest.mark.timeout(120)


def _backend(records_by_machine):
    backend = backends.open("memory://", snapshot_every=4)
    for m, records in records_by_machine:
        backend.put_machine(m)
        if records:
            backend.append(m.id, records)
    return backend


def _clocks_at(backend):
    return lambda mid, seq: backend.state_at(mid, seq).clocks


@pytest.fixture(scope="module")
def store():
    backend = backends.open("memory://", snapshot_every=4)
    yield backend
    backend.close()


_ids = itertools.count()


def test_tick_cells_agree_with_state_at(store):
    @settings(max_examples=60, derandomize=True)
    @given(
        seed=st.integers(0, 2**32),
        n=st.integers(1, 60),
        start=st.integers(0, 60),
        cols=st.integers(1, 30),
        zoom=st.sampled_from(TICK_ZOOMS[:6]),
        nested=st.booleans(),
    )
    def check(seed, n, start, cols, zoom, nested):
        rnd = random.Random(seed)
        mid = f"t{next(_ids)}"
        m = nested_machine(mid) if nested else machine(mid)
        records = random_history(mid, n, rnd, nstates=len(m.schema))
        store.put_machine(m)
        store.append(mid, records)
        start = min(start, n - 1)
        model = TimelineModel(cols=cols, tick_zoom=TICK_ZOOMS.index(zoom))
        model.set_cursor(mid, n, 0, start, 0)
        model.left = start
        spec = model.spec()
        assert spec is not None and spec.start == start
        window = load_window(store, spec, n, 0, _clocks_at(store))
        assert window.start == start and window.end == min(n, start + model.span_records)
        rows = timeline_rows(m.schema)
        cells = window_cells(window, model, rows)
        assert len(cells) == len(m.schema) and all(len(c) == cols for c in cells)
        for row, row_cells in zip(rows, cells, strict=True):
            for c, cell in enumerate(row_cells):
                lo = start + int(c * zoom)
                hi = max(lo + 1, start + int((c + 1) * zoom))
                hi = min(hi, window.end)
                if lo >= window.end:
                    assert cell is Cell.NONE
                    continue
                active = [store.state_at(mid, k).is_active(row.index) for k in range(lo, hi)]
                reentered = [
                    store.state_at(mid, k).clocks[row.index]
                    - store.state_at(mid, k - 1).clocks[row.index]
                    == 2
                    for k in range(lo, hi)
                ]
                if not any(active):
                    assert cell is Cell.OFF, (c, lo, hi)
                elif not all(active):
                    assert cell is Cell.PART, (c, lo, hi)
                elif zoom >= 1 or (c * zoom) % 1 == 0:
                    want = Cell.REENTER if any(reentered) else Cell.ON
                    assert cell is want, (c, lo, hi)
                else:  # the second column of a record drawn two columns wide
                    assert cell is Cell.ON

    check()


def test_time_cells_agree_with_the_four_predicates(store):
    @settings(max_examples=60, derandomize=True)
    @given(
        seed=st.integers(0, 2**32),
        n=st.integers(0, 50),
        t0=st.integers(900, 2500),
        width=st.sampled_from((1, 3, 7, 20, 60)),
        cols=st.integers(1, 25),
    )
    def check(seed, n, t0, width, cols):
        rnd = random.Random(seed)
        mid = f"w{next(_ids)}"
        m = machine(mid)
        records = random_history(mid, n, rnd, monotonic=True)
        store.put_machine(m)
        if records:
            store.append(mid, records)
        spec = WindowSpec(mid, Scale.TIME, t0=t0, t1=t0 + cols * width)
        window = load_window(store, spec, n, 0, _clocks_at(store))
        # the window holds exactly the records timed inside it
        assert [r.seq for r in window.records] == [
            r.seq for r in records if spec.t0 <= r.time < spec.t1
        ]
        all_spans = spans(len(STATES), window.before, window.records, window.start, t0, spec.t1)
        for i, name in enumerate(STATES):
            cells = time_cells(all_spans[i], t0, width, cols)
            for c, cell in enumerate(cells):
                a, b = t0 + c * width, t0 + (c + 1) * width
                act = store.active_between(mid, name, a, b)
                inact = store.inactive_between(mid, name, a, b)
                if not act:
                    assert cell is Cell.OFF, (name, a, b, cell)
                elif not inact:
                    assert cell is Cell.ON, (name, a, b, cell)
                else:
                    assert cell in (Cell.PART, Cell.REENTER), (name, a, b, cell)
                if cell is Cell.REENTER:
                    assert store.activated_between(mid, name, a, b)
                    assert store.deactivated_between(mid, name, a, b)

    check()


def test_window_reads_only_the_window():
    """A window of a long history reads its records and one state_at, not the history."""
    mid = "long"
    m = machine(mid)
    records = random_history(mid, 5000, random.Random(3))
    backend = _backend([(m, records)])
    calls = []

    def clocks_at(machine_id, seq):
        calls.append(seq)
        return backend.state_at(machine_id, seq).clocks

    reads = []
    real_read = backend.read

    class Counting:
        def __getattr__(self, name):
            return getattr(backend, name)

        def read(self, machine_id, start=0, end=None):
            reads.append((start, end))
            return real_read(machine_id, start, end)

    window = load_window(Counting(), WindowSpec(mid, Scale.TICK, 4000, 4060), 5000, 0, clocks_at)
    assert calls == [3999]
    assert reads == [(4000, 4060)]
    assert len(window.records) == 60
    # time scale: a bisection (log2 reads of one record) plus the window's chunk
    reads.clear()
    t = records[4200].time
    w = load_window(Counting(), WindowSpec(mid, Scale.TIME, t0=t, t1=t + 50), 5000, 0, clocks_at)
    assert w.start == seq_at_time(backend, mid, t, 0, 5000)
    assert len(reads) <= 16
    backend.close()


def test_time_window_is_cut_at_max_records():
    mid = "dense"
    m = machine(mid)
    records = [
        TransitionRecord(mid, k, Kind.EVENT, "go", time=1000, exited=(), entered=())
        for k in range(50)
    ]
    backend = _backend([(m, records)])
    w = load_window(
        backend, WindowSpec(mid, Scale.TIME, t0=0, t1=5000), 50, 0, _clocks_at(backend), 20
    )
    assert w.truncated and len(w.records) == 20 and w.time_end == 1000
    model = TimelineModel(scale=Scale.TIME, cols=10)
    model.machine_id, model.t_left = mid, 0
    model.time_zoom = 0  # 1 µs per column: every column after 1000 ns is unknown
    cells = window_cells(w, model, timeline_rows(m.schema))
    assert cells[0][0] is Cell.OFF and cells[0][1] is Cell.NONE
    backend.close()


def test_spans_mark_entries_exits_and_reentries():
    mid = "s"
    recs = [
        TransitionRecord(mid, 0, Kind.INIT, "init", time=10, entered=(0,)),
        TransitionRecord(mid, 1, Kind.EVENT, "again", time=20, exited=(0,), entered=(0, 1)),
        TransitionRecord(mid, 2, Kind.EVENT, "off", time=30, exited=(0,)),
    ]
    out = spans(2, (0, 0), recs, 0, 10, 40)
    assert [(s.start, s.end, s.entered, s.exited) for s in out[0]] == [
        (0, 1, True, True),
        (1, 2, True, True),
    ]
    assert [(s.start, s.end, s.start_time, s.end_time) for s in out[1]] == [(1, 3, 20, 40)]
    assert tick_cells(out[0], 0, 3, 3, 1) == [Cell.ON, Cell.REENTER, Cell.OFF]
    # two records per column: the second column is half known
    assert tick_cells(out[0], 0, 3, 2, 2) == [Cell.REENTER, Cell.OFF]
    # a state active before the window is carried in without an entry
    carried = spans(2, (1, 0), recs[2:], 2, 25, 40)
    assert [(s.start, s.entered, s.exited) for s in carried[0]] == [(2, False, True)]


def test_model_follows_zooms_and_pans_around_the_cursor():
    m = TimelineModel(cols=40)
    m.set_cursor("a", 1000, 0, 500, 0)
    assert m.left == 480 and m.cursor_column() == 20
    m.set_cursor("a", 1000, 0, 510, 0)  # still in view: the view stays
    assert m.left == 480
    m.set_cursor("a", 1000, 0, 530, 0)  # out of view: a quarter of look-ahead kept
    assert m.left <= 530 < m.left + m.span_records and m.left == 530 - 40 + 1 + 10
    col = m.cursor_column()
    assert m.zoom(1) and m.per_col == 2
    assert abs((m.cursor_column() or 0) - col // 2 * 1) <= col  # the cursor stays in view
    assert m.cursor_column() is not None
    left = m.left
    m.pan(1)
    assert m.left == left + m.span_records // 2
    m.pan(-1)
    m.pan(-1)
    assert m.left == max(0, left - m.span_records // 2)
    # the zoom stops where a window would read too many records
    while m.zoom(1):
        pass
    assert m.span_records <= MAX_WINDOW_RECORDS
    while m.zoom(-1):
        pass
    assert m.per_col == TICK_ZOOMS[0]
    # near the tail the view ends at the last record (no empty future)
    m2 = TimelineModel(cols=40)
    m2.set_cursor("b", 100, 0, 99, 0)
    assert m2.left == 60


def test_scale_switch_fits_the_records_on_screen():
    mid = "sc"
    recs = [
        TransitionRecord(mid, k, Kind.EVENT, "go", time=1_000_000 * k, entered=(), exited=())
        for k in range(40)
    ]
    backend = _backend([(machine(mid), recs)])
    m = TimelineModel(cols=40)
    m.set_cursor(mid, 40, 0, 20, recs[20].time)
    spec = m.spec()
    w = load_window(backend, spec, 40, 0, _clocks_at(backend))
    m.set_scale(Scale.TIME, w)
    # 39 ms over 40 columns: the finest level under 975 µs per column
    assert m.scale is Scale.TIME and m.ns_per_col == 500_000
    assert m.cursor_column() == 20  # centred
    assert m.spec().t1 - m.spec().t0 == 40 * 500_000
    assert m.zoom(-1) and m.ns_per_col == 200_000
    m.set_scale(Scale.TICK)
    assert m.cursor_column() is not None
    backend.close()


def test_rows_pins_first_hidden_out_nested_indented():
    schema = nested_machine().schema
    rows = timeline_rows(schema)
    assert [(r.name, r.label) for r in rows] == [
        ("P", "P"),
        ("P_x", "  x"),
        ("P_y", "  y"),
        ("Q", "Q"),
    ]
    m = TimelineModel()
    m.machine_id = "h"
    assert m.toggle_pin("Q")
    m.hide("P_x")
    rows = m.rows(schema)
    assert [r.name for r in rows] == ["Q", "P", "P_y"] and rows[0].pinned
    assert not m.toggle_pin("Q")
    assert m.unhide_all() == 1
    assert [r.name for r in m.rows(schema)] == ["P", "P_x", "P_y", "Q"]


def test_format_zoom_and_levels():
    assert format_zoom(Scale.TICK, 1, 0) == "1 rec/col"
    assert format_zoom(Scale.TICK, 0.25, 0) == "4 col/rec"
    assert format_zoom(Scale.TIME, 1, 20_000_000) == "20ms/col"
    assert format_zoom(Scale.TIME, 1, 1_000) == "1µs/col"
    assert list(TIME_ZOOMS) == sorted(TIME_ZOOMS)
    assert TIME_ZOOMS[0] == 1_000


def test_seq_at_time_bisects():
    mid = "b"
    recs = [
        TransitionRecord(mid, k, Kind.EVENT, "go", time=t)
        for k, t in enumerate([5, 5, 7, 9, 9, 9, 12])
    ]
    backend = _backend([(machine(mid), recs)])
    assert [seq_at_time(backend, mid, t, 0, 7) for t in (0, 5, 6, 9, 10, 12, 13)] == [
        0,
        0,
        2,
        3,
        6,
        6,
        7,
    ]
    backend.close()


def test_time_scale_ends_at_the_newest_record_or_now_when_live():
    mid = "tail"
    recs = [
        TransitionRecord(mid, 0, Kind.INIT, "init", time=1_000, entered=(0,)),
        TransitionRecord(mid, 1, Kind.EVENT, "go", time=3_500, exited=(0,), entered=(1,)),
    ]
    backend = _backend([(machine(mid), recs)])
    model = TimelineModel(scale=Scale.TIME, cols=10)
    model.set_cursor(mid, 2, 0, 1, 3_500)
    model.time_zoom, model.t_left = 0, 0  # 1 µs per column from 0
    spec = model.spec()
    window = load_window(backend, spec, 2, 0, _clocks_at(backend))
    rows = timeline_rows(machine(mid).schema)
    cells = window_cells(window, model, rows)
    # recorded: nothing is drawn after the column of the newest record
    assert cells[1][:5] == [Cell.OFF, Cell.OFF, Cell.OFF, Cell.PART, Cell.NONE]
    assert cells[0][:5] == [Cell.OFF, Cell.ON, Cell.ON, Cell.PART, Cell.NONE]
    # live: drawn up to now, never after
    model.live = True
    cells = window_cells(window, model, rows, now=6_200)
    assert cells[1][3:8] == [Cell.PART, Cell.ON, Cell.ON, Cell.ON, Cell.NONE]
    backend.close()
