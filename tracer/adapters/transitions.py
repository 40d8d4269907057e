"""Adapter for pytransitions: traces every model of a machine without editing its definition.

How it hooks in (the traps T1..T11 are those of the adapter notes, ADAPTERS.md section 1):

- Flat synchronous machines without a queue (Machine, LockedMachine, GraphMachine,
  LockedGraphMachine; the hot path): ``machine._process`` becomes an instance attribute
  that sees every trigger whole (it is given ``partial(event._trigger, event_data)``), so
  no callback list needs a probe. ``machine.set_state`` tells the event's own write (called
  from the transition's ``_change_state``, found by looking at the calling frame) from
  forced writes (``set_state`` in a callback or from outside).
- Every other synchronous machine (HSM, queued): ``machine.resolve_callable`` becomes an
  instance attribute that runs our probes with the full ``EventData`` (whatever
  ``send_event`` is) and delegates everything else unchanged. Probes sit in
  ``prepare_event`` (first, so the duration covers the user's callbacks),
  ``before_state_change`` (last; it arms the event for its state write) and
  ``finalize_event`` (first, so a user finalizer that raises cannot skip it). Never
  ``on_exception``: a non-empty list swallows exceptions (T1). ``machine.set_state``
  sees every state write: the write of an armed event, and forced writes (``set_state``,
  ``to_state``).
- ``add_model``/``remove_model`` instance wrappers open and dispose one channel per model.
- AsyncMachine gets no probes: an instance ``callbacks`` wrapper runs the same handlers in
  the trigger's own task (see ``_AsyncCallbacks``).

Every instance attribute pickles as the original it replaced, and probes pickle as inert
markers, so a traced machine pickles and its copy behaves exactly like an untraced one.

Cost (flat two-state toggle into a MemorySink, shared 2-core machine; tests/bench): the
flat hot path runs in C when ``tracer._speedups`` was built (``tracer/_accel.py``): about
9,000 instructions per trigger over untraced (callgrind; 7,200 on the app thread, 1,800
on the sender), 83-84% of untraced speed kept. The pure-Python hooks below are the
reference, the fallback for every unusual call, and what runs without a C compiler:
about 23,000 instructions, 69-72% kept. Installing never asks for the machine's
``__dict__`` (see ``tracer.adapters._attrs``).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from enum import Enum
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any

from tracer._accel import speedups as _speedups
from tracer.adapters._attrs import MISSING as _MISSING
from tracer.adapters._attrs import instance_attr as _instance_attr
from tracer.attach import AttachContext
from tracer.codec import KIND_CODES
from tracer.core import (
    _MASKS,
    Capture,
    Channel,
    OpenEvent,
    _event_stack,
    _local,
    config_mask,
    current_event,
    error_of,
    pop_async_event,
    pop_event,
    push_async_event,
)
from tracer.records import Kind, MachineRecord, Schema, StateSpec, TransitionSpec
from tracer.sanitize import sanitize_args

__all__ = ["accepts", "attach"]

_PREPARE, _BEFORE, _FINALIZE = 0, 1, 2
_PROBE_LISTS = (
    ("prepare_event", _PREPARE, True),  # (list, phase, insert first)
    ("before_state_change", _BEFORE, False),
    ("finalize_event", _FINALIZE, True),
)
_WRAPPED = ("resolve_callable", "set_state", "add_model", "remove_model", "callbacks", "_process")

# Live tracers by registry key (T10). Weak: a machine dropped without detach() is
# collected, and its channels are disposed by a finalizer (see _Tracer.install).
_LIVE: weakref.WeakValueDictionary[int, _Tracer] = weakref.WeakValueDictionary()
_keys = itertools.count(1)
_EVENT_NAME = re.compile(r"(?:Can't trigger event|Do not know event named) '([^']*)'")
_EMPTY: frozenset[int] = frozenset()
_EVENT = Kind.EVENT  # module constants: enum member lookups cost on the hot path
_EVENT_CODE = KIND_CODES[_EVENT]
_FORCED = Kind.FORCED
_MAX_QUEUED = 10_000  # queued-parent entries kept before they are considered stale
_PENDING = -1
_REFERENCED = -2  # seq of an open _Event a nested record named (still "not numbered")
_getframe = sys._getframe
_KEEP: list[Any] = []


def accepts(obj: Any) -> bool:
    """Whether this adapter traces ``obj``.

    Args:
        obj: what the user passed to ``attach()``.

    Returns:
        True for any ``transitions`` machine (every class family derives from Machine);
        never imports ``transitions`` itself.
    """
    mod = sys.modules.get("transitions")
    return mod is not None and isinstance(obj, mod.Machine)


# What a probe resolves to: it takes any arguments and does nothing, and being a builtin,
# the machine's call to it costs no Python frame (it returns '', which is unused).
_IGNORE: Callable[..., Any] = "".format


def _identity(value: Any) -> Any:
    return value


class _Probe:
    """A marker in a machine callback list; our ``resolve_callable`` runs its handler with
    the EventData. Pickled, or once detached, it has no handler and does nothing.
    """

    __slots__ = ("handler", "key", "phase")

    def __init__(self, key: int, phase: int, handler: Callable[[Any], None] | None = None) -> None:
        self.key = key
        self.phase = phase
        self.handler = handler

    def __call__(self, *_: Any, **__: Any) -> None:
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Probe, (self.key, self.phase))

    def __repr__(self) -> str:
        return f"<aminspect probe {self.key}:{self.phase}>"


class _Wrapper:
    """Base of the instance attributes we set; pickles as the original it replaced."""

    __slots__ = ("original", "tracer")

    def __init__(self, tracer: _Tracer, original: Any) -> None:
        self.tracer = tracer
        self.original = original

    def __reduce__(self) -> tuple[Any, ...]:
        return (_identity, (self.original,))


class _Resolve(_Wrapper):
    __slots__ = ()

    def __call__(self, func: Any, event_data: Any) -> Any:
        if func.__class__ is _Probe:
            # Run now: Machine.callback calls what we return right away, on this thread
            # or task, so the probe needs no closure per call.
            handler = func.handler
            if handler is not None:
                handler(event_data)
            return _IGNORE
        return self.original(func, event_data)


class _AsyncCallbacks(_Wrapper):
    """AsyncMachine runs each callback list with ``asyncio.gather`` (T7): a probe in a list
    would add a scheduling point (changing how concurrent triggers interleave) and would run
    in a child task, whose context changes are lost. So the handlers run here instead, in
    the trigger's own task, before the list starts; the list itself is untouched.
    """

    __slots__ = ()

    def __call__(self, funcs: Any, event_data: Any) -> Any:
        t = self.tracer
        if t.live:
            machine = t.machine
            if funcs is machine.prepare_event:
                t.on_prepare(event_data)
            elif funcs is machine.before_state_change:
                t.on_before(event_data)
            elif funcs is machine.finalize_event:
                t.on_finalize(event_data)
        return self.original(funcs, event_data)


class _SetState(_Wrapper):
    __slots__ = ()

    def __call__(self, state: Any, model: Any = None) -> Any:
        t = self.tracer
        if not t.live:
            return self.original(state, model)
        if model is not None and not isinstance(model, (list, tuple)):
            mt = t.models.get(id(model))
            if mt is None:
                return self.original(state, model)
            op = mt.open
            if op and mt.pending_to is None and op[-1].armed:
                return t.write_event(self.original, state, model, mt, op[-1])
            return t.write_one(self.original, state, model, mt)
        return t.write_many(self.original, state, model)


class _Original:
    """What a hook installed as a bound method unpickles as: its ``call`` is the
    original it replaced, so the copy of a traced machine behaves as an untraced one."""

    __slots__ = ("call",)

    def __init__(self, call: Any) -> None:
        self.call = call


def _innermost(stack: list[OpenEvent], mt: _ModelTrace) -> _Event | None:
    """The innermost flat-machine event of ``mt`` open on this thread."""
    channel = mt.channel
    for ev in reversed(stack):
        if ev.__class__ is _Event and ev.channel is channel:
            return ev  # type: ignore[return-value]
    return None


class _AddModel(_Wrapper):
    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.original(*args, **kwargs)
        if self.tracer.live:
            self.tracer.sync_models()
        return result


_RemoveModel = _AddModel  # the same: call through, then reconcile channels with models


class _Process(_Wrapper):
    """Flat synchronous machines: ``Machine._process`` runs every trigger (it gets
    ``partial(event._trigger, event_data)``), so one wrapper sees each event whole, and
    no callback list needs a probe (three fewer callback dispatches per event). This is
    the hot path: opening and closing the event are inlined, and the record goes to the
    sender as one plain tuple.
    """

    __slots__ = ()

    # Installed as the bound method ``call`` (a bound method is called several times
    # faster than an instance's __call__); it pickles through __reduce__ below.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_Original, (self.original,))

    def call(self, trigger: Any) -> Any:
        t = self.tracer
        try:
            ed = trigger.args[0]
            mt = t.models[id(ed.model)]
        except Exception:  # not a trigger we know: run it; its writes record as forced
            return self.original(trigger)
        # Every slot read before the event's state write is set here (an unset slot
        # raises on reading); ``before``, ``after`` and ``reenter`` are set by that write.
        ev = _Event()
        ch = ev.channel = mt.channel
        ev.mt = mt
        ev.parent = ev.source = None
        ev.position = ev.seq = _PENDING
        stack = _local.stack
        parent: OpenEvent | None
        if stack:
            parent = stack[-1]
        else:  # current_event(), inlined: the event open in this asyncio task, if any
            astack = _event_stack.get()
            parent = astack[-1] if astack else None
        if parent is not None:
            if parent.channel is ch:
                ev.parent = parent.capture
            else:
                ev.source = (parent.channel, parent.capture)
        ev.started_ns = perf_counter_ns()  # also the record's time stamp (see core._clock)
        stack.append(ev)
        try:
            result = self.original(trigger)
        except BaseException:
            t.close_fast(mt, ev, ed)
            raise
        # t.close_fast(mt, ev, ed), inlined for the usual case.
        if stack and stack[-1] is ev:
            stack.pop()
        else:
            pop_event(ev)
        if ch.closed:
            return result
        try:
            if ed.args or ed.kwargs or t.sanitizer is not None:
                args = sanitize_args(ed.args, ed.kwargs, t.sanitizer)
            else:
                args = None
            error = ed.error
            if error is not None:
                error = error_of(error)
            position = ev.position
            if position != _PENDING:  # the event wrote its state (a position says so)
                found = t.change_cache.get((ev.before, ev.after, ev.reenter))
                if found is None:
                    found = t.changes(ev.before, ev.after, ev.reenter)
                exited, entered, mask = found
            else:
                mask = _MASKS.get(mt.current) or config_mask(mt.current)
                exited = entered = ()
                position = ev.position = ch.next_position()
            ch.captured += 1
            # Only an event something nested names needs its seq back from the sender;
            # any other is freed right here (fewer live objects for the GC to scan).
            item = (
                ch.key, position, ev if ev.seq != _PENDING else None, ev.parent, ev.source, mask,
                _EVENT_CODE, ed.event.name, ev.started_ns, perf_counter_ns() - ev.started_ns, args,
                bool(ed.result), error, exited, entered, mt.tick,
            )  # fmt: skip
        except Exception as exc:
            t.fail(exc)
            t.salvage_fast(mt, ev, ed)
            return result
        # Dispatcher.enqueue(item), inlined.
        d = t.dispatcher
        buf = d._buffer
        if len(buf) >= d.capacity:
            d._drop_oldest()
        buf.append(item)
        if not d._signalled:
            d._signalled = True
            d._wake.set()
        return result


class _PyEvent(OpenEvent):
    """One trigger of a flat synchronous machine: the open event, and later the record's
    holder (its ``position`` orders it, the sender sets its ``seq``).

    Slots only, set by ``_Process.call`` and the event's state write (half the cost of an
    instance dict). ``position`` is assigned by the event's first state write, or when it
    ends without one, so before the end it also says whether the event wrote. ``seq`` is
    ``_REFERENCED`` once a nested record named this event (it then needs its seq back).
    """

    __slots__ = ("after", "before", "mt", "parent", "position", "reenter", "seq", "source")
    mt: _ModelTrace
    parent: Any
    source: tuple[Channel, Any] | None
    position: int
    seq: int
    before: frozenset[int]
    after: frozenset[int]
    reenter: frozenset[int]

    # No Python-level __init__ (OpenEvent's takes arguments): creating one is a C call.
    __init__ = object.__init__

    @property
    def capture(self) -> Any:  # what nested records name as parent or source
        self.seq = _REFERENCED  # still negative: "not numbered yet" to the sender
        return self

    def first_write(self, mt: _ModelTrace) -> None:
        """The event's first state write is about to happen: it takes its place in the
        order now, and the configuration before it is the one it leaves (``_FastSetState``
        inlines this)."""
        self.position = mt.channel.next_position()
        self.before = self.after = mt.current  # a write that fails changes nothing
        self.reenter = _EMPTY


class _FastSetState(_Wrapper):
    """``set_state`` of a flat synchronous machine (see ``_Process``)."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Original, (self.original,))

    def call(self, state: Any, model: Any = None) -> Any:
        # The usual write: the transition's own (from _change_state) for the event on top
        # of this thread's stack, of the same model, to a state seen before.
        stack = _local.stack
        if stack:
            ev: _Event = stack[-1]  # type: ignore[assignment]  # checked right below
            if (
                ev.__class__ is _Event
                and ev.mt.model is model
                and _getframe(1).f_code is _CHANGE_STATE
            ):
                mt = ev.mt
                previous = mt.current
                if ev.position == _PENDING:  # ev.first_write(mt), inlined
                    ev.position = mt.channel.next_position()
                    ev.before = ev.after = previous
                    ev.reenter = _EMPTY
                result = self.original(state, model)  # a failed write: the event records it
                try:
                    after = self.tracer.cache[state]  # the dest: a name (or a State)
                except (KeyError, TypeError):
                    self.tracer.written(ev, mt, state, model, previous)
                    return result
                mt.current = after
                if after == previous:  # an external self-transition exits and re-enters
                    ev.reenter = ev.reenter | self.tracer.leaves(after)
                ev.after = after
                return result
        return self.general(state, model)

    def general(self, state: Any, model: Any) -> Any:
        """Every other write: forced (a callback's or the app's ``set_state``), to several
        models, through another tracer's or a lock's wrapper, or of a state not cached."""
        t = self.tracer
        mt = t.models.get(id(model))
        if mt is None:
            if model is None or isinstance(model, (list, tuple)):
                return t.write_many(self.original, state, model)
            return self.original(state, model)
        # The write of the event open on this thread comes from the transition's
        # _change_state; any other write (set_state in a callback) is forced.
        stack = _local.stack
        if not stack:
            return t.write_one(self.original, state, model, mt)
        top = stack[-1]
        if top.__class__ is _Event and top.channel is mt.channel:
            ev: _Event = top  # type: ignore[assignment]
        else:
            found = _innermost(stack, mt)
            if found is None:
                return t.write_one(self.original, state, model, mt)
            ev = found
        f = _getframe(2)
        if f.f_code is not _CHANGE_STATE:  # not called by transitions' own Transition
            while id(f.f_code) in _OUR_CODE:  # another tracer's wrapper, or a lock wrapper
                f = f.f_back  # type: ignore[assignment]
            if f.f_code.co_name != "_change_state":
                return t.write_one(self.original, state, model, mt)
        # The event's own write.
        previous = mt.current
        if ev.position == _PENDING:
            ev.first_write(mt)
        result = self.original(state, model)  # a failed write: the event records its error
        t.written(ev, mt, state, model, previous)
        return result


