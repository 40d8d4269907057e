"""aminspect: the inspector side (ingest server, session model, TUI, CLI)."""

from tracer._version import __version__

__all__ = ["__version__"]
