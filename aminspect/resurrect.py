"""Resurrection: restore live machines to a recorded state without re-running side effects.

The recorded state of a machine at a seq is derived from its history only (snapshots plus
records, never the wire): the active configuration, and for each compound state the
states that were active under it when it was last exited (history pseudo-states need
them). Restoring writes that configuration straight into the machine: ``set_state`` on a
``transitions`` model, the ``configuration`` and ``history_values`` of a
python-statemachine machine. No entry, exit or transition callback runs and nothing is
shipped while the history is read (BEHAVIOURS 4.5.6, D-09).

The restart itself is recorded: ``mach_tick`` goes up by one and a ``restore`` record
whose ``entered`` is the whole configuration continues the machine's seqs, either through
the tracer (``trace=True``: the machine keeps being traced under its old id) or appended
straight to the source backend (``trace=False``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import backends
from backends import Backend, Query, UnknownMachine
from tracer import attach as _attach
from tracer.core import TraceHandle
from tracer.records import Kind, MachineRecord, Schema, StateSpec, TransitionRecord
from tracer.sinks import Sink

__all__ = [
    "RecordedState",
    "ResurrectError",
    "Resurrection",
    "SchemaMismatch",
    "check_schema",
    "rebuild",
    "recorded_state",
    "resurrect",
    "schema_of",
]


class ResurrectError(Exception):
    """A machine cannot be resurrected; ``str(err)`` is one line naming the reason."""


class SchemaMismatch(ResurrectError):
    """The live machine's states do not match the recorded ones (names are compared)."""


# ---------------------------------------------------------------------------------------
# what the history says


