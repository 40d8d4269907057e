"""Modal screens: the help screen and the go-to-seq prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

__all__ = ["GoToSeqScreen", "HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """Every key, grouped, and what the markers on screen mean."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "dismiss", "Close", show=True),
    ]

    def __init__(self, sections: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> None:
        super().__init__(id="help-screen")
        self.sections = sections

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for title, rows in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for keys, text in rows:
                table.add_row(keys, text)
            table.add_row("", "")
        with Vertical(id="help-box"):
            yield Label("aminspect: keys and markers  (escape closes)", id="help-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(table, id="help-text")

    def action_dismiss(self, result: None = None) -> None:  # type: ignore[override]
        self.dismiss(None)


class GoToSeqScreen(ModalScreen[int | None]):
    """Ask for a seq; dismisses with it, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, highest: int) -> None:
        super().__init__(id="goto-screen")
        self.highest = highest

    def compose(self) -> ComposeResult:
        with Vertical(id="goto-box"):
            yield Label(f"Go to seq (0..{self.highest}), enter to jump, escape to cancel")
            yield Input(placeholder="seq", type="integer", id="goto-input")
            yield Label("", id="goto-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        try:
            seq = int(value)
        except ValueError:
            self.query_one("#goto-error", Label).update(f"not a number: {value!r}")
            return
        if not 0 <= seq <= self.highest:
            self.query_one("#goto-error", Label).update(f"out of range: 0..{self.highest}")
            return
        self.dismiss(seq)

    def action_cancel(self) -> None:
        self.dismiss(None)