class _Open(OpenEvent):
    """One trigger being processed, with what the adapter tracks about it."""

    __slots__ = ("after", "armed", "before", "ed", "reenter", "wrote")

    def __init__(self, channel: Channel, capture: Capture, started_ns: int, ed: Any) -> None:
        # The base fields are set directly: the dataclass __init__ costs a call per event.
        self.channel = channel
        self.capture = capture
        self.started_ns = started_ns
        self.ed = ed
        self.armed = 0  # before_state_change calls not yet matched by a state write
        self.wrote = False
        self.before = self.after = _EMPTY
        self.reenter = _EMPTY  # states exited and entered again


class _PyModelTrace:
    """One traced (machine, model) pair: its channel and its live configuration."""

    __slots__ = ("channel", "current", "model", "open", "pending_to", "tick")

    def __init__(self, model: Any, channel: Channel, current: frozenset[int]) -> None:
        self.model = model
        self.channel = channel
        self.tick = channel.machine.mach_tick  # fixed once the channel is open
        self.current = current
        self.open: list[_Open] = []
        self.pending_to: Any = None  # (EventData, open depth) of a to_state() in progress


# The C hot path (tracer/_speedups.c), when it was built and not turned off: the same
# hooks, event and model trace without the interpreter's cost per bytecode. The Python
# classes stay the reference and the fallback for every unusual call.
if TYPE_CHECKING or _speedups is None:
    _Event = _PyEvent
    _ModelTrace = _PyModelTrace
