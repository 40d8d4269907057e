"""The timeline panel: one row per state, active spans over a window of records.

Thin: the layout and the cells come from ``aminspect.timeline``; the widget keeps a
``TimelineModel``, draws its cells, and posts ``Timeline.WindowWanted`` when the window it
shows must be read again (the app reads it in a worker and calls ``show_window``).
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.strip import Strip

from aminspect.session import format_time
from aminspect.timeline import (
    Cell,
    RowSpec,
    Scale,
    TimelineModel,
    Window,
    WindowSpec,
    timeline_rows,
    window_cells,
)
from aminspect.tui.widgets import _StyleCache
from tracer.records import Schema

__all__ = ["GLYPHS", "Timeline"]

# ON full block; PART shaded (active for part of the column); REENTER a notch (exited and
# entered again by one record); OFF a thin track so rows stay easy to follow.
GLYPHS = {Cell.ON: "█", Cell.PART: "▒", Cell.REENTER: "▌", Cell.OFF: "─", Cell.NONE: " "}

LABEL_MAX = 18


class Timeline(_StyleCache, can_focus=True):
    """States (rows) against records or wall time (columns) of the selected machine."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign", "zoom(-1)", "Zoom", key_display="+/-"),
        Binding("minus", "zoom(1)", "Zoom out", show=False),
        Binding("less_than_sign,comma", "pan(-1)", "Pan", key_display="</>"),
        Binding("greater_than_sign,full_stop", "pan(1)", "Pan right", show=False),
        Binding("s", "toggle_scale", "Tick/time"),
        Binding("c", "centre", "Centre on cursor", show=False),
        Binding("up", "row(-1)", "Row up", show=False),
        Binding("down", "row(1)", "Row down", show=False),
        Binding("i", "pin", "Pin", show=False),
        Binding("h", "hide", "Hide", show=False),
        Binding("H", "unhide", "Show hidden", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "timeline--on",
        "timeline--part",
        "timeline--off",
        "timeline--axis",
        "timeline--cursor",
        "timeline--mark",
        "timeline--label",
        "timeline--pinned",
        "timeline--row",
    }
    _prefix = "timeline"

    class WindowWanted(Message):
        """The timeline needs ``spec`` read (coalesces)."""

        def __init__(self, spec: WindowSpec) -> None:
            super().__init__()
            self.spec = spec

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, Timeline.WindowWanted)

    class Clicked(Message):
        """The user clicked the column of ``seq``."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = TimelineModel()
        self.schema: Schema | None = None
        self.window: Window | None = None
        self.mark: int | None = None
        self.rows: list[RowSpec] = []
        self.cells: list[list[Cell]] = []
        self._wanted: WindowSpec | None = None
        self._cells_key: tuple[object, ...] | None = None
        self._rows_key: tuple[object, ...] | None = None
        self._label_w = 8

    # -- what the app sets -------------------------------------------------------------

    def show(
        self,
        machine_id: str,
        schema: Schema,
        count: int,
        first: int,
        cursor: int,
        cursor_time: int,
        mark: int | None,
        live: bool = False,
    ) -> None:
        """Follow the session's selection and cursor (``live``: records still arrive)."""
        if machine_id != self.model.machine_id or schema != self.schema:
            self.window = None
            self.schema = schema
        self.mark = mark
        self.model.live = live
        self._layout(machine_id)  # the width first: centring on a new machine needs it
        self.model.set_cursor(machine_id, count, first, cursor, cursor_time)
        self._request()

    def show_window(
        self, window: Window, cells: list[list[Cell]] | None = None, key: object = None
    ) -> None:
        """A worker read the window asked for (and laid it out as ``cells`` for the
        layout ``key``, so a wide window costs the UI thread nothing)."""
        if self._wanted is None or not _covers(window, self._wanted):
            return
        self.window = window
        self._cells_key = None  # a new window: never reuse cells (ids are recycled)
        if cells is not None and key == self.layout_key():
            self.cells, self._cells_key = cells, (id(window), key)
            self.refresh()
        else:
            self._compute()

    def clear(self) -> None:
        self.model.machine_id = None
        self.schema = None
        self.window = None
        self.rows, self.cells = [], []
        self.refresh()

    # -- layout and cells --------------------------------------------------------------

    def _layout(self, machine_id: str | None = None) -> None:
        """Rows and columns for the current width (and the machine's pins and hides)."""
        if self.schema is None:
            return
        mid = machine_id if machine_id is not None else self.model.machine_id or ""
        pins = tuple(self.model.pinned.get(mid, []))
        hidden = frozenset(self.model.hidden.get(mid, set()))
        rows_key = (self.schema, pins, hidden)
        if rows_key != self._rows_key:
            # the tree order costs O(states²): once per schema and pin/hide, not per step
            self._rows_key = rows_key
            self.rows = timeline_rows(self.schema, pins, hidden)
        labels = [len(r.label) + (2 if r.pinned else 0) for r in self.rows]
        self._label_w = min(max(labels, default=6), LABEL_MAX) + 1
        width = self.scrollable_content_region.width or self.size.width
        self.model.cols = max(8, width - self._label_w - 1)
        self.model.row = min(self.model.row, max(0, len(self.rows) - 1))
        self.virtual_size = Size(0, len(self.rows) + 1)

    def _request(self) -> None:
        spec = self.model.spec()
        if spec is None:
            self.window = None
            self.cells = []
            self.refresh()
            return
        if self.window is not None and _covers(self.window, spec):
            self._wanted = spec
            self._compute()
            return
        if spec != self._wanted or self.window is None:
            self._wanted = spec
            self.post_message(self.WindowWanted(spec))
        self.refresh()

    def layout_key(self) -> tuple[object, ...]:
        """What the cells depend on besides the window (not the cursor)."""
        m = self.model
        rows = tuple(r.index for r in self.rows)
        return (m.scale, m.left, m.t_left, m.per_col, m.ns_per_col, m.cols, m.count, rows)

    def _compute(self) -> None:
        if self.window is None:
            return
        # the window by identity: comparing two windows' records would cost more than
        # laying them out
        key = (id(self.window), self.layout_key())
        if key == self._cells_key and not (self.model.live and self.model.scale is Scale.TIME):
            # a cursor step inside the view: the cells are as they were (a wide window
            # takes tens of ms to lay out; a step must redraw within a few). A live
            # machine on the time scale is drawn up to now, which moves.
            self.refresh()
            return
        self._cells_key = key
        self.cells = window_cells(self.window, self.model, self.rows, time.time_ns())
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        # shown for the first time, or the terminal changed: the cursor back in the middle
        self._layout()
        if self.model.machine_id is not None:
            self.model.centre()
        self._request()

    # -- actions -----------------------------------------------------------------------

    def _changed(self) -> None:
        self._layout()
        self._request()

    def action_zoom(self, delta: int) -> None:
        if self.model.zoom(delta):
            self._changed()
        else:
            self.notify("zoom limit", timeout=1.5, markup=False)

    def action_pan(self, direction: int) -> None:
        self.model.pan(direction)
        self._changed()

    def action_centre(self) -> None:
        self.model.centre()
        self._changed()

    def action_toggle_scale(self) -> None:
        new = Scale.TIME if self.model.scale is Scale.TICK else Scale.TICK
        self.model.set_scale(new, self.window)
        self.window = None
        self._changed()

    def action_row(self, delta: int) -> None:
        if self.rows:
            self.model.row = min(max(self.model.row + delta, 0), len(self.rows) - 1)
            top = int(self.scroll_y)
            h = max(1, self.size.height - 1)
            if self.model.row < top:
                self.scroll_to(y=self.model.row, animate=False, immediate=True)
            elif self.model.row >= top + h:
                self.scroll_to(y=self.model.row - h + 1, animate=False, immediate=True)
            self.refresh()

    def chosen_row(self) -> RowSpec | None:
        return self.rows[self.model.row] if 0 <= self.model.row < len(self.rows) else None

    def action_pin(self) -> None:
        row = self.chosen_row()
        if row is not None:
            pinned = self.model.toggle_pin(row.name)
            self.model.row = 0 if pinned else self.model.row
            self._changed()

    def action_hide(self) -> None:
        row = self.chosen_row()
        if row is not None and len(self.rows) > 1:
            self.model.hide(row.name)
            self._changed()
            self.notify(f"hid {row.name}; H shows hidden states again", timeout=2, markup=False)

    def action_unhide(self) -> None:
        if self.model.unhide_all():
            self._changed()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.x < self._label_w:
            if offset.y >= 1:
                row = int(self.scroll_y) + offset.y - 1
                if row < len(self.rows):
                    self.model.row = row
                    self.refresh()
            return
        seq = self.seq_at_column(offset.x - self._label_w)
        if seq is not None:
            self.post_message(self.Clicked(seq))

    def seq_at_column(self, col: int) -> int | None:
        """The record shown in a column (the last one changing it on the time scale)."""
        m = self.model
        if m.scale is Scale.TICK:
            seq = m.left + int(col * m.per_col)
            return seq if m.first <= seq < m.count else None
        if self.window is None or not self.window.records:
            return None
        t1 = m.t_left + (col + 1) * m.ns_per_col
        best = None
        for rec in self.window.records:
            if rec.time >= t1:
                break
            best = rec.seq
        return best

    # -- rendering ---------------------------------------------------------------------

    def axis_text(self, width: int) -> Text:
        m = self.model
        text = Text(no_wrap=True)
        label = "seq" if m.scale is Scale.TICK else "UTC"
        text.append(f"{label[: self._label_w - 1]:<{self._label_w}}", style=self._style("axis"))
        if m.machine_id is None or m.count == 0:
            return text
        axis = [" "] * m.cols
        styles: list[str | None] = [None] * m.cols
        if m.scale is Scale.TICK:
            left, right = str(m.left), str(m.left + m.span_records - 1)
        else:
            left = format_time(m.t_left)
            right = f"+{_short_ns(m.span_ns)}"
        for k, ch in enumerate(left[: m.cols]):
            axis[k] = ch
        if len(left) + len(right) + 2 <= m.cols:
            for k, ch in enumerate(right):
                axis[m.cols - len(right) + k] = ch
        if self.window is not None and self.window.truncated:
            note = f" cut at {len(self.window.records)} records: zoom in "
            if len(left) + len(note) + 1 < m.cols:
                for k, ch in enumerate(note):
                    axis[len(left) + 1 + k] = ch
        for col in (self._mark_column(), m.cursor_column()):
            if col is not None and col >= m.cols - len(right) - 1:
                # the right label would hide the cursor or the mark: drop it
                for k in range(max(0, m.cols - len(right)), m.cols):
                    axis[k] = " "
        mark_col = self._mark_column()
        if mark_col is not None:
            axis[mark_col], styles[mark_col] = "◆", "mark"
        cur = m.cursor_column()
        if cur is not None:
            axis[cur], styles[cur] = "▼", "cursor"
        for ch, st in zip(axis, styles, strict=True):
            text.append(ch, style=self._style(st) if st else self._style("axis"))
        return text

    def _mark_column(self) -> int | None:
        if self.mark is None:
            return None
        if self.model.scale is Scale.TICK:
            return self.model.column_of(self.mark, 0)
        if self.window is not None:
            for rec in self.window.records:
                if rec.seq == self.mark:
                    return self.model.column_of(rec.seq, rec.time)
        return None

    def row_text(self, i: int) -> Text:
        row = self.rows[i]
        text = Text(no_wrap=True)
        chosen = self.has_focus and i == self.model.row
        label = ("⚲ " if row.pinned else "") + row.label
        if len(label) > self._label_w - 1:
            label = label[: self._label_w - 2] + "…"
        lstyle = self._style("pinned" if row.pinned else "label")
        if chosen:
            lstyle = lstyle + self._style("row")
        text.append(f"{label:<{self._label_w - 1}}", style=lstyle)
        text.append(" ")
        cells = self.cells[i] if i < len(self.cells) else []
        cur = self.model.cursor_column()
        cols = self.model.cols
        cells = list(cells[:cols]) + [Cell.NONE] * (cols - len(cells))
        # one append per run of equal cells (a row is a few runs, not 60 appends)
        c = 0
        while c < cols:
            cell = cells[c]
            if c == cur:
                style = self._style(_STYLE[cell]) if cell is not Cell.NONE else None
                cursor = self._style("cursor")
                text.append(GLYPHS[cell], style=style + cursor if style else cursor)
                c += 1
                continue
            end = c + 1
            while end < cols and cells[end] is cell and end != cur:
                end += 1
            style = self._style(_STYLE[cell]) if cell is not Cell.NONE else None
            text.append(GLYPHS[cell] * (end - c), style=style)
            c = end
        return text

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.base_style
        if y == 0:
            text = self.axis_text(width)
        else:
            i = int(self.scroll_y) + y - 1
            if self.model.machine_id is None:
                text = Text("no machine selected" if y == 1 else "", style=self._style("off"))
            elif self.model.count == 0:
                text = Text("no records yet" if y == 1 else "", style=self._style("off"))
            elif i >= len(self.rows):
                return Strip.blank(width, base)
            else:
                text = self.row_text(i)
        text.truncate(width, overflow="ellipsis")
        text.stylize_before(base)
        return Strip(text.render(self.app.console), text.cell_len).extend_cell_length(width, base)

    def plain_rows(self) -> list[str]:
        """The rows as plain text (label and glyphs), for tests."""
        return [self.row_text(i).plain for i in range(len(self.rows))]


_STYLE = {Cell.ON: "on", Cell.PART: "part", Cell.REENTER: "on", Cell.OFF: "off"}


def _covers(window: Window, spec: WindowSpec) -> bool:
    """Whether a loaded window is the one ``spec`` asks for."""
    if window.machine_id != spec.machine_id or window.scale is not spec.scale:
        return False
    if spec.scale is Scale.TICK:
        return window.start == spec.start and window.end == spec.end
    return window.t0 == spec.t0 and window.t1 == spec.t1


def _short_ns(ns: int) -> str:
    for unit, scale in (("h", 3_600_000_000_000), ("s", 10**9), ("ms", 10**6), ("µs", 10**3)):
        if ns >= scale:
            return f"{ns / scale:g}{unit}"
    return f"{ns}ns"
