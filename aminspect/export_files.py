"""Export files from a session: a journal copy, JSON Lines, or Mermaid/DOT diagrams, atomically.

The TUI's export dialog calls ``write_export``; the formats are the CLI's
(``aminspect.export`` for JSON Lines and diagrams, ``backends.copy`` for the journal), and
every file is written to a temporary name, fsynced and renamed, so a reader never sees
half a file and a failed export leaves what was there before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aminspect import export as ex
from backends.base import Backend, BackendError
from backends.copy import copy_backend
from backends.journal import JournalBackend, atomic_write

__all__ = ["EXPORT_FORMATS", "ExportResult", "default_path", "write_export"]

# format -> (file suffix, what the dialog calls it)
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    "journal": (".amj", "journal (.amj, opens with aminspect open)"),
    "jsonl": (".jsonl", "JSON Lines (.jsonl)"),
    "mermaid": (".mmd", "Mermaid state diagram with visit counts (.mmd)"),
    "dot": (".dot", "Graphviz DOT state diagram with visit counts (.dot)"),
}


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    format: str
    machines: int
    records: int
    size: int  # bytes


def default_path(directory: Path, scope: str, fmt: str, now: datetime | None = None) -> Path:
    """A file name that says what is in it: ``aminspect-<scope>-<UTC time><suffix>``.

    Args:
        directory: where to put it.
        scope: ``session`` or a machine id (characters unsafe in a file name replaced).
        fmt: one of ``EXPORT_FORMATS``.
        now: the time in the name (default: now, UTC).

    Raises:
        BackendError: an unknown format.
    """
    if fmt not in EXPORT_FORMATS:
        raise BackendError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in scope) or "session"
    return directory / f"aminspect-{safe}-{stamp}{EXPORT_FORMATS[fmt][0]}"


def _source_path(backend: Backend) -> str | None:
    path = getattr(backend, "path", None)
    return os.path.realpath(path) if isinstance(path, str) else None


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_export(
    backend: Backend, fmt: str, path: Path, machine_ids: Sequence[str] | None = None
) -> ExportResult:
    """Write the session (``machine_ids`` None) or some machines to ``path``, atomically.

    Args:
        backend: the session's backend.
        fmt: ``journal``, ``jsonl``, ``mermaid`` or ``dot``.
        path: the file to write (replaced if it exists).
        machine_ids: the machines to export; None for every machine.

    Returns:
        What was written.

    Raises:
        BackendError: an unknown format or machine, the source file itself as the
            destination, or a write that failed (one line; the destination is untouched).
    """
    if fmt not in EXPORT_FORMATS:
        raise BackendError(f"unknown export format {fmt!r} (known: {', '.join(EXPORT_FORMATS)})")
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise BackendError(f"cannot export to {path}: {path.parent} is not a directory")
    if _source_path(backend) == os.path.realpath(path):
        raise BackendError(f"cannot export to {path}: it is the file being inspected")
    ids = [m.id for m in backend.machines()] if machine_ids is None else list(machine_ids)
    for mid in ids:
        backend.get_machine(mid)  # UnknownMachine, before any file is made
    records = sum(max(0, backend.highest(m) + 1 - backend.first(m)) for m in ids)
    try:
        if fmt == "journal":
            _write_journal(backend, path, ids)
        else:
            if fmt == "jsonl":
                text = "".join(line + "\n" for line in ex.jsonl_lines(backend, ids))
            else:
                render = ex.to_mermaid if fmt == "mermaid" else ex.to_dot
                text = "\n".join(render(ex.visits(backend, mid)) for mid in ids)
            atomic_write(str(path), [text.encode("utf-8")])
    except OSError as exc:
        raise BackendError(f"cannot export to {path}: {exc.strerror or exc}") from None
    return ExportResult(path, fmt, len(ids), records, path.stat().st_size)


def _write_journal(backend: Backend, path: Path, ids: Sequence[str]) -> None:
    """Copy into a temporary journal next to ``path``, then rename it over ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}.amj"
    _remove(tmp)
    try:
        dest = JournalBackend(tmp)
        try:
            copy_backend(backend, dest, ids)
        finally:
            dest.close()
        # the query-index sidecar is a cache of one file's contents: the temporary one
        # is dropped, and so is the replaced file's (it would describe other records)
        _remove(tmp + ".idx")
        _remove(f"{path}.idx")
        os.replace(tmp, path)
        _fsync_dir(path)
    except BaseException:
        _remove(tmp)
        _remove(tmp + ".idx")
        raise
