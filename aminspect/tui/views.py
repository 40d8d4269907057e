"""The lower-right panel's views (record details, timeline, diff), the mark, and export.

A mixin of ``InspectorApp``: the app composes ``compose_lower()`` where the details pane
was, calls ``update_lower(view)`` whenever it shows a cursor view, and gets the actions
``cycle_view``, ``show_lower``, ``mark``, ``export`` and ``maximize``. Reads run in thread
workers that post their results back, as the rest of the app does.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual import work
from textual.app import App, ComposeResult
from textual.message import Message
from textual.widgets import ContentSwitcher
from textual.worker import get_current_worker

from aminspect.diff import StateDiff, load_diff
from aminspect.export_files import ExportResult, write_export
from aminspect.session import CursorView, MachineStatus, Session
from aminspect.timeline import (
    Cell,
    RowSpec,
    TimelineModel,
    Window,
    WindowSpec,
    load_window,
    window_cells,
)
from aminspect.tui.diff import DiffPane
from aminspect.tui.export_screen import ExportChoice, ExportScreen
from aminspect.tui.timeline import Timeline
from aminspect.tui.widgets import DetailsPane, set_title
from backends.base import BackendError

__all__ = ["LOWER_VIEWS", "LowerViews"]

# the views of the lower-right panel, in the order ``v`` cycles them
LOWER_VIEWS = ("details", "timeline", "diff")
TITLES = {"details": "record", "timeline": "timeline", "diff": "diff"}

if TYPE_CHECKING:
    _Base = App[None]
else:
    _Base = object  # a mixin: InspectorApp puts App after it


class TimelineLoaded(Message):
    """A worker read a timeline window and laid it out for the layout ``key``."""

    def __init__(self, window: Window, cells: list[list[Cell]], key: object) -> None:
        super().__init__()
        self.window = window
        self.cells = cells
        self.key = key


class DiffLoaded(Message):
    """A worker computed the diff at the cursor."""

    def __init__(self, diff: StateDiff) -> None:
        super().__init__()
        self.diff = diff


class Exported(Message):
    """An export finished (``error`` is one line when it failed)."""

    def __init__(self, result: ExportResult | None, error: str | None = None) -> None:
        super().__init__()
        self.result = result
        self.error = error


class LowerViews(_Base):
    """Timeline, diff, mark and export for the inspector app (see the module docstring)."""

    session: Session
    view: CursorView | None
    export_dir: Path = Path.cwd()
    lower: str = "details"

    def compose_lower(self) -> ComposeResult:
        """The lower-right panel: one of the record details, the timeline, the diff."""
        self.marks: dict[str, int] = {}
        self.last_export: ExportResult | None = None
        with ContentSwitcher(initial="details", id="lower"):
            yield DetailsPane(id="details")
            yield Timeline(id="timeline")
            yield DiffPane(id="diff")

    @property
    def timeline(self) -> Timeline:
        return self.screen_stack[0].query_one(Timeline)

    @property
    def diff_pane(self) -> DiffPane:
        return self.screen_stack[0].query_one(DiffPane)

    def lower_widget(self) -> DetailsPane | Timeline | DiffPane:
        """The widget the lower panel shows now."""
        screen = self.screen_stack[0]
        if self.lower == "timeline":
            return screen.query_one(Timeline)
        if self.lower == "diff":
            return screen.query_one(DiffPane)
        return screen.query_one(DetailsPane)

    @property
    def mark_seq(self) -> int | None:
        """The mark of the selected machine."""
        sel = self.session.selected
        return None if sel is None else self.marks.get(sel)

    # -- following the cursor ------------------------------------------------------------

    def update_lower(self, view: CursorView | None) -> None:
        """Point the visible lower view at the cursor (the hidden ones stay idle)."""
        if self.lower == "timeline":
            self._update_timeline(view)
        elif self.lower == "diff":
            self._update_diff(view)

    def _update_timeline(self, view: CursorView | None) -> None:
        tl = self.timeline
        s = self.session
        entry = s.entry
        mark = self.mark_seq
        if view is None or entry is None or view.machine_id != s.selected:
            if entry is None:
                tl.clear()
            return
        cursor_time = view.record.time if view.record is not None else 0
        live = entry.status is MachineStatus.LIVE
        tl.show(
            view.machine_id,
            entry.record.schema,
            entry.count,
            entry.first,
            view.seq,
            cursor_time,
            mark,
            live,
        )
        set_title(tl, self._timeline_title())

    def _timeline_title(self) -> str:
        m = self.timeline.model
        mark = self.mark_seq
        title = f"timeline · {m.scale.value} · {m.zoom_label()}"
        if mark is not None:
            title += f" · mark {mark}"
        return title

    def on_timeline_window_wanted(self, message: Timeline.WindowWanted) -> None:
        tl = self.timeline
        # the layout as it is now, copied: the worker must not read the live model
        self._load_timeline(message.spec, replace(tl.model), list(tl.rows), tl.layout_key())

    @work(thread=True, exclusive=True, group="timeline")
    def _load_timeline(
        self, spec: WindowSpec, model: TimelineModel, rows: list[RowSpec], key: object
    ) -> None:
        s = self.session
        entry = s.machines.get(spec.machine_id)
        if entry is None:
            return
        worker = get_current_worker()
        try:
            window = load_window(s.backend, spec, entry.count, entry.first, s.clocks_at)
        except BackendError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return
        cells = window_cells(window, model, rows, time.time_ns())
        if not worker.is_cancelled:
            self.post_message(TimelineLoaded(window, cells, key))

    def on_timeline_loaded(self, message: TimelineLoaded) -> None:
        self.timeline.show_window(message.window, message.cells, message.key)
        set_title(self.timeline, self._timeline_title())

    def on_timeline_clicked(self, message: Timeline.Clicked) -> None:
        self.session.goto(message.seq)
        self.refresh_cursor()

    def _update_diff(self, view: CursorView | None) -> None:
        s = self.session
        entry = s.entry
        pane = self.diff_pane
        if entry is None or view is None or view.seq < 0:
            set_title(pane, "diff")
            pane.show_message("no records yet")
            return
        set_title(pane, "diff" if self.mark_seq is None else f"diff · mark {self.mark_seq}")
        self._load_diff(view.machine_id, view.seq, self.mark_seq)

    @work(thread=True, exclusive=True, group="diff")
    def _load_diff(self, machine_id: str, cursor: int, mark: int | None) -> None:
        s = self.session
        entry = s.machines.get(machine_id)
        if entry is None:
            return
        worker = get_current_worker()
        try:
            diff = load_diff(s.backend, entry.record.schema, machine_id, cursor, mark, s.clocks_at)
        except BackendError as exc:
            self.notify(str(exc), severity="error", timeout=8, markup=False)
            return
        if not worker.is_cancelled:
            self.post_message(DiffLoaded(diff))

    def on_diff_loaded(self, message: DiffLoaded) -> None:
        d = message.diff
        s = self.session
        if d.machine_id != s.selected or s.cursor not in (d.base, d.target):
            return  # the cursor moved on; a newer diff is on its way
        self.diff_pane.show_diff(d)

    # -- actions -------------------------------------------------------------------------

    def action_cycle_view(self) -> None:
        """Show the next lower view: record, timeline, diff."""
        k = LOWER_VIEWS.index(self.lower)
        self.action_show_lower(LOWER_VIEWS[(k + 1) % len(LOWER_VIEWS)])

    def action_show_lower(self, name: str) -> None:
        """Show one lower view (``details``, ``timeline`` or ``diff``)."""
        if name not in LOWER_VIEWS:
            return
        had_focus = self.focused is self.lower_widget()
        self.lower = name
        screen = self.screen_stack[0]
        screen.query_one("#lower", ContentSwitcher).current = name
        # the timeline needs a row per state: it gets more of the column than the details
        screen.query_one("#right").set_class(name == "timeline", "-tall-lower")
        widget = self.lower_widget()
        if name != "details":
            widget.border_title = TITLES[name]
        self.update_lower(self.view)
        if had_focus or name == "timeline":
            # the timeline's keys (zoom, pan, pin) work while it has focus
            self.screen_stack[0].set_focus(widget)

    def action_mark(self) -> None:
        """Mark the record at the cursor for the diff (again on the mark: clear it)."""
        s = self.session
        if s.selected is None or s.cursor < 0:
            self.notify("no record to mark", markup=False)
            return
        if self.marks.get(s.selected) == s.cursor:
            del self.marks[s.selected]
            self.notify(
                "mark cleared: the diff compares with the previous record", timeout=2, markup=False
            )
        else:
            self.marks[s.selected] = s.cursor
            self.notify(
                f"marked seq {s.cursor}; move the cursor to see the diff", timeout=2, markup=False
            )
        if self.lower == "details":
            self.action_show_lower("diff")
        else:
            self.update_lower(self.view)

    def action_maximize_lower(self) -> None:
        """Give the lower panel the whole screen, or restore the layout."""
        screen = self.screen_stack[0]
        if screen.maximized is not None:
            screen.minimize()
        else:
            widget = self.lower_widget()
            screen.set_focus(widget)
            screen.maximize(widget, container=False)

    def action_export(self) -> None:
        """Open the export dialog (session or selected machine; journal, JSONL, diagrams)."""
        s = self.session
        if not s.machines:
            self.notify("nothing to export yet", markup=False)
            return

        def done(choice: ExportChoice | None) -> None:
            if choice is not None:
                self.notify(f"exporting {choice.fmt} to {choice.path} …", timeout=2, markup=False)
                self._export(choice)

        self.push_screen(ExportScreen(s.selected, len(s.machines), self.export_dir), done)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, choice: ExportChoice) -> None:
        ids = None if choice.machine_id is None else [choice.machine_id]
        try:
            result = write_export(self.session.backend, choice.fmt, choice.path, ids)
        except BackendError as exc:
            self.post_message(Exported(None, str(exc)))
            return
        self.post_message(Exported(result))

    def on_exported(self, message: Exported) -> None:
        if message.result is None:
            self.notify(
                f"export failed: {message.error}", severity="error", timeout=10, markup=False
            )
            return
        r = message.result
        self.last_export = r
        what = "1 machine" if r.machines == 1 else f"{r.machines} machines"
        self.notify(
            f"wrote {r.path}\n{r.format}, {what}, {r.records} records", timeout=8, markup=False
        )

    # the app provides these
    if TYPE_CHECKING:

        def refresh_cursor(self) -> None: ...
