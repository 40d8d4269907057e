"""The manual API: trace a hand-written machine by declaring states and reporting changes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tracer.attach import AttachContext
from tracer.codec import KIND_CODES
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
        schema = self.schema
        self._names = names = schema.names
        self._index = {n: i for i, n in enumerate(names)}
        # Per state, computed once (calls then cost set operations only): the state with
        # its ancestors (what adding it activates), with its descendants (what removing
        # it deactivates), and the default record names of add, remove and set:
        # name -> ((up, down), (+name, -name, =name)).
        self._fast: dict[
            str, tuple[tuple[frozenset[int], frozenset[int]], tuple[str, str, str]]
        ] = {}
        children: list[list[int]] = [[] for _ in names]
        for i in range(len(names)):
            parent = schema.parent_of(i)
            if parent is not None:
                children[parent].append(i)
        down: list[frozenset[int] | None] = [None] * len(names)

        def descendants(i: int) -> frozenset[int]:
            got = down[i]
            if got is None:
                got = down[i] = frozenset([i]).union(*(descendants(j) for j in children[i]))
            return got

        for i, n in enumerate(names):
            up = schema.with_ancestors((i,))
            self._fast[n] = ((up, descendants(i)), ("+" + n, "-" + n, "=" + n))
        self._steps: dict[
            tuple[frozenset[int], str], tuple[frozenset[int], tuple[int, ...], tuple[int, ...]]
        ] = {}
        self._active: frozenset[int] = self._closure(initial)
        self._channels: list[Channel] = []

    @property
    def active(self) -> frozenset[str]:
        names = self._names
        return frozenset(names[i] for i in self._active)

    def is_active(self, state: str) -> bool:
        try:
            return self._index[state] in self._active
        except (KeyError, TypeError):
            return self.schema.index(state) in self._active  # raises naming the state

    def _closure(self, states: Iterable[str], down: bool = False) -> frozenset[int]:
        """The states with their ancestors (or, ``down``, with their descendants)."""
        fast = self._fast
        out: frozenset[int] = frozenset()
        for s in states:
            got = fast.get(s)
            # not a state: schema.index raises KeyError naming it
            out |= got[0][down] if got is not None else {self.schema.index(s)}
        return out

    def _step(
        self,
        key: tuple[frozenset[int], str],
        after: frozenset[int],
        exited: frozenset[int],
        entered: frozenset[int],
    ) -> tuple[frozenset[int], tuple[int, ...], tuple[int, ...]]:
        """A single-state call's effect from one configuration, remembered (up to
        _STEPS_MAX of them) so the next identical call is one dict lookup."""
        found = self._steps.get((after, ""))  # the same configuration object, if known
        step = (after if found is None else found[0], _tuple(exited), _tuple(entered))
        if len(self._steps) < _STEPS_MAX:
            self._steps[key] = step
            self._steps.setdefault((step[0], ""), step)
        return step

    def add(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Activate states (and their ancestors)."""
        self._mutate(_ADD, states, name, args)

    def remove(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Deactivate states (and their descendants)."""
        self._mutate(_REMOVE, states, name, args)

    def set(self, *states: str, name: str | None = None, args: Any = None) -> None:
        """Make exactly these states (and their ancestors) active."""
        self._mutate(_SET, states, name, args)

    # The single-state call is the usual one: a remembered step (see _step) or a dict
    # lookup and set operations. A machine going back and forth between configurations
    # then reuses the same frozensets and tuples: each record keeps fewer new objects
    # alive in the tracer's buffer (fewer garbage collections). lock.acquire/release
    # with try/finally costs half of ``with lock`` (measured).
    def _mutate(self, op: int, states: tuple[str, ...], name: str | None, args: Any) -> None:
        """``add`` (op 0), ``remove`` (1) or ``set`` (2) of ``states``."""
        fast = self._fast.get(states[0]) if len(states) == 1 else None
        lock = self._lock
        lock.acquire()
        try:
            active = self._active
            if fast is not None:
                default = fast[1][op]
                step = self._steps.get((active, default))
                if step is None:
                    targets = fast[0][op == _REMOVE]
                    step = self._step((active, default), *_effect(op, targets, active))
            else:
                default = "+-="[op] + ",".join(states)
                after, exited, entered = _effect(op, self._closure(states, op == _REMOVE), active)
                step = (after, _tuple(exited), _tuple(entered))
            self._active = after = step[0]
            for ch in self._channels:
                ch.emit_change(_KIND_CODES[op], name or default, step[1], step[2], after, args)
        finally:
            lock.release()

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


_EMPTY: frozenset[int] = frozenset()
_STEPS_MAX = 4096  # remembered steps per machine (see ManualMachine._step)
_ADD, _REMOVE, _SET = 0, 1, 2  # ManualMachine._mutate's ops
_KINDS = (Kind.ADD, Kind.REMOVE, Kind.SET)
_KIND_CODES = tuple(KIND_CODES[kind] for kind in _KINDS)


def _effect(
    op: int, targets: frozenset[int], active: frozenset[int]
) -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """(after, exited, entered) of an op on ``active``: ``targets`` are the states with
    their ancestors (add, set) or with their descendants (remove)."""
    if op == _ADD:
        entered = targets - active
        return active | entered, _EMPTY, entered
    if op == _REMOVE:
        exited = targets & active
        return active - exited, exited, _EMPTY
    return targets, active - targets, targets - active


def _tuple(indexes: frozenset[int]) -> tuple[int, ...]:
    return tuple(sorted(indexes)) if len(indexes) > 1 else tuple(indexes)


def accepts(obj: Any) -> bool:
    return isinstance(obj, ManualMachine)


def attach(obj: ManualMachine, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]:
    return obj._attach(ctx)
