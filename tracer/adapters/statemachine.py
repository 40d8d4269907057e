"""Adapter for python-statemachine 3.x: a listener plus engine hooks turn each step into a record.

How a machine is observed
-------------------------
* A listener is added with ``sm.add_listener``. It implements only plain-``def``
  ``on_exit_state``, ``on_enter_state`` and ``after_transition`` (ADAPTERS.md P1-P3: the results
  of these groups are discarded, so ``send()`` returns what it returned untraced, and no
  coroutine can switch the engine). The first exit or entry of a trigger positions the record
  (``Channel.position``); ``after_transition`` (which runs after the user's ``after_*``)
  commits it. ``duration`` is the time from that first state change to the commit.
* One record per trigger (one SCXML microstep): every transition a trigger fires in parallel
  regions shares ``event_data.trigger_data`` (P7), so their exits (innermost first) and
  entries (outermost first) become one record; the repeated ``after_transition`` calls of the
  same trigger are folded into it. Internal events (``done.state.*``, ``error.execution``,
  ``raise_``) and eventless transitions (named ``"(eventless)"``) of a macrostep get records
  of their own, in the order the engine ran them. A targetless transition is a record with
  no state change. A state entered while active and never exited (an internal
  self-transition with ``enable_self_transition_entries``) is recorded as exited and
  re-entered, so replay stays consistent.
* Engine hooks (on by default, option ``engine_hooks=False`` turns them off): ``put`` and
  ``processing_loop`` of the machine's engine are wrapped by instance attributes. This is
  private API (python-statemachine has no public hook for it, P4); the engine object is not
  pickled, so pickling is unaffected. They give what no listener callback sees:
  - ``TransitionNotAllowed`` (``StateMachine``, or a terminated machine): a record with
    ``accepted=False`` and the error; the exception still reaches the caller unchanged.
  - an exception that propagates out of a step (``catch_errors_as_events=False``): the open
    record is committed with the error and with the configuration the machine really has
    (the engine rolls a failed microstep back). Raised before any state change (``before``,
    a guard): a not-accepted record of the queued event with the error. Raised after the
    record was committed (a listener added after the tracer): a follow-up record of the
    same event with no change, its ``parent_seq`` the committed one.
  - errors caught as events (``StateChart``, P8): the ``error.execution`` trigger carries the
    exception; it is stored as ``error`` on the record open when it was raised, else on the
    ``error.execution`` record (an unhandled one becomes a not-accepted record). No logging
    handler is needed.
  - ``parent_seq`` for events sent (or raised) from a callback while a record is open:
    run-to-completion (P9) processes them after the current step, so the hook notes which
    record was open when the event was queued (``done.state.*`` included). An eventless
    transition's parent is the record before it in the same processing loop. Events queued
    from ``before``/guard callbacks (no record open yet) have no parent.
  - a direct write of ``current_state_value`` (or of the model's state field): detected when
    the next event is queued on an idle machine (or at ``detach()``) and recorded then as
    ``forced``; a write nobody follows up stays unseen until then.
  - option ``record_ignored=True``: events a ``StateChart`` ignores (P4, no enabled
    transition or a failed guard) become records with ``accepted=False``. Off by default:
    ignoring is normal SCXML behaviour and would flood the history. Unhandled internal events
    (``done.state.*``) are never recorded. Known race: an event queued by another thread
    exactly while a loop ends may be reported as ignored before it is processed.
  Without the hooks (listener only): none of the above; a record whose step raised is
  committed (with an ``Aborted`` error and the changes its callbacks reported) when the next
  record opens or at ``detach()``.
* Events sent from a traced machine's callback to another traced machine carry ``source``
  through the tracer's event stack (sync engines with hooks). Async engines run callbacks in
  tasks with copied contexts, so they do not push onto that stack: no ``source`` there.
* The schema comes from ``states_map`` (document order, parents first). State names are the
  state ids (the library rejects duplicate ids); should they ever collide, every name becomes
  its dotted path. History pseudo-states are never active and are not states of the schema;
  a transition to one has its compound state as ``dest``. An internal self-transition or a
  targetless one has ``dest=None``.
* ``attach`` emits an ``init`` record with the whole configuration (P5). An async machine not
  yet activated has an empty one; its ``__initial__`` activation then becomes an event record.
  Attach and detach while the machine is idle.
* ``detach()`` removes the listener (there is no public ``remove_listener`` in 3.2.2: the
  listener's callback wrappers are taken out of the machine's callback registry, leaving it as
  it was) and the engine hooks.
* Pickling: the listener reduces to a plain ``object()``, so a traced machine pickles and the
  copy works untraced. (A machine with history values does not pickle in 3.2.2, traced or not.)
* Cost (10k events, 2-state toggle, medians of 7 alternating runs, busy 2-core box): the
  library binds listener arguments per call, so an empty three-method listener alone keeps
  0.78-0.95 of the untraced speed; with this adapter 0.63-0.80 (hooks), 0.67-0.83 without.

Options (``attach(sm, options={...})``): ``engine_hooks`` (bool, default True),
``record_ignored`` (bool, default False).
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from inspect import isawaitable
from typing import Any

from tracer.adapters._attrs import instance_attr
from tracer.attach import AttachContext
from tracer.core import Capture, Channel, OpenEvent, current_event, error_of, pop_event, push_event
from tracer.records import Kind, MachineRecord, Schema, StateSpec, TransitionSpec
from tracer.sanitize import Sanitizer, sanitize_args

__all__ = ["OPTIONS", "StatemachineAdapter", "accepts", "attach", "schema_of"]

OPTIONS: dict[str, bool] = {"engine_hooks": True, "record_ignored": False}

EVENTLESS = "(eventless)"
FORCED_NAME = "current_state_value"
_ERROR_EVENT = "error.execution"


def _base_classes() -> tuple[type, ...]:
    mod = sys.modules.get("statemachine")
    if mod is None:
        return ()
    # StateMachine subclasses StateChart in 3.x; name both so either order is covered.
    found = (getattr(mod, "StateChart", None), getattr(mod, "StateMachine", None))
    return tuple(c for c in found if isinstance(c, type))


def accepts(obj: Any) -> bool:
    """Whether ``obj`` is a python-statemachine machine (``StateChart`` or ``StateMachine``)."""
    bases = _base_classes()
    return bool(bases) and isinstance(obj, bases)


def schema_of(sm: Any) -> tuple[Schema, dict[Any, int]]:
    """The schema of a machine and the index of each state value.

    Args:
        sm: a python-statemachine machine (or its class).

    Returns:
        ``(schema, index)`` where ``index`` maps ``State.value`` to the schema index.
    """
    states = list(sm.states_map.values())
    ids = [s.id for s in states]
    unique = len(set(ids)) == len(ids)

    def full(state: Any) -> str:
        if unique:
            return str(state.id)
        parts = [str(state.id)]
        parent = state.parent
        while parent is not None:
            parts.append(str(parent.id))
            parent = parent.parent
        return ".".join(reversed(parts))

    specs = tuple(
        StateSpec(
            full(s),
            None if s.parent is None else full(s.parent),
            initial=bool(s.initial),
            final=bool(s.final),
            parallel=bool(s.parallel),
        )
        for s in states
    )
    transitions: list[TransitionSpec] = []
    for s in states:
        for t in s.transitions:
            if t.initial:
                continue
            events = [str(e) for e in t.events] or [""]
            targets = list(t.targets)
            internal = bool(t.internal)
            if internal and t.is_self:
                targets = []  # an internal self-transition stays: dest None, as in records.py
            for event in events:
                if not targets:
                    transitions.append(TransitionSpec(full(s), event, None, True))
                for target in targets:
                    # A history pseudo-state re-enters its compound state.
                    dest = target.parent if target.is_history else target
                    transitions.append(TransitionSpec(full(s), event, full(dest), internal))
    index = {s.value: i for i, s in enumerate(states)}
    return Schema(specs, tuple(transitions)), index


class _Open:
    """The record of the trigger being processed."""

    __slots__ = ("cap", "entered", "error", "ev", "exited", "started", "thread", "trigger")

    def __init__(self, trigger: Any, cap: Capture, thread: int) -> None:
        self.trigger = trigger
        self.cap = cap
        self.exited: list[int] = []
        self.entered: list[int] = []
        self.error: tuple[str, str] | None = None
        self.ev: OpenEvent | None = None
        self.started = time.perf_counter_ns()
        self.thread = thread


class _Pending:
    """A trigger queued while the hooks watched: what caused it, and its error if any."""

    __slots__ = ("error", "parent", "trigger")

    def __init__(self, trigger: Any, parent: Capture | None, error: tuple[str, str] | None):
        self.trigger = trigger
        self.parent = parent
        self.error = error


class _Listener:
    """The object registered with ``add_listener``; forwards three callbacks to the adapter.

    It pickles (and copies) as a plain ``object()``: the machine's ``__setstate__`` re-adds
    its listeners, and the copy must work without the tracer.
    """

    __slots__ = ("__weakref__", "_t")

    def __init__(self, adapter: StatemachineAdapter) -> None:
        self._t: StatemachineAdapter | None = adapter

    def __reduce__(self) -> tuple[Any, ...]:
        return (object, ())

    # Plain defs taking only ``event_data``: the engine binds arguments by name per call,
    # and one name is the cheapest binding.
    def on_exit_state(self, event_data: Any) -> None:
        t = self._t
        if t is not None:
            t.exit(event_data)

    def on_enter_state(self, event_data: Any) -> None:
        t = self._t
        if t is not None:
            t.enter(event_data)

    def after_transition(self, event_data: Any) -> None:
        t = self._t
        if t is not None:
            t.after(event_data)


class StatemachineAdapter:
    """Traces one python-statemachine machine instance into one channel."""

    def __init__(
        self,
        sm: Any,
        channel: Channel,
        index: Mapping[Any, int],
        sanitizer: Sanitizer | None,
        *,
        engine_hooks: bool = True,
        record_ignored: bool = False,
    ) -> None:
        self.sm = sm
        self.channel = channel
        self.schema = channel.machine.schema
        self.index = dict(index)
        self.sanitizer = sanitizer
        self.record_ignored = record_ignored
        self.hooks = engine_hooks
        self.lock = threading.RLock()
        self.cur: _Open | None = None
        self.last_trigger: Any = None  # the trigger committed last (P7: later afters fold in)
        self.last_cap: Capture | None = None  # committed last in this processing loop
        self.pending: dict[int, _Pending] = {}
        self.active: frozenset[int] = frozenset()
        self.raw: Any = None  # the model's raw state value after the last record
        self.engine: Any = None
        self._hooks: tuple[Callable[..., Any], ...] = ()
        self.keys_before: frozenset[str] = frozenset()
        self.push = False
        self.not_allowed: type[Exception] = Exception  # TransitionNotAllowed, set by start()
        self.listener = _Listener(self)
        self.closed = False

    # -- helpers ------------------------------------------------------------------------
    def _actual(self) -> frozenset[int]:
        index = self.index
        return self.schema.with_ancestors(
            index[v] for v in self.sm.configuration_values if v in index
        )

    def _note_error(self, where: str, exc: BaseException) -> None:
        # The tracer never raises into the app: keep the reason where stats can show it.
        self.channel.dispatcher.last_error = f"statemachine adapter ({where}): {error_of(exc)}"

    def _args(self, trigger: Any) -> Any:
        return sanitize_args(trigger.args, trigger.kwargs, self.sanitizer)

    @staticmethod
    def _name(trigger: Any) -> str:
        event = trigger.event
        return EVENTLESS if event is None else str(event)

    def _emit(
        self,
        kind: str,
        name: str,
        exited: Iterable[int],
        entered: Iterable[int],
        after: frozenset[int],
        *,
        args: Any = None,
        accepted: bool = True,
        error: tuple[str, str] | None = None,
        parent: Capture | None = None,
    ) -> None:
        # This adapter tracks nesting itself (run-to-completion queues events), so the
        # parent is the one it gives, never the event open in the context.
        self.channel.emit(
            kind,
            name,
            exited,
            entered,
            after,
            args=args,
            accepted=accepted,
            error=error,
            parent=parent,
            nested=False,
        )
        self.active = after

    # -- record lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        """Emit the ``init`` record and start listening."""
        with self.lock:
            self.active = self._actual()
            self.raw = self.sm.current_state_value
            self._emit(Kind.INIT, "init", (), sorted(self.active), self.active)
        from statemachine.exceptions import TransitionNotAllowed

        self.not_allowed = TransitionNotAllowed
        engine = self.sm._engine
        self.push = type(engine).__name__ == "SyncEngine"
        self.keys_before = _registry_keys_before(self.sm)
        self.sm.add_listener(self.listener)
        if self.hooks:
            self._hook(engine)

    def _open(self, trigger: Any) -> _Open:
        with self.lock:
            stale = self.cur
            if stale is not None:
                # With the hooks, a record still open here is complete: an initial
                # activation (no after_transition) or a StateChart step whose after block
                # failed (the error is on it already). Without them it may have been undone.
                initial = stale.trigger.event == "__initial__"
                self._finish(stale, None, stale=not (self.hooks or initial))
            parent: Capture | None = None
            pending = self.pending.pop(id(trigger), None) if self.pending else None
            if self.pending and trigger.event is not None and not trigger.event.internal:
                self._drain_before(trigger)
            cap = self.channel.begin(Kind.EVENT, self._name(trigger))
            cur = _Open(trigger, cap, threading.get_ident())
            if pending is not None and pending.trigger is trigger:
                parent = pending.parent
                cur.error = pending.error
            elif trigger.event is None and self.hooks:
                # An eventless transition was enabled by the step before it in this loop.
                parent = self.last_cap
            cap.parent = parent
            if parent is None and self.push:
                outer = current_event()
                if outer is not None and outer.channel is not self.channel:
                    cap.source = (outer.channel, outer.capture)
            cap.record.args = self._args(trigger)
            self.channel.position(cap)
            self.cur = cur
        if self.push and self.hooks:
            # Balanced by _finish on this thread: the loop hook finishes what after misses.
            cur.ev = OpenEvent(self.channel, cap, cur.started)
            push_event(cur.ev)
        return cur

    def _finish(self, cur: _Open, exc: BaseException | None, *, stale: bool = False) -> None:
        """Commit the open record. ``exc``: the step raised; ``stale``: no after_transition."""
        with self.lock:
            self.cur = None
            rec = cur.cap.record
            rec.duration = time.perf_counter_ns() - cur.started
            before = self.active
            if exc is not None:
                # The engine rolled the failed microstep back: trust the machine, not callbacks.
                after = self._actual()
                rec.exited = tuple(sorted(before - after))
                rec.entered = tuple(sorted(after - before))
                rec.error = cur.error or error_of(exc)
            else:
                exited, entered = cur.exited, cur.entered
                gone = set(exited)
                came = set(entered)
                again = (came - gone) & before
                if again:
                    # Entered while active and never exited (an internal self-transition
                    # with enable_self_transition_entries): shown as exited and re-entered.
                    exited = exited + sorted(again)
                    gone |= again
                after = (before - gone) | came
                rec.exited = tuple(exited)
                rec.entered = tuple(entered)
                rec.error = cur.error
                if stale:
                    rec.error = rec.error or (
                        "Aborted",
                        "the step ended without after_transition; changes may have been undone",
                    )
            self.channel.commit(cur.cap, after)
            self.active = after
            self.raw = self.sm.current_state_value
            self.last_trigger = cur.trigger
            self.last_cap = cur.cap
        if cur.ev is not None:
            pop_event(cur.ev)

    # -- listener callbacks (hot path) --------------------------------------------------
    def exit(self, event_data: Any) -> None:
        try:
            cur = self.cur
            trigger = event_data.trigger_data
            if cur is None or cur.trigger is not trigger:
                cur = self._open(trigger)
            cur.exited.append(self.index[event_data.state.value])
        except Exception as exc:
            self._note_error("on_exit_state", exc)

    def enter(self, event_data: Any) -> None:
        try:
            cur = self.cur
            trigger = event_data.trigger_data
            if cur is None or cur.trigger is not trigger:
                cur = self._open(trigger)
            cur.entered.append(self.index[event_data.state.value])
        except Exception as exc:
            self._note_error("on_enter_state", exc)

    def after(self, event_data: Any) -> None:
        try:
            cur = self.cur
            trigger = event_data.trigger_data
            if cur is not None and cur.trigger is trigger:
                self._finish(cur, None)
            elif trigger is not self.last_trigger:
                # A targetless transition changes no state: open and commit at once.
                self._finish(self._open(trigger), None)
        except Exception as exc:
            self._note_error("after_transition", exc)

    # -- engine hooks -------------------------------------------------------------------
    def _hook(self, engine: Any) -> None:
        orig_put = engine.put
        orig_loop = engine.processing_loop
        adapter = self

        def put(trigger_data: Any, *args: Any, **kwargs: Any) -> Any:
            adapter.on_put(trigger_data)
            try:
                return orig_put(trigger_data, *args, **kwargs)
            except Exception as exc:
                adapter.put_failed(trigger_data, exc)
                raise

        if type(engine).__name__ == "AsyncEngine":

            async def processing_loop(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await orig_loop(*args, **kwargs)
                except BaseException as exc:
                    adapter.loop_end(exc)
                    raise
                adapter.loop_end(None)
                return result

        else:

            def processing_loop(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                try:
                    result = orig_loop(*args, **kwargs)
                except BaseException as exc:
                    adapter.loop_end(exc)
                    raise
                if isawaitable(result):  # pragma: no cover - a sync engine returns values
                    return result
                adapter.loop_end(None)
                return result

        engine.put = put
        engine.processing_loop = processing_loop
        self.engine = engine
        self._hooks = (put, processing_loop)

    def _unhook(self) -> None:
        engine = self.engine
        if engine is None:
            return
        self.engine = None
        for name, fn in zip(("put", "processing_loop"), self._hooks, strict=False):
            if instance_attr(engine, name) is fn:  # not vars(engine): see _attrs
                delattr(engine, name)

    def on_put(self, trigger: Any) -> None:
        """A trigger is about to be queued (any thread)."""
        if self.closed:
            return
        try:
            with self.lock:
                cur = self.cur
                if (
                    cur is None
                    and self.sm.current_state_value is not self.raw
                    and not self.engine._processing.locked()
                ):
                    # Only while the machine is idle: during a step, states change between
                    # records too (entries without exits update the configuration first).
                    self._check_forced()
                event = trigger.event
                error = None
                if event is not None and event == _ERROR_EVENT:
                    exc = trigger.kwargs.get("error")
                    error = error_of(exc) if isinstance(exc, BaseException) else None
                parent = None
                if cur is not None and cur.thread == threading.get_ident():
                    parent = cur.cap
                    if error is not None and cur.error is None:
                        cur.error, error = error, None  # reported on the record that raised
                self.pending[id(trigger)] = _Pending(trigger, parent, error)
        except Exception as exc:
            self._note_error("put", exc)

    def put_failed(self, trigger: Any, exc: BaseException) -> None:
        """Queuing raised (a terminated ``StateMachine``): record a not-accepted event."""
        if self.closed:
            return
        try:
            with self.lock:
                pending = self.pending.pop(id(trigger), None)
                if isinstance(exc, self.not_allowed):
                    self._emit(
                        Kind.EVENT,
                        self._name(trigger),
                        (),
                        (),
                        self.active,
                        args=self._args(trigger),
                        accepted=False,
                        error=error_of(exc),
                        parent=pending.parent if pending is not None else None,
                    )
        except Exception as err:
            self._note_error("put", err)

    def _check_forced(self) -> None:
        actual = self._actual()
        before = self.active
        if actual != before:
            self._emit(
                Kind.FORCED,
                FORCED_NAME,
                sorted(before - actual),
                sorted(actual - before),
                actual,
                args=sanitize_args((self.sm.current_state_value,), {}, None),
            )
        self.raw = self.sm.current_state_value

    def _drain_before(self, trigger: Any) -> None:
        """Report the queued triggers the engine took before ``trigger`` without a step."""
        key = (trigger.execution_time, trigger.sequence)
        earlier = [
            p
            for p in self.pending.values()
            if p.trigger.event is not None
            and not p.trigger.event.internal
            and (p.trigger.execution_time, p.trigger.sequence) < key
        ]
        for p in sorted(earlier, key=lambda p: (p.trigger.execution_time, p.trigger.sequence)):
            del self.pending[id(p.trigger)]
            self._report_unprocessed(p)

    def _report_unprocessed(self, p: _Pending, exc: BaseException | None = None) -> None:
        trigger = p.trigger
        if getattr(trigger, "cancelled", False):
            return
        event = trigger.event
        internal = event is None or bool(event.internal)
        error = p.error if exc is None else error_of(exc)
        if error is None and (internal or not self.record_ignored):
            return
        self._emit(
            Kind.EVENT,
            self._name(trigger),
            (),
            (),
            self.active,
            args=self._args(trigger),
            accepted=False,
            error=error,
            parent=p.parent,
        )

    def loop_end(self, exc: BaseException | None) -> None:
        """A processing loop returned or raised on this thread or task."""
        if self.closed:
            return
        try:
            engine = self.engine
            if exc is None and engine is not None and engine._processing.locked():
                return  # another thread or task is still running the loop; it finishes
            with self.lock:
                # Checked under our lock: a loop started since then cannot reach a record
                # (open, commit) before we are done here.
                if engine is not None and engine._processing.locked():
                    return  # a loop started meanwhile on another thread; it finishes
                cur = self.cur
                if exc is None and cur is None and not self.pending:
                    self.last_trigger = self.last_cap = None  # the common case: all done
                    return
                if cur is not None and cur.thread != threading.get_ident():
                    return  # only the thread that ran the step may close its record
                if cur is not None:
                    self._finish(cur, exc if isinstance(exc, Exception) else None)
                    if exc is not None:
                        self.pending.clear()  # the engine cleared its queues
                elif isinstance(exc, Exception):
                    pending = sorted(
                        self.pending.values(),
                        key=lambda p: (p.trigger.execution_time, p.trigger.sequence),
                    )
                    self.pending.clear()
                    culprit = None
                    refused = getattr(exc, "event", None)  # TransitionNotAllowed.event
                    if isinstance(exc, self.not_allowed):
                        culprit = next((p for p in pending if p.trigger.event == refused), None)
                    elif pending:
                        culprit = pending[0]
                    if culprit is not None:
                        self._report_unprocessed(culprit, exc)
                    elif self.last_cap is not None and not isinstance(exc, self.not_allowed):
                        # Raised after the last record was committed (an ``after`` callback
                        # runs after ours): a follow-up of that event, with no state change.
                        self._emit(
                            Kind.EVENT,
                            self._name(self.last_trigger),
                            (),
                            (),
                            self.active,
                            error=error_of(exc),
                            parent=self.last_cap,
                        )
                    elif isinstance(exc, self.not_allowed):
                        self._emit(
                            Kind.EVENT,
                            str(refused),
                            (),
                            (),
                            self.active,
                            accepted=False,
                            error=error_of(exc),
                        )
                # A trigger queued by another thread just as this loop ended is still
                # queued: it is not ignored, the next loop takes it.
                if exc is None and self.pending and engine.external_queue.is_empty():
                    pending = sorted(
                        self.pending.values(),
                        key=lambda p: (p.trigger.execution_time, p.trigger.sequence),
                    )
                    self.pending.clear()
                    for p in pending:
                        self._report_unprocessed(p)
                self.last_trigger = None
                self.last_cap = None
        except Exception as err:
            self._note_error("processing loop", err)

    # -- detach -------------------------------------------------------------------------
    def detach(self) -> None:
        """Stop tracing and take every trace of the tracer out of the machine."""
        with self.lock:
            cur = self.cur
            if cur is not None:
                self._finish(cur, None, stale=True)
            try:
                if self.sm.current_state_value is not self.raw:
                    self._check_forced()
            except Exception as exc:
                self._note_error("detach", exc)
            self.closed = True
            self.pending.clear()
            self.last_trigger = None
            self.last_cap = None
        self.listener._t = None
        self._unhook()
        _remove_listener(self.sm, self.listener, self.keys_before)
        _release_registry_keys(self.sm)


# The callback registry keys each machine had before its first tracer was added, shared by
# the tracers of one machine so that whichever detaches last can drop what they created.
# Keyed by id() with a weak reference to tell a reused id apart: machines may define __eq__.
_keys_lock = threading.Lock()
_keys_before: dict[int, tuple[weakref.ref[Any], frozenset[str], int]] = {}


def _registry_keys_before(sm: Any) -> frozenset[str]:
    with _keys_lock:
        entry = _keys_before.get(id(sm))
        if entry is not None and entry[0]() is sm:
            _keys_before[id(sm)] = (entry[0], entry[1], entry[2] + 1)
            return entry[1]
        keys = frozenset(sm._callbacks._registry)
        _keys_before[id(sm)] = (weakref.ref(sm, _forget_keys(id(sm))), keys, 1)
        return keys


def _forget_keys(key: int) -> Callable[[weakref.ref[Any]], None]:
    """A weakref callback dropping the entry of a machine collected while still traced."""

    def forget(ref: weakref.ref[Any]) -> None:
        # No lock: this may run from the garbage collector while the lock is held.
        entry = _keys_before.get(key)
        if entry is not None and entry[0] is ref:
            _keys_before.pop(key, None)

    return forget


def _release_registry_keys(sm: Any) -> None:
    with _keys_lock:
        entry = _keys_before.get(id(sm))
        if entry is None or entry[0]() is not sm:
            return
        if entry[2] <= 1:
            del _keys_before[id(sm)]
        else:
            _keys_before[id(sm)] = (entry[0], entry[1], entry[2] - 1)


def _remove_listener(sm: Any, listener: object, keys_before: frozenset[str]) -> None:
    """Undo ``sm.add_listener(listener)``: 3.2.2 has no public API for it.

    The listener's callbacks are wrappers keyed ``"<name>@<id(listener)>"`` in the machine's
    callback registry. Each executor gets a new deque without them, so a loop iterating the
    old one (another thread) is not disturbed. Executors that adding the listener created
    (the registry is a defaultdict) are dropped again once empty.
    """
    suffix = f"@{id(listener)}"
    sm._listeners.pop(id(listener), None)
    registry = sm._callbacks._registry
    for executor in list(registry.values()):
        items = executor.items
        if any(str(w.unique_key).endswith(suffix) for w in items):
            executor.items = deque(w for w in items if not str(w.unique_key).endswith(suffix))
            executor.items_already_seen = {
                k for k in executor.items_already_seen if not str(k).endswith(suffix)
            }
    for key in [k for k, ex in registry.items() if k not in keys_before and not ex.items]:
        del registry[key]


def attach(sm: Any, ctx: AttachContext) -> tuple[list[Channel], Callable[[], None]]:
    """Start tracing a python-statemachine machine.

    Args:
        sm: a ``StateChart`` or ``StateMachine`` instance.
        ctx: the attach context (machine id, sanitizer, options).

    Returns:
        The one channel of the machine and the function that detaches the tracer.

    Raises:
        ValueError: on an unknown option.
    """
    options = dict(OPTIONS)
    given: Mapping[str, Any] = getattr(ctx, "options", None) or {}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown python-statemachine option(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(OPTIONS))})"
        )
    options.update({k: bool(v) for k, v in given.items()})
    schema, index = schema_of(sm)
    record = MachineRecord(ctx.machine_id(type(sm).__name__), "statemachine", schema)
    channel = ctx.open_channel(record)
    adapter = StatemachineAdapter(
        sm,
        channel,
        index,
        ctx.sanitizer,
        engine_hooks=options["engine_hooks"],
        record_ignored=options["record_ignored"],
    )
    adapter.start()
    return [channel], adapter.detach
