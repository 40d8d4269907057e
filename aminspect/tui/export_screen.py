"""The export dialog: pick the scope and the format, edit the path, export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

from aminspect.export_files import EXPORT_FORMATS, default_path

__all__ = ["ExportChoice", "ExportScreen"]

NOTE = "diagrams carry visit counts; files are written atomically"
LABELS = {
    "journal": "journal .amj",
    "jsonl": "JSON Lines .jsonl",
    "mermaid": "Mermaid diagram .mmd",
    "dot": "DOT diagram .dot",
}


@dataclass(frozen=True, slots=True)
class ExportChoice:
    """What the user asked for: ``machine_id`` None exports the whole session."""

    fmt: str
    path: Path
    machine_id: str | None


class ExportScreen(ModalScreen[ExportChoice | None]):
    """Scope (session / selected machine), format, path; enter exports, escape cancels.

    Args:
        machine_id: the selected machine (None: only the session can be exported).
        machines: how many machines the session holds.
        directory: where the default file name points.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "export", "Export"),
        # Priority: a focused RadioSet takes enter to pick a button (space does that
        # here), so without it enter wrote nothing unless the path field had focus.
        Binding("enter", "enter", "Export", show=False, priority=True),
    ]

    def __init__(self, machine_id: str | None, machines: int, directory: Path) -> None:
        super().__init__(id="export-screen")
        self.machine_id = machine_id
        self.machines = machines
        self.directory = directory
        self._auto = ""  # the path the dialog proposed; once edited, choices keep the edit

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Label(
                "Export   space picks · tab moves · enter (or ctrl+s) writes",
                id="export-title",
            )
            with Horizontal(id="export-choices"):
                with RadioSet(id="export-scope") as scope:
                    scope.border_title = "what"
                    yield RadioButton(
                        f"session ({self.machines} machines)",
                        value=self.machine_id is None,
                        id="scope-session",
                    )
                    if self.machine_id is not None:
                        yield RadioButton(
                            f"machine {self.machine_id}", value=True, id="scope-machine"
                        )
                with RadioSet(id="export-format") as formats:
                    formats.border_title = "format"
                    for k, fmt in enumerate(EXPORT_FORMATS):
                        yield RadioButton(LABELS[fmt], value=k == 0, id=f"fmt-{fmt}")
            self._auto = str(self._default())
            yield Input(self._auto, id="export-path", compact=True)
            yield Label(NOTE, id="export-note")
            with Horizontal(id="export-buttons"):
                yield Button("Export", variant="primary", id="export-ok", compact=True)
                yield Button("Cancel", id="export-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-format", RadioSet).focus()

    # -- choices -------------------------------------------------------------------------

    @property
    def fmt(self) -> str:
        pressed = self.query_one("#export-format", RadioSet).pressed_button
        return (pressed.id or "fmt-journal").removeprefix("fmt-") if pressed else "journal"

    @property
    def scope(self) -> str | None:
        """The machine to export, None for the session."""
        pressed = self.query_one("#export-scope", RadioSet).pressed_button
        if pressed is not None and pressed.id == "scope-machine":
            return self.machine_id
        return None

    def _default(self) -> Path:
        try:
            fmt, scope = self.fmt, self.scope
        except Exception:  # before mount: the initial choices
            fmt, scope = "journal", self.machine_id
        return default_path(self.directory, scope or "session", fmt)

    def set_choice(self, fmt: str | None = None, machine: bool | None = None) -> None:
        """Choose a format and/or the scope (tests and the palette use it)."""
        if fmt is not None:
            self.query_one(f"#fmt-{fmt}", RadioButton).value = True
        if machine is not None:
            target = "#scope-machine" if machine and self.machine_id else "#scope-session"
            self.query_one(target, RadioButton).value = True
        self._refresh_path()

    @on(RadioSet.Changed)
    def _choice_changed(self) -> None:
        self._refresh_path()

    @on(Input.Changed, "#export-path")
    def _path_changed(self) -> None:
        note = self.query_one("#export-note", Label)
        if note.has_class("-error"):  # the user is fixing it
            note.update(NOTE)
            note.remove_class("-error")

    def _refresh_path(self) -> None:
        field = self.query_one("#export-path", Input)
        if field.value != self._auto:
            return  # the user's own path
        self._auto = str(self._default())
        field.value = self._auto

    # -- done ------------------------------------------------------------------------------

    @on(Input.Submitted, "#export-path")
    @on(Button.Pressed, "#export-ok")
    def _submit(self) -> None:
        self.action_export()

    def _error(self, message: str) -> None:
        note = self.query_one("#export-note", Label)
        note.update(message)
        note.add_class("-error")

    def action_export(self) -> None:
        value = self.query_one("#export-path", Input).value.strip()
        if not value:
            self._error("enter a file path")
            return
        path = Path(value).expanduser()
        if not path.parent.is_dir():
            self._error(f"no such directory: {path.parent}")
            return
        self.dismiss(ExportChoice(self.fmt, path, self.scope))

    def action_enter(self) -> None:
        """Enter writes, as the title says, wherever the focus is; on Cancel it cancels."""
        focused = self.focused
        if focused is not None and focused.id == "export-cancel":
            self.action_cancel()
        else:
            self.action_export()

    @on(Button.Pressed, "#export-cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)
