"""The inspector's widgets: header, machine tree, state tree, transition log, details.

Widgets are thin: the app sets what they show (attributes down) and they post messages
for what the user asks (messages up). None of them reads the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import ceil
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import Reactive
from textual.scroll_view import ScrollView
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from aminspect.session import (
    DetailLine,
    LogRow,
    MachineStatus,
    Outcome,
    StateRow,
    TreeRow,
)

__all__ = [
    "DetailsPane",
    "HeaderBar",
    "LinesView",
    "MachineTree",
    "StateTree",
    "TransitionLog",
    "set_title",
]

STATUS_GLYPH = {
    MachineStatus.LIVE: "●",
    MachineStatus.DISCONNECTED: "○",
    MachineStatus.RECORDED: "·",
}
OUTCOME_GLYPH = {Outcome.ACCEPTED: "✓", Outcome.REJECTED: "✗", Outcome.ERROR: "!"}


def human_count(n: float) -> str:
    """``950``, ``12.3k``, ``1.2M``: counts in at most 5 characters."""
    if n < 1000:
        return f"{n:.0f}"
    if n < 1_000_000:
        return f"{n / 1000:.1f}k" if n < 10_000 else f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M"


# A log row's outcome: the overlay over its spans, and the style of its glyph.
_OVERLAY = {Outcome.ACCEPTED: "", Outcome.REJECTED: "rejected", Outcome.ERROR: "error"}
_OUTCOME_STYLE = {Outcome.ACCEPTED: "entered", Outcome.REJECTED: "rejected", Outcome.ERROR: "error"}


def set_title(widget: Widget, title: str) -> None:
    """Set ``widget``'s border title, repainting only the border line that shows it.

    Textual's ``border_title`` setter repaints the whole widget: the titles that follow
    the cursor ("states @ N", "record N") then repainted three whole panels per step,
    so every step composed most of the screen again (half of a step's UI time).

    Args:
        widget: the widget (any border; without one the title is not drawn).
        title: the new title (console markup, as for ``border_title``).
    """
    if widget.border_title == title:
        return
    if not widget.is_mounted or not widget.size or not hasattr(widget, "_border_title"):
        widget.border_title = title
        return
    # what the setter stores, without its full repaint
    widget._border_title = widget.render_str(title).expand_tabs(4).split()[0]
    gutter = widget.styles.gutter
    # refresh regions are relative to the content: the top border is above it
    widget.refresh(Region(-gutter.left, -gutter.top, widget.outer_size.width, 1))


class HeaderBar(Static):
    """One line: the listen address (or the opened source), connections, rate, dropped,
    and the log's filter with how many records it hides."""

    _base: Text | None = None
    _note = ""
    _shown: tuple[str, str] | None = None

    def show_live(self, url: str, connections: int, rate: float, dropped: int) -> None:
        text = Text.assemble(
            ("aminspect", "bold"),
            "  ",
            (url, "bold"),
            f"  {connections} conn  {human_count(rate)} rec/s  ",
            (f"{dropped} dropped", "bold red" if dropped else ""),
        )
        self._show(text)

    def show_source(self, source: str, note: str = "read-only") -> None:
        self._show(Text.assemble(("aminspect", "bold"), "  ", (source, "bold"), f"  ({note})"))

    def show_filter(self, note: str) -> None:
        """Show the filter status after the rest (empty: no filter)."""
        self._note = note
        if self._base is not None:
            self._show(self._base)

    def _show(self, base: Text) -> None:
        self._base = base
        key = (base.markup, self._note)
        if key == self._shown:
            return  # an update lays the header out again: skip it when nothing changed
        self._shown = key
        text = base.copy()
        if self._note:
            text.append("  │ ")
            text.append(self._note, style="bold")
        # one line of a fixed height: no layout pass (it runs four times a second live)
        self.update(text, layout=False)


class MachineTree(Tree[str]):
    """Every machine seen, nested by parent, with status markers and record counts.

    The cursor is the selection: moving it with the keys while the tree has focus, enter
    and click post ``MachineTree.Chosen``, so the other panels follow at once.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        # the Tree's own cursor keys, shown in the footer while the tree has focus
        Binding("up", "cursor_up", "Machine", key_display="↑↓"),
        Binding("down", "cursor_down", "Next machine", show=False),
    ]

    class Chosen(Message):
        """The user selected a machine."""

        def __init__(self, machine_id: str) -> None:
            super().__init__()
            self.machine_id = machine_id

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "machine-tree--live",
        "machine-tree--disconnected",
        "machine-tree--recorded",
        "machine-tree--error",
        "machine-tree--count",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("machines", id=id)
        self.show_root = False
        self.auto_expand = False
        self.guide_depth = 2
        self._shape: tuple[tuple[str, str | None], ...] = ()
        self._by_id: dict[str, TreeNode[str]] = {}

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(f"machine-tree--{name}", partial=True)

    def label_of(self, row: TreeRow, selected: bool) -> Text:
        text = Text()
        text.append(STATUS_GLYPH[row.status] + " ", style=self._style(row.status.value))
        name_style = Style(bold=selected, dim=not row.match)
        text.append(row.machine_id, style=name_style)
        text.append(f" {human_count(row.count)}", style=self._style("count"))
        if row.transitions is not None:  # an HSM node: its own transition count
            text.append(f" ↻{human_count(row.transitions)}", style=self._style("count"))
        if row.errors:
            text.append(f" !{row.errors}", style=self._style("error"))
        return text

    def show_rows(self, rows: Sequence[TreeRow], selected: str | None) -> None:
        """Show ``rows``; rebuilds only when the set of machines or their nesting changed."""
        shape = tuple((r.machine_id, r.parent_id) for r in rows)
        if shape != self._shape:
            self._shape = shape
            self.clear()
            self._by_id = {}
            for row in rows:
                parent = self._by_id.get(row.parent_id or "", self.root)
                node = parent.add(self.label_of(row, row.machine_id == selected), row.machine_id)
                node.allow_expand = False
                node.expand()
                self._by_id[row.machine_id] = node
            for node in self._by_id.values():
                node.allow_expand = bool(node.children)
            self.show_selected(selected)
        else:
            for row in rows:
                self._by_id[row.machine_id].set_label(
                    self.label_of(row, row.machine_id == selected)
                )
            self.show_selected(selected)

    def show_selected(self, machine_id: str | None) -> None:
        """Put the cursor on ``machine_id`` (selected elsewhere: palette, brackets, search)."""
        node = self._by_id.get(machine_id or "")
        # reading last_line lays the lines out now: right after a rebuild the nodes'
        # line numbers are stale and the cursor would land on the first machine
        if node is not None and self.cursor_node is not node and self.last_line >= 0:
            self.move_cursor(node)

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        event.stop()
        # Only the user's own moves select: a rebuild moves the cursor too, and by the
        # time its message arrives the cursor may be elsewhere.
        if self.has_focus and event.node is self.cursor_node and event.node.data is not None:
            self.post_message(self.Chosen(event.node.data))

    def on_tree_node_selected(self, event: Tree.NodeSelected[str]) -> None:
        event.stop()
        if event.node.data is not None:
            self.post_message(self.Chosen(event.node.data))


class _StyleCache(ScrollView):
    """Caches the widget's base style and its component styles between style updates.

    Computing ``rich_style`` walks every ancestor's styles; done per rendered line it was
    most of a redraw (a full 120x40 screen measured 82 ms before, 30 ms with the cache,
    on a busy 2-core machine).
    """

    _prefix: ClassVar[str] = ""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._styles: dict[str, Style] = {}
        self._style_gen = 0  # bumped whenever the styles change: cached strips are stale

    def _clear_styles(self) -> None:
        self._styles.clear()
        self._style_gen += 1

    def notify_style_update(self) -> None:
        self._clear_styles()
        super().notify_style_update()

    def on_focus(self) -> None:
        self._clear_styles()

    def on_blur(self) -> None:
        self._clear_styles()

    @property
    def base_style(self) -> Style:
        style = self._styles.get("")
        if style is None:
            style = self._styles[""] = self.rich_style
        return style

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(
                f"{self._prefix}--{name}", partial=True
            )
        return style


class LinesView(_StyleCache):
    """A scrollable list of rich Text lines rendered with the Line API.

    Rendered strips are kept per line and ``set_lines`` repaints only the lines that
    changed: a step changes two or three rows of the state tree, and repainting the
    whole panel was a third of a step's redraw (measured with cProfile).
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Text] = []
        self._strips: dict[int, Strip] = {}
        self._strip_key: tuple[int, int, int] = (0, 0, -1)

    @property
    def lines(self) -> list[Text]:
        return self._lines

    def set_lines(self, lines: list[Text]) -> None:
        old = self._lines
        self._lines = lines
        width = max((line.cell_len for line in lines), default=0)
        size = Size(width, len(lines))
        if len(old) == len(lines) and size == self.virtual_size and self._strips:
            for i, (a, b) in enumerate(zip(old, lines, strict=True)):
                if a.plain != b.plain or a.spans != b.spans:
                    self._strips.pop(i, None)
                    self.refresh_line(i)
            return
        self._strips.clear()
        self.virtual_size = size
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.base_style
        key = (scroll_x, width, self._style_gen)
        if key != self._strip_key:
            self._strips = {}
            self._strip_key = key
        i = scroll_y + y
        if i >= len(self._lines):
            return Strip.blank(width, base)
        strip = self._strips.get(i)
        if strip is None:
            line = self._lines[i].copy()
            line.stylize_before(base)
            strip = Strip(line.render(self.app.console), line.cell_len)
            strip = self._strips[i] = strip.crop_extend(scroll_x, scroll_x + width, base)
        return strip


