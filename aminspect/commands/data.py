"""Headless commands that read recordings: ``query``, ``convert``, ``export``, ``stats``."""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from aminspect.commands._common import (
    EXIT_USAGE,
    counted,
    echo_json,
    errors,
    fail,
    format_time,
    located,
    open_source,
    parse_time,
    progress,
)
from backends import Query
from backends._base import BaseBackend as Backend
from tracer.records import Schema

__all__ = ["convert", "export", "query", "stats"]

PREDICATES = ("activated", "deactivated", "active", "inactive")
KINDS = ("init", "event", "forced", "restore", "add", "remove", "set", "gap")
_KIND_HELP = f"One of {', '.join(KINDS)}; repeatable."


def _machine_ids(backend: Backend, machine: list[str] | None) -> list[str]:
    if machine:
        for mid in machine:
            backend.get_machine(mid)  # UnknownMachine: one line, listed by errors()
        return machine
    return [m.id for m in backend.machines()]


def _names(schema_names: tuple[str, ...], indexes: tuple[int, ...]) -> list[str]:
    return [schema_names[i] if 0 <= i < len(schema_names) else str(i) for i in indexes]


def query(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
    machine: str | None = typer.Option(None, "--machine", "-m", help="Only this machine."),
    seq_start: int | None = typer.Option(None, "--seq-start", min=0, help="First seq (incl.)."),
    seq_end: int | None = typer.Option(None, "--seq-end", min=0, help="Last seq (excl.)."),
    since: str | None = typer.Option(None, "--since", help="From this UTC time (ISO or ns)."),
    until: str | None = typer.Option(None, "--until", help="Before this UTC time (ISO or ns)."),
    name: str | None = typer.Option(None, "--name", "-n", help="Exact event/record name."),
    kind: Annotated[list[str] | None, typer.Option("--kind", "-k", help=_KIND_HELP)] = None,
    entered: Annotated[
        list[str] | None, typer.Option("--entered", help="Entered this state; repeatable.")
    ] = None,
    exited: Annotated[
        list[str] | None, typer.Option("--exited", help="Exited this state; repeatable.")
    ] = None,
    active: Annotated[
        list[str] | None, typer.Option("--active", help="Active after; repeatable.")
    ] = None,
    inactive: Annotated[
        list[str] | None, typer.Option("--inactive", help="Inactive after; repeatable.")
    ] = None,
    accepted: bool | None = typer.Option(None, "--accepted/--rejected", help="Accepted or not."),
    has_error: bool | None = typer.Option(
        None,
        "--errors/--no-errors",
        help="With or without an error field (a library's refusal, such as transitions' "
        "MachineError, has one too; stats and the TUI count those as rejected only).",
    ),
    newest_first: bool = typer.Option(False, "--newest-first", help="Newest records first."),
    limit: int | None = typer.Option(None, "--limit", min=0, help="At most this many records."),
    count: bool = typer.Option(False, "--count", help="Print only how many records match."),
    predicate: str | None = typer.Option(
        None,
        "--predicate",
        help=f"Answer one of {', '.join(PREDICATES)} for --state between --since and --until.",
    ),
    state: str | None = typer.Option(None, "--state", help="The state of --predicate."),
    state_at: int | None = typer.Option(
        None, "--state-at", min=-1, help="Print the active states after this seq."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON output (JSON Lines for records)."),
) -> None:
    """Find records with the shared query API, count them, or answer a predicate.

    Every filter must match. Times are UTC (ISO 8601, or nanoseconds since the epoch).
    """
    kinds = frozenset(kind) if kind else None
    if kinds is not None and not kinds <= set(KINDS):
        bad = ", ".join(sorted(kinds - set(KINDS)))
        fail(f"unknown kind(s): {bad} (known: {', '.join(KINDS)})", EXIT_USAGE)
    time_start = parse_time(since, "--since") if since is not None else None
    time_end = parse_time(until, "--until") if until is not None else None
    if (predicate is not None or state_at is not None) and machine is None:
        fail("--predicate and --state-at need --machine", EXIT_USAGE)
    if predicate is not None:
        if predicate not in PREDICATES:
            fail(f"unknown predicate {predicate!r} (known: {', '.join(PREDICATES)})", EXIT_USAGE)
        if state is None:
            fail("--predicate needs --state", EXIT_USAGE)
    backend = open_source(source)
    with errors(), backend:
        if machine is not None:
            _machine_ids(backend, [machine])
        if predicate is not None:
            assert machine is not None and state is not None
            fn = getattr(backend, f"{predicate}_between")
            start = time_start if time_start is not None else 0
            end = time_end if time_end is not None else (1 << 63) - 1
            answer = bool(fn(machine, state, start, end))
            if as_json:
                echo_json(
                    {
                        "machine_id": machine,
                        "state": state,
                        "predicate": predicate,
                        "start": start,
                        "end": end,
                        "result": answer,
                    }
                )
            else:
                typer.echo("true" if answer else "false")
            return
        if state_at is not None:
            assert machine is not None
            schema = backend.get_machine(machine).schema
            mt = backend.state_at(machine, state_at)
            names = [schema.names[i] for i in sorted(mt.active())]
            if as_json:
                echo_json(
                    {
                        "machine_id": machine,
                        "seq": state_at,
                        "active": names,
                        "clocks": dict(zip(schema.names, mt.clocks, strict=True)),
                    }
                )
            else:
                typer.echo(", ".join(names) or "(none)")
            return
        q = Query(
            machine_id=machine,
            seq_start=seq_start,
            seq_end=seq_end,
            time_start=time_start,
            time_end=time_end,
            name=name,
            kinds=kinds,
            entered=frozenset(entered or ()),
            exited=frozenset(exited or ()),
            active=frozenset(active or ()),
            inactive=frozenset(inactive or ()),
            accepted=accepted,
            has_error=has_error,
            newest_first=newest_first,
            limit=limit,
        )
        if count:
            n = backend.count(q)
            if as_json:
                echo_json({"count": n})
            else:
                typer.echo(str(n))
            return
        from aminspect.export import dumps, record_to_json

        found = backend.find(q)
        schemas: dict[str, Schema] = {}
        for rec in found:
            if rec.machine_id not in schemas:
                schemas[rec.machine_id] = backend.get_machine(rec.machine_id).schema
            schema = schemas[rec.machine_id]
            if as_json:
                typer.echo(dumps(record_to_json(rec, schema)))
                continue
            change = ""
            ex, en = _names(schema.names, rec.exited), _names(schema.names, rec.entered)
            if ex or en:
                change = f"  -{','.join(ex)} +{','.join(en)}"
            outcome = "" if rec.accepted else "  rejected"
            if rec.error is not None:
                outcome += f"  {rec.error[0]}: {rec.error[1]}"
            typer.echo(
                f"{rec.machine_id}  {rec.seq:>6}  {format_time(rec.time)}  {rec.kind:<7} "
                f"{rec.name}{change}{outcome}"
            )


def convert(
    src: str = typer.Argument(..., help="The recording to read (opened read-only)."),
    dst: str = typer.Argument(..., help="The backend URL or .amj file to write."),
    machine: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="Only these machines.")
    ] = None,
    as_json: bool = typer.Option(False, "--json", help="Print what was copied as JSON."),
) -> None:
    """Copy a recording into another backend, exactly (machines, records, snapshots).

    Converting again into the same destination adds nothing (resends are idempotent).
    """
    from backends.copy import copy_backend

    source = open_source(src)
    with errors(), source:
        if _same_target(src, dst):
            fail("the destination is the source", EXIT_USAGE)
        ids = _machine_ids(source, machine)
        total = sum(max(0, source.highest(m) + 1 - source.first(m)) for m in ids)
        dest = open_source(dst, read_only=False)
        with dest, progress(total, "converting") as advance:
            last: dict[str, int] = {}

            def step(mid: str, done: int, _total: int) -> None:
                advance(done - last.get(mid, 0))
                last[mid] = done

            result = copy_backend(source, dest, ids, progress=step)
    if as_json:
        echo_json(
            {"machines": result.machines, "records": result.records, "snapshots": result.snapshots}
        )
    else:
        typer.echo(
            f"copied {counted(result.machines, 'machine')}, {counted(result.records, 'record')}, "
            f"{counted(result.snapshots, 'snapshot')} to {located(dest)}"
        )


