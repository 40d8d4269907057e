"""What every headless command shares: opening sources, one-line errors, progress, times."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import typer

import backends
from backends import BackendError, UnknownScheme
from backends._base import BaseBackend

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "echo_json",
    "errors",
    "fail",
    "format_time",
    "open_source",
    "parse_time",
    "progress",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
_QUIET = logging.NullHandler()


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    line = " ".join(str(message).split())  # one line, whatever the exception held
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """Turn the errors bad input can cause into one line and an exit code, never a
    traceback: 2 for a bad URL or argument, 1 for anything the source or network did."""
    from aminspect.resurrect import ResurrectError

    try:
        yield
    except typer.Exit:
        raise
    except UnknownScheme as exc:
        fail(str(exc), EXIT_USAGE)
    except (BackendError, ResurrectError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def open_source(url: str, *, read_only: bool = True, **options: Any) -> BaseBackend:
    """Open a recording; read-only by default, so a command never changes its source.

    Exits with one line (code 2 for an unknown scheme, 1 otherwise) when it cannot.
    """
    # The backends log recoveries (a torn tail dropped); the CLI prints them itself, once.
    logging.getLogger("backends").addHandler(_QUIET)
    try:
        backend = backends.open(url, read_only=read_only, **options)
    except UnknownScheme as exc:
        fail(str(exc), EXIT_USAGE)
    except BackendError as exc:
        fail(str(exc))
    note = getattr(backend, "recovery_message", None)  # e.g. a torn journal tail dropped
    if note:
        typer.echo(f"warning: {note}", err=True)
    if not isinstance(backend, BaseBackend):  # every registered backend is one today
        backend.close()
        fail(f"{backends.mask_url(url)}: this backend does not support the headless commands")
    return backend


def counted(n: int, noun: str) -> str:
    """``1 record``, ``2 records``: ``noun`` is singular and takes an s."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def located(backend: BaseBackend) -> str:
    """The backend's URL (password masked), followed by the file or directory it names
    when that is a URL.

    ``lmdb:///x`` names ``x`` under the working directory (``lmdb:////x`` is ``/x``, as
    in SQLAlchemy), which surprises whoever typed ``lmdb:///tmp/x``: a command that
    wrote somewhere says where.
    """
    url = backend.url
    path = getattr(backend, "path", None)
    if "://" not in url or not isinstance(path, str):
        return url
    return f"{url} ({os.path.abspath(path)})"


def echo_json(obj: Any) -> None:
    """Print one JSON document (values JSON cannot hold become their repr)."""
    typer.echo(json.dumps(obj, ensure_ascii=False, default=repr, indent=2))


def parse_time(value: str, option: str) -> int:
    """UTC nanoseconds from an integer (ns since the epoch) or an ISO 8601 time
    (taken as UTC when it has no offset). Exits with code 2 on anything else."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: not a time: {value!r} (use ISO 8601 or nanoseconds)", EXIT_USAGE)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def format_time(ns: int) -> str:
    """An ISO 8601 UTC time with microseconds, for people."""
    when = dt.datetime.fromtimestamp(ns // 1_000_000_000, tz=dt.UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1000
    )
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextlib.contextmanager
def progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op when piped.

    Yields ``advance(n)``.
    """
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