class StateTree(LinesView):
    """The selected machine's states at the cursor: nested, parallel regions marked,
    active states highlighted, clocks, entered/exited/called markers, error states."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "state-tree--active",
        "state-tree--inactive",
        "state-tree--entered",
        "state-tree--exited",
        "state-tree--called",
        "state-tree--error",
        "state-tree--clock",
    }

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "State", key_display="↑↓"),
        Binding("down", "move(1)", "Next state", show=False),
    ]

    class StateSelected(Message):
        """The user selected a state (for the change jumps ``{`` ``}`` and filters)."""

        def __init__(self, index: int, name: str) -> None:
            super().__init__()
            self.index = index
            self.name = name

    _prefix = "state-tree"
    _rows: list[StateRow] = []
    selected_state: int | None = None  # a schema index, chosen with the keys or a click
    _line_cache: dict[tuple[StateRow, int, bool, int], Text] = {}

    def show_states(self, rows: Sequence[StateRow]) -> None:
        self._rows = list(rows)
        self._relines()

    def _relines(self) -> None:
        # one Text per distinct row: a step changes two or three rows of the tree
        cache = self._line_cache if len(self._line_cache) < 512 else {}
        width = self.size.width
        lines = []
        for r in self._rows:
            key = (r, width, r.index == self.selected_state, self._style_gen)
            line = cache.get(key)
            if line is None:
                line = cache[key] = self._line(r)
            lines.append(line)
        self._line_cache = cache
        self.set_lines(lines)

    def on_resize(self) -> None:
        if self._rows:
            self._relines()

    def select_state(self, index: int | None) -> None:
        """Mark state ``index`` as selected (None: no selection)."""
        if index != self.selected_state:
            self.selected_state = index
            self._relines()
            for y, r in enumerate(self._rows):
                if r.index == index:
                    self.scroll_to_region(Region(0, y, 1, 1), animate=False, immediate=True)

    def action_move(self, delta: int) -> None:
        if not self._rows:
            return
        ids = [r.index for r in self._rows]
        if self.selected_state in ids:
            pos = max(0, min(len(ids) - 1, ids.index(self.selected_state) + delta))
        else:
            pos = 0 if delta > 0 else len(ids) - 1
        self.select_state(ids[pos])
        row = self._rows[pos]
        self.post_message(self.StateSelected(row.index, row.name))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        y = int(self.scroll_y) + offset.y
        if 0 <= y < len(self._rows):
            row = self._rows[y]
            self.select_state(row.index)
            self.post_message(self.StateSelected(row.index, row.name))

    def _line(self, row: StateRow) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("  " * row.depth)
        glyph = "●" if row.active else "○"
        if row.region:
            glyph = "◆" if row.active else "◇"
        text.append(glyph + " ", style=self._style("active" if row.active else "inactive"))
        name_style = self._style("active" if row.active else "inactive")
        if row.error:
            name_style = name_style + self._style("error")
        if row.index == self.selected_state:
            name_style = name_style + Style(reverse=True)
        text.append(row.label, style=name_style)
        if row.parallel:
            text.append(" ∥", style=self._style("clock"))
        marks = Text()
        if row.entered and row.exited:
            marks.append(" ±", style=self._style("entered"))
        elif row.entered:
            marks.append(" +", style=self._style("entered"))
        elif row.exited:
            marks.append(" -", style=self._style("exited"))
        if row.called:
            marks.append(" *", style=self._style("called"))
        if row.error:
            marks.append(" !", style=self._style("error"))
        text.append_text(marks)
        clock = str(row.clock)
        # leave room for the scrollbar whether or not it is showing yet
        width = max(self.size.width - (1 if len(self._rows) > self.size.height else 0), 1)
        pad = width - text.cell_len - len(clock) - 1
        if pad >= 1:
            text.append(" " * pad)
            text.append(clock, style=self._style("clock"))
        return text


class DetailsPane(LinesView):
    """Every field of the record at the cursor."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {"details--label", "details--error"}

    _prefix = "details"

    def show_details(self, lines: Sequence[DetailLine]) -> None:
        label_style = self._style("label")
        error_style = self._style("error")
        out: list[Text] = []
        for line in lines:
            style = error_style if line.label == "error" and line.value != "-" else Style()
            for k, part in enumerate(line.value.splitlines() or [""]):
                text = Text(no_wrap=True)
                text.append(f"{line.label if k == 0 else '':>10} ", style=label_style)
                text.append(part, style=style)
                out.append(text)
        self.set_lines(out)

    def show_message(self, message: str) -> None:
        self.set_lines([Text(message, style="dim")])