else:
    _Event = _speedups.Event
    _ModelTrace = _speedups.ModelTrace


class _Tracer:
    """Everything the probes and wrappers of one attached machine share."""

    def __init__(self, machine: Any, ctx: AttachContext) -> None:
        self.key = next(_keys)
        self.machine = machine
        self.ctx = ctx
        self.dispatcher = ctx.dispatcher
        self.sanitizer = ctx.sanitizer
        self.attr: str = machine.model_attribute
        self.live = True
        self.schema, self.values = _extract_schema(machine)
        self.leaf_cache: dict[frozenset[int], frozenset[int]] = {}
        self.change_cache: dict[Any, tuple[tuple[int, ...], tuple[int, ...], int]] = {}
        self.cache: dict[Any, frozenset[int]] = {}
        self.models: dict[int, _ModelTrace] = {}
        self.queued = bool(getattr(machine, "has_queue", False))
        self.nested = hasattr(machine, "get_nested_state_names")
        self.is_async = inspect.iscoroutinefunction(getattr(type(machine), "callbacks", None))
        # Flat, synchronous, unqueued: one _process wrapper instead of callback probes.
        self.fast = not (self.is_async or self.nested or self.queued)
        self.queued_parents: dict[int, tuple[Any, _Open]] = {}
        self.lock = threading.Lock()  # guards model bookkeeping (add/remove_model)
        self.initial_channels: list[Channel] = []
        self.all_channels: list[Channel] = []  # shared with the finalizer; holds no machine
        self.saved: dict[str, Any] = {}  # instance attributes we replaced
        self.probes: list[tuple[str, _Probe]] = []
        self.wrappers: dict[str, Any] = {}  # what we set: a _Wrapper or a hook's ``call``
        self.finalizer: weakref.finalize[Any, Any] | None = None

    # -- configurations ---------------------------------------------------------------
    def config(self, value: Any) -> frozenset[int]:
        """The active set (with ancestors) for a model's state value; cached by value."""
        try:
            return self.cache[value]
        except (KeyError, TypeError):
            return self._config_slow(value)

    def _config_slow(self, value: Any) -> frozenset[int]:
        key = _freeze(value)
        found = self.cache.get(key)
        if found is not None:
            return found
        leaves: list[int] = []
        unknown: list[Any] = []
        for leaf in _flatten(value):
            i = self.values.get(leaf)
            if i is None and isinstance(leaf, Enum):
                i = self.values.get(leaf.name)
            if i is None:
                unknown.append(leaf)
            else:
                leaves.append(i)
        result = self.schema.with_ancestors(leaves)
        if unknown:
            # States added after attach are not in the recorded schema.
            self.dispatcher.last_error = (
                f"transitions adapter: state {unknown[0]!r} is not in the schema recorded at attach"
            )
        elif len(self.cache) < 4096:
            self.cache[key] = result
        return result

    def changes(
        self, before: frozenset[int], after: frozenset[int], reenter: frozenset[int]
    ) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """(exited, entered) index tuples and ``after``'s mask (``config_mask``); cached, as
        a machine has few distinct moves."""
        key = (before, after, reenter)
        found = self.change_cache.get(key)
        if found is None:
            found = (
                tuple(sorted((before - after) | reenter)),
                tuple(sorted((after - before) | reenter)),
                config_mask(after),
            )
            if len(self.change_cache) < 4096:
                self.change_cache[key] = found
        return found

    def leaves(self, config: frozenset[int]) -> frozenset[int]:
        """The states of ``config`` with no child in it (what a self-transition re-enters)."""
        found = self.leaf_cache.get(config)
        if found is None:
            parents = {self.schema.parent_of(i) for i in config}
            found = frozenset(i for i in config if i not in parents)
            self.leaf_cache[config] = found
        return found

    # -- models -----------------------------------------------------------------------
    def sync_models(self) -> None:
        """Open a channel for each new model, dispose the channels of removed ones."""
        try:
            with self.lock:
                current = {id(m): m for m in self.machine.models}
                for mid in [mid for mid in self.models if mid not in current]:
                    self._dispose(self.models.pop(mid).channel)
                for mid, model in current.items():
                    if mid not in self.models:
                        self._open_model(model)
        except Exception as exc:
            self.fail(exc)

    def _open_model(self, model: Any) -> Channel:
        cfg = self.config(getattr(model, self.attr))  # first: may raise for a broken model
        record = MachineRecord(
            self.ctx.machine_id(type(model).__name__), "transitions", self.schema
        )
        channel = self.ctx.open_channel(record)
        self.models[id(model)] = _ModelTrace(model, channel, cfg)
        self.all_channels.append(channel)
        channel.emit(Kind.INIT, "init", (), sorted(cfg), cfg)
        return channel

    def _dispose(self, channel: Channel) -> None:
        if not channel.closed:
            self.dispatcher.remove(channel)
            channel.closed = True

    # -- probes -----------------------------------------------------------------------
    def fail(self, exc: BaseException) -> None:
        """Tracing must never raise into the app: keep the reason for ``stats``."""
        self.dispatcher.last_error = f"transitions adapter: {type(exc).__name__}: {exc}"

    def _open(self, mt: _ModelTrace, ed: Any) -> _Open:
        parent = current_event()
        if parent is None and self.queued_parents:
            entry = self.queued_parents.pop(id(ed), None)
            if entry is not None and entry[0] is ed:
                parent = entry[1]
        event = ed.event
        name = event.name if event is not None else _name_from_error(ed.error)
        ch = mt.channel
        ev = _Open(ch, ch.begin(_EVENT, name, parent), perf_counter_ns(), ed)
        mt.open.append(ev)
        if self.is_async:
            push_async_event(ev)
        else:
            _local.stack.append(ev)
        return ev

    def on_prepare(self, ed: Any) -> None:
        try:
            mt = self.models.get(id(ed.model))
            if mt is None:
                return
            op = mt.open
            if op and op[-1].ed is ed:
                return  # HSM calls prepare once per matching source path (T3)
            if ed.transition is not None:
                # Either a further source path of an open event, or may_<trigger>(),
                # which probes prepare/conditions with a transition set and never finalizes.
                return
            parent = current_event()
            if parent is None and self.queued_parents:
                entry = self.queued_parents.pop(id(ed), None)
                if entry is not None and entry[0] is ed:
                    parent = entry[1]
            ch = mt.channel
            ev = _Open(ch, ch.begin(_EVENT, ed.event.name, parent), perf_counter_ns(), ed)
            op.append(ev)
            if self.is_async:
                push_async_event(ev)
            else:
                _local.stack.append(ev)
        except Exception as exc:
            self.fail(exc)

    def on_before(self, ed: Any) -> None:
        try:
            mt = self.models.get(id(ed.model))
            if mt is None:
                return
            op = mt.open
            if op and op[-1].ed is ed:
                op[-1].armed += 1
                return
            for ev in reversed(op):
                if ev.ed is ed:
                    ev.armed += 1
                    return
            event = ed.event
            if self.nested and event is not None and event.name == "to":
                # to_state() runs a transition with no prepare/finalize (T6). The depth
                # tells a later write whether this is still the innermost activity.
                mt.pending_to = (ed, len(op))
            else:  # prepare_event was replaced after attach: open the event here
                self._open(mt, ed).armed = 1
        except Exception as exc:
            self.fail(exc)

    def on_finalize(self, ed: Any) -> None:
        ev: _Open | None = None
        mt: _ModelTrace | None = None
        try:
            mt = self.models.get(id(ed.model))
            if mt is None:
                return
            op = mt.open
            if op and op[-1].ed is ed:
                ev = op.pop()
            else:
                for i in range(len(op) - 1, -1, -1):
                    if op[i].ed is ed:
                        ev = op.pop(i)
                        break
            if ev is None:  # invalid or ignored trigger: no prepare_event ran
                ev = self._open(mt, ed)
                op.pop()
            if self.is_async:
                pop_async_event(ev)
            else:
                pop_event(ev)
            rec = ev.capture.record
            if ed.args or ed.kwargs or self.sanitizer is not None:
                rec.args = sanitize_args(ed.args, ed.kwargs, self.sanitizer)
            rec.accepted = bool(ed.result)
            error = ed.error
            if error is not None:
                rec.error = error_of(error)
            if ev.wrote:
                after = ev.after
                found = self.change_cache.get((ev.before, after, ev.reenter))
                if found is None:
                    found = self.changes(ev.before, after, ev.reenter)
                rec.exited, rec.entered, _ = found
            else:
                after = mt.current
            if self.queued:
                self._note_queue(ed, ev)
            rec.duration = perf_counter_ns() - ev.started_ns
            ev.channel.commit(ev.capture, after)
        except Exception as exc:
            self.fail(exc)
            if ev is not None and mt is not None:
                self._salvage(mt, ev.capture)

    def _salvage(self, mt: _ModelTrace, cap: Capture) -> None:
        """Commit a capture whose record failed half-way: an uncommitted capture that has
        a position would hold back every later record of the channel."""
        try:
            if not cap.done:
                mt.channel.commit(cap, mt.current)
        except Exception as exc:
            self.fail(exc)

    def _note_queue(self, ed: Any, ev: _Open) -> None:
        """With ``queued=True`` a trigger fired inside ``ev`` waits in the machine's queue
        until ``ev`` finished; remember ``ev`` as its parent.

        The queue is private (``_transition_queue``/``_transition_queue_dict``); it is only
        read, and when it changes shape the parent is simply not recorded.
        """
        machine = self.machine
        qdict = getattr(machine, "_transition_queue_dict", None)
        if isinstance(qdict, dict):
            try:  # queued=True uses a dict subclass that answers every key via []
                queue = qdict[id(ed.model)]
            except KeyError:
                queue = None
        else:
            queue = getattr(machine, "_transition_queue", None)
        parents = self.queued_parents
        if not queue or len(queue) <= 1:
            parents.clear()  # nothing waits: entries left by a cleared queue are stale
            return
        if len(parents) > _MAX_QUEUED:
            parents.clear()
        for item in reversed(queue):
            args = getattr(item, "args", None)
            child = args[0] if args else None
            if child is None or child is ed:
                break
            if id(child) in parents:
                break  # earlier items were tagged when their own parent finished
            parents[id(child)] = (child, ev)

    # -- state writes -------------------------------------------------------------------
    def _begin_forced(self, mt: _ModelTrace, state: Any, to: Any) -> Capture:
        ch = mt.channel
        if to is not None:
            cap = ch.begin(_FORCED, "to_state", current_event())
            # args: the state written (global name), then the user's extra arguments.
            cap.record.args = sanitize_args(
                (_state_arg(state), *to.args), to.kwargs, self.sanitizer
            )
        else:
            cap = ch.begin(_FORCED, "set_state", current_event())
            cap.record.args = sanitize_args((_state_arg(state),), {}, self.sanitizer)
        ch.position(cap)
        return cap

    def _before_write(self, mt: _ModelTrace, state: Any) -> _Open | Capture:
        pending = mt.pending_to
        if pending is not None:
            mt.pending_to = None
            if pending[1] == len(mt.open):  # else a to_state() that failed before writing
                return self._begin_forced(mt, state, pending[0])
        ev = None
        for e in reversed(mt.open):
            if e.armed:
                ev = e
                break
        if ev is not None:
            ev.armed -= 1
            if not ev.wrote:
                ev.wrote = True
                ev.before = ev.after = mt.current
                ev.channel.position(ev.capture)
            return ev
        return self._begin_forced(mt, state, None)

    def _after_write(self, mt: _ModelTrace, plan: _Open | Capture) -> None:
        previous = mt.current
        value = getattr(mt.model, self.attr)
        try:
            after = self.cache[value]
        except (KeyError, TypeError):
            after = self._config_slow(value)
        mt.current = after
        if isinstance(plan, _Open):
            if after == previous:  # an external self-transition exits and re-enters
                plan.reenter = plan.reenter | self.leaves(after)
            plan.after = after
        else:
            cap = plan
            rec = cap.record
            rec.exited, rec.entered, _ = self.changes(previous, after, _EMPTY)
            mt.channel.commit(cap, after)

    def _write_failed(self, mt: _ModelTrace, plan: _Open | Capture, exc: BaseException) -> None:
        if not isinstance(plan, _Open):  # the event records its own error at finalize
            cap = plan
            cap.record.accepted = False
            cap.record.error = error_of(exc)
            mt.channel.commit(cap, mt.current)

    def write_event(
        self, original: Callable[..., Any], state: Any, model: Any, mt: _ModelTrace, ev: _Open
    ) -> Any:
        """``write_one`` for the common case: the write of the innermost open event."""
        ev.armed -= 1
        if not ev.wrote:
            ev.wrote = True
            ev.before = ev.after = mt.current
            try:
                ev.channel.position(ev.capture)
            except Exception as exc:
                self.fail(exc)
        result = original(state, model)  # a failed write: the event records its error
        try:
            previous = mt.current
            value = getattr(model, self.attr)
            try:
                after = self.cache[value]
            except (KeyError, TypeError):
                after = self._config_slow(value)
            mt.current = after
            if after == previous:  # an external self-transition exits and re-enters
                ev.reenter = ev.reenter | self.leaves(after)
            ev.after = after
        except Exception as exc:
            self.fail(exc)
        return result

    def written(
        self, ev: _Event, mt: _ModelTrace, state: Any, model: Any, previous: frozenset[int]
    ) -> None:
        """After the state write of a flat machine's event (``_FastSetState`` inlines the
        usual case): the configuration it left the model in."""
        try:
            try:  # the state written is the transition's dest: a name or a State
                after = self.cache[state]
            except (KeyError, TypeError):
                after = self._config_slow(getattr(model, self.attr))
                if after and len(self.cache) < 4096:
                    with contextlib.suppress(TypeError):  # an unhashable state
                        self.cache[state] = after
            mt.current = after
            if after == previous:  # an external self-transition exits and re-enters
                ev.reenter = ev.reenter | self.leaves(after)
            ev.after = after
        except Exception as exc:
            self.fail(exc)

    def close_fast(self, mt: _ModelTrace, ev: _Event, ed: Any) -> None:
        """The event of a flat machine is over (it raised): hand its record on.

        ``_Process`` inlines the same steps for events that return normally.
        """
        pop_event(ev)
        ch = mt.channel
        if ch.closed:
            return
        try:
            if ed.args or ed.kwargs or self.sanitizer is not None:
                args = sanitize_args(ed.args, ed.kwargs, self.sanitizer)
            else:
                args = None
            error = ed.error
            if error is not None:
                error = error_of(error)
            position = ev.position
            if position != _PENDING:  # the event wrote its state
                exited, entered, mask = self.changes(ev.before, ev.after, ev.reenter)
            else:
                mask = config_mask(mt.current)
                exited = entered = ()
                position = ev.position = ch.next_position()
            item = (
                ch.key, position, ev, ev.parent, ev.source, mask, _EVENT_CODE, ed.event.name,
                ev.started_ns, perf_counter_ns() - ev.started_ns, args, bool(ed.result), error,
                exited, entered, mt.tick,
            )  # fmt: skip
        except Exception as exc:
            self.fail(exc)
            self.salvage_fast(mt, ev, ed)
            return
        ch.captured += 1
        self.dispatcher.enqueue(item)

    def salvage_fast(self, mt: _ModelTrace, ev: _Event, ed: Any) -> None:
        """Hand on a record whose building failed half-way: the channel must not wait for
        its position forever."""
        try:
            ch = mt.channel
            try:
                accepted, name = bool(ed.result), str(ed.event.name)
            except Exception:
                accepted, name = False, "?"
            position = ev.position
            if position == _PENDING:
                position = ev.position = ch.next_position()
            ch.captured += 1
            self.dispatcher.enqueue(
                (
                    ch.key, position, ev, ev.parent, ev.source, config_mask(mt.current),
                    _EVENT_CODE, name, ev.started_ns, perf_counter_ns() - ev.started_ns, None,
                    accepted, None, (), (), ch.machine.mach_tick,
                )
            )  # fmt: skip
        except Exception as exc:
            self.fail(exc)

    def write_one(
        self, original: Callable[..., Any], state: Any, model: Any, mt: _ModelTrace
    ) -> Any:
        plan: _Open | Capture | None = None
        try:
            op = mt.open
            if op and mt.pending_to is None and op[-1].armed:  # an event's own write
                plan = ev = op[-1]
                ev.armed -= 1
                if not ev.wrote:
                    ev.wrote = True
                    ev.before = ev.after = mt.current
                    ev.channel.position(ev.capture)
            else:
                plan = self._before_write(mt, state)
        except Exception as exc:
            self.fail(exc)
        try:
            result = original(state, model)
        except BaseException as exc:
            if plan is not None:
                try:
                    self._write_failed(mt, plan, exc)
                except Exception as inner:
                    self.fail(inner)
            raise
        if plan is not None:
            try:
                if plan.__class__ is _Open:  # _after_write(), inlined for an event's write
                    previous = mt.current
                    value = getattr(model, self.attr)
                    try:
                        after = self.cache[value]
                    except (KeyError, TypeError):
                        after = self._config_slow(value)
                    mt.current = after
                    if after == previous:  # an external self-transition
                        plan.reenter = plan.reenter | self.leaves(after)
                    plan.after = after
                else:
                    self._after_write(mt, plan)
            except Exception as exc:
                self.fail(exc)
                if not isinstance(plan, _Open):
                    self._salvage(mt, plan)
        return result

    def write_many(self, original: Callable[..., Any], state: Any, model: Any) -> Any:
        plans: list[tuple[_ModelTrace, _Open | Capture]] = []
        try:
            targets = self.machine.models if model is None else model
            for m in targets:
                mt = self.models.get(id(m))
                if mt is not None:
                    plans.append((mt, self._before_write(mt, state)))
        except Exception as exc:
            self.fail(exc)
        try:
            result = original(state, model)
        except BaseException as exc:
            for mt, plan in plans:
                try:
                    self._write_failed(mt, plan, exc)
                except Exception as inner:
                    self.fail(inner)
            raise
        for mt, plan in plans:
            try:
                self._after_write(mt, plan)
            except Exception as exc:
                self.fail(exc)
                if not isinstance(plan, _Open):
                    self._salvage(mt, plan)
        return result

    # -- attach / detach ------------------------------------------------------------------
    def install(self) -> None:
        global _CHANGE_STATE
        if _CHANGE_STATE is None:
            with contextlib.suppress(Exception):  # the slower check by name still works
                from transitions.core import Transition

                _CHANGE_STATE = Transition._change_state.__code__
        machine = self.machine
        self.saved = {}
        for name in _WRAPPED:
            own = _instance_attr(machine, name)
            if own is not _MISSING:
                self.saved[name] = own
        self.wrappers = {
            "set_state": (
                _FastSetState(self, machine.set_state).call
                if self.fast
                else _SetState(self, machine.set_state)
            ),
            "add_model": _AddModel(self, machine.add_model),
            "remove_model": _RemoveModel(self, machine.remove_model),
        }
        if self.is_async:
            self.wrappers["callbacks"] = _AsyncCallbacks(self, machine.callbacks)
        elif self.fast:
            self.wrappers["_process"] = _Process(self, machine._process).call
            if _speedups is not None:
                self.wrappers.update(self._c_hooks(machine))
            locked = getattr(type(machine), "_locked_method", None)
            code = getattr(locked, "__code__", None)
            if code is not None:
                _OUR_CODE.add(id(code))
                _KEEP.append(code)  # its id must not be reused
        else:
            handlers = (self.on_prepare, self.on_before, self.on_finalize)
            for name, phase, first in _PROBE_LISTS:
                probe = _Probe(self.key, phase, handlers[phase])
                lst = getattr(machine, name)
                if first:
                    lst.insert(0, probe)
                else:
                    lst.append(probe)
                self.probes.append((name, probe))
            self.wrappers["resolve_callable"] = _Resolve(self, machine.resolve_callable)
        for name, wrapper in self.wrappers.items():
            object.__setattr__(machine, name, wrapper)
        _LIVE[self.key] = self
        self.finalizer = weakref.finalize(machine, _dispose_all, self.dispatcher, self.all_channels)
        with self.lock:
            for model in machine.models:
                if id(model) not in self.models:
                    self.initial_channels.append(self._open_model(model))

    def _c_hooks(self, machine: Any) -> dict[str, Any]:
        """The C versions of the flat hooks; each falls back to its Python twin (already
        in ``wrappers``) for any call that is not the usual one."""
        d = self.dispatcher
        common = (
            self.models, _event_stack, pop_event, self.close_fast, self.salvage_fast,
            self.fail, self.change_cache, self.changes, _MASKS, config_mask, sanitize_args,
            self.sanitizer, error_of, d, d._buffer, d._buffer.append, d._drop_oldest,
            d._wake.set, _EVENT_CODE, self.cache, self.leaves, self.written,
        )  # fmt: skip
        hooks = {}
        for name, hook in (
            ("_process", _speedups.ProcessHook),
            ("set_state", _speedups.SetStateHook),
        ):
            python_twin = self.wrappers[name]  # the bound ``call`` of a _Wrapper
            original = python_twin.__self__.original
            hooks[name] = hook(
                original, (_identity, (original,)), *common, python_twin, _CHANGE_STATE
            )
        return hooks

    def uninstall(self) -> None:
        self.live = False
        if self.finalizer is not None:
            self.finalizer.detach()
        _LIVE.pop(self.key, None)
        machine = self.machine
        for name, probe in self.probes:
            probe.handler = None
            lst = getattr(machine, name, None)
            if isinstance(lst, list):
                lst[:] = [f for f in lst if f is not probe]
        for name, wrapper in self.wrappers.items():
            if _instance_attr(machine, name) is wrapper:
                if name in self.saved:
                    object.__setattr__(machine, name, self.saved[name])
                else:
                    object.__delattr__(machine, name)
            # else someone wrapped over us: our wrapper stays in the chain as a passthrough
        with self.lock:
            for mt in self.models.values():
                if mt.channel not in self.initial_channels:
                    self._dispose(mt.channel)  # TraceHandle.detach disposes the initial ones
                mt.open.clear()
            self.models.clear()
        self.queued_parents.clear()


