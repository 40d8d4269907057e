"""The headless commands of the ``aminspect`` CLI; ``register(app)`` adds them.

They never import the TUI (a layering test checks it).
"""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``record``, ``replay``, ``query``, ``resurrect``, ``check``, ``convert``,
    ``export`` and ``stats`` to ``app``."""
    from aminspect.commands import data, live, machines

    app.command("record")(live.record)
    app.command("replay")(live.replay)
    app.command("query")(data.query)
    app.command("resurrect")(machines.resurrect)
    app.command("check")(machines.check)
    app.command("diverge", hidden=True)(machines.check)  # the name the issue used
    app.command("convert")(data.convert)
    app.command("export")(data.export)
    app.command("stats")(data.stats)
