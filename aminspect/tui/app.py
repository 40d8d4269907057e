"""The inspector App: lays out the panels, maps keys to session moves, runs the workers."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Footer, Input, Label
from textual.worker import get_current_worker

from aminspect.filters import FilteredView, LogFilter
from aminspect.server import Disposed, GapStored, MachineDeclared, Stored
from aminspect.session import JUMP, CursorView, MachinesUpdate, Session
from aminspect.tui.commands import InspectorCommands
from aminspect.tui.filter_bar import FilterScreen, SearchBar
from aminspect.tui.screens import GoToSeqScreen, HelpScreen
from aminspect.tui.timeline import Timeline
from aminspect.tui.views import LowerViews
from aminspect.tui.widgets import (
    DetailsPane,
    HeaderBar,
    MachineTree,
    StateTree,
    TransitionLog,
    set_title,
)
from backends.base import BackendError

if TYPE_CHECKING:
    from aminspect.server import IngestEvent, IngestServer

__all__ = ["InspectorApp"]

# Actions that move the cursor with keys an Input also uses (arrows, home/end): they are
# priority bindings so they work whichever panel has focus, and are switched off while
# an Input (search, go to) or a modal screen has focus.
CURSOR_ACTIONS = frozenset({"step", "first", "last"})

# records per read of the background error count: a read decodes in C holding the GIL,
# so small chunks keep the UI thread's waits short
ERROR_SCAN_CHUNK = 512
# records per chunk where the record summary already covers them: counted from it in
# well under a millisecond, so the 1 ms pause and the message per 512 records (2 s and
# 2,000 messages for a million records) would be most of the count's time
SUMMARY_SCAN_CHUNK = 65_536

# seconds of no typing before the log search filters (search as you type)
SEARCH_DELAY = 0.15

# at most this many seconds from setting a filter to the start of its scan: it starts
# as soon as the frame showing the new filter is out (see _scan_filter)
FILTER_SCAN_WAIT = 0.1

# What the markers on screen mean, for the help screen.
LEGEND: list[tuple[str, str]] = [
    ("● ○ ·", "machine: live / disconnected / recorded;  !N  records with an error"),
    ("● ○", "state active / inactive;  ◆ ◇  a parallel region;  ∥  parallel state"),
    ("+ - ±", "the cursor record entered / exited / re-entered the state"),
    ("*", "the cursor record names (calls) the state"),
    ("!", "an error state (Exception, Err*, *Error, *Failed)"),
    ("✓ ✗ !", "log outcome: accepted / not accepted / error"),
    ("number", "a state's clock: +1 on enter and on exit; odd means active"),
    ("█ ▒ ▌ ─", "timeline: active / active for part of the column / re-entered / inactive"),
    ("▼ ◆", "timeline: the cursor / the mark (b)"),
]


class InspectorApp(LowerViews, App[None]):
    """The inspector: machine tree, state tree, transition log and details at a cursor.

    Args:
        session: the model (it holds the backend).
        server: an ingest server to run while the app runs (None for a read-only source).
        source: what to show in the header for a read-only source.
        on_listening: called with the server's URL once it listens (``aminspect demo``
            starts its child process from here).
        on_exit: called in a thread when the app exits, before its server stops
            (``aminspect demo`` stops its child here, so the child's last records still
            arrive and it does not wait on a closed socket).
        play_interval: seconds between records while playing.
        poll_interval: seconds between refreshes of live counts and the header.
    """

    # absolute, so that subclasses defined elsewhere (tests, benchmarks) find it too
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "aminspect"
    COMMANDS = App.COMMANDS | {InspectorCommands}
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "step(-1)", "Step", key_display="←→", priority=True),
        Binding("right", "step(1)", "Step forward", show=False, priority=True),
        Binding("pageup", f"step(-{JUMP})", f"±{JUMP}", key_display="PgUp/Dn", priority=True),
        Binding("pagedown", f"step({JUMP})", f"Jump +{JUMP}", show=False, priority=True),
        Binding("home", "first", "First", show=False, priority=True),
        Binding("end", "last", "Last", show=False, priority=True),
        Binding("k", "step(-1)", "Step back", show=False),
        Binding("j", "step(1)", "Step forward", show=False),
        Binding("K", f"step(-{JUMP})", f"Jump -{JUMP}", show=False),
        Binding("J", f"step({JUMP})", f"Jump +{JUMP}", show=False),
        Binding("g", "first", "First", show=False),
        Binding("G", "last", "Last", show=False),
        Binding("colon", "goto", "Go to", key_display=":"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("p", "toggle_play", "Play", show=False),  # in help: the footer fits 80 columns
        Binding("slash", "search", "Search", key_display="/"),
        Binding("m", "focus_machines", "Machines", show=False),
        Binding("left_square_bracket", "next_machine(-1)", "Prev machine", show=False),
        Binding("right_square_bracket", "next_machine(1)", "Next machine", show=False),
        Binding("escape", "escape", "Leave search", show=False),
        Binding("t", "toggle_theme", "Light/dark", show=False),
        Binding("v", "cycle_view", "View"),
        Binding("b", "mark", "Mark", show=False),
        Binding("E", "export", "Export", show=False),
        Binding("z", "maximize_lower", "Maximize panel", show=False),
        Binding("F", "filter", "Filter", show=False),
        Binding("e", "toggle_errors", "Errors only", show=False),
        Binding("x", "toggle_rejected", "Hide not accepted", show=False),
        Binding("n", "search_log", "Search log", show=False),
        Binding("X", "clear_filters", "Clear filters", show=False),
        Binding("left_curly_bracket", "change(-1)", "Prev change", show=False),
        Binding("right_curly_bracket", "change(1)", "Next change", show=False),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    class ViewReady(Message):
        """A worker computed the view at the cursor."""

        def __init__(self, view: CursorView) -> None:
            super().__init__()
            self.view = view

    class RowsLoaded(Message):
        """A worker cached rows of the log (coalesces)."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, InspectorApp.RowsLoaded)

    class MachinesFetched(Message):
        """A worker read machine records and counts."""

        def __init__(self, update: MachinesUpdate) -> None:
            super().__init__()
            self.update = update

    class ErrorsCounted(Message):
        """A worker counted the error records of ``[start, end)`` (``done`` ends a scan)."""

        def __init__(
            self, machine_id: str, start: int, end: int, errors: int, done: bool = False
        ) -> None:
            super().__init__()
            self.machine_id = machine_id
            self.start = start
            self.end = end
            self.errors = errors
            self.done = done

    class FilterScanned(Message):
        """A worker scanned more of the filtered view (coalesces); ``done``: it stopped."""

        def __init__(self, view: FilteredView | None = None) -> None:
            super().__init__()
            self.view = view  # set when the worker scanning it stopped
            self.done = view is not None

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, InspectorApp.FilterScanned) and not self.done

    class ChangeFound(Message):
        """A worker found the record ``seq`` that changed state ``state`` (None: none)."""

        def __init__(self, machine_id: str, state: str, seq: int | None, delta: int) -> None:
            super().__init__()
            self.machine_id = machine_id
            self.state = state
            self.seq = seq
            self.delta = delta

    class LoadFailed(Message):
        """A backend read failed; ``error`` is one line."""

        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(
        self,
        session: Session,
        *,
        server: IngestServer | None = None,
        source: str | None = None,
        on_listening: Callable[[str], object] | None = None,
        on_exit: Callable[[], object] | None = None,
        play_interval: float = 0.1,
        poll_interval: float = 0.25,
    ) -> None:
        super().__init__()
        self.session = session
        self.server = server
        self.source = source if source is not None else session.backend.url
        self.on_listening = on_listening
        self.on_exit = on_exit
        self.play_interval = play_interval
        self.poll_interval = poll_interval
        self.view: CursorView | None = None  # what the panels show now
        self.listen_error: str | None = None
        self._dirty: set[str] = set()
        self._disposed: set[str] = set()
        self._status_dirty = False
        self._fetching = False
        self._scanning = False
        self._main_screen: Screen[object] | None = None
        self._filter_scan: FilteredView | None = None  # the view a worker scans now
        # monotonic time of the user's last cursor move or filter (see _scan_errors);
        # not of moves following a live tail, or the error count would never run live
        self._last_move = 0.0
        self._last_delta = 0  # the last cursor key's move (prefetch repeats it first)
        self._search_timer: Timer | None = None
        self._gc_threshold = gc.get_threshold()
        self._last_gc = time.monotonic()
        self.selected_state: str | None = None  # for the change jumps, from the state tree

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield HeaderBar(id="header")
        with Horizontal(id="main"):
            with Vertical(id="left"):
                yield Input(placeholder="/ search machines", id="search")
                yield MachineTree(id="machines")
                yield StateTree(id="states")
            with Vertical(id="right"):
                with Horizontal(id="log-search-row"):
                    yield Label("search log:", id="log-search-label")
                    yield SearchBar(id="log-search")
                yield TransitionLog(self.session.row, id="log")
                yield from self.compose_lower()
        yield Footer(compact=True)

    @property
    def machine_tree(self) -> MachineTree:
        return self.main_screen.query_one(MachineTree)

    @property
    def state_tree(self) -> StateTree:
        return self.main_screen.query_one(StateTree)

    @property
    def log_view(self) -> TransitionLog:
        return self.main_screen.query_one(TransitionLog)

    @property
    def details_pane(self) -> DetailsPane:
        return self.main_screen.query_one(DetailsPane)

    @property
    def header_bar(self) -> HeaderBar:
        return self.main_screen.query_one(HeaderBar)

    @property
    def main_screen(self) -> Screen[object]:
        """The screen with the panels (``app.query`` would search a modal on top)."""
        if self._main_screen is None:
            self._main_screen = self.screen_stack[0]
        return self._main_screen

    def on_mount(self) -> None:
        self._main_screen = self.screen
        # Full collections of the cyclic GC took 86-200 ms each on a 1M-record history
        # and landed inside redraws (7 of 100 jumps: the whole p95). The objects made so
        # far live as long as the app: freeze them; run full collections only when the
        # user has not moved for a while (_idle_gc), never in the middle of keys.
        gc.freeze()
        self._gc_threshold = gc.get_threshold()
        self._last_gc = time.monotonic()
        gc.set_threshold(self._gc_threshold[0], self._gc_threshold[1], 1_000_000)
        self.set_interval(5.0, self._idle_gc)
        self.machine_tree.border_title = "machines"
        self.state_tree.border_title = "states"
        self.details_pane.border_title = "record"
        self.details_pane.show_message("no record")
        self.state_tree.show_states([])
        self._update_titles()
        self._update_header()
        self.log_view.focus()
        self._play_timer = self.set_interval(self.play_interval, self._play_tick, pause=True)
        if self.server is not None:
            self.run_worker(self._start_server(), group="server", exclusive=True)
            self.set_interval(self.poll_interval, self._poll)
        self._start_fetch(None)

    async def _start_server(self) -> None:
        assert self.server is not None
        try:
            await self.server.start()
        except OSError as exc:
            host, port = self.server.address
            self.listen_error = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            self.notify(self.listen_error, severity="error", timeout=10)
            self._update_header()
            return
        self.server.add_listener(self._on_ingest)
        self.log_view.empty_hint = (
            f"waiting for tracers; run your app with\nAMINSPECT_URL={self.server.url}"
        )
        self.log_view.refresh()
        self._update_header()
        if self.on_listening is not None:
            self.on_listening(self.server.url)

    def _idle_gc(self) -> None:
        now = time.monotonic()
        # following a live tail moves the cursor all the time: collect at least once a
        # minute anyway, so cyclic garbage stays bounded
        if now - self._last_move > 2.0 or now - self._last_gc > 60.0:
            gc.collect()
            self._last_gc = time.monotonic()

    async def on_unmount(self) -> None:
        gc.set_threshold(*self._gc_threshold)
        gc.unfreeze()  # collectable again once the app is gone (tests run many apps)
        if self.on_exit is not None:
            await asyncio.to_thread(self.on_exit)
        if self.server is not None:
            self.server.remove_listener(self._on_ingest)
            await self.server.stop()

    # -- live ingest -----------------------------------------------------------------------

    def _on_ingest(self, event: IngestEvent) -> None:
        """Server listener, on the event loop: note what changed; ``_poll`` acts on it, so
        a burst of ten thousand records costs one refresh, not ten thousand."""
        if isinstance(event, Stored | GapStored):
            self._dirty.add(event.machine_id)
        elif isinstance(event, MachineDeclared):
            self._dirty.add(event.machine.id)
            self._disposed.discard(event.machine.id)
            self._status_dirty = True
        elif isinstance(event, Disposed):
            self._disposed.add(event.machine_id)
            self._status_dirty = True
        else:
            self._status_dirty = True

    def live_machines(self) -> set[str]:
        """Machines a connected tracer streams now."""
        if self.server is None:
            return set()
        live: set[str] = set()
        for ids in self.server.machines_per_connection.values():
            live |= ids
        return live - self._disposed

    def _poll(self) -> None:
        if not self.main_screen.is_attached:
            return  # shutting down: a last tick after the screen's widgets went away
        self._update_header()
        if self._status_dirty:
            self._status_dirty = False
            if self.session.set_live(self.live_machines()):
                self._refresh_tree()
        if self._dirty and not self._fetching:
            dirty, self._dirty = self._dirty, set()
            self._start_fetch(dirty)

    def refresh_now(self) -> None:
        """Apply what the server reported so far (tests call this instead of waiting)."""
        self._poll()

    def _start_fetch(self, ids: Iterable[str] | None) -> None:
        self._fetching = True
        self._fetch_machines(None if ids is None else list(ids))

    @work(thread=True, group="machines")
    def _fetch_machines(self, ids: list[str] | None) -> None:
        try:
            update = self.session.fetch_machines(ids)
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))
            update = MachinesUpdate((), {}, {})
        self.post_message(self.MachinesFetched(update))

    def on_inspector_app_machines_fetched(self, message: MachinesFetched) -> None:
        self._fetching = False
        before = (self.session.selected, self.session.count, self.session.cursor)
        changed = self.session.apply_machines(message.update)
        if self.server is not None:
            changed = self.session.set_live(self.live_machines()) or changed
        if changed:
            self._refresh_tree()
        after = (self.session.selected, self.session.count, self.session.cursor)
        if after != before or self.view is None:
            self.refresh_cursor()
        self._start_error_scan()

    # -- error counts, in the background ---------------------------------------------------

    def _start_error_scan(self) -> None:
        if not self._scanning:
            plan = self.session.error_scan_plan()
            if plan:
                self._scanning = True
                self._scan_errors(plan)

    @work(thread=True, group="errors")
    def _scan_errors(self, plan: list[tuple[str, int, int]]) -> None:
        """Count error records chunk by chunk, reading storage the user does not wait on:
        a 1M-record history opens at once and its error markers fill in after."""
        try:
            for machine_id, start, end in plan:
                pos = start
                summary = self.session.summary(machine_id)
                while pos < end:
                    stop = min(end, pos + SUMMARY_SCAN_CHUNK)
                    if summary is None or not summary.covers(pos, stop):
                        stop = min(end, pos + ERROR_SCAN_CHUNK)
                    errors = self.session.count_errors(machine_id, pos, stop)
                    self.post_message(self.ErrorsCounted(machine_id, pos, stop, errors))
                    pos = stop
                    time.sleep(0.001)  # leave the GIL to the UI thread between chunks
                    # and leave it alone while the user moves: a chunk decodes holding
                    # the GIL, which made the p95 of a step 5x its median on 1M records
                    while time.monotonic() - self._last_move < 0.5:
                        time.sleep(0.05)
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))
        finally:
            self.post_message(self.ErrorsCounted("", 0, 0, 0, done=True))

    def on_inspector_app_errors_counted(self, message: ErrorsCounted) -> None:
        if message.done:
            self._scanning = False
            self._start_error_scan()  # records that arrived meanwhile
        elif message.errors:
            if self.session.apply_errors(
                message.machine_id, message.start, message.end, message.errors
            ):
                self._refresh_tree()
        else:
            self.session.apply_errors(message.machine_id, message.start, message.end, 0)

    def _update_header(self) -> None:
        header = self.header_bar
        if self.server is None:
            header.show_source(self.source)
        elif self.listen_error is not None:
            header.show_source(self.listen_error, "not listening")
        else:
            dropped = self.server.dropped
            header.show_live(
                self.server.url, len(self.server.connections), self.server.ingest_rate, dropped
            )

    # -- showing the cursor ------------------------------------------------------------------

    def _update_filter_status(self) -> None:
        self.header_bar.show_filter(self.session.filter_status())

    def _refresh_tree(self) -> None:
        self.machine_tree.show_rows(self.session.tree_rows(), self.session.selected)

    def _update_titles(self) -> None:
        s = self.session
        set_title(self.log_view, s.describe())
        set_title(self.state_tree, f"states @ {s.cursor}" if s.cursor >= 0 else "states")

    def refresh_cursor(self) -> None:
        """Point every panel at the session's cursor: the log now, the rest when the view
        worker reports back."""
        s = self.session
        entry = s.entry
        rows, row, seq_of = s.log_rows()
        self.log_view.show(
            s.selected,
            rows,
            row,
            entry.first if entry else 0,
            seq_of=seq_of,
            cursor_seq=s.cursor,
            max_seq=s.count - 1,
        )
        self._update_titles()
        self._update_filter_status()
        if s.selected is None:
            return
        self._start_filter_scan()
        start, end, seqs = self.log_view.visible_seqs()
        view = s.cached_view(s.selected, s.cursor)
        if view is not None:
            # a step within cached pages: no worker round trip (a redraw, not a read)
            self.workers.cancel_group(self, "view")
            self.show_view(view)
            if s.rows_missing(s.selected, start, end, seqs):
                self._load_rows(s.selected, start, end, seqs)
            return
        self._load_view(s.selected, s.cursor, start, end, seqs)

    @work(thread=True, exclusive=True, group="view")
    def _load_view(
        self, machine_id: str, seq: int, start: int, end: int, seqs: tuple[int, ...] | None = None
    ) -> None:
        worker = get_current_worker()
        try:
            # the cursor's view first, then the rest of the screen's rows: a filtered
            # screen's rows lie on up to one page each, read after the panels show
            view = self.session.view(machine_id, seq)
            if not worker.is_cancelled:
                self.post_message(self.ViewReady(view))
            if self.session.load_rows(machine_id, start, end, seqs):
                self.post_message(self.RowsLoaded())
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))

    def on_inspector_app_view_ready(self, message: ViewReady) -> None:
        view = message.view
        if view.machine_id != self.session.selected or view.seq != self.session.cursor:
            return  # the cursor moved on; a newer view is on its way
        self.show_view(view)

    def show_view(self, view: CursorView) -> None:
        self.view = view
        self.state_tree.show_states(view.states)
        if view.record is None:
            set_title(self.details_pane, "record")
            self.details_pane.show_message("no records yet")
        else:
            set_title(self.details_pane, f"record {view.record.id}")
            self.details_pane.show_details(view.details)
        self.log_view.refresh_rows()
        self.update_lower(view)
        # once this frame is out: the next key's view is likely a step or jump away
        self.call_after_refresh(self._start_prefetch)

    def _start_prefetch(self) -> None:
        s = self.session
        view = self.view
        if view is None or view.seq < 0 or view.machine_id != s.selected or view.seq != s.cursor:
            return
        self._prefetch(view.machine_id, view.seq, self.log_view.page_height, self._last_delta)

    @work(thread=True, exclusive=True, group="prefetch")
    def _prefetch(self, machine_id: str, seq: int, rows: int, ahead: int) -> None:
        """Cache the views and rows a step or jump from ``seq`` shows, so the next cursor
        key redraws from caches (a jump back, or any move of a sparse filter, otherwise
        waited for a worker's read: 2-3 times a step's time)."""
        worker = get_current_worker()
        try:
            self.session.prefetch(machine_id, seq, rows, lambda: worker.is_cancelled, ahead)
        except BackendError:
            pass  # the keys read it again, and report what fails then

    @on(TransitionLog.WindowChanged)
    def _window_changed(self, message: TransitionLog.WindowChanged) -> None:
        m = message
        if self.session.rows_missing(m.machine_id, m.start, m.end, m.seqs):
            self._load_rows(m.machine_id, m.start, m.end, m.seqs)

    @work(thread=True, exclusive=True, group="rows")
    def _load_rows(
        self, machine_id: str, start: int, end: int, seqs: tuple[int, ...] | None = None
    ) -> None:
        try:
            self.session.load_rows(machine_id, start, end, seqs)
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))
            return
        self.post_message(self.RowsLoaded())

    def on_inspector_app_rows_loaded(self) -> None:
        self.log_view.refresh_rows()

    def on_inspector_app_load_failed(self, message: LoadFailed) -> None:
        self.notify(message.error, severity="error", timeout=8)

    @on(TransitionLog.Clicked)
    def _clicked(self, message: TransitionLog.Clicked) -> None:
        self.session.goto(message.seq)
        self.refresh_cursor()

    @on(MachineTree.Chosen)
    def _chosen(self, message: MachineTree.Chosen) -> None:
        self.choose(message.machine_id)

    def choose(self, machine_id: str) -> None:
        """Select a machine everywhere."""
        if machine_id not in self.session.machines or machine_id == self.session.selected:
            return
        self.session.select(machine_id)
        self.selected_state = None  # state indexes belong to the machine left
        self.state_tree.select_state(None)
        self._refresh_tree()
        self.refresh_cursor()

    # -- search --------------------------------------------------------------------------

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.session.search = event.value
        query = event.value.strip()
        self.machine_tree.border_title = f"machines ~ {query}" if query else "machines"
        self._refresh_tree()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        matches = [r for r in self.session.tree_rows() if r.match]
        if matches:
            self.choose(matches[0].machine_id)
        self._focus_now(self.machine_tree)

    # -- filters -----------------------------------------------------------------------------

    def apply_filter(self, flt: LogFilter) -> None:
        """Filter the log (and the machine tree by its machine part) and redraw."""
        self._last_move = time.monotonic()
        s = self.session
        machine_changed = flt.machine != s.filter.machine
        s.set_filter(flt)
        if machine_changed:
            self._refresh_tree()
        bar = self.main_screen.query_one(SearchBar)
        typing = self.main_screen.focused is bar
        self.main_screen.query_one("#log-search-row").set_class(
            bool(flt.search) or typing, "-shown"
        )
        if bar.value != flt.search and not typing:
            bar.value = flt.search
        self.refresh_cursor()

    def _start_filter_scan(self) -> None:
        fv = self.session.filtered
        if fv is None or fv.complete or self._filter_scan is fv:
            return
        self._filter_scan = fv
        drawn = threading.Event()
        self.call_after_refresh(drawn.set)
        self._scan_filter(fv, drawn)

    @work(thread=True, exclusive=True, group="filter")
    def _scan_filter(self, fv: FilteredView, drawn: threading.Event) -> None:
        """Scan the filtered view block by block, reporting every 50 ms: rows appear as
        they are found and the cursor moves over them meanwhile.

        It starts once the screen that set the filter is drawn (``drawn``): scanning
        holds the GIL, and the UI thread waited for it at every turn of its event loop,
        so the filter key's frame took twice its CPU time (13 ms against 8 on 1M records,
        a p95 of 23 ms against 8). The wait is bounded in case that screen never draws.
        """
        drawn.wait(FILTER_SCAN_WAIT)
        worker = get_current_worker()
        last = slice_start = time.monotonic()
        try:
            while not fv.complete and not worker.is_cancelled:
                self.session.scan_view(fv, 1)
                now = time.monotonic()
                if now - slice_start > 0.01:
                    # hand the GIL to the UI thread every 10 ms, not every block: each
                    # hand-over can cost a 5 ms switch interval to get it back, which
                    # made a summarised 1M-record filter take 1.5 s instead of 0.1 s
                    time.sleep(0)
                    slice_start = time.monotonic()
                if now - last > 0.05:
                    self.post_message(self.FilterScanned())
                    last = now
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))
        finally:
            self.post_message(self.FilterScanned(fv))

    def on_inspector_app_filter_scanned(self, message: FilterScanned) -> None:
        if message.done and message.view is self._filter_scan:
            # records may have arrived after the worker's last look: refresh_cursor
            # starts another scan when the view is not complete
            self._filter_scan = None
        self.session.snap_cursor()
        self.refresh_cursor()

    @on(SearchBar.Searched)
    def _searched(self, message: SearchBar.Searched) -> None:
        if self._search_timer is not None:
            self._search_timer.stop()
            self._search_timer = None
        flt = replace(self.session.filter, search=message.text.strip())
        if message.done:
            self._focus_now(self.log_view)
            self.apply_filter(flt)  # also hides the bar when the search is empty
            return
        # filter once typing pauses: each filter scans the whole history again, and a
        # scan per keystroke kept the UI thread from drawing the keys (245 ms per key
        # on 1M records, against one redraw now)
        self._search_timer = self.set_timer(SEARCH_DELAY, lambda: self.apply_filter(flt))

    @on(StateTree.StateSelected)
    def _state_selected(self, message: StateTree.StateSelected) -> None:
        self.selected_state = message.name

    def action_filter(self) -> None:
        def done(flt: LogFilter | None) -> None:
            if flt is not None:
                self.apply_filter(flt)

        self.push_screen(FilterScreen(self.session.filter), done)

    def action_toggle_errors(self) -> None:
        f = self.session.filter
        self.apply_filter(replace(f, errors_only=not f.errors_only))

    def action_toggle_rejected(self) -> None:
        f = self.session.filter
        self.apply_filter(replace(f, hide_rejected=not f.hide_rejected))

    def action_clear_filters(self) -> None:
        self.apply_filter(LogFilter())

    def action_search_log(self) -> None:
        self.main_screen.query_one("#log-search-row").add_class("-shown")
        self._focus_now(self.main_screen.query_one(SearchBar))

    def action_change(self, delta: int) -> None:
        """Jump to the previous (-1) or next (1) record that changed the selected state."""
        s = self.session
        state = self.selected_state
        if s.selected is None or s.cursor < 0:
            return
        if state is None:
            self.notify("select a state first: tab to the states panel, then ↑↓ or click")
            return
        self._find_change(s.selected, state, s.cursor, delta)

    @work(thread=True, exclusive=True, group="change")
    def _find_change(self, machine_id: str, state: str, seq: int, delta: int) -> None:
        try:
            found = self.session.find_change(machine_id, state, seq, backwards=delta < 0)
        except BackendError as exc:
            self.post_message(self.LoadFailed(str(exc)))
            return
        self.post_message(self.ChangeFound(machine_id, state, found, delta))

    def on_inspector_app_change_found(self, message: ChangeFound) -> None:
        if message.machine_id != self.session.selected:
            return
        if message.seq is None:
            where = "earlier" if message.delta < 0 else "later"
            self.notify(f"no {where} change of {message.state}")
            return
        self.session.goto(message.seq)
        self.refresh_cursor()

    # -- actions -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        blocked = isinstance(self.screen, ModalScreen) or isinstance(self.focused, Input)
        return not (action in CURSOR_ACTIONS and blocked)

    def action_step(self, delta: int) -> None:
        """Move the cursor ``delta`` records (negative: back in time)."""
        self.session.playing = False
        self._play_timer.pause()
        self._last_move = time.monotonic()
        self._last_delta = delta
        self.session.step(delta)
        self.refresh_cursor()

    def action_first(self) -> None:
        self._last_move = time.monotonic()
        self.session.first()
        self.refresh_cursor()

    def action_last(self) -> None:
        self._last_move = time.monotonic()
        self.session.last()
        self.refresh_cursor()

    def action_goto(self) -> None:
        if self.session.count == 0:
            self.notify("no records to go to")
            return

        def done(seq: int | None) -> None:
            if seq is not None:
                self.session.goto(seq)
                self.refresh_cursor()

        self.push_screen(GoToSeqScreen(self.session.count - 1), done)

    def action_toggle_follow(self) -> None:
        self.session.set_follow(not self.session.follow)
        self._play_timer.pause()
        self.refresh_cursor()

    def action_toggle_play(self) -> None:
        if self.session.toggle_play():
            self._play_timer.resume()
        else:
            self._play_timer.pause()
        self.refresh_cursor()

    def _play_tick(self) -> None:
        moved = self.session.play_tick()
        if not self.session.playing:
            self._play_timer.pause()
        if moved or not self.session.playing:
            self.refresh_cursor()

    def action_play_tick(self) -> None:
        """One step of playback (the play timer's tick)."""
        self._play_tick()

    def action_search(self) -> None:
        self._focus_now(self.main_screen.query_one("#search", Input))

    def action_escape(self) -> None:
        """Leave the search box, clearing the filter (so every machine shows again)."""
        search = self.main_screen.query_one("#search", Input)
        if isinstance(self.focused, Input) or search.value:
            search.value = ""  # posts Changed: the tree shows every machine again
            self._focus_now(self.machine_tree)

    def action_next_machine(self, delta: int) -> None:
        ids = [r.machine_id for r in self.session.tree_rows()]
        if not ids:
            return
        cur = ids.index(self.session.selected) if self.session.selected in ids else -1
        self.choose(ids[(cur + delta) % len(ids)])

    def action_focus_machines(self) -> None:
        self._focus_now(self.machine_tree)

    def _panels(self) -> list[Widget]:
        # Tab from the log (focused at start) lands on the machines, what a new user
        # reaches for first; the search box is left out (/ focuses it)
        return [self.log_view, self.machine_tree, self.state_tree, self.lower_widget()]

    def action_focus_next(self) -> None:
        self._cycle_focus(1)

    def action_focus_previous(self) -> None:
        self._cycle_focus(-1)

    def _focus_now(self, widget: Widget) -> None:
        """Focus ``widget`` before the next key is handled. ``Widget.focus()`` is deferred:
        a key typed right after ``/`` or tab would still reach the panel being left (and
        typing "/shop" fast would toggle play with its "p")."""
        self.main_screen.set_focus(widget)

    def _cycle_focus(self, delta: int) -> None:
        if self.screen is not self.main_screen:
            # a modal (help, go to) keeps Textual's own order
            if delta > 0:
                self.screen.focus_next()
            else:
                self.screen.focus_previous()
            return
        panels = self._panels()
        cur = panels.index(self.focused) if self.focused in panels else -1
        if cur < 0 and delta < 0:
            cur = 0
        self._focus_now(panels[(cur + delta) % len(panels)])

    def action_focus_details(self) -> None:
        self._focus_now(self.lower_widget())  # the details, or the timeline / diff shown

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.theme == "textual-dark" else "textual-dark"

    def watch_theme(self) -> None:
        # component styles are baked into rendered lines: render them again
        if self._main_screen is not None:
            self._refresh_tree()
            if self.view is not None:
                self.show_view(self.view)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.help_sections()))

    # -- what the help screen and the palette list -------------------------------------------

    def key_table(self) -> list[tuple[str, str]]:
        """Every key binding of the app and the log, as (keys, description)."""
        rows: dict[str, list[str]] = {}
        order: list[str] = []
        bindings: list[Binding] = [b for b in self.BINDINGS if isinstance(b, Binding)]
        bindings += [b for b in TransitionLog.BINDINGS if isinstance(b, Binding)]
        bindings += [b for b in Timeline.BINDINGS if isinstance(b, Binding)]
        for b in bindings:
            desc = _DESCRIPTIONS.get(b.action, b.description)
            if desc not in rows:
                rows[desc] = []
                order.append(desc)
            for key in b.key.split(","):
                shown = _KEY_NAMES.get(key, key)
                if shown not in rows[desc]:
                    rows[desc].append(shown)
        return [(" ".join(rows[d]), d) for d in order]

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        return [
            ("Keys", self.key_table()),
            (
                "Panels and mouse",
                [
                    ("tab shift+tab", "move focus: log, machines, states, lower panel"),
                    ("↑ ↓", "in the machine tree: select the machine above / below"),
                    ("click", "select a machine; move the cursor to a log row or timeline column"),
                    ("wheel", "scroll a panel (the cursor stays where it is)"),
                    ("ctrl+p", "command palette: every action, select any machine"),
                ],
            ),
            ("Markers", LEGEND),
        ]

    def palette_actions(self) -> list[tuple[str, str, str]]:
        """(title, help, action) for the command palette: every action of the app."""
        return [(title, help_text, action) for action, title, help_text in _PALETTE]


