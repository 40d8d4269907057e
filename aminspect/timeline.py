"""The timeline model: one machine's active state spans over a window of records, as columns.

Plain Python with no UI. A timeline shows a *window* of records ``[start, end)``: the clocks
before it (``state_at(start - 1)``, one snapshot read plus a short replay) and the records
in it are all that is read, so a million-record history costs what its window costs.

Two scales:

* **tick**: one column per ``per_col`` records (a fraction means several columns per
  record). The configuration after record ``k`` fills the column(s) of ``k``.
* **time**: one column per ``ns_per_col`` nanoseconds of wall time. The configuration after
  record ``k`` holds from its time until the next record's time (the shared query
  evaluator's semantics, see ``backends/query.py``), so a column's cell says what
  ``active_between`` / ``inactive_between`` say for the column's interval.

A cell is OFF (inactive all along), ON (active all along), PART (both) or REENTER (active
all along but exited and entered again by a record in the column).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import NamedTuple

from aminspect.session import short_name
from backends.base import Backend
from tracer.records import RESET_KINDS, Schema, TransitionRecord

__all__ = [
    "MAX_WINDOW_RECORDS",
    "TICK_ZOOMS",
    "TIME_ZOOMS",
    "Cell",
    "RowSpec",
    "Scale",
    "Span",
    "TimelineModel",
    "Window",
    "WindowSpec",
    "format_zoom",
    "load_window",
    "seq_at_time",
    "spans",
    "tick_cells",
    "time_cells",
    "timeline_rows",
]

# records per column; below 1, a record takes several columns
TICK_ZOOMS: tuple[float, ...] = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
# nanoseconds per column, 1-2-5 steps from 1 µs to 1 h
TIME_ZOOMS: tuple[int, ...] = tuple(
    m * 10**e for e in range(3, 13) for m in (1, 2, 5) if m * 10**e <= 3_600_000_000_000
)
# At most this many records are read for one window (128 records per column over 64
# columns); a wider time window is cut there and says so. Reading and laying out a full
# window holds the GIL for ~40-80 ms on a busy 2-core machine (tests/bench/bench_views.py),
# about the most a worker should take from the UI thread.
MAX_WINDOW_RECORDS = 8_192


class Scale(StrEnum):
    """What one column of the timeline stands for."""

    TICK = "tick"
    TIME = "time"


class Cell(IntEnum):
    """What a state did during one column."""

    NONE = -1  # beyond the known history (not drawn)
    OFF = 0
    ON = 1
    PART = 2
    REENTER = 3


class Span(NamedTuple):
    """A state active after records ``[start, end)``, over the times ``[start_time, end_time)``.

    ``entered`` is False for a span already active before the window, ``exited`` False for
    one still active at the window's end. (A tuple: a zoomed-out window makes tens of
    thousands of them, and a frozen dataclass took three times as long to build.)
    """

    start: int
    end: int
    start_time: int
    end_time: int
    entered: bool
    exited: bool


@dataclass(frozen=True, slots=True)
class Window:
    """Records ``[start, end)`` of one machine with the clocks before them.

    For the time scale, ``t0``/``t1`` is the wall-time interval asked for; ``truncated``
    says the records were cut at ``MAX_WINDOW_RECORDS`` (the history after the last one
    read is unknown to this window).
    """

    machine_id: str
    scale: Scale
    start: int
    end: int
    before: tuple[int, ...]
    records: tuple[TransitionRecord, ...]
    t0: int = 0
    t1: int = 0
    truncated: bool = False

    @property
    def time_end(self) -> int:
        """Until when the configuration after the last record is known to hold."""
        if self.scale is Scale.TIME and not self.truncated:
            return self.t1
        return self.records[-1].time if self.records else self.t0


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Which window a timeline wants: seqs ``[start, end)`` (tick) or times ``[t0, t1)``."""

    machine_id: str
    scale: Scale
    start: int = 0
    end: int = 0
    t0: int = 0
    t1: int = 0


# --------------------------------------------------------------------------------------
# spans and cells (pure)


