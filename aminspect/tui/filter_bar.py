"""The log's filter screen (every filter in one form) and its search-as-you-type bar."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Checkbox, Input, Label

from aminspect.filters import LogFilter, parse_names

__all__ = ["FilterScreen", "SearchBar"]


class FilterScreen(ModalScreen[LogFilter | None]):
    """Edit every filter of the log; dismisses with the new filter, or None when cancelled.

    Empty fields filter nothing. Names are separated by commas or spaces.
    """

    AUTO_FOCUS = "#filter-kinds"  # the first field, not the checkboxes above it

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "apply", "Apply"),
        Binding("ctrl+r", "reset", "Clear all"),
        # Priority: a focused Checkbox takes enter to toggle itself (space does that
        # here), so enter on a checkbox applied nothing, unlike the title says.
        Binding("enter", "apply", "Apply", show=False, priority=True),
    ]

    FIELDS: ClassVar[list[tuple[str, str, str]]] = [
        ("kinds", "kinds", "e.g. event, set, add (every kind when empty)"),
        ("events", "event names", "exact names, e.g. pay, ship"),
        ("states", "states touched", "entered or exited, e.g. Paid, Shipping"),
        ("search", "search", "text in an event, kind or touched state"),
        ("machine", "machines", "text in the machine id (the machine tree)"),
    ]

    def __init__(self, current: LogFilter) -> None:
        super().__init__(id="filter-screen")
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        values = {
            "kinds": ", ".join(sorted(c.kinds)) if c.kinds is not None else "",
            "events": ", ".join(sorted(c.events)),
            "states": ", ".join(sorted(c.states)),
            "search": c.search,
            "machine": c.machine,
        }
        with Vertical(id="filter-box"):
            yield Label(
                "Filter the log  (enter or ctrl+s applies, ctrl+r clears, escape cancels)",
                id="filter-title",
            )
            with Horizontal(id="filter-checks"):
                yield Checkbox("hide not accepted", c.hide_rejected, id="filter-hide-rejected")
                yield Checkbox("errors only", c.errors_only, id="filter-errors")
            for name, label, hint in self.FIELDS:
                with Horizontal(classes="filter-row"):
                    yield Label(f"{label:>14} ", classes="filter-label")
                    yield Input(values[name], placeholder=hint, id=f"filter-{name}")

    def result(self) -> LogFilter:
        """The filter the form describes."""

        def text(name: str) -> str:
            return self.query_one(f"#filter-{name}", Input).value

        kinds = parse_names(text("kinds"))
        return LogFilter(
            hide_rejected=self.query_one("#filter-hide-rejected", Checkbox).value,
            errors_only=self.query_one("#filter-errors", Checkbox).value,
            kinds=kinds or None,
            events=parse_names(text("events")),
            states=parse_names(text("states")),
            search=text("search").strip(),
            machine=text("machine").strip(),
        )

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(self.result())

    def action_apply(self) -> None:
        self.dismiss(self.result())

    def action_reset(self) -> None:
        for name, _label, _hint in self.FIELDS:
            self.query_one(f"#filter-{name}", Input).value = ""
        self.query_one("#filter-hide-rejected", Checkbox).value = False
        self.query_one("#filter-errors", Checkbox).value = False

    def action_cancel(self) -> None:
        self.dismiss(None)


class SearchBar(Input):
    """Search-as-you-type over the log's events and states: each keystroke filters the
    log (posts ``SearchBar.Searched``); enter keeps the search, escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear search"),
    ]

    class Searched(Message):
        """The search text changed (coalesces) or was kept (``done``)."""

        def __init__(self, text: str, done: bool = False) -> None:
            super().__init__()
            self.text = text
            self.done = done

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, SearchBar.Searched) and not self.done

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="n search events and states", id=id)

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Searched(event.value))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Searched(self.value, done=True))

    def action_clear(self) -> None:
        self.value = ""
        self.post_message(self.Searched("", done=True))