_KEY_NAMES = {
    "left": "←",
    "right": "→",
    "up": "↑",
    "down": "↓",
    "colon": ":",
    "slash": "/",
    "question_mark": "?",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "left_curly_bracket": "{",
    "right_curly_bracket": "}",
    "plus": "+",
    "equals_sign": "=",
    "minus": "-",
    "less_than_sign": "<",
    "greater_than_sign": ">",
    "comma": ",",
    "full_stop": ".",
}

_DESCRIPTIONS = {
    "step(-1)": "step back one record",
    "step(1)": "step forward one record",
    f"step(-{JUMP})": f"jump back {JUMP} records",
    f"step({JUMP})": f"jump forward {JUMP} records",
    "first": "first record",
    "last": "last record (and follow the live tail)",
    "goto": "go to a seq",
    "toggle_follow": "follow the live tail on/off",
    "toggle_play": "play / pause",
    "app.step(-1)": "step back one record",
    "app.step(1)": "step forward one record",
    "app.toggle_play": "play / pause",
    "app.focus_details": "in the log: focus the details pane",
    "search": "search machines (type to filter, enter selects)",
    "focus_machines": "focus the machine tree",
    "next_machine(-1)": "previous machine",
    "next_machine(1)": "next machine",
    "escape": "leave the search box and clear the filter",
    "toggle_theme": "light / dark theme",
    "cycle_view": "lower panel: record / timeline / diff",
    "mark": "mark the record for the diff (again: clear the mark)",
    "export": "export the session or a machine: journal, JSONL, Mermaid, DOT",
    "maximize_lower": "maximize the lower panel (again: restore)",
    "zoom(-1)": "timeline: zoom in / out",
    "zoom(1)": "timeline: zoom in / out",
    "pan(-1)": "timeline: pan left / right (the cursor stays)",
    "pan(1)": "timeline: pan left / right (the cursor stays)",
    "toggle_scale": "timeline: tick / wall-time scale",
    "centre": "timeline: centre on the cursor",
    "row(-1)": "timeline: choose a state (for pin and hide)",
    "row(1)": "timeline: choose a state (for pin and hide)",
    "pin": "timeline: pin the chosen state on top (again: unpin)",
    "hide": "timeline: hide the chosen state",
    "unhide": "timeline: show hidden states again",
    "filter": "filter the log: kinds, events, states, machines, errors",
    "toggle_errors": "filter: errors only on/off",
    "toggle_rejected": "filter: hide not-accepted events on/off",
    "search_log": "search the log as you type (events, kinds, states)",
    "clear_filters": "clear every filter",
    "change(-1)": "previous change of the selected state (states panel ↑↓)",
    "change(1)": "next change of the selected state",
    "help": "this help",
    "quit": "quit",
}