def _span(fields: tuple[int, int, int, int, bool, bool]) -> Span:
    # tuple.__new__ skips NamedTuple's Python-level __new__: ~4x faster per span
    return tuple.__new__(Span, fields)


def spans(
    size: int,
    before: Sequence[int],
    records: Sequence[TransitionRecord],
    start: int,
    t_start: int,
    t_end: int,
) -> list[list[Span]]:
    """Every state's active spans over a window of records.

    Args:
        size: the number of states.
        before: clocks before the first record of the window.
        records: the window's records, in seq order, starting at seq ``start``.
        start: the seq of the first record (the window's start when it is empty).
        t_start: the time a span active before the window is drawn from.
        t_end: the time spans still active after the last record are drawn to.

    Returns:
        Per state index, its spans in order. Times are made non-decreasing (a record
        timed before its predecessor is drawn at the predecessor's time).
    """
    # only parity matters here: ``active[i]`` is the clock's lowest bit
    active = [bool(before[i] & 1) if i < len(before) else False for i in range(size)]
    out: list[list[Span]] = [[] for _ in range(size)]
    opened: list[tuple[int, int, bool] | None] = [
        (start, t_start, False) if active[i] else None for i in range(size)
    ]
    last_t = t_start
    for rec in records:
        seq = rec.seq
        t = rec.time if rec.time > last_t else last_t
        last_t = t
        if rec.kind in RESET_KINDS:
            target = set(rec.entered)
            exited: Sequence[int] = [i for i in range(size) if active[i] and i not in target]
            entered: Sequence[int] = [i for i in sorted(target) if 0 <= i < size and not active[i]]
        else:
            exited, entered = rec.exited, rec.entered
        for i in exited:
            if 0 <= i < size:
                o = opened[i]
                if o is not None:
                    out[i].append(_span((o[0], seq, o[1], t, o[2], True)))
                    opened[i] = None
                active[i] = False
        for i in entered:
            # entered while active (a sloppy record): the span just goes on
            if 0 <= i < size and opened[i] is None:
                opened[i] = (seq, t, True)
                active[i] = True
    end = start + len(records)
    for i, o in enumerate(opened):
        if o is not None:
            out[i].append(_span((o[0], end, o[1], max(t_end, o[1]), o[2], False)))
    return out


def tick_cells(
    state_spans: Sequence[Span], start: int, end: int, cols: int, per_col: float
) -> list[Cell]:
    """One state's cells on the tick scale.

    Args:
        state_spans: the state's spans (from ``spans``).
        start: the seq of the first column.
        end: one past the last seq known (columns from there on are ``Cell.NONE``).
        cols: how many columns.
        per_col: records per column (a fraction: columns per record is its inverse).

    Returns:
        ``cols`` cells.
    """
    if per_col < 1:
        return _tick_cells_wide(state_spans, start, end, cols, per_col)
    # Each span adds its overlap to the columns it touches: partial columns directly,
    # whole columns through a difference array, so a column costs O(1) and a span O(1)
    # (16,384 records over 64 columns: 190 ms column by column before, a third of it so).
    p = int(per_col)
    limit = min(end, start + cols * p)
    cov = [0] * cols
    whole = [0] * (cols + 1)
    again = [False] * cols
    prev_end = None
    for s in state_spans:
        a, b = max(s.start, start), min(s.end, limit)
        if a < b:
            ca, cb = (a - start) // p, (b - 1 - start) // p
            if ca == cb:
                cov[ca] += b - a
            else:
                cov[ca] += start + (ca + 1) * p - a
                cov[cb] += b - (start + cb * p)
                whole[ca + 1] += 1
                whole[cb] -= 1
            if s.entered and prev_end == s.start:
                again[ca] = True
        prev_end = s.end
    out: list[Cell] = []
    run = 0
    for c in range(cols):
        run += whole[c]
        lo = start + c * p
        if lo >= end:
            out.append(Cell.NONE)
            continue
        length = min(lo + p, end) - lo
        covered = cov[c] + run * p
        if covered == 0:
            out.append(Cell.OFF)
        elif covered < length:
            out.append(Cell.PART)
        else:
            out.append(Cell.REENTER if again[c] else Cell.ON)
    return out


