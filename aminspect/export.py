"""Exports of a recording: JSON Lines, and Mermaid/DOT state diagrams with visit counts.

Visit counts come from the history alone: a state's count is how many times it was
entered (``(clock + 1) // 2``, so trimmed histories still count everything); a
transition's count is how many event records took it. An event record is matched to the
declared transition with its name whose source was active before it and whose
destination it entered (the innermost source wins); records that match no declared
transition (forced writes, manual mutations) are drawn as dashed "observed" edges.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends import Backend
from tracer.machine_time import MachineTime
from tracer.records import (
    RESET_KINDS,
    Kind,
    MachineRecord,
    Schema,
    TransitionRecord,
    TransitionSpec,
)

__all__ = [
    "EVENTLESS",
    "FORMATS",
    "Visits",
    "declared_for",
    "iter_history",
    "jsonl_lines",
    "machine_to_json",
    "record_to_json",
    "to_dot",
    "to_mermaid",
    "visits",
]

FORMATS = ("jsonl", "mermaid", "dot")
EVENTLESS = "(eventless)"  # the record name of an eventless transition

Progress = Callable[[int], None]  # called with the number of records just processed


def machine_to_json(machine: MachineRecord) -> dict[str, Any]:
    """A machine record as a JSON-ready dict (``type: "machine"``)."""
    return {
        "type": "machine",
        "id": machine.id,
        "kind": machine.kind,
        "parent_id": machine.parent_id,
        "mach_tick": machine.mach_tick,
        "created": machine.created,
        "updated": machine.updated,
        "tags": dict(machine.tags),
        "schema": machine.schema.to_dict(),
    }


def record_to_json(rec: TransitionRecord, schema: Schema) -> dict[str, Any]:
    """A transition record as a JSON-ready dict with state names (``type: "record"``)."""
    names = schema.names

    def named(indexes: Sequence[int]) -> list[str]:
        return [names[i] if 0 <= i < len(names) else str(i) for i in indexes]

    return {
        "type": "record",
        "id": rec.id,
        "machine_id": rec.machine_id,
        "seq": rec.seq,
        "mach_tick": rec.mach_tick,
        "kind": str(rec.kind),
        "name": rec.name,
        "time": rec.time,
        "duration": rec.duration,
        "args": rec.args,
        "accepted": rec.accepted,
        "error": list(rec.error) if rec.error is not None else None,
        "exited": named(rec.exited),
        "entered": named(rec.entered),
        "parent_seq": rec.parent_seq,
        "source": list(rec.source) if rec.source is not None else None,
    }


def dumps(obj: Any) -> str:
    """One compact JSON line; values JSON cannot hold become their ``repr``."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=repr)


def _machines(backend: Backend, machine_ids: Sequence[str] | None) -> list[MachineRecord]:
    if machine_ids is None:
        return backend.machines()
    return [backend.get_machine(mid) for mid in machine_ids]


def _records(backend: Backend, machine_id: str) -> Iterator[TransitionRecord]:
    it = getattr(backend, "iter_records", None)
    if it is not None:
        yield from it(machine_id)
    else:
        yield from backend.read(machine_id)


def jsonl_lines(
    backend: Backend, machine_ids: Sequence[str] | None = None, progress: Progress | None = None
) -> Iterator[str]:
    """Each machine record, then its records, as JSON lines (no trailing newline).

    Raises:
        UnknownMachine: a requested id is not in the backend.
    """
    for machine in _machines(backend, machine_ids):
        yield dumps(machine_to_json(machine))
        schema = machine.schema
        for rec in _records(backend, machine.id):
            yield dumps(record_to_json(rec, schema))
            if progress is not None:
                progress(1)


def iter_history(
    backend: Backend, machine: MachineRecord
) -> Iterator[tuple[TransitionRecord, frozenset[int], tuple[int, ...], tuple[int, ...]]]:
    """``(record, active before, exited, entered)`` for every retained record, in order."""
    first = getattr(backend, "first", lambda _mid: 0)(machine.id)
    state_at = getattr(backend, "state_at", None)
    if first > 0 and state_at is not None:
        mt = state_at(machine.id, first - 1)
    else:
        mt = MachineTime.for_schema(machine.schema)
    for rec in _records(backend, machine.id):
        before = mt.active()
        exited, entered = mt.changes(rec)
        mt.apply(rec, strict=False)
        yield rec, before, exited, entered