def _same_target(src: str, dst: str) -> bool:
    def path(url: str) -> str | None:
        if "://" not in url:
            return os.path.realpath(url)
        scheme, rest = url.split("://", 1)
        if scheme == "memory":
            return None
        rest = rest.split("?", 1)[0]
        if rest.startswith("/"):
            rest = rest[1:]
        return os.path.realpath(rest)

    a, b = path(src), path(dst)
    return a is not None and a == b


def export(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
    fmt: str = typer.Option(..., "--format", "-f", help="jsonl, mermaid or dot."),
    machine: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="Only these machines.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default stdout).")
    ] = None,
) -> None:
    """Export records as JSON Lines, or state diagrams (Mermaid/DOT) with visit counts."""
    from aminspect import export as ex

    if fmt not in ex.FORMATS:
        fail(f"unknown format {fmt!r} (known: {', '.join(ex.FORMATS)})", EXIT_USAGE)
    backend = open_source(source)
    with errors(), backend:
        ids = _machine_ids(backend, machine)
        total = sum(max(0, backend.highest(m) + 1 - backend.first(m)) for m in ids)
        chunks: list[str] = []
        with progress(total, f"exporting {fmt}") as advance:
            if fmt == "jsonl":
                out = "".join(line + "\n" for line in ex.jsonl_lines(backend, ids, advance))
            else:
                for mid in ids:
                    v = ex.visits(backend, mid, advance)
                    chunks.append(ex.to_mermaid(v) if fmt == "mermaid" else ex.to_dot(v))
                out = "\n".join(chunks)
        if output is None:
            sys.stdout.write(out)
            sys.stdout.flush()
        else:
            _write_atomic(output, out)


