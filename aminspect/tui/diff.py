"""The diff panel: what changed between the marked record (or the previous one) and the cursor."""

from __future__ import annotations

import textwrap
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType

from aminspect.diff import StateDiff, diff_lines
from aminspect.tui.widgets import LinesView

__all__ = ["DiffPane"]


class DiffPane(LinesView, can_focus=True):
    """Labelled lines of a ``StateDiff``: entered in green, exited in red."""

    # shown in the footer while the diff has focus (the app binds b everywhere)
    BINDINGS: ClassVar[list[BindingType]] = [Binding("b", "app.mark", "Mark")]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "diff--label",
        "diff--entered",
        "diff--exited",
        "diff--error",
    }
    _prefix = "diff"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.diff: StateDiff | None = None

    def show_diff(self, diff: StateDiff) -> None:
        self.diff = diff
        styles = {
            "entered": self._style("entered"),
            "exited": self._style("exited"),
            "outcomes": self._style("error"),
        }
        # long lists (clocks, states) wrap under their value, not off the edge
        width = max(20, self.scrollable_content_region.width - 10)
        out: list[Text] = []
        for label, value in diff_lines(diff):
            style = styles.get(label, Style()) if value != "-" else Style()
            parts: list[str] = []
            for line in value.splitlines() or [""]:
                parts += textwrap.wrap(line, width, break_on_hyphens=False) or [""]
            for k, part in enumerate(parts):
                text = Text(no_wrap=True)
                text.append(f"{label if k == 0 else '':>8} ", style=self._style("label"))
                text.append(part, style=style)
                out.append(text)
        self.set_lines(out)

    def on_resize(self) -> None:
        if self.diff is not None:
            self.show_diff(self.diff)

    def show_message(self, message: str) -> None:
        self.diff = None
        self.set_lines([Text(message, style="dim")])
