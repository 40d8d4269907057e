"""The Textual TUI of the inspector (the only package that imports textual)."""

from aminspect.tui.app import InspectorApp

__all__ = ["InspectorApp"]