def declared_for(
    schema: Schema,
    name: str,
    before: frozenset[int],
    entered: Sequence[int],
    after: frozenset[int],
) -> list[TransitionSpec]:
    """The declared transitions an event record may have taken, innermost source first.

    A transition fits when its event is ``name`` (an empty event for ``(eventless)``),
    its source was active before, and its destination was entered (or still active when
    the record entered nothing); an internal transition (no destination) fits a record
    that left the configuration as it was.
    """
    names = schema.names
    before_names = {names[i] for i in before}
    entered_names = {names[i] for i in entered}
    after_names = {names[i] for i in after}
    # python-statemachine records eventless transitions under this name; the schema
    # declares them with an empty event.
    event = "" if name == EVENTLESS else name
    out: list[TransitionSpec] = []
    for t in schema.transitions:
        if t.event != event or t.source not in before_names:
            continue
        if t.dest is None:
            if after == before:  # internal: nothing changes (re-entries at most)
                out.append(t)
        elif t.dest in entered_names or (not entered and t.dest in after_names):
            out.append(t)
    depth = {s.name: schema.depth(i) for i, s in enumerate(schema.states)}
    out.sort(key=lambda t: -depth.get(t.source, 0))
    return out


def _innermost(schema: Schema, indexes: Sequence[int]) -> int | None:
    chosen = set(indexes)
    leaves = [i for i in indexes if not any(c in chosen for c in schema.children(i))]
    return leaves[0] if leaves else None


@dataclass
class Visits:
    """Visit counts of one machine."""

    machine: MachineRecord
    states: dict[str, int] = field(default_factory=dict)  # entries per state
    transitions: Counter[TransitionSpec] = field(default_factory=Counter)
    observed: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # src, name, dst
    initial: Counter[str] = field(default_factory=Counter)  # states set by init/restore