_PALETTE: list[tuple[str, str, str]] = [
    ("filter", "Filter the log", "kinds, event names, states touched, machines, errors"),
    ("toggle_errors", "Filter: errors only", "show only records that failed with an error"),
    ("toggle_rejected", "Filter: hide not accepted", "hide refused and guarded events"),
    ("search_log", "Search the log", "type to filter by event, kind or state name"),
    ("clear_filters", "Clear filters", "show every record again"),
    ("change(-1)", "Previous change of the state", "the selected state's last change before"),
    ("change(1)", "Next change of the state", "the selected state's next change after"),
    ("step(-1)", "Step back", "move the cursor one record back"),
    ("step(1)", "Step forward", "move the cursor one record forward"),
    (f"step(-{JUMP})", f"Jump back {JUMP}", f"move the cursor {JUMP} records back"),
    (f"step({JUMP})", f"Jump forward {JUMP}", f"move the cursor {JUMP} records forward"),
    ("first", "First record", "move the cursor to the first record"),
    ("last", "Last record", "move the cursor to the last record and follow the tail"),
    ("goto", "Go to seq", "jump to a seq number"),
    ("toggle_follow", "Toggle follow tail", "keep the cursor on the newest record"),
    ("toggle_play", "Play / pause", "replay records one by one"),
    ("search", "Search machines", "filter the machine tree"),
    ("focus_machines", "Focus machine tree", "move the keyboard focus to the machines"),
    ("next_machine(1)", "Next machine", "select the next machine in the tree"),
    ("next_machine(-1)", "Previous machine", "select the previous machine in the tree"),
    ("focus_details", "Focus details", "scroll the record details"),
    ("toggle_theme", "Toggle light/dark theme", "switch between textual-dark and -light"),
    ("cycle_view", "Cycle lower panel", "record details, timeline, diff"),
    ("show_lower('timeline')", "Show timeline", "states over time around the cursor"),
    ("show_lower('diff')", "Show diff", "what changed since the mark or the previous record"),
    ("show_lower('details')", "Show record details", "every field of the cursor record"),
    ("mark", "Mark record", "mark the cursor record; the diff compares the cursor with it"),
    ("export", "Export…", "session or machine to a journal, JSON Lines, Mermaid or DOT"),
    ("maximize_lower", "Maximize lower panel", "the timeline, diff or record on the whole screen"),
    ("help", "Help", "every key and marker"),
    ("quit", "Quit", "leave aminspect"),
]
