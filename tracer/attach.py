"""``attach()``: pick the adapter for an object and start tracing it."""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tracer.core import DEFAULT_BUFFER, Channel, Dispatcher, TraceHandle, dispatcher_for
from tracer.records import MachineRecord
from tracer.sanitize import Sanitizer
from tracer.sinks import MemorySink, Sink

__all__ = [
    "AttachContext",
    "UnsupportedMachine",
    "attach",
    "attach_from_env",
    "default_sink",
    "new_machine_id",
]


class UnsupportedMachine(TypeError):
    """``attach()`` was given an object no adapter knows."""


_counters: dict[str, itertools.count[int]] = {}
_counters_lock = threading.Lock()


def new_machine_id(base: str) -> str:
    """``"{base}-{n}"`` with a per-process counter per base, starting at 1."""
    with _counters_lock:
        counter = _counters.setdefault(base, itertools.count(1))
        return f"{base}-{next(counter)}"


@dataclass
class AttachContext:
    """What an adapter needs from ``attach()``: options and a way to open channels."""

    dispatcher: Dispatcher
    name: str | None = None
    parent_id: str | None = None
    sanitizer: Sanitizer | None = None
    tags: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)  # adapter-specific, see each adapter
    # (machine id, mach_tick) per channel opened, in order: resurrected machines.
    restore: list[tuple[str, int]] = field(default_factory=list)
    _names_used: int = 0

    def machine_id(self, base: str) -> str:
        """The user's name for the first instance (``name-2``... after it), else derived."""
        if self.name is None:
            return new_machine_id(base)
        self._names_used += 1
        return self.name if self._names_used == 1 else f"{self.name}-{self._names_used}"

    def open_channel(self, machine: MachineRecord) -> Channel:
        if machine.parent_id is None:
            machine.parent_id = self.parent_id
        machine.tags = {**self.tags, **machine.tags}
        restoring = bool(self.restore)
        if restoring:
            machine.id, machine.mach_tick = self.restore.pop(0)
        channel = Channel(machine, self.dispatcher)
        channel.restoring = restoring
        self.dispatcher.add(channel)
        return channel


class Adapter(Protocol):
    """An adapter module: ``accepts(obj)`` and ``attach(obj, ctx) -> (channels, detach)``."""

    def accepts(self, obj: Any) -> bool: ...

    def attach(self, obj: Any, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]: ...


def _adapters() -> list[Adapter]:
    # Imported here so that tracing one library never imports the other.
    from tracer.adapters import manual, statemachine, transitions

    return [manual, transitions, statemachine]


_default_sink: MemorySink | None = None


def default_sink() -> MemorySink:
    """The process-wide in-process sink used when ``attach()`` is given no sink."""
    global _default_sink
    if _default_sink is None:
        _default_sink = MemorySink()
    return _default_sink


def attach(
    machine: Any,
    *,
    sink: Sink | None = None,
    name: str | None = None,
    parent: TraceHandle | str | None = None,
    sanitizer: Sanitizer | None = None,
    tags: Mapping[str, str] | None = None,
    buffer_size: int = DEFAULT_BUFFER,
    options: Mapping[str, Any] | None = None,
    url: str | None = None,
    restore: Sequence[tuple[str, int]] = (),
) -> TraceHandle:
    """Trace a state machine without changing its definition or behaviour.

    Args:
        machine: a ``transitions`` machine (every model on it is traced), a
            ``python-statemachine`` machine, or a :class:`tracer.ManualMachine`.
        sink: where records go (a backend, the WebSocket sink, a MemorySink); defaults to
            the process-wide in-process sink.
        name: the machine id; derived from the class name when omitted.
        parent: the parent machine (a handle or an id), for trees of machines.
        sanitizer: ``f(args, kwargs) -> value`` to redact event arguments.
        tags: string labels stored with the machine record.
        buffer_size: records held for the sender before the oldest are dropped as a gap.
        url: ship to an aminspect server at ``ws://`` or ``wss://`` (one shared
            WebSocketSink per URL; the token comes from AMINSPECT_TOKEN). Exclusive
            with ``sink``.
        options: adapter-specific switches (documented in each adapter module).
        restore: ``(machine id, mach_tick)`` for the machine instances this call traces,
            in the order the adapter opens them (the models of a ``transitions`` machine
            in ``machine.models`` order): each continues that machine's history under
            that id and tick, starting with a ``restore`` record instead of ``init``.
            ``aminspect.resurrect`` passes it; app code rarely needs it.

    Returns:
        A TraceHandle with ``detach()``, ``flush(timeout)`` and ``stats``.

    Raises:
        UnsupportedMachine: when no adapter handles ``machine``.
        ValueError: when both ``sink`` and ``url`` are given, or ``url`` is not ws(s)://.
    """
    if url is not None:
        if sink is not None:
            raise ValueError("attach() takes a sink or a url, not both")
        from tracer.ws_sink import sink_for_url

        sink = sink_for_url(url, os.environ.get("AMINSPECT_TOKEN") or None)
    parent_id = parent.machine_id if isinstance(parent, TraceHandle) else parent
    dispatcher = dispatcher_for(sink if sink is not None else default_sink(), buffer_size)
    ctx = AttachContext(
        dispatcher,
        name,
        parent_id,
        sanitizer,
        dict(tags or {}),
        dict(options or {}),
        [(str(mid), int(tick)) for mid, tick in restore],
    )
    for adapter in _adapters():
        if adapter.accepts(machine):
            channels, detach = adapter.attach(machine, ctx)
            return TraceHandle(channels, dispatcher, detach)
    raise UnsupportedMachine(
        f"cannot trace {type(machine).__qualname__}: expected a transitions machine, "
        "a python-statemachine machine or a tracer.ManualMachine"
    )


def attach_from_env(machine: Any, **kw: Any) -> TraceHandle | None:
    """Trace ``machine`` to ``$AMINSPECT_URL`` when it is set, else do nothing.

    ``$AMINSPECT_TOKEN`` is sent as the token. Never raises for a bad environment: an
    invalid URL is reported on stderr and tracing stays off.

    Args:
        machine: anything ``attach()`` accepts.
        kw: passed to ``attach()`` (name, parent, sanitizer, tags, buffer_size, ...).

    Returns:
        The TraceHandle, or None when AMINSPECT_URL is unset or invalid.

    Raises:
        UnsupportedMachine: when no adapter handles ``machine``.
    """
    url = os.environ.get("AMINSPECT_URL", "").strip()
    if not url:
        return None
    try:
        return attach(machine, url=url, **kw)
    except ValueError as exc:
        if isinstance(exc, UnsupportedMachine):
            raise
        print(f"aminspect: tracing disabled: {exc}", file=sys.stderr)
        return None