def attach(machine: Any, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]:
    """Trace every model of a ``transitions`` machine.

    Args:
        machine: any machine of the transitions class family.
        ctx: the attach context (ids, sanitizer, dispatcher).

    Returns:
        The channels of the models present now (models added later get their own
        channel) and the function that detaches.
    """
    tracer = _Tracer(machine, ctx)
    try:
        tracer.install()
    except BaseException:
        tracer.uninstall()  # leave the machine as it was; attach() itself may raise
        _dispose_all(ctx.dispatcher, tracer.all_channels)  # no handle will dispose them
        raise
    # The machine keeps its tracer alive (through the probes); the handle must not keep
    # the machine alive, so it only holds a weak reference.
    ref = weakref.ref(tracer)

    def detach() -> None:
        live = ref()
        if live is not None:
            live.uninstall()

    return list(tracer.initial_channels), detach


# Frames skipped when looking for who wrote the state: our own wrappers, and the lock
# wrapper LockedMachine puts around every public method (added by install()). By id: a
# code object's hash is not cached, and these functions live as long as their classes.
_OUR_CODE = {
    id(_SetState.__call__.__code__),
    id(_FastSetState.call.__code__),
    id(_Tracer.write_one.__code__),
    id(_Tracer.write_many.__code__),
}


# The code of transitions' ``Transition._change_state``, whose state writes are an event's
# own (the usual caller of set_state); looked up by the first install().
_CHANGE_STATE: Any = None