def _write_atomic(path: Path, text: str) -> None:
    """temp file, fsync, rename, directory fsync (SPEC §4: export files)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(path.parent or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stats(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
    machine: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="Only these machines.")
    ] = None,
    top: int = typer.Option(5, "--top", min=1, help="How many busiest states and events."),
    as_json: bool = typer.Option(False, "--json", help="JSON output."),
) -> None:
    """Summarise a recording: machines, records, time span, errors, busiest states and
    events, and event durations."""
    backend = open_source(source)
    with errors(), backend:
        ids = _machine_ids(backend, machine)
        total = sum(max(0, backend.highest(m) + 1 - backend.first(m)) for m in ids)
        report: dict[str, Any] = {"source": backend.url, "machines": []}
        with progress(total, "reading") as advance:
            for mid in ids:
                report["machines"].append(_machine_stats(backend, mid, top, advance))
    ms = report["machines"]
    report["totals"] = {
        "machines": len(ms),
        "records": sum(m["records"] for m in ms),
        "errors": sum(m["errors"] for m in ms),
        "rejected": sum(m["rejected"] for m in ms),
        "first_time": min(
            (m["first_time"] for m in ms if m["first_time"] is not None), default=None
        ),
        "last_time": max((m["last_time"] for m in ms if m["last_time"] is not None), default=None),
    }
    if as_json:
        echo_json(report)
        return
    t = report["totals"]
    typer.echo(f"source    {report['source']}")
    typer.echo(
        f"machines  {t['machines']}   records {t['records']}   errors {t['errors']}   "
        f"rejected {t['rejected']}"
    )
    if t["first_time"] is not None:
        span = (t["last_time"] - t["first_time"]) / 1e9
        typer.echo(
            f"span      {format_time(t['first_time'])} .. {format_time(t['last_time'])} "
            f"({span:.3f} s)"
        )
    for m in ms:
        typer.echo("")
        typer.echo(
            f"{m['id']} ({m['kind']}, mach_tick {m['mach_tick']}): "
            f"{counted(m['records'], 'record')}, seqs {m['first_seq']}..{m['highest']}, "
            f"{counted(m['errors'], 'error')}, "
            f"{m['rejected']} rejected"
        )
        kinds = ", ".join(f"{k} {n}" for k, n in m["kinds"].items())
        typer.echo(f"  kinds     {kinds or '-'}")
        states = ", ".join(f"{s} {n}" for s, n in m["busiest_states"])
        typer.echo(f"  states    {states or '-'}")
        events = ", ".join(f"{e} {n}" for e, n in m["busiest_events"])
        typer.echo(f"  events    {events or '-'}")
        d = m["durations_us"]
        if d["count"]:
            typer.echo(
                f"  durations mean {d['mean']:.1f} us, p50 {d['p50']:.1f}, "
                f"p95 {d['p95']:.1f}, max {d['max']:.1f} (over {counted(d['count'], 'event')})"
            )


def _machine_stats(backend: Backend, mid: str, top: int, advance: Any) -> dict[str, Any]:
    from aminspect.export import iter_history
    from aminspect.session import Outcome, outcome_of

    machine = backend.get_machine(mid)
    names = machine.schema.names
    kinds: Counter[str] = Counter()
    events: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    durations: list[int] = []
    errors_n = rejected = n = 0
    first_time: int | None = None
    last_time: int | None = None
    for rec, _before, _exited, entered in iter_history(backend, machine):
        n += 1
        kinds[str(rec.kind)] += 1
        if rec.kind == "event":
            events[rec.name] += 1
            durations.append(rec.duration)
        if outcome_of(rec) is Outcome.ERROR:  # a library's refusal counts as rejected only
            errors_n += 1
        if not rec.accepted:
            rejected += 1
        for i in entered:
            entries[names[i]] += 1
        first_time = rec.time if first_time is None else min(first_time, rec.time)
        last_time = rec.time if last_time is None else max(last_time, rec.time)
        if n % 1024 == 0:
            advance(1024)
    advance(n % 1024)
    durations.sort()

    def pct(p: float) -> float:
        return durations[min(len(durations) - 1, int(p * len(durations)))] / 1000

    return {
        "id": mid,
        "kind": machine.kind,
        "mach_tick": machine.mach_tick,
        "records": n,
        "first_seq": backend.first(mid),
        "highest": backend.highest(mid),
        "first_time": first_time,
        "last_time": last_time,
        "errors": errors_n,
        "rejected": rejected,
        "kinds": dict(kinds.most_common()),
        "busiest_states": entries.most_common(top),
        "busiest_events": events.most_common(top),
        "durations_us": {
            "count": len(durations),
            "mean": statistics.fmean(durations) / 1000 if durations else 0.0,
            "p50": pct(0.5) if durations else 0.0,
            "p95": pct(0.95) if durations else 0.0,
            "max": durations[-1] / 1000 if durations else 0.0,
        },
    }