def _tick_cells_wide(
    state_spans: Sequence[Span], start: int, end: int, cols: int, per_col: float
) -> list[Cell]:
    """Tick cells when a record takes several columns (at most ``cols`` records)."""
    out: list[Cell] = []
    starts = [s.start for s in state_spans]
    for c in range(cols):
        lo = start + int(c * per_col)
        if lo >= end:
            out.append(Cell.NONE)
            continue
        first_col_of_record = c == 0 or int(c * per_col) != int((c - 1) * per_col)
        k = bisect_right(starts, lo) - 1
        s = state_spans[k] if k >= 0 else None
        if s is None or not s.start <= lo < s.end:
            out.append(Cell.OFF)
        elif first_col_of_record and s.entered and s.start == lo and k > 0:
            again = state_spans[k - 1].end == s.start
            out.append(Cell.REENTER if again else Cell.ON)
        else:
            out.append(Cell.ON)
    return out


def time_cells(
    state_spans: Sequence[Span], t0: int, ns_per_col: int, cols: int, known_end: int | None = None
) -> list[Cell]:
    """One state's cells on the time scale: column ``c`` is ``[t0 + c*w, t0 + (c+1)*w)``.

    The cell agrees with the shared predicates for the column's interval: OFF when not
    ``active_between``; ON when ``active_between`` and not ``inactive_between``; PART or
    REENTER (active all along but for an exit and re-entry) when both hold.

    Args:
        state_spans: the state's spans (from ``spans``), times non-decreasing.
        t0: the time of the first column's left edge.
        ns_per_col: the width of a column.
        cols: how many columns.
        known_end: columns starting at or after this time are ``Cell.NONE`` (the window
            was cut); None when the whole width is known.

    Returns:
        ``cols`` cells.
    """
    out: list[Cell] = []
    ends = [s.end_time for s in state_spans]
    for c in range(cols):
        a = t0 + c * ns_per_col
        b = a + ns_per_col
        if known_end is not None and a >= known_end:
            out.append(Cell.NONE)
            continue
        k = bisect_left(ends, a)  # spans ending before a cannot touch [a, b)
        covered = 0
        pos = a  # how far [a, b) is known covered without a hole
        hole = False
        activated = False
        deactivated = False
        while k < len(state_spans) and state_spans[k].start_time < b:
            s = state_spans[k]
            if s.entered and a <= s.start_time:
                activated = True
            if s.exited and a <= s.end_time < b:
                deactivated = True
            lo, hi = max(s.start_time, a), min(s.end_time, b)
            if lo < hi:
                if lo > pos:
                    hole = True
                covered += hi - lo
                pos = max(pos, hi)
            k += 1
        if pos < b:
            hole = True
        active_some = covered > 0 or activated
        if not active_some:
            out.append(Cell.OFF)
        elif not hole and not deactivated:
            out.append(Cell.ON)
        elif not hole:
            out.append(Cell.REENTER)
        else:
            out.append(Cell.PART)
    return out


@dataclass(frozen=True, slots=True)
class RowSpec:
    """One row of the timeline: a state, its label (indented as in the state tree)."""

    index: int
    name: str
    label: str
    depth: int
    pinned: bool


def _tree_order(schema: Schema) -> list[int]:
    out: list[int] = []

    def walk(parent: int | None) -> None:
        for i in schema.children(parent):
            out.append(i)
            walk(i)

    walk(None)
    return out


def timeline_rows(
    schema: Schema, pinned: Sequence[str] = (), hidden: frozenset[str] | set[str] = frozenset()
) -> list[RowSpec]:
    """The timeline's rows: pinned states first (in pin order), then the state tree's
    depth-first order, hidden states left out.

    Args:
        schema: the machine's schema.
        pinned: state names pinned to the top.
        hidden: state names not shown.

    Returns:
        One RowSpec per shown state.
    """
    rows: list[RowSpec] = []
    pinned_idx = [schema.get_index(n) for n in pinned]
    seen: set[int] = set()
    for i in pinned_idx:
        if i is not None and i not in seen and schema.states[i].name not in hidden:
            seen.add(i)
            rows.append(RowSpec(i, schema.states[i].name, short_name(schema, i), 0, True))
    for i in _tree_order(schema):
        name = schema.states[i].name
        if i in seen or name in hidden:
            continue
        depth = schema.depth(i)
        rows.append(RowSpec(i, name, "  " * depth + short_name(schema, i), depth, False))
    return rows


