"""Event-sourced state: an object that persists events, snapshots by strategy and recovers.

Modelled on protoactor-go's ``persistence`` plugin. ``EventSourced.persist(event)`` writes
the event at the next 0-based index of its stream (one record of a machine in an
aminspect backend, see ``es_store``), saves a snapshot of the state *before* the event
when the strategy says so (a snapshot at ``k`` covers events ``[0, k)``: S-01), then
applies it. On start the object recovers: latest snapshot + events ``[k, end)``, with
``SnapshotOffered`` -> ``EventReplayed``... -> ``ReplayComplete`` notifications (S-06).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import msgpack

from aminspect.machines.es_store import (
    DEFAULT_SCHEMA,
    STREAM_KIND,
    DuplicateIndex,
    Provider,
    StoredSnapshot,
)
from backends import Backend, BackendError, CorruptError, GapError, ReadOnlyError
from backends.snapshots import AnyStrategy, IntervalStrategy, SnapshotStrategy, TimeStrategy
from tracer.attach import AttachContext
from tracer.core import Channel, Dispatcher, dispatcher_for
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord
from tracer.sinks import Sink

__all__ = [
    "AnyStrategy",
    "Codec",
    "DataclassCodec",
    "EventRejected",
    "EventReplayed",
    "EventSourced",
    "EventSourcedError",
    "IntervalStrategy",
    "PersistFailed",
    "RawCodec",
    "RecoveryError",
    "RecoveryGap",
    "RecoveryInProgress",
    "RecoveryStep",
    "ReplayComplete",
    "SnapshotOffered",
    "SnapshotStrategy",
    "TimeStrategy",
    "WriterStopped",
    "lifecycle_id",
]

S = TypeVar("S")
E = TypeVar("E")

_CHUNK = 4096  # events read per backend call during recovery


# ------------------------------------------------------------------------------ errors
class EventSourcedError(Exception):
    """Base of the errors of event-sourced objects; ``str(err)`` is one line."""


class EventRejected(EventSourcedError):
    """An event was refused before anything was stored (it cannot be encoded, or
    ``apply`` raised on it): the state and the next index are unchanged (J-09)."""


class PersistFailed(EventSourcedError):
    """Storing failed or its outcome is unknown; the writer stops until ``recover()``
    re-reads the stream (J-09, Akka's persist failure)."""


class WriterStopped(EventSourcedError):
    """A write after a failed persist or recovery: call ``recover()`` first."""


class RecoveryInProgress(EventSourcedError):
    """A write while the object replays its history (S-06)."""


class RecoveryError(EventSourcedError):
    """Recovery failed at ``index`` of ``stream`` (None: before any event) because of
    ``cause``; the object's state is left as it was before (J-07)."""

    def __init__(self, stream: str, index: int | None, cause: BaseException) -> None:
        self.stream = stream
        self.index = index
        self.cause = cause
        where = "" if index is None else f" at event {index}"
        super().__init__(f"{stream}: recovery failed{where}: {type(cause).__name__}: {cause}")


class RecoveryGap(RecoveryError):
    """An event index is missing from the stream, or deleted and covered by no
    snapshot (J-06): recovery never skips events."""


# ------------------------------------------------------------------------------ codecs
class Codec(Protocol[E]):
    """Turns events into ``(type name, msgpack-able payload)`` and back."""

    def encode(self, event: E) -> tuple[str, Any]: ...
    def decode(self, name: str, payload: Any) -> E: ...


class RawCodec:
    """Events are msgpack-able values stored as they are: a mapping with a string
    ``"type"`` is named by it, anything else by its Python type name. ``decode`` returns
    the payload (msgpack turns tuples into lists)."""

    def encode(self, event: Any) -> tuple[str, Any]:
        if isinstance(event, Mapping) and isinstance(event.get("type"), str):
            return event["type"], event
        return type(event).__name__, event

    def decode(self, name: str, payload: Any) -> Any:
        return payload


class DataclassCodec:
    """Events are instances of the given dataclasses, named by class name; the payload
    is a map of their fields (field values must be msgpack-able).

    Raises:
        TypeError: a type that is not a dataclass, or two types with one name.
    """

    def __init__(self, *types: type) -> None:
        self.types: dict[str, type] = {}
        for cls in types:
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls!r} is not a dataclass")
            if cls.__name__ in self.types:
                raise TypeError(f"two event types are named {cls.__name__!r}")
            self.types[cls.__name__] = cls

    def encode(self, event: Any) -> tuple[str, Any]:
        cls = type(event)
        if self.types.get(cls.__name__) is not cls:
            raise TypeError(f"{cls.__name__} is not a registered event type")
        return cls.__name__, {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}

    def decode(self, name: str, payload: Any) -> Any:
        cls = self.types.get(name)
        if cls is None:
            raise ValueError(f"unknown event type {name!r}")
        if not isinstance(payload, Mapping):
            raise ValueError(f"the payload of a {name} is not a map")
        return cls(**payload)