# -- helpers -------------------------------------------------------------------------------


def _dispose_all(dispatcher: Any, channels: list[Channel]) -> None:
    """The machine was garbage collected while traced: its channels are done."""
    for channel in channels:
        if not channel.closed:
            dispatcher.remove(channel)
            channel.closed = True


def _state_arg(state: Any) -> Any:
    """A readable value for the state passed to ``set_state`` (a State object has a name)."""
    if isinstance(state, Enum):
        return state.name
    if isinstance(state, str):
        return state
    if isinstance(state, list):
        return [_state_arg(s) for s in state]
    name = getattr(state, "name", None)
    return name if isinstance(name, str) else state


def _name_from_error(error: BaseException | None) -> str:
    """The trigger name of an HSM event that no state handled (EventData.event is None)."""
    if error is not None:
        match = _EVENT_NAME.search(str(error))
        if match:
            return match.group(1)
    return "?"


def _flatten(value: Any) -> Iterable[Any]:
    if isinstance(value, list | tuple):
        for v in value:
            yield from _flatten(v)
    else:
        yield value


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _names(initial: Any) -> list[str]:
    if initial is None:
        return []
    items = initial if isinstance(initial, list | tuple) else [initial]
    return [i.name if hasattr(i, "name") else str(i) for i in items]