def format_zoom(scale: Scale, per_col: float, ns_per_col: int) -> str:
    """The zoom as a short label: ``1 rec/col``, ``4 col/rec``, ``20ms/col``."""
    if scale is Scale.TICK:
        if per_col >= 1:
            return f"{per_col:g} rec/col"
        return f"{round(1 / per_col)} col/rec"
    for unit, ns in (("h", 3_600_000_000_000), ("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns_per_col >= ns:
            return f"{ns_per_col / ns:g}{unit}/col"
    return f"{ns_per_col}ns/col"


# --------------------------------------------------------------------------------------
# the view state (pure)


@dataclass
class TimelineModel:
    """Where the timeline looks: scale, zoom, the window's left edge, pins, hidden states.

    Pure: ``spec()`` says which window to load; moving the cursor, zooming and panning
    change it. The left edge follows the cursor only when the cursor moves out of view, so
    panning away from the cursor keeps the view where the user put it.
    """

    scale: Scale = Scale.TICK
    tick_zoom: int = TICK_ZOOMS.index(1)
    time_zoom: int = TIME_ZOOMS.index(1_000_000)
    cols: int = 60
    machine_id: str | None = None
    count: int = 0
    first: int = 0
    cursor: int = -1
    cursor_time: int = 0
    left: int = 0  # seq of the first column (tick)
    t_left: int = 0  # time of the first column (time)
    pinned: dict[str, list[str]] = field(default_factory=dict)
    hidden: dict[str, set[str]] = field(default_factory=dict)
    row: int = 0  # the chosen row (for pin / hide)
    live: bool = False  # a tracer streams the machine: the time scale ends at now

    @property
    def per_col(self) -> float:
        return TICK_ZOOMS[self.tick_zoom]

    @property
    def ns_per_col(self) -> int:
        return TIME_ZOOMS[self.time_zoom]

    @property
    def span_records(self) -> int:
        """How many records the tick window covers."""
        return max(1, int(self.cols * self.per_col))

    @property
    def span_ns(self) -> int:
        return self.cols * self.ns_per_col

    def zoom_label(self) -> str:
        return format_zoom(self.scale, self.per_col, self.ns_per_col)

    def spec(self) -> WindowSpec | None:
        """The window to load, None without a machine or records."""
        if self.machine_id is None or self.count <= 0:
            return None
        if self.scale is Scale.TICK:
            end = min(self.count, self.left + self.span_records)
            return WindowSpec(self.machine_id, Scale.TICK, start=self.left, end=max(end, self.left))
        return WindowSpec(
            self.machine_id, Scale.TIME, t0=self.t_left, t1=self.t_left + self.span_ns
        )

    def set_cursor(
        self, machine_id: str, count: int, first: int, cursor: int, cursor_time: int
    ) -> None:
        """Follow the session: a new machine centres the view on its cursor; a cursor that
        left the view brings the view back to it."""
        new_machine = machine_id != self.machine_id
        moved = cursor != self.cursor or new_machine
        self.machine_id, self.count, self.first = machine_id, count, first
        self.cursor, self.cursor_time = cursor, cursor_time
        if new_machine:
            self.row = 0
            self.centre()
        elif moved:
            self.keep_cursor_visible()

    def centre(self) -> None:
        """Put the cursor in the middle of the view (at the right end when near the tail)."""
        if self.scale is Scale.TICK:
            span = self.span_records
            left = self.cursor - span // 2
            left = min(left, self.count - span)  # no empty future on the right
            self.left = max(self.first, left)
        else:
            self.t_left = self.cursor_time - self.span_ns // 2

    def keep_cursor_visible(self) -> None:
        if self.cursor < 0:
            return
        if self.scale is Scale.TICK:
            span = self.span_records
            if self.cursor < self.left:
                self.left = max(self.first, self.cursor - span // 4)
            elif self.cursor >= self.left + span:
                # keep a quarter ahead: a live tail moves the view every span/4 records
                self.left = max(self.first, self.cursor - span + 1 + span // 4)
        else:
            span = self.span_ns
            if not self.t_left <= self.cursor_time < self.t_left + span:
                self.t_left = self.cursor_time - span // 2

    def cursor_column(self) -> int | None:
        """The column the cursor is in, None when it is out of view."""
        if self.cursor < 0:
            return None
        if self.scale is Scale.TICK:
            c = int((self.cursor - self.left) / self.per_col)
        else:
            c = (self.cursor_time - self.t_left) // self.ns_per_col
        return c if 0 <= c < self.cols else None

    def column_of(self, seq: int, time: int) -> int | None:
        """The column of a record (first column of it when a record spans several)."""
        if self.scale is Scale.TICK:
            c = int((seq - self.left) / self.per_col)
            if self.per_col < 1:
                c = int(-(-(seq - self.left) // self.per_col))
        else:
            c = (time - self.t_left) // self.ns_per_col
        return c if 0 <= c < self.cols else None

    def zoom(self, delta: int) -> bool:
        """Zoom in (``delta < 0``: fewer records or ns per column) or out, keeping the
        cursor's place on screen. Returns whether the zoom changed."""
        col = self.cursor_column()
        frac = col / self.cols if col is not None else 0.5
        if self.scale is Scale.TICK:
            z = min(max(self.tick_zoom + delta, 0), len(TICK_ZOOMS) - 1)
            if self.cols * TICK_ZOOMS[z] > MAX_WINDOW_RECORDS:
                return False
            if z == self.tick_zoom:
                return False
            self.tick_zoom = z
            self.left = max(self.first, self.cursor - int(frac * self.span_records))
        else:
            z = min(max(self.time_zoom + delta, 0), len(TIME_ZOOMS) - 1)
            if z == self.time_zoom:
                return False
            self.time_zoom = z
            self.t_left = self.cursor_time - int(frac * self.span_ns)
        return True

    def pan(self, direction: int) -> None:
        """Move the view half a width left (``-1``) or right (``1``); the cursor stays."""
        if self.scale is Scale.TICK:
            step = max(1, self.span_records // 2)
            last = max(self.first, self.count - 1)
            self.left = min(max(self.first, self.left + direction * step), last)
        else:
            self.t_left += direction * max(1, self.span_ns // 2)

    def set_scale(self, scale: Scale, window: Window | None = None) -> None:
        """Switch scale, centred on the cursor. Going to the time scale, the zoom is the
        finest that still shows about the records of the loaded tick ``window`` (one step
        finer than covering all of them, so the time window is not cut short)."""
        if scale is self.scale:
            return
        if scale is Scale.TIME and window is not None and len(window.records) > 1:
            extent = window.records[-1].time - window.records[0].time
            need = max(1, extent // max(self.cols, 1))
            fits = [k for k, ns in enumerate(TIME_ZOOMS) if ns <= need]
            self.time_zoom = fits[-1] if fits else 0
        self.scale = scale
        self.centre()

    def rows(self, schema: Schema) -> list[RowSpec]:
        mid = self.machine_id or ""
        return timeline_rows(schema, self.pinned.get(mid, []), self.hidden.get(mid, set()))

    def toggle_pin(self, name: str) -> bool:
        """Pin a state to the top, or unpin it. Returns whether it is pinned now."""
        pins = self.pinned.setdefault(self.machine_id or "", [])
        if name in pins:
            pins.remove(name)
            return False
        pins.append(name)
        return True

    def hide(self, name: str) -> None:
        self.hidden.setdefault(self.machine_id or "", set()).add(name)
        pins = self.pinned.get(self.machine_id or "", [])
        if name in pins:
            pins.remove(name)

    def unhide_all(self) -> int:
        """Show every hidden state again; returns how many were hidden."""
        hidden = self.hidden.pop(self.machine_id or "", set())
        return len(hidden)


# --------------------------------------------------------------------------------------
# loading a window (I/O)

ClocksAt = Callable[[str, int], Sequence[int]]


def seq_at_time(backend: Backend, machine_id: str, t: int, lo: int, hi: int) -> int:
    """I/O: the first seq in ``[lo, hi)`` whose record's time is ``>= t`` (``hi`` if none),
    by bisection: ``log2(hi - lo)`` single-record reads, no index needed.

    Record times are taken as non-decreasing in seq order (the normal case); otherwise
    it returns some seq where the time crosses ``t``.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        rec = backend.read(machine_id, mid, mid + 1)
        if rec and rec[0].time < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def load_window(
    backend: Backend,
    spec: WindowSpec,
    count: int,
    first: int,
    clocks_at: ClocksAt,
    max_records: int = MAX_WINDOW_RECORDS,
) -> Window:
    """I/O: the window a timeline asked for: the clocks before it and its records.

    Args:
        backend: where the history is.
        spec: the window.
        count: records of the machine (highest + 1).
        first: its lowest stored seq.
        clocks_at: ``f(machine_id, seq) -> clocks after seq`` (zeros for -1); the
            session's cached ``clocks_at`` or the backend's ``state_at``.
        max_records: the most records read.

    Returns:
        The window (its records may be fewer than asked at the end of the history).

    Raises:
        BackendError: a read failed.
    """
    mid = spec.machine_id
    if spec.scale is Scale.TICK:
        start = max(first, min(spec.start, count))
        end = max(start, min(spec.end, count, start + max_records))
        before = tuple(clocks_at(mid, start - 1))
        records = tuple(backend.read(mid, start, end)) if start < end else ()
        return Window(mid, Scale.TICK, start, end, before, records)
    start = seq_at_time(backend, mid, spec.t0, first, count)
    out: list[TransitionRecord] = []
    pos = start
    truncated = False
    while pos < count:
        chunk = backend.read(mid, pos, min(count, pos + 512))
        if not chunk:
            break
        done = False
        for rec in chunk:
            if rec.time >= spec.t1:
                done = True
                break
            if len(out) >= max_records:
                truncated = True
                done = True
                break
            out.append(rec)
        if done:
            break
        pos += len(chunk)
    before = tuple(clocks_at(mid, start - 1))
    return Window(
        mid, Scale.TIME, start, start + len(out), before, tuple(out), spec.t0, spec.t1, truncated
    )


def window_cells(
    window: Window, model: TimelineModel, rows: Sequence[RowSpec], now: int | None = None
) -> list[list[Cell]]:
    """The cells of every row for a loaded window, as the model lays it out (pure).

    On the time scale, columns after the newest record are left blank (``Cell.NONE``):
    after the last record of a recording nothing is known, and a live machine is drawn up
    to ``now`` at most, not into the future.

    Args:
        window: a loaded window of ``model.machine_id``.
        model: scale, zoom, left edge, width, and whether the machine is live.
        rows: the rows to compute.
        now: the current time (UTC ns) for a live machine.

    Returns:
        One list of ``model.cols`` cells per row.
    """
    size = max((r.index for r in rows), default=-1) + 1
    size = max(size, len(window.before))
    if model.scale is Scale.TICK:
        t_start = window.records[0].time if window.records else 0
        all_spans = spans(size, window.before, window.records, window.start, t_start, t_start)
        return [
            tick_cells(all_spans[r.index], model.left, window.end, model.cols, model.per_col)
            for r in rows
        ]
    all_spans = spans(size, window.before, window.records, window.start, window.t0, window.time_end)
    known = window.time_end if window.truncated else None
    if window.end >= model.count:  # the window reaches the newest record
        newest = window.records[-1].time + 1 if window.records else window.t0
        tail = max(newest, now) if model.live and now is not None else newest
        known = tail if known is None else min(known, tail)
    return [
        time_cells(all_spans[r.index], model.t_left, model.ns_per_col, model.cols, known)
        for r in rows
    ]