@dataclass(frozen=True, slots=True)
class RecordedState:
    """A machine's state after record ``seq``, derived from its history.

    ``history`` maps each compound state that was ever exited to the states (all
    descendants, schema order) active under it right before its last exit up to ``seq``.
    """

    machine: MachineRecord
    seq: int  # the last record applied; -1 when the machine has no records
    highest: int  # the highest recorded seq
    mach_tick: int  # the highest mach_tick of the machine so far
    active: tuple[str, ...]  # active states with their ancestors, schema order
    leaves: tuple[str, ...]  # active states with no active child
    clocks: tuple[int, ...]
    history: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def machine_id(self) -> str:
        return self.machine.id

    @property
    def schema(self) -> Schema:
        return self.machine.schema

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what ``aminspect resurrect --json`` prints)."""
        return {
            "machine_id": self.machine.id,
            "kind": self.machine.kind,
            "seq": self.seq,
            "highest": self.highest,
            "mach_tick": self.mach_tick,
            "next_mach_tick": self.mach_tick + 1,
            "active": list(self.active),
            "leaves": list(self.leaves),
            "history": {k: list(v) for k, v in self.history.items()},
            "clocks": dict(zip(self.machine.schema.names, self.clocks, strict=True)),
        }


def _open(source: Backend | str, read_only: bool) -> tuple[Backend, bool]:
    if isinstance(source, str):
        return backends.open(source, read_only=read_only), True
    return source, False


def recorded_state(source: Backend | str, machine_id: str, seq: int | None = None) -> RecordedState:
    """The recorded state of ``machine_id`` after record ``seq`` (default: the latest).

    Args:
        source: a backend, or a URL opened read-only for the call.
        machine_id: the machine.
        seq: the record to stop after; None for the latest, -1 for before any record.

    Returns:
        The RecordedState.

    Raises:
        UnknownMachine: the source holds no such machine (the message lists known ids).
        ResurrectError: ``seq`` is outside the recorded range.
        BackendError: the source cannot be read.
    """
    backend, owned = _open(source, read_only=True)
    try:
        return _recorded_state(backend, machine_id, seq)
    finally:
        if owned:
            backend.close()


def _recorded_state(backend: Backend, machine_id: str, seq: int | None) -> RecordedState:
    try:
        machine = backend.get_machine(machine_id)
    except UnknownMachine:
        known = [m.id for m in backend.machines()]
        listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        raise UnknownMachine(
            f"no machine {machine_id!r} in {backend.url} (machines: {listed or 'none'})"
        ) from None
    highest = backend.highest(machine_id)
    if seq is None:
        seq = highest
    if seq < -1 or seq > highest:
        raise ResurrectError(
            f"{machine_id}: no record {seq} to restore at (recorded seqs: 0..{highest})"
            if highest >= 0
            else f"{machine_id}: no records to restore at seq {seq}"
        )
    state_at = getattr(backend, "state_at")  # noqa: B009 - every BaseBackend has it
    first = getattr(backend, "first", lambda _mid: 0)(machine_id)
    if seq >= 0 and seq < first - 1:
        raise ResurrectError(
            f"{machine_id}: records up to {first - 1} were deleted; restore at {first - 1} or later"
        )
    mt = state_at(machine_id, seq)
    schema = machine.schema
    active = mt.active()
    tick = machine.mach_tick
    if highest >= 0:
        last = backend.read(machine_id, highest, highest + 1)
        if last:
            tick = max(tick, last[0].mach_tick)
    history: dict[str, tuple[str, ...]] = {}
    if seq >= 0:
        find = getattr(backend, "find")  # noqa: B009
        for i, spec in enumerate(schema.states):
            kids = schema.children(i)
            if not kids:
                continue
            found = find(
                Query(
                    machine_id=machine_id,
                    seq_end=seq + 1,
                    exited=frozenset({spec.name}),
                    newest_first=True,
                    limit=1,
                )
            )
            if not found or found[0].seq < first:
                continue
            before = state_at(machine_id, found[0].seq - 1).active()
            under = _descendants(schema, i)
            history[spec.name] = tuple(schema.names[j] for j in sorted(before & under))
    names = schema.names
    leaves = [i for i in sorted(active) if not any(c in active for c in schema.children(i))]
    return RecordedState(
        machine=machine,
        seq=seq,
        highest=highest,
        mach_tick=tick,
        active=tuple(names[i] for i in sorted(active)),
        leaves=tuple(names[i] for i in leaves),
        clocks=tuple(mt.clocks),
        history=history,
    )


def _descendants(schema: Schema, i: int) -> set[int]:
    out: set[int] = set()
    todo = list(schema.children(i))
    while todo:
        j = todo.pop()
        out.add(j)
        todo.extend(schema.children(j))
    return out


# ---------------------------------------------------------------------------------------
# live machines


def _library(machine: Any) -> str:
    from tracer.adapters import manual, statemachine, transitions

    if transitions.accepts(machine):
        return "transitions"
    if statemachine.accepts(machine):
        return "statemachine"
    if manual.accepts(machine):
        return "manual"
    raise ResurrectError(
        f"cannot resurrect a {type(machine).__qualname__}: expected a transitions machine, "
        "a python-statemachine machine or a tracer.ManualMachine"
    )


def schema_of(machine: Any) -> Schema:
    """The schema the tracer records for a live machine (the same extraction code);
    a python-statemachine class works too.

    Raises:
        ResurrectError: for an object no adapter knows.
    """
    from tracer.adapters import statemachine

    bases = statemachine._base_classes()
    if isinstance(machine, type) and bases and issubclass(machine, bases):
        return statemachine.schema_of(machine)[0]  # a class is enough: states are declared
    lib = _library(machine)
    if lib == "transitions":
        from tracer.adapters.transitions import _extract_schema

        return _extract_schema(machine)[0]
    if lib == "statemachine":
        from tracer.adapters.statemachine import schema_of as sm_schema

        return sm_schema(machine)[0]
    schema: Schema = machine.schema
    return schema


def check_schema(recorded: Schema, live: Schema, machine_id: str = "") -> None:
    """Fail unless every recorded state exists in the live schema, matched by name.

    States the live machine added are fine; their order does not matter for restoring.

    Raises:
        SchemaMismatch: naming the recorded states the live machine lacks (and the
            live states the recording never had, which are likely their new names).
    """
    live_names = set(live.names)
    missing = [n for n in recorded.names if n not in live_names]
    if not missing:
        return
    recorded_names = set(recorded.names)
    new = [n for n in live.names if n not in recorded_names]
    who = f"{machine_id}: " if machine_id else ""
    hint = f"; states only in the machine (renamed?): {', '.join(new)}" if new else ""
    raise SchemaMismatch(
        f"{who}schema mismatch: recorded states missing from the machine: "
        f"{', '.join(missing)}{hint}"
    )


def _tracing_compatible(recorded: Schema, live: Schema, machine_id: str) -> None:
    """Continuing a history needs the recorded indexes to keep their meaning."""
    if live.names[: len(recorded)] != recorded.names:
        raise SchemaMismatch(
            f"{machine_id}: the machine declares the recorded states in another order; "
            "its state indexes would not match the recorded history (restore with "
            "trace=False, or trace it under a new id)"
        )


def _transitions_value(schema: Schema, active: frozenset[int]) -> Any:
    """The model state value ``transitions`` keeps for an active set (lists for parallel)."""

    def value(i: int) -> Any:
        kids = [c for c in schema.children(i) if c in active]
        if not kids:
            return schema.names[i]
        if schema.states[i].parallel or len(kids) > 1:
            return [value(c) for c in kids]
        return value(kids[0])

    roots = [i for i in schema.children(None) if i in active]
    if not roots:
        raise ResurrectError("the recorded configuration is empty: nothing to restore")
    if len(roots) == 1:
        return value(roots[0])
    return [value(r) for r in roots]


def _raw_set_state(machine: Any) -> Any:
    """``machine.set_state`` without a tracer wrapper in front (no forced record)."""
    fn = machine.set_state
    while hasattr(fn, "original") and hasattr(fn, "tracer"):
        fn = fn.original
    return fn


def _restore_transitions(machine: Any, model: Any, state: RecordedState) -> None:
    live = schema_of(machine)
    active = frozenset(live.index(n) for n in state.active)
    value = _transitions_value(live, active)
    # set_state writes the model attribute only: no callback runs (ADAPTERS 1.6).
    _raw_set_state(machine)(value, model)


def _restore_statemachine(sm: Any, state: RecordedState) -> None:
    from statemachine.orderedset import OrderedSet

    from tracer.adapters.statemachine import schema_of as sm_schema

    schema, index = sm_schema(sm)
    by_name = {schema.names[i]: value for value, i in index.items()}
    states_map = sm.states_map
    config = [states_map[by_name[n]] for n in schema.names if n in set(state.active)]
    # The setter writes the configuration (and the model's state field) directly,
    # "bypassing all the hooks" (python-statemachine docs).
    sm.configuration = OrderedSet(config)
    for compound_name, under in state.history.items():
        compound = states_map[by_name[compound_name]]
        for h in getattr(compound, "history", ()):
            deep = bool(h.type.is_deep)
            values = [
                states_map[by_name[n]]
                for n in under
                if deep or states_map[by_name[n]].parent is compound
            ]
            sm.history_values[h.id] = values


def _restore_manual(machine: Any, state: RecordedState) -> None:
    schema = machine.schema
    with machine._lock:
        machine._active = schema.with_ancestors(schema.index(n) for n in state.leaves)


@dataclass
class Resurrection:
    """What ``resurrect`` did: the states restored, the new tick, the tracer handle."""

    states: list[RecordedState]
    mach_tick: list[int]  # the new mach_tick of each machine
    handle: TraceHandle | None = None
    records: list[TransitionRecord] = field(default_factory=list)  # appended (trace=False)

    @property
    def machine_ids(self) -> list[str]:
        return [s.machine_id for s in self.states]


def resurrect(
    machine: Any,
    source: Backend | str,
    machine_id: str | Sequence[str],
    seq: int | None = None,
    *,
    trace: bool = True,
    sink: Sink | None = None,
    url: str | None = None,
    **attach_options: Any,
) -> Resurrection:
    """Restore a live machine to its recorded state (latest, or after record ``seq``).

    No entry/exit/transition callback runs, and reading the history ships nothing. The
    machine's ``mach_tick`` goes up by one and a ``restore`` record carrying the whole
    configuration continues its seqs, so the history shows the restart.

    Args:
        machine: a ``transitions`` machine (every model is restored; pass one id per
            model in ``machine.models`` order), a python-statemachine machine
            (configuration and history values) or a ``tracer.ManualMachine``.
        source: the backend holding the history, or its URL (a URL opened here as the
            tracer's sink stays open for it; pass a backend to control its lifetime).
        machine_id: the recorded id, or one id per model.
        seq: restore the state after this record; None for the latest.
        trace: attach the tracer so the machine keeps being traced under the same id
            (its first record is the ``restore`` record). With False, the ``restore``
            record is appended to ``source`` directly (skipped when it is read-only).
        sink: where the tracer writes (default: ``source`` itself).
        url: trace to an aminspect server instead (``ws://...``).
        attach_options: passed to ``tracer.attach`` (sanitizer, tags, options, ...).

    Returns:
        A Resurrection with the states restored, the new ticks and the tracer handle.

    Raises:
        UnknownMachine: a machine id the source does not hold.
        SchemaMismatch: recorded states the machine no longer has (named), or a
            different state order when continuing the same history.
        ResurrectError: an unsupported machine, a bad seq or id count.
        BackendError: the source cannot be read or written.
    """
    lib = _library(machine)
    ids = [machine_id] if isinstance(machine_id, str) else list(machine_id)
    models: list[Any] = list(machine.models) if lib == "transitions" else [machine]
    if len(ids) != len(models):
        raise ResurrectError(
            f"{len(ids)} machine id(s) given for {len(models)} model(s) of the machine"
        )
    into_source = trace and sink is None and url is None
    # Written to when it is the tracer's sink or takes the restore record itself.
    backend, owned = _open(source, read_only=trace and not into_source)
    keep_open = False
    try:
        states = [_recorded_state(backend, mid, seq) for mid in ids]
        live = schema_of(machine)
        for st in states:
            check_schema(st.schema, live, st.machine_id)
            if trace or not backend.read_only:
                _tracing_compatible(st.schema, live, st.machine_id)
            if lib == "transitions" and not st.active:
                raise ResurrectError(
                    f"{st.machine_id}: no state is active at seq {st.seq}: nothing to restore"
                )
        # Everything is checked before the machine is touched: all or nothing.
        for model, st in zip(models, states, strict=True):
            if lib == "transitions":
                _restore_transitions(machine, model, st)
            elif lib == "statemachine":
                _restore_statemachine(machine, st)
            else:
                _restore_manual(machine, st)
        ticks = [st.mach_tick + 1 for st in states]
        result = Resurrection(states, ticks)
        if trace:
            target: Sink | None = sink if sink is not None or url is not None else backend
            result.handle = _attach(
                machine,
                sink=target,
                url=url,
                restore=list(zip(ids, ticks, strict=True)),
                **attach_options,
            )
        elif not backend.read_only:
            for st, tick in zip(states, ticks, strict=True):
                result.records.append(_append_restore(backend, st, live, tick))
        keep_open = into_source  # the tracer writes into it from now on
        return result
    finally:
        if owned and not keep_open:
            backend.close()


def _append_restore(
    backend: Backend, state: RecordedState, live: Schema, tick: int
) -> TransitionRecord:
    """Write the ``restore`` record and the new tick straight into the history."""
    machine = state.machine
    updated = MachineRecord(
        machine.id,
        machine.kind,
        live if len(live) >= len(machine.schema) else machine.schema,
        machine.parent_id,
        tick,
        machine.created,
        time.time_ns(),
        dict(machine.tags),
    )
    backend.put_machine(updated)
    entered = tuple(sorted(updated.schema.index(n) for n in state.active))
    rec = TransitionRecord(
        machine.id,
        backend.highest(machine.id) + 1,
        Kind.RESTORE,
        "restore",
        tick,
        time.time_ns(),
        args={"seq": state.seq},
        entered=entered,
    )
    backend.append(machine.id, [rec])
    backend.flush()
    return rec


# ---------------------------------------------------------------------------------------
# rebuilding a transitions machine from the schema alone


def _local(spec: StateSpec, separator: str) -> str:
    if spec.parent is None:
        return spec.name
    prefix = spec.parent + separator
    return spec.name[len(prefix) :] if spec.name.startswith(prefix) else spec.name


def transitions_config(schema: Schema, separator: str = "_") -> dict[str, Any]:
    """``states``, ``transitions`` and ``initial`` for a ``transitions`` machine that has
    the recorded schema (auto ``to_*`` triggers are left to the machine).

    Raises:
        ResurrectError: when the schema has no initial state.
    """

    def build(i: int | None) -> list[Any]:
        out: list[Any] = []
        for c in schema.children(i):
            spec = schema.states[c]
            kids = schema.children(c)
            if not kids:
                out.append({"name": _local(spec, separator), "final": spec.final})
                continue
            entry: dict[str, Any] = {"name": _local(spec, separator), "children": build(c)}
            initials = [
                _local(schema.states[k], separator) for k in kids if schema.states[k].initial
            ]
            if spec.parallel:
                entry["parallel"] = entry.pop("children")
            elif initials:
                entry["initial"] = initials[0]
            out.append(entry)
        return out

    roots = schema.children(None)
    initial = [schema.names[i] for i in roots if schema.states[i].initial]
    if not initial:
        if not roots:
            raise ResurrectError("the recorded schema has no states")
        initial = [schema.names[roots[0]]]
    transitions: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str | None]] = set()
    for t in schema.transitions:
        if t.dest is not None and t.event == f"to_{t.dest}":
            continue  # the machine adds its own auto transitions
        key = (t.source, t.event, t.dest)
        if key in seen:
            continue
        seen.add(key)
        transitions.append({"trigger": t.event, "source": t.source, "dest": t.dest})
    return {
        "states": build(None),
        "transitions": transitions,
        "initial": initial[0] if len(initial) == 1 else initial,
    }


def rebuild(
    source: Backend | str,
    machine_id: str,
    seq: int | None = None,
    *,
    model: Any = None,
) -> tuple[Any, Any, RecordedState]:
    """Build a new ``transitions`` machine from the recorded schema alone, in the
    recorded state (no callbacks: the schema carries none). Nothing is written.

    Args:
        source: the backend or URL holding the history.
        machine_id: the recorded machine.
        seq: the record to restore after; None for the latest.
        model: the model to put on the machine (a fresh plain object by default).

    Returns:
        ``(machine, model, recorded_state)``.

    Raises:
        UnknownMachine, ResurrectError, BackendError: as ``recorded_state``.
    """
    state = recorded_state(source, machine_id, seq)
    schema = state.schema
    nested = any(s.parent is not None for s in schema.states)
    config = transitions_config(schema)
    if model is None:
        model = type("RebuiltModel", (), {"__module__": __name__})()
    try:
        import transitions
        import transitions.extensions
    except ImportError:
        raise ResurrectError("rebuilding needs the 'transitions' package") from None
    cls: Any = transitions.extensions.HierarchicalMachine if nested else transitions.Machine
    try:
        machine = cls(model=model, **config)
    except Exception as exc:
        raise ResurrectError(f"{machine_id}: cannot rebuild from the schema: {exc}") from None
    if state.active:
        _restore_transitions(machine, model, state)
    return machine, model, state


def describe(state: RecordedState) -> Iterable[str]:
    """Human lines for a recorded state (the CLI prints them)."""
    yield f"machine   {state.machine_id} ({state.machine.kind})"
    yield f"at seq    {state.seq} of {state.highest}"
    yield f"mach_tick {state.mach_tick} (a resurrection makes it {state.mach_tick + 1})"
    yield f"active    {', '.join(state.active) or '(none)'}"
    yield f"leaves    {', '.join(state.leaves) or '(none)'}"
    for compound, under in state.history.items():
        yield f"history   {compound}: {', '.join(under) or '(none)'}"