def _extract_schema(machine: Any) -> tuple[Schema, dict[Any, int]]:
    """States (global names, schema order), declared transitions, and value -> index."""
    specs: list[StateSpec] = []
    values: dict[Any, int] = {}
    transitions: list[TransitionSpec] = []
    state_cls = getattr(machine, "state_cls", None)
    separator = getattr(state_cls, "separator", "_")
    nested = hasattr(machine, "get_nested_state_names")

    def add_state(full: str, state: Any, parent: str | None, initial: bool, parallel: bool) -> None:
        values[full] = len(specs)
        value = getattr(state, "value", None)
        if isinstance(value, Enum):
            values.setdefault(value, len(specs))
        specs.append(
            StateSpec(full, parent, initial, bool(getattr(state, "final", False)), parallel)
        )

    def add_events(events: dict[str, Any], prefix: str | None) -> None:
        for ev_name, event in events.items():
            for source, items in event.transitions.items():
                for t in items:
                    src = source if prefix is None else f"{prefix}{separator}{source}"
                    dest = t.dest
                    if dest is not None:
                        dest = _global_dest(dest, prefix, separator, values)
                    transitions.append(TransitionSpec(src, ev_name, dest, dest is None))

    root_initial = _names(machine.initial)
    if nested:

        def walk(states: dict[str, Any], prefix: str | None, initials: list[str]) -> None:
            for name, state in states.items():
                full = name if prefix is None else f"{prefix}{separator}{name}"
                children = _names(getattr(state, "initial", None))
                add_state(full, state, prefix, name in initials, len(children) > 1)
                walk(state.states, full, children)

        def walk_events(states: dict[str, Any], prefix: str | None) -> None:
            for name, state in states.items():
                full = name if prefix is None else f"{prefix}{separator}{name}"
                add_events(state.events, full)
                walk_events(state.states, full)

        # The machine's initial may be a path ('B_y'): its first segment is the top state.
        walk(machine.states, None, [n.split(separator)[0] for n in root_initial])
        add_events(machine.events, None)
        walk_events(machine.states, None)
    else:
        for name, state in machine.states.items():
            add_state(name, state, None, name in root_initial, False)
        add_events(machine.events, None)
    return Schema(tuple(specs), tuple(transitions)), values


def _global_dest(dest: Any, prefix: str | None, separator: str, values: dict[Any, int]) -> str:
    name = dest.name if isinstance(dest, Enum) else str(dest)
    if prefix is not None:
        scoped = f"{prefix}{separator}{name}"
        if scoped in values:
            return scoped
    return name