# ------------------------------------------------------------------------------ recovery steps
@dataclass(frozen=True, slots=True)
class SnapshotOffered:
    """Recovery starts from the snapshot at ``index`` (state after events ``[0, index)``)."""

    index: int
    state: Any


@dataclass(frozen=True, slots=True)
class EventReplayed:
    """Event ``index`` was replayed; ``state`` is the state after it."""

    index: int
    event: Any
    state: Any


@dataclass(frozen=True, slots=True)
class ReplayComplete:
    """Recovery finished: ``recovering`` is false again and writes are accepted."""

    highest: int
    state: Any
    snapshot_index: int | None
    replayed: int


RecoveryStep = SnapshotOffered | EventReplayed | ReplayComplete


def lifecycle_id(stream: str) -> str:
    """The id of the machine that records a stream's restores and snapshots."""
    return f"{stream}.lifecycle"


_LIFECYCLE_SCHEMA = Schema.flat(["live", "stopped"])


def _default_labels(state: Any) -> Iterable[str]:
    return ("live",)


@dataclass(slots=True)
class _Loaded:
    state: Any
    highest: int
    snapshot_index: int | None
    snapshot_state: Any
    steps: list[tuple[int, Any, Any]]  # (index, event, state after) when someone listens
    replayed: int


class EventSourced(Generic[S, E]):
    """State rebuilt from its own events; subclass it (override ``apply``) or pass
    ``apply=``.

    Args:
        stream: the stream (machine) id of this object in the backend.
        provider: a Provider, a backend or a backend URL (the latter two are owned:
            ``close()`` closes them).
        initial: the state before the first event.
        apply: ``apply(state, event) -> new state``; pure, it must not mutate ``state``.
        strategy: when to snapshot (``IntervalStrategy(n)``, ``TimeStrategy(seconds)``,
            ``AnyStrategy``); None never snapshots on its own (``snapshot()`` still does).
        codec: events <-> ``(name, payload)``; default: ``DataclassCodec(*event_types)``
            when ``event_types`` are given, else ``RawCodec``.
        event_types: dataclasses used as events.
        encode_state / decode_state: state <-> msgpack value for snapshots; default: the
            fields of a dataclass state (rebuilt as ``type(initial)(**fields)``), else the
            value itself.
        states: state names the inspector shows for this object; ``labels(state)`` says
            which are active (both or neither). Default: one state ``live``.
        on_recovery: called with each RecoveryStep, in order (S-06).
        trace: also trace the object to a tracer sink or ``ws://`` URL: one record per
            persisted event plus an ``init``/``restore`` record after each recovery.
            Ignored when it is the provider's own backend (the events already are that
            history).
        trace_name: the machine id on the trace sink (default: ``stream``).
        lifecycle: record restores, snapshots and stops in the ``<stream>.lifecycle``
            machine of the provider's backend.
        start: recover now (else call ``recover()`` before the first ``persist``).

    Raises:
        RecoveryError: when ``start`` and recovery fails (J-06, J-07).
        ValueError: ``states`` without ``labels`` or the reverse, or no ``apply``.
    """

    def __init__(
        self,
        stream: str,
        provider: Provider | Backend | str,
        *,
        initial: S,
        apply: Callable[[S, E], S] | None = None,
        strategy: SnapshotStrategy | None = None,
        codec: Codec[E] | None = None,
        event_types: Sequence[type] = (),
        encode_state: Callable[[S], Any] | None = None,
        decode_state: Callable[[Any], S] | None = None,
        states: Sequence[str] | None = None,
        labels: Callable[[S], Iterable[str]] | None = None,
        on_recovery: Callable[[RecoveryStep], None] | None = None,
        trace: Sink | str | None = None,
        trace_name: str | None = None,
        lifecycle: bool = True,
        start: bool = True,
    ) -> None:
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"a stream name must be a non-empty string, got {stream!r}")
        if (states is None) != (labels is None):
            raise ValueError("pass both states= and labels=, or neither")
        if apply is None and type(self).apply is EventSourced.apply:
            raise ValueError("pass apply=, or subclass EventSourced and override apply()")
        self.stream = stream
        if isinstance(provider, Provider):
            self.provider = provider
            self._owns_provider = False
        else:
            self.provider = Provider(provider)
            self._owns_provider = True
        self.initial = initial
        self._apply_fn = apply
        self.strategy: SnapshotStrategy = strategy if strategy is not None else IntervalStrategy(0)
        self.codec: Codec[Any] = (
            codec
            if codec is not None
            else (DataclassCodec(*event_types) if event_types else RawCodec())
        )
        self._encode_state = encode_state or _default_encode_state
        self._decode_state: Callable[[Any], S] = decode_state or _default_decoder(initial)
        self.schema = Schema.flat(states) if states is not None else DEFAULT_SCHEMA
        self._labels: Callable[[S], Iterable[str]] = labels or _default_labels
        self._on_recovery = on_recovery
        self._lifecycle = lifecycle
        self._lock = threading.RLock()
        self._state: S = initial
        self._active: frozenset[int] = frozenset()
        self._index = 0
        self._tick = 0
        self._recovering = False
        self._stopped: str | None = None
        self._closed = False
        self._started = False
        self._live = False
        self.last_snapshot_error: BaseException | None = None
        self.trace_errors = 0
        self._trace_target = trace
        self._trace_name = trace_name or stream
        self._channel: Channel | None = None
        self._dispatcher: Dispatcher | None = None
        if start:
            try:
                self.recover()
            except BaseException:
                self.close()
                raise

    # -- what subclasses override ----------------------------------------------------------
    def apply(self, state: S, event: E) -> S:
        """The state after ``event``; must be pure (it also runs during replay)."""
        assert self._apply_fn is not None
        return self._apply_fn(state, event)

    def on_recovery(self, step: RecoveryStep) -> None:
        """Called for each recovery step in order (S-06); the default calls ``on_recovery=``."""
        if self._on_recovery is not None:
            self._on_recovery(step)

    # -- state -----------------------------------------------------------------------------
    @property
    def state(self) -> S:
        return self._state

    @property
    def index(self) -> int:
        """The index the next persisted event gets (events ``[0, index)`` are applied)."""
        return self._index

    @property
    def highest(self) -> int:
        """The index of the last applied event; -1 when none (J-01)."""
        return self._index - 1

    @property
    def recovering(self) -> bool:
        """True only while recovery notifications are delivered (S-06)."""
        return self._recovering

    @property
    def stopped(self) -> str | None:
        """Why writes are refused until ``recover()``, or None."""
        return self._stopped

    @property
    def mach_tick(self) -> int:
        """How many times the stream was restored (it goes up at every recovery of a
        stream that already held something)."""
        return self._tick

    @property
    def active(self) -> frozenset[str]:
        """The state names active for the inspector."""
        names = self.schema.names
        return frozenset(names[i] for i in self._active)

    # -- writing ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._closed:
            raise EventSourcedError(f"{self.stream}: the object is closed")
        if self._recovering:
            raise RecoveryInProgress(f"{self.stream}: cannot persist while recovering (S-06)")
        if not self._started:
            raise WriterStopped(f"{self.stream}: not recovered yet; call recover() first")
        if self._stopped is not None:
            raise WriterStopped(f"{self.stream}: writer stopped ({self._stopped}); call recover()")

    def persist(self, *events: E) -> int:
        """Persist events as one atomic write (all or none, J-09), snapshot by strategy,
        and apply them.

        Returns:
            The index of the last event persisted.

        Raises:
            ValueError: no event given.
            RecoveryInProgress: called during replay (S-06).
            WriterStopped: after a failure, until ``recover()``.
            EventRejected: an event cannot be encoded or ``apply`` raised; nothing stored.
            PersistFailed: the storage failed (or another writer took the index); the
                writer stops.
        """
        if not events:
            raise ValueError("persist() needs at least one event")
        with self._lock:
            self._check_writable()
            state, active = self._state, self._active
            # The stream's history starts with nothing active (as every backend replays
            # it): event 0 enters the initial labels too, so the stream alone rebuilds them.
            stored = active if self._index > 0 else frozenset()
            afters: list[frozenset[int]] = []
            now = time.time_ns()
            records: list[TransitionRecord] = []
            snaps: list[tuple[int, bytes]] = []
            for i, event in enumerate(events):
                index = self._index + i
                try:
                    name, payload = self.codec.encode(event)
                    if not isinstance(name, str):
                        raise TypeError(f"the codec named the event {name!r}, not a string")
                    self.provider.encode_check(payload)
                except Exception as exc:
                    raise EventRejected(
                        f"{self.stream}: event {index} ({type(event).__name__}) cannot be "
                        f"encoded: {exc}"
                    ) from exc
                if self.strategy.should_snapshot(index):
                    # A snapshot at index covers [0, index): the state before this event,
                    # encoded now so an apply that mutates in place cannot change it.
                    data = self._encode_snapshot(state)
                    if data is not None:
                        snaps.append((index, data))
                try:
                    new_state = self.apply(state, event)
                    after = self._active_of(new_state)
                except Exception as exc:
                    raise EventRejected(
                        f"{self.stream}: event {index} ({name}) refused by apply: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                records.append(
                    TransitionRecord(
                        self.stream,
                        index,
                        Kind.EVENT,
                        name,
                        self._tick,
                        now,
                        args=payload,
                        exited=tuple(sorted(stored - after)),
                        entered=tuple(sorted(after - stored)),
                    )
                )
                state, active, stored = new_state, after, after
                afters.append(after)
            try:
                self.provider.append(self.stream, records)
            except Exception as exc:
                self._stop(f"persist of event {self._index} failed", exc)
                kind = "index taken by another writer" if isinstance(exc, DuplicateIndex) else ""
                raise PersistFailed(
                    f"{self.stream}: persisting event {self._index} failed"
                    f"{' (' + kind + ')' if kind else ''}: {exc}"
                ) from exc
            before = self._active
            self._state, self._active = state, active
            self._index += len(records)
            for index, data in snaps:
                self._save_snapshot(index, data)
            self._trace_events(records, afters, before)
            return self._index - 1

    def snapshot(self) -> int:
        """Save a snapshot of the current state now (at ``index``: S-01).

        Returns:
            The snapshot's index.

        Raises:
            RecoveryInProgress, WriterStopped: as for ``persist``.
            BackendError: the state cannot be encoded or stored.
        """
        with self._lock:
            self._check_writable()
            data = self._encode_snapshot(self._state, raise_errors=True)
            assert data is not None
            self._save_snapshot(self._index, data, raise_errors=True)
            return self._index

    def _encode_snapshot(self, state: S, *, raise_errors: bool = False) -> bytes | None:
        try:
            data: bytes = msgpack.packb(self._encode_state(state), use_bin_type=True)
        except Exception as exc:
            self.last_snapshot_error = exc
            if raise_errors:
                raise BackendError(f"{self.stream}: cannot encode a snapshot: {exc}") from exc
            return None
        return data

    def _save_snapshot(self, index: int, data: bytes, *, raise_errors: bool = False) -> None:
        try:
            self.provider.save_snapshot(self.stream, index, data)
        except Exception as exc:
            # A snapshot only shortens recovery; a failed one never fails the persist.
            self.last_snapshot_error = exc
            if raise_errors:
                if isinstance(exc, BackendError):
                    raise
                raise BackendError(f"{self.stream}: cannot save a snapshot: {exc}") from exc
            return
        self._lifecycle_event("snapshot", {"index": index})

    def delete_events(self, upto: int) -> None:
        """Delete stored events ``[0, upto]`` (J-04); keep a snapshot at ``upto + 1`` or
        later, else the next recovery reports the deleted events as a gap.

        Raises:
            RecoveryInProgress: during replay. BackendError: see ``Provider.delete_events``.
        """
        with self._lock:
            if self._recovering:
                raise RecoveryInProgress(f"{self.stream}: cannot delete while recovering")
            self.provider.delete_events(self.stream, upto)

    def delete_snapshots(self, upto: int) -> None:
        """Delete snapshots with index ``<= upto`` (S-05).

        Raises:
            RecoveryInProgress: during replay. BackendError: a storage failure.
        """
        with self._lock:
            if self._recovering:
                raise RecoveryInProgress(f"{self.stream}: cannot delete while recovering")
            self.provider.delete_snapshots(self.stream, upto)

    def _stop(self, reason: str, exc: BaseException) -> None:
        self._stopped = f"{reason}: {type(exc).__name__}"
        self._lifecycle_append(
            Kind.EVENT,
            "stopped",
            {"reason": reason},
            exited=(0,) if self._live else (),
            entered=(1,),
            error=(type(exc).__name__, str(exc)),
        )
        self._live = False

    def _active_of(self, state: S) -> frozenset[int]:
        return self.schema.with_ancestors(self.schema.index(n) for n in self._labels(state))

    # -- recovery --------------------------------------------------------------------------
    def recover(self) -> ReplayComplete:
        """Rebuild the state: latest snapshot + events ``[k, end)`` (S-01), then notify
        ``SnapshotOffered`` -> ``EventReplayed``... -> ``ReplayComplete`` (S-06).

        The state changes only when everything decoded and applied (J-07); a failure
        stops the writer until a later ``recover()`` succeeds.

        Returns:
            The ReplayComplete step.

        Raises:
            RecoveryInProgress: called from a recovery notification.
            RecoveryGap: an index is missing, or deleted and no snapshot covers it (J-06).
            RecoveryError: a snapshot or event cannot be decoded or applied, a
                notification raised, or the store cannot be read (J-07).
        """
        with self._lock:
            if self._closed:
                raise EventSourcedError(f"{self.stream}: the object is closed")
            if self._recovering:
                raise RecoveryInProgress(f"{self.stream}: already recovering")
            try:
                loaded = self._load()
                active = self._active_of(loaded.state)
            except RecoveryError as exc:
                self._stop("recovery failed", exc)
                raise
            except Exception as exc:
                err = RecoveryError(self.stream, None, exc)
                self._stop("recovery failed", err)
                raise err from exc
            old = (self._state, self._active, self._index)
            self._recovering = True
            try:
                if loaded.snapshot_index is not None:
                    self._state = loaded.snapshot_state
                    self.on_recovery(SnapshotOffered(loaded.snapshot_index, loaded.snapshot_state))
                for index, event, state in loaded.steps:
                    self._state = state
                    self.on_recovery(EventReplayed(index, event, state))
            except Exception as exc:
                self._state, self._active, self._index = old
                err = RecoveryError(self.stream, None, exc)
                self._stop("a recovery notification raised", err)
                raise err from exc
            finally:
                self._recovering = False
            restart = loaded.highest >= 0 or loaded.snapshot_index is not None
            self._state, self._active, self._index = loaded.state, active, loaded.highest + 1
            self._stopped = None
            self._started = True
            self._after_recovery(restart, loaded)
            done = ReplayComplete(
                loaded.highest, loaded.state, loaded.snapshot_index, loaded.replayed
            )
            self.on_recovery(done)
            return done

    def _load(self) -> _Loaded:
        stream, provider = self.stream, self.provider
        try:
            record = provider.open_stream(stream, self.schema)
            self._tick = record.mach_tick
            stored, ours = record.schema.names, self.schema.names
            if stored[: len(ours)] == ours:
                self.schema = record.schema  # states only the stored schema has stay off
            elif ours[: len(stored)] != stored:
                raise RecoveryError(
                    stream,
                    None,
                    ValueError(
                        f"the stream was recorded with states {list(stored)}; new states "
                        "may only be added after them"
                    ),
                )
        except ReadOnlyError:
            pass  # a read-only backend: recover what is there, writes will be refused
        except BackendError as exc:
            raise RecoveryError(stream, None, exc) from exc
        try:
            highest = provider.highest(stream)
            snap = provider.latest_snapshot(stream)
        except BackendError as exc:
            raise RecoveryError(stream, None, exc) from exc
        state: Any = self.initial
        start = 0
        snap_index: int | None = None
        if snap is not None:
            if snap.index > highest + 1:
                raise RecoveryGap(
                    stream,
                    snap.index,
                    GapError(
                        f"the snapshot at {snap.index} is past the events (highest {highest})"
                    ),
                )
            state = self._decode_snapshot(snap)
            start = snap_index = snap.index
        snap_state = state
        first = provider.first(stream)
        if start < first and start <= highest:
            raise RecoveryGap(
                stream,
                start,
                GapError(f"events [{start}, {first}) were deleted and no snapshot covers them"),
            )
        listening = self._on_recovery is not None or type(self).on_recovery is not (
            EventSourced.on_recovery
        )
        steps: list[tuple[int, Any, Any]] = []
        expected = start
        while expected <= highest:
            upto = min(highest + 1, expected + _CHUNK)
            for stored in self._read_chunk(expected, upto):
                if stored.index != expected:
                    raise RecoveryGap(
                        stream,
                        expected,
                        GapError(f"event {expected} is missing (found {stored.index})"),
                    )
                try:
                    event = self.codec.decode(stored.name, stored.payload)
                    state = self.apply(state, event)
                except Exception as exc:
                    raise RecoveryError(stream, stored.index, exc) from exc
                if listening:
                    steps.append((stored.index, event, state))
                expected += 1
            if expected < upto:
                raise RecoveryGap(stream, expected, GapError(f"event {expected} is missing"))
        return _Loaded(state, highest, snap_index, snap_state, steps, expected - start)

    def _decode_snapshot(self, snap: StoredSnapshot) -> Any:
        try:
            value = msgpack.unpackb(snap.data, raw=False, strict_map_key=False)
            return self._decode_state(value)
        except Exception as exc:
            raise RecoveryError(
                self.stream, snap.index, CorruptError(f"snapshot {snap.index}: {exc}")
            ) from exc

    def _read_chunk(self, start: int, end: int) -> list[Any]:
        try:
            return self.provider.read_events(self.stream, start, end)
        except (GapError, CorruptError) as exc:
            # Name the first bad index: read one event at a time up to it.
            bad = start
            for i in range(start, end):
                try:
                    if not self.provider.read_events(self.stream, i, i + 1):
                        bad = i
                        break
                except BackendError:
                    bad = i
                    break
            err = RecoveryGap if isinstance(exc, GapError) else RecoveryError
            raise err(self.stream, bad, exc) from exc
        except BackendError as exc:
            raise RecoveryError(self.stream, start, exc) from exc

    def _after_recovery(self, restart: bool, loaded: _Loaded) -> None:
        if restart:
            self._tick += 1
            try:
                self.provider.set_tick(self.stream, self._tick)
            except Exception:  # a read-only store: the tick is only shown
                pass
        args = {
            "snapshot": loaded.snapshot_index,
            "replayed": loaded.replayed,
            "highest": loaded.highest,
            "tick": self._tick,
        }
        kind, name = (Kind.RESTORE, "restore") if restart else (Kind.INIT, "init")
        self._lifecycle_append(kind, name, args, exited=(), entered=(0,))
        self._live = True  # what the lifecycle machine shows after that RESET record
        self._trace_reset(kind, name, args)

    # -- the lifecycle machine (restores and snapshots, in the provider's backend) ---------
    def _lifecycle_event(self, name: str, args: Any) -> None:
        self._lifecycle_append(Kind.EVENT, name, args, exited=(), entered=())

    def _lifecycle_append(
        self,
        kind: str,
        name: str,
        args: Any,
        *,
        exited: tuple[int, ...],
        entered: tuple[int, ...],
        error: tuple[str, str] | None = None,
    ) -> None:
        if not self._lifecycle:
            return
        backend = self.provider.backend
        lid = lifecycle_id(self.stream)
        try:
            if backend.read_only:
                return
            try:
                record = backend.get_machine(lid)
            except BackendError:
                record = MachineRecord(
                    lid, STREAM_KIND + "-lifecycle", _LIFECYCLE_SCHEMA, self.stream
                )
            if record.mach_tick != self._tick:
                record.mach_tick = self._tick
                backend.put_machine(record)
            elif backend.highest(lid) < 0:
                backend.put_machine(record)
            rec = TransitionRecord(
                lid,
                backend.highest(lid) + 1,
                kind,
                name,
                self._tick,
                time.time_ns(),
                args=args,
                error=error,
                exited=exited,
                entered=entered,
            )
            backend.append(lid, [rec])
        except Exception:  # bookkeeping for the inspector never fails the app
            pass

    # -- tracing (to a sink other than the provider's backend) -----------------------------
    def _channel_for_trace(self) -> Channel | None:
        target = self._trace_target
        if target is None or target is self.provider.backend:
            return None  # the stream already is this object's history there: no copies
        if self._channel is None:
            if isinstance(target, str):
                from tracer.ws_sink import sink_for_url

                sink: Sink = sink_for_url(target, os.environ.get("AMINSPECT_TOKEN") or None)
            else:
                sink = target
            self._dispatcher = dispatcher_for(sink)
            record = MachineRecord(self._trace_name, STREAM_KIND, self.schema, mach_tick=self._tick)
            self._channel = AttachContext(self._dispatcher).open_channel(record)
        return self._channel

    def _trace_reset(self, kind: str, name: str, args: Any) -> None:
        try:
            channel = self._channel_for_trace()
            if channel is None:
                return
            channel.machine.mach_tick = self._tick
            after = self._active
            channel.emit(kind, name, (), sorted(after), after, args=args, nested=False)
        except Exception:
            self.trace_errors += 1

    def _trace_events(
        self,
        records: Sequence[TransitionRecord],
        afters: Sequence[frozenset[int]],
        before: frozenset[int],
    ) -> None:
        channel = self._channel
        if channel is None:
            return
        try:
            for rec, after in zip(records, afters, strict=True):
                channel.emit(
                    Kind.EVENT,
                    rec.name,
                    sorted(before - after),
                    sorted(after - before),
                    after,
                    args=rec.args,
                    nested=False,
                )
                before = after
        except Exception:
            self.trace_errors += 1

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Make acknowledged events durable and wait for traced records to ship."""
        with self._lock:
            self.provider.flush()
            if self._dispatcher is not None:
                return self._dispatcher.flush(timeout)
            return True

    def close(self) -> None:
        """Stop: waits for a persist in progress (J-10), stops tracing, flushes, and
        closes the provider when this object opened it. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._channel is not None and self._dispatcher is not None:
                try:
                    self._dispatcher.flush(2.0)
                    self._dispatcher.remove(self._channel)
                    self._channel.closed = True
                except Exception:
                    self.trace_errors += 1
            try:
                if self._owns_provider:
                    self.provider.close()
                elif not self.provider.backend.read_only:
                    self.provider.flush()
            except BackendError:
                pass

    def __enter__(self) -> EventSourced[S, E]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.stream!r}, index={self._index})"


def _default_encode_state(state: Any) -> Any:
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return state


def _default_decoder(initial: Any) -> Callable[[Any], Any]:
    cls = type(initial)
    if dataclasses.is_dataclass(initial) and not isinstance(initial, type):

        def decode(value: Any) -> Any:
            return cls(**value)

        return decode
    return lambda value: value
