"""The manual API: trace a hand-written machine by declaring states and reporting changes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tracer.attach import AttachContext
from tracer.core import Channel
from tracer.records import Kind, MachineRecord, Schema, StateSpec, TransitionSpec

__all__ = ["ManualMachine", "accepts", "attach"]


class ManualMachine:
    """A hand-written machine's states and the mutations it reports.

    Declare the states (names, or StateSpec for nested and parallel ones), then call
    ``add``, ``remove``, ``set`` or ``event`` as the machine changes. Adding a state also
    activates its ancestors; removing one also deactivates its descendants. Works with or
    without a tracer attached; when attached, every call becomes one record.
    """

    def __init__(
        self,
        states: Sequence[str | StateSpec],
        *,
        initial: Iterable[str] = (),
        transitions: Sequence[TransitionSpec] = (),
        kind: str = "manual",
    ) -> None:
        specs = tuple(s if isinstance(s, StateSpec) else StateSpec(s) for s in states)
        self.schema = Schema(specs, tuple(transitions))
        self.kind = kind
        self._lock = threading.Lock()
        self._active: frozenset[int] = self._closure(initial)
        self._channels: list[Channel] = []

    @property
    def active(self) -> frozenset[str]:
        names = self.schema.names
        return frozenset(names[i] for i in self._active)

    def is_active(self, state: str) -> bool:
        return self.schema.index(state) in self._active

    def _closure(self, states: Iterable[str]) -> frozenset[int]:
        return self.schema.with_ancestors(self.schema.index(s) for s in states)

    def _descendants(self, i: int) -> set[int]:
        out = {i}
        for j in self.schema.children(i):
            out |= self._descendants(j)
        return out

    def add(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Activate states (and their ancestors)."""
        with self._lock:
            entered = self._closure(states) - self._active
            self._change(Kind.ADD, name or "+" + ",".join(states), (), entered, args)

    def remove(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Deactivate states (and their descendants)."""
        with self._lock:
            exited: set[int] = set()
            for s in states:
                exited |= self._descendants(self.schema.index(s))
            self._change(
                Kind.REMOVE, name or "-" + ",".join(states), exited & self._active, (), args
            )

    def set(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Make exactly these states (and their ancestors) active."""
        with self._lock:
            target = self._closure(states)
            self._change(
                Kind.SET,
                name or "=" + ",".join(states),
                self._active - target,
                target - self._active,
                args,
            )

    def event(
        self,
        name: str,
        exited: Iterable[str] = (),
        entered: Iterable[str] = (),
        *,
        args: Any = None,
        accepted: bool = True,
        error: tuple[str, str] | None = None,
        duration: int = 0,
    ) -> None:
        """Report an event with the states it exited and entered (a state in both is
        exited and re-entered). Raises ValueError when that contradicts the active set."""
        with self._lock:
            ex = {self.schema.index(s) for s in exited}
            en = {self.schema.index(s) for s in entered}
            if not ex <= self._active:
                bad = sorted(self.schema.names[i] for i in ex - self._active)
                raise ValueError(f"event {name!r} exits inactive states: {', '.join(bad)}")
            if (en - ex) & self._active:
                bad = sorted(self.schema.names[i] for i in (en - ex) & self._active)
                raise ValueError(f"event {name!r} enters active states: {', '.join(bad)}")
            self._change(Kind.EVENT, name, ex, en, args, accepted, error, duration)

    def _change(
        self,
        kind: str,
        name: str,
        exited: Iterable[int],
        entered: Iterable[int],
        args: Any,
        accepted: bool = True,
        error: tuple[str, str] | None = None,
        duration: int = 0,
    ) -> None:
        exited, entered = sorted(exited), sorted(entered)
        self._active = (self._active - set(exited)) | set(entered)
        for ch in self._channels:
            ch.emit(
                kind,
                name,
                exited,
                entered,
                self._active,
                args=args,
                accepted=accepted,
                error=error,
                duration=duration,
            )

    # -- adapter interface ----------------------------------------------------------------
    def _attach(self, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]:
        record = MachineRecord(ctx.machine_id(type(self).__name__), self.kind, self.schema)
        channel = ctx.open_channel(record)
        with self._lock:
            channel.emit(Kind.INIT, "init", (), sorted(self._active), self._active)
            self._channels.append(channel)

        def detach() -> None:
            with self._lock:
                if channel in self._channels:
                    self._channels.remove(channel)

        return [channel], detach


def accepts(obj: Any) -> bool:
    return isinstance(obj, ManualMachine)


def attach(obj: ManualMachine, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]:
    return obj._attach(ctx)