def visits(backend: Backend, machine_id: str, progress: Progress | None = None) -> Visits:
    """Count state entries and transitions taken by one machine.

    Raises:
        UnknownMachine: the backend holds no such machine.
    """
    machine = backend.get_machine(machine_id)
    schema = machine.schema
    names = schema.names
    out = Visits(machine)
    mt: MachineTime | None = None
    count = 0
    for rec, before, exited, entered in iter_history(backend, machine):
        after = (before - set(exited)) | set(entered)
        if rec.kind in RESET_KINDS:
            leaf = _innermost(schema, sorted(entered))
            if leaf is not None and rec.kind != Kind.GAP:
                out.initial[names[leaf]] += 1
        elif exited or entered or rec.kind == Kind.EVENT:
            fits = declared_for(schema, rec.name, before, entered, after) if rec.accepted else []
            if fits:
                out.transitions[fits[0]] += 1
            elif exited or entered:
                src = _innermost(schema, exited)
                dst = _innermost(schema, entered)
                out.observed[
                    (
                        names[src] if src is not None else "[*]",
                        rec.name,
                        names[dst] if dst is not None else "[*]",
                    )
                ] += 1
        count += 1
        if progress is not None and count % 1024 == 0:
            progress(1024)
    if progress is not None:
        progress(count % 1024)
    highest = backend.highest(machine_id)
    state_at = getattr(backend, "state_at", None)
    if highest >= 0 and state_at is not None:
        mt = state_at(machine_id, highest)
    clocks = mt.clocks if mt is not None else [0] * len(schema)
    out.states = {n: (c + 1) // 2 for n, c in zip(names, clocks, strict=True)}
    return out


def _is_auto(t: TransitionSpec) -> bool:
    """``transitions``' generated ``to_<state>`` triggers: drawn only when taken."""
    return t.dest is not None and t.event == f"to_{t.dest}"


def _edges(v: Visits) -> list[tuple[str, str, str, int, bool]]:
    """(source, dest, label, count, declared), deduplicated (GEN-01)."""
    edges: dict[tuple[str, str, str], list[Any]] = {}
    for t in dict.fromkeys(v.machine.schema.transitions):  # declared twice: one edge
        n = v.transitions.get(t, 0)
        if _is_auto(t) and n == 0:
            continue
        dest = t.dest if t.dest is not None else t.source
        key = (t.source, dest, t.event)
        if key in edges:
            edges[key][0] += n
        else:
            edges[key] = [n, True]
    for (src, name, dst), n in v.observed.items():
        key = (src, dst, name)
        if key in edges:
            edges[key][0] += n
        else:
            edges[key] = [n, False]
    return [(s, d, e, int(c), bool(decl)) for (s, d, e), (c, decl) in edges.items()]


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def to_mermaid(v: Visits) -> str:
    """A Mermaid ``stateDiagram-v2`` with the entry count of every state and the count of
    every transition (``event (n)``); observed undeclared edges are marked ``(observed)``.
    """
    schema = v.machine.schema
    ids = {name: f"s{i}" for i, name in enumerate(schema.names)}
    lines = ["stateDiagram-v2", f"    %% {v.machine.id} ({v.machine.kind})"]

    def block(parent: int | None, indent: str) -> None:
        kids = schema.children(parent)
        parallel = parent is not None and schema.states[parent].parallel
        for n, c in enumerate(kids):
            spec = schema.states[c]
            sid = ids[spec.name]
            label = f"{spec.name} ({v.states.get(spec.name, 0)})"
            lines.append(f'{indent}state "{_quote(label)}" as {sid}')
            if schema.children(c):
                lines.append(f"{indent}state {sid} {{")
                block(c, indent + "    ")
                lines.append(f"{indent}}}")
            if spec.initial and not parallel:
                lines.append(f"{indent}[*] --> {sid}")
            if spec.final:
                lines.append(f"{indent}{sid} --> [*]")
            if parallel and n < len(kids) - 1:
                lines.append(f"{indent}--")

    block(None, "    ")
    for src, dst, event, count, declared in _edges(v):
        a = ids.get(src, "[*]")
        b = ids.get(dst, "[*]")
        label = f"{event or EVENTLESS} ({count})" + ("" if declared else " (observed)")
        lines.append(f"    {a} --> {b} : {_quote(label)}")
    return "\n".join(lines) + "\n"


def to_dot(v: Visits) -> str:
    """A Graphviz digraph: compound states as clusters, counts on nodes and edges;
    observed undeclared edges are dashed."""
    schema = v.machine.schema
    ids = {name: f"s{i}" for i, name in enumerate(schema.names)}
    lines = [
        f'digraph "{_quote(v.machine.id)}" {{',
        "    compound=true;",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
        '    __start [shape=point, label=""];',
    ]

    def block(parent: int | None, indent: str) -> None:
        for c in schema.children(parent):
            spec = schema.states[c]
            sid = ids[spec.name]
            count = v.states.get(spec.name, 0)
            label = f"{_quote(spec.name)}\\n({count})"
            shape = ", peripheries=2" if spec.final else ""
            if schema.children(c):
                style = "dashed" if spec.parallel else "rounded"
                lines.append(f"{indent}subgraph cluster_{sid} {{")
                lines.append(f'{indent}    label="{_quote(spec.name)} ({count})"; style={style};')
                lines.append(f'{indent}    {sid} [label="{label}", shape=ellipse];')
                block(c, indent + "    ")
                lines.append(f"{indent}}}")
            else:
                lines.append(f'{indent}{sid} [label="{label}"{shape}];')

    block(None, "    ")
    for i in schema.children(None):
        if schema.states[i].initial:
            lines.append(f"    __start -> {ids[schema.names[i]]};")
    for src, dst, event, count, declared in _edges(v):
        a = ids.get(src, "__start")
        b = ids.get(dst, "__start")
        style = "" if declared else ", style=dashed"
        label = f"{event or EVENTLESS} ({count})"
        lines.append(f'    {a} -> {b} [label="{_quote(label)}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
