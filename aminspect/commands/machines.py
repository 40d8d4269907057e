"""Headless commands about one machine's state: ``resurrect`` and ``check``."""

from __future__ import annotations

import importlib
import sys
from typing import Annotated, Any

import typer

from aminspect.commands._common import EXIT_USAGE, echo_json, errors, fail, open_source, progress

__all__ = ["check", "load_definition", "resurrect"]


def resurrect(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
    machine: str = typer.Option(..., "--machine", "-m", help="The machine id."),
    seq: int | None = typer.Option(
        None, "--seq", min=-1, help="Restore after this record (default: the latest)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Print the state a resurrection restores: active states, history values, the tick.

    Read-only: the source is not changed (app code calls ``aminspect.resurrect.resurrect``
    to restore a live machine and record the restart).
    """
    from aminspect.resurrect import describe, recorded_state

    backend = open_source(source)
    with errors(), backend:
        state = recorded_state(backend, machine, seq)
    if as_json:
        echo_json(state.to_dict())
    else:
        for line in describe(state):
            typer.echo(line)


def load_definition(spec: str) -> Any:
    """``module:attribute`` -> a machine of the current code (the attribute is called when
    it is a class or a factory). The current directory is importable.

    Raises:
        typer.Exit: code 2 with one line when it cannot be loaded.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        fail(f"--definition must be MODULE:NAME, got {spec!r}", EXIT_USAGE)
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        fail(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", EXIT_USAGE)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        fail(f"{module_name!r} has no {attr!r}", EXIT_USAGE)
    from aminspect.resurrect import _library

    try:
        _library(obj)
        return obj
    except Exception:
        pass
    if callable(obj):
        try:
            return obj()
        except Exception as exc:
            fail(f"{spec} failed: {type(exc).__name__}: {exc}")
    fail(f"{spec} is not a machine, a machine class or a factory", EXIT_USAGE)


def check(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
    definition: str = typer.Option(
        ...,
        "--definition",
        "-d",
        metavar="MODULE:NAME",
        help="The current machine: a machine, class or factory.",
    ),
    machine: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="Only these machines.")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Replay a recording against the current machine definition and report the first
    record the code would no longer reproduce (exit 1 when there is one).

    Pure: no user callback runs, conditions are not evaluated, nothing is written.
    """
    from aminspect.divergence import check as run_check

    current = load_definition(definition)
    backend = open_source(source)
    reports = []
    with errors(), backend:
        ids = machine or [m.id for m in backend.machines()]
        for mid in ids:
            backend.get_machine(mid)
        total = sum(backend.highest(m) + 1 for m in ids)
        with progress(total, "checking") as advance:
            for mid in ids:
                reports.append(run_check(current, backend, mid, progress=advance))
    if as_json:
        echo_json({"ok": all(r.ok for r in reports), "machines": [r.to_dict() for r in reports]})
    else:
        for r in reports:
            if r.divergence is None:
                typer.echo(f"{r.machine_id}: ok ({r.checked} records, {r.events} events)")
            else:
                typer.echo(f"{r.machine_id}: DIVERGES: {r.divergence.message()}")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)