class _ThumbScrollBar(ScrollBar):
    """A vertical scroll bar that repaints only when its thumb moves on screen.

    Textual repaints the bar on every change of position; over a million rows the thumb
    moves by a cell every ~40,000 rows, and repainting the bar's column made every jump
    of the log compose two dozen more screen lines.
    """

    position: Reactive[float] = Reactive(0.0, repaint=False)

    def _thumb(self, position: float) -> tuple[int, int, int, int, int]:
        # the arithmetic of ScrollBarRender.render_bar: the eighths of a cell it draws
        size = self.size.height
        virtual = ceil(self.window_virtual_size)
        window = ceil(self.window_size if self.window_size < self.window_virtual_size else 0)
        if not (window and size and virtual and size != virtual and virtual > window):
            return (size, virtual, window, 0, 0)
        thumb = max(1, window / (virtual / size))
        start = int((size - thumb) * (position / (virtual - window)) * 8)
        return (size, virtual, window, start, start + ceil(thumb * 8))

    def watch_position(self, old: float, new: float) -> None:
        if self._thumb(old) != self._thumb(new):
            self.refresh()


class TransitionLog(_StyleCache, can_focus=True):
    """A virtual list of one machine's records; the cursor row is the current time.

    It renders only visible rows, from ``row_of(seq)`` (a cache lookup, no I/O), and
    posts ``TransitionLog.WindowChanged`` when rows it shows are not cached, so a million
    records scroll as fast as ten. Clicking a row posts ``TransitionLog.Clicked``.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "app.step(-1)", "Step back", show=False),
        Binding("down,j", "app.step(1)", "Step forward", show=False),
        Binding("space", "app.toggle_play", "Play/pause", show=False),
        Binding("enter", "app.focus_details", "Details", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "transition-log--header",
        "transition-log--cursor",
        "transition-log--rejected",
        "transition-log--error",
        "transition-log--entered",
        "transition-log--exited",
        "transition-log--dim",
    }
    _prefix = "transition-log"

    class WindowChanged(Message):
        """Seqs ``[start, end)`` of ``machine_id`` are on screen (coalesces); with a
        filter, only the seqs in ``seqs`` are."""

        def __init__(
            self, machine_id: str, start: int, end: int, seqs: tuple[int, ...] | None = None
        ) -> None:
            super().__init__()
            self.machine_id = machine_id
            self.start = start
            self.end = end
            self.seqs = seqs

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, TransitionLog.WindowChanged)

    class Clicked(Message):
        """The user clicked the row of ``seq``."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        """The vertical scroll bar (made on first use), repainted only when it moves."""
        # Textual's own property, with our bar class; a Textual without the private
        # attributes this relies on gets its default bar (correct, only slower).
        if not hasattr(self, "_vertical_scrollbar") or not hasattr(self.app, "_start_widget"):
            return super().vertical_scrollbar
        if self._vertical_scrollbar is None:
            bar = _ThumbScrollBar(
                vertical=True, name="vertical", thickness=self.scrollbar_size_vertical
            )
            bar.display = False
            self._vertical_scrollbar = bar
            self.app._start_widget(self, bar)
        return self._vertical_scrollbar

    def __init__(self, row_of: Callable[[str, int], LogRow | None], *, id: str | None = None):
        super().__init__(id=id)
        self._row_of = row_of
        self.machine_id: str | None = None
        self.first = 0  # rows before it were deleted from storage
        self.empty_hint = "no machine selected"  # shown while there is no machine
        self.count = 0  # rows: records, or with a filter the shown records found so far
        self.cursor = -1  # the cursor's row
        self.cursor_seq = -1  # the cursor's seq (hidden by a filter: no row is marked)
        self.seq_of: Callable[[int], int] | None = None  # row -> seq with a filter
        self.max_seq = 0  # the highest seq (sets the seq column's width)
        self._name_key: tuple[str | None, int, int, int] | None = None
        self._name_w = 0
        self._columns_key: tuple[int, int, int] = (-1, -1, -1)
        self._columns_val: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
        # the widths the header line was last drawn with (see refresh_rows)
        self._header_columns: tuple[int, int, int, int, int] | None = None
        # rendered rows by (seq, is cursor); valid while _strips_key holds
        self._strips: dict[tuple[int, bool], Strip] = {}
        self._strips_key: tuple[object, ...] = ()
        self._pending: set[int] = set()  # rows drawn before their record was cached

    # -- what the app sets ---------------------------------------------------------------

    def show(
        self,
        machine_id: str | None,
        count: int,
        cursor: int,
        first: int = 0,
        *,
        seq_of: Callable[[int], int] | None = None,
        cursor_seq: int | None = None,
        max_seq: int | None = None,
    ) -> None:
        """Show ``count`` rows of ``machine_id`` with the cursor on row ``cursor``.

        Args:
            machine_id: the machine (None: nothing selected).
            count: rows; without a filter, row ``i`` is seq ``i``.
            cursor: the cursor's row.
            first: the lowest stored seq (rows before it were deleted).
            seq_of: row -> seq when a filter hides records.
            cursor_seq: the cursor's seq (defaults to ``cursor``).
            max_seq: the highest seq (defaults to ``count - 1``).
        """
        changed_machine = machine_id != self.machine_id
        same = (
            not changed_machine
            and count == self.count
            and first == self.first
            and seq_of == self.seq_of
        )
        old_cursor = self.cursor
        self.machine_id = machine_id
        self.first = first
        self.count = count
        self.cursor = cursor
        self.cursor_seq = cursor if cursor_seq is None else cursor_seq
        self.seq_of = seq_of
        self.max_seq = count - 1 if max_seq is None else max_seq
        if not same:
            self._set_rows(count)
        top = int(self.scroll_y)
        self._keep_cursor_visible(center=changed_machine)
        if same and top == int(self.scroll_y):
            # a step within the page: repaint the two cursor rows, not the panel
            for row in (old_cursor, cursor):
                if top <= row < top + self.page_height:
                    self.refresh_line(row + 1)
        else:
            self.refresh()
        self._post_window()

    def _set_rows(self, count: int) -> None:
        """Set the scroll range to ``count`` rows and the column header, laying the screen
        out again only when the scroll bar appears or disappears.

        Setting ``virtual_size`` lays the whole screen out (a reactive with ``layout``),
        though a ScrollView's arrangement does not depend on it: only the scroll bar's
        visibility does, and that is a reactive of its own that lays out when it flips. A
        filter key changes the row count on every press: turning a filter off drew its
        frame in 9.2 ms of UI time with the layout, 7.3 without (1M records). Turning one
        on (no row is known until the scan finds them, so the bar goes) laid out twice,
        the first frame with the bar's stale column; and a bar shown again by a layout kept
        the thumb where the log was scrolled before, as the scroll came while it was hidden.
        """
        size = Size(0, count + 1)
        if size == self.virtual_size:
            return
        # _scroll_update is what Textual runs after a layout: it shows or hides the bars
        # and sets their range. Without it (another Textual), fall back to the setter.
        scroll_update = getattr(self, "_scroll_update", None)
        if scroll_update is None or not self.is_mounted or not self.size:
            self.virtual_size = size
            return
        self.set_reactive(TransitionLog.virtual_size, size)
        scroll_update(size)
        self.refresh()

    def seq_at(self, row: int) -> int:
        """The seq shown on ``row``."""
        return row if self.seq_of is None else self.seq_of(row)

    @property
    def page_height(self) -> int:
        """Rows visible below the column header."""
        return max(1, self.size.height - 1)

    def _keep_cursor_visible(self, center: bool = False) -> None:
        if self.cursor < 0:
            return
        top = int(self.scroll_y)
        h = self.page_height
        far = self.cursor < top - h or self.cursor >= top + 2 * h
        if (center or far) and not (top <= self.cursor < top + h):
            # a jump lands mid-screen, with context on both sides; a step scrolls by one
            top = self.cursor - h // 2
        elif self.cursor < top:
            top = self.cursor
        elif self.cursor >= top + h:
            top = self.cursor - h + 1
        top = max(0, min(top, max(0, self.count - h)))
        if top != int(self.scroll_y):
            self.scroll_to(y=top, animate=False, force=True, immediate=True)

    def visible_window(self) -> tuple[int, int]:
        """Rows ``[top, end)`` on screen."""
        top = int(self.scroll_y)
        return top, min(self.count, top + self.page_height)

    def visible_seqs(self) -> tuple[int, int, tuple[int, ...] | None]:
        """Seqs on screen: ``(start, end, None)`` without a filter, else the seqs listed."""
        start, end = self.visible_window()
        if self.seq_of is None or start >= end:
            return start, end, None
        seqs = tuple(self.seq_of(r) for r in range(start, end))
        return seqs[0], seqs[-1] + 1, seqs

    def _post_window(self) -> None:
        if self.machine_id is not None and self.count:
            start, end, seqs = self.visible_seqs()
            self.post_message(self.WindowChanged(self.machine_id, start, end, seqs))

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self._post_window()

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(0, self.count + 1)
        self._keep_cursor_visible()
        self._post_window()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1:
            return
        row = int(self.scroll_y) + offset.y - 1
        if 0 <= row < self.count:
            self.post_message(self.Clicked(self.seq_at(row)))

    # -- rendering -------------------------------------------------------------------------

    def _columns(self, width: int) -> tuple[int, int, int, int, int]:
        """Widths of seq, time (0 when hidden), kind, name, changes."""
        name = self._name_width()
        key = (width, name, self.max_seq)
        if key == self._columns_key:
            return self._columns_val
        seq_w = max(3, len(str(max(self.max_seq, 0)))) + 1  # + the cursor gutter
        time_w = 12 if width >= 64 else 0
        kind_w = 7
        fixed = seq_w + 1 + (time_w + 1 if time_w else 0) + kind_w + 1 + 2 + 7 + 1
        flex = max(width - fixed, 8)
        name_w = max(5, min(name, flex * 2 // 5))
        self._columns_key = key
        self._columns_val = (seq_w, time_w, kind_w, name_w, max(flex - name_w - 2, 1))
        return self._columns_val

    def _name_width(self) -> int:
        """The longest event name on screen (at most 16), so changes get the rest."""
        key = (self.machine_id, int(self.scroll_y), self.count, self.size.height)
        if key != self._name_key or self._name_w == 0:
            start, end = self.visible_window()
            widths = [
                len(row.name)
                for r in range(start, end)
                if self.machine_id is not None
                and (row := self._row_of(self.machine_id, self.seq_at(r))) is not None
            ]
            if widths:  # not cached yet: measure again when the rows arrive
                self._name_key = key
            self._name_w = min(16, max(widths, default=12))
        return self._name_w

    def refresh_rows(self) -> None:
        """Rows arrived in the cache: measure again, draw the rows that lacked them."""
        before = self._columns_val
        self._name_w = 0
        width = self.scrollable_content_region.width
        # The header too: a worker fills the row cache while lines are drawn, so one
        # repaint may draw the header before the rows arrived (default widths) and the
        # rows after (measured), leaving nothing to redraw the header.
        columns = self._columns(width)
        if columns != before or columns != self._header_columns:
            self.refresh()
            return
        top = int(self.scroll_y)
        for row in self._pending:
            if top <= row < top + self.page_height:
                self.refresh_line(row + 1)
        self._pending.clear()

    def header_text(self, width: int) -> Text:
        self._header_columns = self._columns(width)
        seq_w, time_w, kind_w, name_w, changes_w = self._header_columns
        parts = [f"{'seq':>{seq_w}}"]
        if time_w:
            parts.append(f"{'time (UTC)':<{time_w}}")
        parts += [f"{'kind':<{kind_w}}", f"{'event':<{name_w}}", f"{'changes':<{changes_w}}"]
        parts += ["ok", f"{'took':>7}"]
        return Text(" ".join(parts), style=self._style("header"), no_wrap=True)

    def _row_parts(self, row: LogRow, seq: int, width: int) -> list[tuple[str, str, str]]:
        """A row's spans as ``(text, style, overlay)``: ``style`` a component name,
        ``"bold"`` or ``""``; ``overlay`` the outcome's ("rejected", "error" or ""), over
        the whole row for a refusal and after the seq column for an error. ``row_text``
        and ``row_strip`` both draw these, so the two renderings cannot drift apart."""
        seq_w, time_w, kind_w, name_w, changes_w = self._columns(width)
        outcome = row.outcome
        overlay = _OVERLAY[outcome]
        head = "rejected" if outcome is Outcome.REJECTED else ""
        # a glyph as well as a colour marks the cursor: monochrome terminals and text
        # snapshots show it too
        parts = [
            ("▶" if seq == self.cursor_seq else " ", "bold", head),
            (f"{seq:>{seq_w - 1}} ", "dim", head),
        ]
        if time_w:
            parts.append((f"{row.time:<{time_w}} ", "dim", overlay))
        parts.append((f"{row.kind[:kind_w]:<{kind_w}} ", "", overlay))
        name = row.name if len(row.name) <= name_w else row.name[: name_w - 1] + "…"
        parts.append((f"{name:<{name_w}} ", "bold", overlay))
        changes = row.changes
        if len(changes) > changes_w:
            changes = changes[: max(changes_w - 1, 0)] + "…"
        for k, token in enumerate(changes.split(" ")):
            if k:
                parts.append((" ", "", overlay))
            if token.startswith(("+", "=")):
                parts.append((token, "entered", overlay))
            elif token.startswith("-"):
                parts.append((token, "exited", overlay))
            elif token:
                parts.append((token, "", overlay))
        pad = changes_w - len(changes)  # the column, then one space
        parts.append((" " * (pad + 1) if pad > 0 else " ", "", overlay))
        parts.append((f"{OUTCOME_GLYPH[outcome]:<2} ", _OUTCOME_STYLE[outcome], overlay))
        parts.append((f"{row.duration:>7}", "dim", overlay))
        return parts

    def _part_style(self, name: str, overlay: str) -> Style:
        """The style of a ``_row_parts`` span: ``name`` then ``overlay``."""
        key = f"|{name}|{overlay}"
        style = self._styles.get(key)
        if style is None:
            style = Style(bold=True) if name == "bold" else self._style(name) if name else Style()
            if overlay:
                style += self._style(overlay)
            self._styles[key] = style
        return style

    def row_text(self, row: LogRow | None, seq: int, width: int) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if row is None:
            seq_w = self._columns(width)[0]
            text.append("▶" if seq == self.cursor_seq else " ", style="bold")
            text.append(f"{seq:>{seq_w - 1}} ", style=self._style("dim"))
            gone = "deleted (max_records)" if seq < self.first else "…"
            text.append(gone, style=self._style("dim"))
            return text
        for part, name, overlay in self._row_parts(row, seq, width):
            text.append(part, style=self._part_style(name, overlay))
        return text

    def _seg_style(self, cursor: bool, name: str, overlay: str) -> Style:
        """base + cursor + the span's style: what rich makes of ``row_text`` in
        ``rich_row_strip``."""
        key = f"{cursor}|{name}|{overlay}"
        style = self._styles.get(key)
        if style is None:
            style = self.base_style
            if cursor:
                style += self._style("cursor")
            style = self._styles[key] = style + self._part_style(name, overlay)
        return style

    def row_strip(self, row: LogRow | None, seq: int, width: int, cursor: bool) -> Strip | None:
        """The row's strip built from segments: what ``row_text`` renders to, at a tenth
        of the cost (a jump draws a whole screen of new rows; rich's Text rendering was
        most of it). None for rows it does not handle (the caller renders ``row_text``):
        missing records, text that is not ASCII (cell widths) or wider than the panel.
        """
        if row is None or not (row.name.isascii() and row.changes.isascii() and row.kind.isascii()):
            return None
        parts = self._row_parts(row, seq, width)
        used = sum(len(part) for part, _, _ in parts)
        if used > width:
            return None  # truncated with an ellipsis: rich does it
        st = self._seg_style
        segments = [Segment(part, st(cursor, name, ov)) for part, name, ov in parts if part]
        if used < width:
            fill = st(cursor, "", "") if cursor else self.base_style
            segments.append(Segment(" " * (width - used), fill))
        return Strip(segments, width)

    def rich_row_strip(self, row: LogRow | None, seq: int, width: int, cursor: bool) -> Strip:
        """The row's strip rendered from ``row_text`` by rich (any text, any width)."""
        base = self.base_style
        text = self.row_text(row, seq, width)
        if cursor:
            text.pad_right(max(0, width - text.cell_len))
            text.stylize_before(self._style("cursor"))
        text.truncate(width, overflow="ellipsis")
        text.stylize_before(base)
        return Strip(text.render(self.app.console), text.cell_len).extend_cell_length(width, base)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.base_style
        if y == 0:
            text = self.header_text(width)
        else:
            row = int(self.scroll_y) + y - 1
            if self.machine_id is None or row >= self.count:
                hint = self.empty_hint.splitlines()
                if self.machine_id is None and 1 <= y <= len(hint):
                    text = Text(hint[y - 1], style=self._style("dim"))
                elif self.count == 0 and y == 1:
                    none = "no records yet" if self.seq_of is None else "no record shown"
                    text = Text(none, style=self._style("dim"))
                else:
                    return Strip.blank(width, base)
            else:
                seq = self.seq_at(row)
                cursor = seq == self.cursor_seq
                key = (width, self._style_gen, self._columns(width), self.machine_id, self.first)
                if key != self._strips_key or len(self._strips) > 8 * self.page_height:
                    self._strips = {}
                    self._strips_key = key
                strip = self._strips.get((seq, cursor))
                if strip is not None:
                    return strip
                log_row = self._row_of(self.machine_id, seq)
                strip = self.row_strip(log_row, seq, width, cursor) or self.rich_row_strip(
                    log_row, seq, width, cursor
                )
                if log_row is None and seq >= self.first:
                    self._pending.add(row)
                else:
                    self._strips[(seq, cursor)] = strip
                return strip
        text.truncate(width, overflow="ellipsis")
        text.stylize_before(base)
        return Strip(text.render(self.app.console), text.cell_len).extend_cell_length(width, base)
