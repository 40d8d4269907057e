"""A validated, SQL-persisted finite state machine (modelled on luno/shift) and its Arc variant.

Declare the machine once::

    fsm = (
        FSMBuilder("orders")
        .initial(Order.CREATED, NewOrder, next=[Order.PAID, Order.CANCELLED])
        .add_state(Order.PAID, Pay, next=[Order.SHIPPED])
        .add_state(Order.SHIPPED, Ship)
        .add_state(Order.CANCELLED, Cancel)
        .build("sqlite:///orders.db")
    )
    oid = fsm.insert(NewOrder(customer="ada"))
    fsm.update(Order.CREATED, Order.PAID, Pay(id=oid, amount=12.5))

Entering the initial state inserts an instance; every other state updates one by the id
its payload carries. Each transition is one SQL transaction: the row is written with a
compare-and-set on the current state, exactly one event is appended (type = destination,
foreign id = instance id, optional metadata), then an optional validation hook runs; if
anything raises, all of it rolls back. Tracing (optional) happens only after the commit.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import types
import typing
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from aminspect.machines.fsm_errors import (
    DuplicateID,
    EdgeIntoInitial,
    FSMBuildError,
    FSMError,
    FSMStoreError,
    IDRuleError,
    IDTypeMismatch,
    InvalidStateTransition,
    InvalidType,
    MisconfiguredOption,
    NoInitialState,
    RowCount,
    StateAlreadyAdded,
    TimestampRequired,
    UndeclaredState,
    UnknownStatus,
    UnreachableState,
)
from aminspect.machines.fsm_store import (
    FSMStore,
    SQLiteFSMStore,
    StoredEvent,
    StoredInstance,
    open_fsm_store,
)

__all__ = [
    "FSM",
    "ArcFSM",
    "ArcFSMBuilder",
    "DuplicateID",
    "EdgeIntoInitial",
    "Event",
    "FSMBuildError",
    "FSMBuilder",
    "FSMError",
    "FSMStore",
    "FSMStoreError",
    "IDRuleError",
    "IDTypeMismatch",
    "Instance",
    "InvalidStateTransition",
    "InvalidType",
    "MisconfiguredOption",
    "NoInitialState",
    "RowCount",
    "SQLiteFSMStore",
    "StateAlreadyAdded",
    "TimestampRequired",
    "TransitionContext",
    "UndeclaredState",
    "UnknownStatus",
    "UnreachableState",
    "open_fsm_store",
    "state_name",
]

InstanceID = int | str
MetadataFn = Callable[["TransitionContext"], bytes | str | None]
ValidateFn = Callable[["TransitionContext"], None]

# Payload fields the FSM reads itself; every other field is stored as instance data.
_RESERVED = ("id", "created_at", "updated_at")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def state_name(state: object) -> str | None:
    """The stored name of a state: a str as is, an Enum member's str value (its name when
    the value is not a str); None for anything else."""
    if isinstance(state, Enum):
        value = state.value
        return value if isinstance(value, str) else state.name
    if isinstance(state, str):
        return state
    return None


def _label(state: object) -> str:
    name = state_name(state)
    return name if name is not None else repr(state)


# -- payload types --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Payload:
    """What the FSM knows about one payload type."""

    cls: type
    fields: tuple[str, ...]  # stored as instance data
    id_type: type | None  # int or str; None when the type has no id field
    id_optional: bool
    created_at: bool  # the caller supplies the time (FSM-11)
    updated_at: bool


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a forward reference only the defining scope could resolve
        return {f.name: f.type for f in dataclasses.fields(cls)}


_ID_STRINGS: dict[str, tuple[type, bool]] = {
    "int": (int, False),
    "str": (str, False),
    "int | None": (int, True),
    "str | None": (str, True),
    "Optional[int]": (int, True),
    "Optional[str]": (str, True),
}


def _id_annotation(ann: Any) -> tuple[type, bool] | None:
    """(int or str, optional?) for an id annotation; None when it is neither."""
    if ann is int or ann is str:
        return ann, False
    if isinstance(ann, str):
        return _ID_STRINGS.get(ann.replace("typing.", ""))
    if isinstance(ann, types.UnionType) or typing.get_origin(ann) is typing.Union:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(ann)) == 2 and args[0] in (int, str):
            return args[0], True
    return None


def _payload(cls: Any, state: str, *, insert: bool) -> _Payload:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise FSMBuildError(f"the payload type of state {state!r} must be a dataclass, not {cls!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    id_type: type | None = None
    optional = False
    if "id" in names:
        parsed = _id_annotation(_hints(cls).get("id"))
        if parsed is None:
            raise IDRuleError(
                f"{cls.__qualname__}.id must be annotated int or str (ids are int or str only)"
            )
        id_type, optional = parsed
    if not insert:
        if id_type is None:
            raise IDRuleError(
                f"update payload {cls.__qualname__} (state {state!r}) must carry an id field"
            )
        if optional:
            raise IDRuleError(
                f"update payload {cls.__qualname__} must carry an id: annotate it "
                f"{id_type.__name__}, not optional"
            )
        if "created_at" in names:
            raise FSMBuildError(
                f"update payload {cls.__qualname__} may not set created_at: "
                "an update touches only updated_at"
            )
    return _Payload(
        cls,
        tuple(n for n in names if n not in _RESERVED),
        id_type,
        optional,
        "created_at" in names,
        "updated_at" in names,
    )


def _common_id_type(payloads: Iterable[_Payload], declared: type | None) -> type:
    """The one id type every payload agrees on (FSM-12); int when none declares one."""
    found = declared
    owner = "id_type=" if declared is not None else ""
    for p in payloads:
        if p.id_type is None:
            continue
        if found is None:
            found, owner = p.id_type, p.cls.__qualname__
        elif p.id_type is not found:
            raise IDTypeMismatch(
                f"all payloads of one machine share one id type: {owner} uses "
                f"{found.__name__}, {p.cls.__qualname__} uses {p.id_type.__name__}"
            )
    if found not in (None, int, str):
        raise IDRuleError(f"id_type must be int or str, not {found!r}")
    return found or int


def _time_ns(value: Any, field: str) -> int:
    """A caller-supplied time as UTC ns; zero or None is refused (FSM-11)."""
    if value is None or (type(value) is int and value == 0):
        raise TimestampRequired(f"{field} is required")
    if isinstance(value, datetime):
        if value.replace(tzinfo=None) == datetime.min:  # Go's zero time.Time, in Python
            raise TimestampRequired(f"{field} is required")
        if value.tzinfo is None:
            value = value.astimezone()  # naive: local time, as datetime.timestamp() reads it
        return int((value - _EPOCH) // timedelta(microseconds=1)) * 1000
    if type(value) is int:
        return value
    raise InvalidType(f"{field} must be a datetime or int ns, not {type(value).__name__}")


def _from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _data_of(payload: Any, spec: _Payload, state: str) -> dict[str, Any]:
    data = {name: getattr(payload, name) for name in spec.fields}
    try:
        # Round-trip now: what is stored is what get() returns and what the hooks see.
        out: dict[str, Any] = json.loads(json.dumps(data, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise InvalidType(
            f"payload {spec.cls.__qualname__} cannot be stored: {exc}", to_state=state
        ) from None
    return out


# -- results and hook context -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Instance:
    """One stored instance: its id, current state, data (payload fields) and times."""

    id: InstanceID
    state: Any  # the declared state object (an Enum member or a str)
    data: dict[str, Any]
    created_at: datetime  # UTC
    updated_at: datetime  # UTC
    created_ns: int
    updated_ns: int


@dataclass(frozen=True, slots=True)
class Event:
    """One journal event: ``type`` is the destination state, ``foreign_id`` the instance."""

    seq: int  # 1, 2, 3... per machine, in commit order
    type: Any
    foreign_id: InstanceID
    metadata: bytes | str | None
    time: datetime  # UTC


@dataclass(frozen=True, slots=True)
class TransitionContext:
    """What metadata providers and validation hooks see, inside the transition's
    transaction: a metadata provider runs after the row write, a validation hook after
    the event write too; nothing is committed yet."""

    machine: str
    id: InstanceID
    from_state: Any  # None for an insert
    to_state: Any
    payload: Any
    store: FSMStore
    tx: Any

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read inside the transaction (SQL and paramstyle of the store's database)."""
        return self.store.query(self.tx, sql, params)

    def instance(self) -> StoredInstance | None:
        """The instance row as this transaction sees it."""
        return self.store.lock_instance(self.tx, self.machine, self.id)


# -- tracing ------------------------------------------------------------------------------
class _Trace:
    """Reports each instance as a traced machine; never raises into the app.

    Records are sent only after the transition committed. Instances that reach a state
    with no next state are detached; at most ``limit`` instances stay attached (the least
    recently changed is detached first: the inspector keeps its history).
    """

    def __init__(
        self,
        machine: str,
        states: Sequence[str],
        transitions: Sequence[tuple[str, str]],
        initial: Sequence[str],
        final: Sequence[str],
        options: dict[str, Any],
        limit: int,
        kind: str,
    ) -> None:
        from tracer import ManualMachine, StateSpec, TransitionSpec

        self._manual = ManualMachine
        self.machine = machine
        self.states = [StateSpec(s, initial=s in initial, final=s in final) for s in states]
        self.transitions = [TransitionSpec(a, b, b) for a, b in transitions]
        self.final = frozenset(final)
        self.options = options
        self.limit = max(1, limit)
        self.kind = kind
        self.errors = 0
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._open: OrderedDict[InstanceID, tuple[Any, Any]] = OrderedDict()
        self._dispatcher: Any = None
        self._evicted: set[InstanceID] = set()

    def _fail(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def _channel(self, id: InstanceID, state: str) -> tuple[Any, Any]:
        """The traced machine of ``id``, opened with ``state`` active when new."""
        import tracer

        found = self._open.get(id)
        if found is not None:
            self._open.move_to_end(id)
            return found
        if id in self._evicted and self._dispatcher is not None:
            # The detached channel's records may still be in flight under the same machine
            # id: let them land first, or the new channel's seqs would collide with them.
            # Only instances pushed out by ``limit`` come back, so this is rare.
            self._evicted.discard(id)
            self._dispatcher.flush(1.0)
        mm = self._manual(
            self.states, initial=[state], transitions=self.transitions, kind=self.kind
        )
        handle = tracer.attach(mm, name=f"{self.machine}-{id}", **self.options)
        self._dispatcher = handle.dispatcher  # one per sink: kept to flush detached ones
        self._open[id] = (mm, handle)
        while len(self._open) > self.limit:
            gone, (_, old) = self._open.popitem(last=False)
            old.detach()
            self._evicted.add(gone)
            if len(self._evicted) > 65536:  # bounded; a forgotten one only risks a gap
                self._evicted.clear()
        return mm, handle

    def _done(self, id: InstanceID, state: str) -> None:
        if state in self.final:
            found = self._open.pop(id, None)
            if found is not None:
                found[1].detach()

    def inserted(self, id: InstanceID, state: str) -> None:
        try:
            with self._lock:
                self._channel(id, state)  # its init record holds the initial state
                self._done(id, state)
        except Exception as exc:
            self._fail(exc)

    def updated(self, id: InstanceID, from_state: str, to_state: str, args: Any) -> None:
        try:
            with self._lock:
                mm, _ = self._channel(id, from_state)
                if mm.is_active(from_state):
                    mm.event(to_state, [from_state], [to_state], args=args)
                else:
                    # Another thread's later commit was traced first: report the state
                    # as it is now rather than an exit the tracer cannot check.
                    mm.set(to_state, name=to_state, args=args)
                self._done(id, to_state)
        except Exception as exc:
            self._fail(exc)

    def refused(self, id: Any, to_state: str, exc: BaseException) -> None:
        """A refused update of an instance already traced: one not-accepted record."""
        try:
            from tracer.core import error_of

            with self._lock:
                found = self._open.get(id) if isinstance(id, int | str) else None
                if found is not None:
                    found[0].event(to_state, args={"id": id}, accepted=False, error=error_of(exc))
        except Exception as err:
            self._fail(err)

    def close(self) -> None:
        with self._lock:
            for _, handle in self._open.values():
                try:
                    handle.detach()
                except Exception as exc:
                    self._fail(exc)
            self._open.clear()

    def flush(self, timeout: float | None) -> bool:
        dispatcher = self._dispatcher
        if dispatcher is None:
            return True
        try:
            return bool(dispatcher.flush(timeout))
        except Exception as exc:
            self._fail(exc)
            return False


# -- the shared machine core ----------------------------------------------------------------
class _Machine:
    """Transactions, reads and tracing shared by FSM and ArcFSM."""

    def __init__(
        self,
        name: str,
        store: FSMStore,
        states: dict[str, Any],
        id_type: type,
        metadata: bool | MetadataFn,
        validation: bool | ValidateFn,
        graph: dict[str, Any],
        trace: _Trace | None,
        owns_store: bool,
    ) -> None:
        self.name = name
        self.store = store
        self.id_type = id_type
        self._states = states  # name -> the declared state object
        self._metadata = metadata
        self._validation = validation
        self._trace = trace
        self._owns_store = owns_store
        store.register(name, json.dumps(graph, sort_keys=True))

    @property
    def states(self) -> tuple[Any, ...]:
        """The declared states, in declaration order."""
        return tuple(self._states.values())

    @property
    def trace_errors(self) -> int:
        """How many times tracing failed (it never raises into the app)."""
        return 0 if self._trace is None else self._trace.errors

    def _state(self, name: str) -> Any:
        return self._states.get(name, name)

    def _check_id(self, id: Any, to_name: str, from_name: str | None) -> InstanceID:
        if type(id) is not self.id_type:  # exact: bool is not an int id
            raise IDTypeMismatch(
                f"{self.name} ids are {self.id_type.__name__}, got {type(id).__name__} {id!r}",
                from_state=from_name,
                to_state=to_name,
            )
        return typing.cast(InstanceID, id)

    def _hooks(self, ctx: TransitionContext) -> tuple[bytes | str | None, Callable[[], None]]:
        metadata: bytes | str | None = None
        if callable(self._metadata):
            metadata = self._metadata(ctx)
        elif self._metadata:
            metadata = ctx.payload.get_metadata(ctx)
        if metadata is not None and not isinstance(metadata, bytes | str):
            raise InvalidType(
                f"metadata must be bytes, str or None, not {type(metadata).__name__}",
                from_state=None if ctx.from_state is None else _label(ctx.from_state),
                to_state=_label(ctx.to_state),
            )
        validate = self._validation

        def run_validation() -> None:
            if callable(validate):
                validate(ctx)
            elif validate:
                ctx.payload.validate(ctx)

        return metadata, run_validation

    def _insert(self, to_name: str, spec: _Payload, payload: Any) -> InstanceID:
        explicit = getattr(payload, "id", None) if spec.id_type is not None else None
        if explicit is not None:
            explicit = self._check_id(explicit, to_name, None)
        created = _time_ns(payload.created_at, "created_at") if spec.created_at else None
        updated = _time_ns(payload.updated_at, "updated_at") if spec.updated_at else None
        data = _data_of(payload, spec, to_name)
        now = time.time_ns()
        created = now if created is None else created
        updated = now if updated is None else updated
        to_state = self._state(to_name)
        store = self.store
        with store.transaction() as tx:
            if explicit is None:
                id: InstanceID = (
                    store.next_id(tx, self.name) if self.id_type is int else uuid.uuid4().hex
                )
            else:
                id = explicit
                if isinstance(id, int):
                    store.claim_id(tx, self.name, id)
            row = StoredInstance(id, to_name, json.dumps(data), created, updated)
            if not store.insert_instance(tx, self.name, row):
                raise DuplicateID(f"{self.name} already has an instance {id!r}", to_state=to_name)
            ctx = TransitionContext(self.name, id, None, to_state, payload, store, tx)
            metadata, validate = self._hooks(ctx)
            store.append_event(tx, self.name, to_name, id, metadata, now)
            validate()  # after the event write: a failure rolls both back (FSM-09)
        if self._trace is not None:
            self._trace.inserted(id, to_name)
        return id

    def _update(self, from_name: str, to_name: str, spec: _Payload, payload: Any) -> int:
        id = self._check_id(getattr(payload, "id", None), to_name, from_name)
        try:
            updated = _time_ns(payload.updated_at, "updated_at") if spec.updated_at else None
            fields = _data_of(payload, spec, to_name)
            now = time.time_ns()
            updated = now if updated is None else updated
            store = self.store
            with store.transaction() as tx:
                row = store.lock_instance(tx, self.name, id)
                data = json.loads(row.data) if row is not None else {}
                data.update(fields)
                n = store.update_instance(
                    tx, self.name, id, from_name, to_name, json.dumps(data), updated
                )
                if n != 1:
                    found = "no such instance" if row is None else f"it is in {row.state!r}"
                    raise RowCount(
                        f"{self.name} {id!r}: {n} rows updated, expected 1 ({found})",
                        n,
                        from_state=from_name,
                        to_state=to_name,
                    )
                ctx = TransitionContext(
                    self.name, id, self._state(from_name), self._state(to_name), payload, store, tx
                )
                metadata, validate = self._hooks(ctx)
                seq = store.append_event(tx, self.name, to_name, id, metadata, now)
                validate()
        except BaseException as exc:
            if self._trace is not None:
                self._trace.refused(id, to_name, exc)
            raise
        if self._trace is not None:
            args: dict[str, Any] = {"id": id, "data": fields}
            if metadata is not None:
                args["metadata"] = metadata
            self._trace.updated(id, from_name, to_name, args)
        return seq

    # -- reads -----------------------------------------------------------------------------
    def _id(self, raw: InstanceID) -> InstanceID:
        # Stores without per-value typing (PostgreSQL keeps ids as TEXT) give back strs.
        return raw if type(raw) is self.id_type else typing.cast(InstanceID, self.id_type(raw))

    def _instance(self, row: StoredInstance) -> Instance:
        return Instance(
            self._id(row.id),
            self._state(row.state),
            json.loads(row.data),
            _from_ns(row.created_at),
            _from_ns(row.updated_at),
            row.created_at,
            row.updated_at,
        )

    def get(self, id: InstanceID) -> Instance | None:
        """The instance with this id, or None.

        Raises:
            FSMStoreError: the database failed.
        """
        row = self.store.get(self.name, id)
        return None if row is None else self._instance(row)

    def instances(self, state: Any = None, limit: int = 1000) -> list[Instance]:
        """Instances (in one state, when given), oldest first, at most ``limit``."""
        name = None if state is None else _label(state)
        return [self._instance(r) for r in self.store.instances(self.name, name, limit)]

    def events(self, after: int = 0, limit: int = 1000) -> list[Event]:
        """The events after the cursor ``after`` (a seq; 0 for the start), in commit order.

        Args:
            after: the seq of the last event already consumed.
            limit: at most this many events.

        Returns:
            Events with seq > after, ascending; pass the last seq back to continue.

        Raises:
            FSMStoreError: the database failed.
        """
        return [self._event(e) for e in self.store.events(self.name, after, limit)]

    def _event(self, e: StoredEvent) -> Event:
        return Event(
            e.seq, self._state(e.type), self._id(e.foreign_id), e.metadata, _from_ns(e.time)
        )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait until traced records reached the sink (True when there is no tracing)."""
        return True if self._trace is None else self._trace.flush(timeout)

    def close(self) -> None:
        """Stop tracing, and close the store when ``build()`` opened it from a URL."""
        if self._trace is not None:
            self._trace.close()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> _Machine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the FSM ----------------------------------------------------------------------------
@dataclass(slots=True)
class _StateDef:
    state: Any
    payload: _Payload
    next: tuple[str, ...]


class FSM(_Machine):
    """A validated FSM: one initial state, a payload type and allowed next states per state.

    Built by :class:`FSMBuilder`; thread-safe; several FSM objects (threads or processes)
    may share one database, the compare-and-set keeps each instance consistent.
    """

    def __init__(
        self,
        name: str,
        store: FSMStore,
        defs: dict[str, _StateDef],
        initial: str,
        id_type: type,
        metadata: bool | MetadataFn,
        validation: bool | ValidateFn,
        trace: _Trace | None,
        owns_store: bool,
    ) -> None:
        self._defs = defs
        self._initial = initial
        graph = {
            "kind": "fsm",
            "initial": [initial],
            "states": {
                n: {"payload": d.payload.cls.__qualname__, "next": list(d.next)}
                for n, d in defs.items()
            },
        }
        states = {n: d.state for n, d in defs.items()}
        super().__init__(
            name, store, states, id_type, metadata, validation, graph, trace, owns_store
        )

    @property
    def initial(self) -> Any:
        """The initial state."""
        return self._defs[self._initial].state

    def next_states(self, state: Any) -> tuple[Any, ...]:
        """The allowed next states of ``state`` (empty for an unknown one)."""
        d = self._defs.get(state_name(state) or "")
        return () if d is None else tuple(self._defs[n].state for n in d.next)

    def payload_type(self, state: Any) -> type | None:
        """The payload type declared for ``state``; None for an unknown state."""
        d = self._defs.get(state_name(state) or "")
        return None if d is None else d.payload.cls

    def is_valid_transition(self, from_state: Any, to_state: Any) -> bool:
        """True iff ``to_state`` is an allowed next state of ``from_state`` (FSM-06).

        False for an unknown ``from_state``; the payload type is not checked.
        """
        d = self._defs.get(state_name(from_state) or "")
        return d is not None and state_name(to_state) in d.next

    def insert(self, payload: Any) -> InstanceID:
        """Create an instance in the initial state, in one transaction with its event.

        Args:
            payload: an instance of the initial state's payload type, exactly (FSM-14).
                Its ``id``, when it declares one and sets it, is used; otherwise the store
                assigns one (the next int, or a uuid4 hex for str ids).

        Returns:
            The new instance's id.

        Raises:
            InvalidType: the payload is not of the initial state's type.
            IDTypeMismatch: an explicit id of the wrong type.
            TimestampRequired: a declared created_at/updated_at left zero or None.
            DuplicateID: the explicit id exists already.
            FSMStoreError: the database failed.
            Exception: whatever the metadata provider or the validation hook raised
                (nothing is written then).
        """
        d = self._defs[self._initial]
        if type(payload) is not d.payload.cls:
            raise InvalidType(
                f"payload type {type(payload).__qualname__} can't be used to insert "
                f"(expected {d.payload.cls.__qualname__})",
                to_state=self._initial,
            )
        return self._insert(self._initial, d.payload, payload)

    def update(self, from_state: Any, to_state: Any, payload: Any) -> int:
        """Move the instance ``payload.id`` from ``from_state`` to ``to_state``.

        Checked in luno/shift's order (FSM-03), each error carrying from/to: unknown
        ``to`` -> UnknownStatus; wrong payload type for ``to`` -> InvalidType; unknown
        ``from`` -> UnknownStatus; ``to`` not next of ``from`` -> InvalidStateTransition.
        Then, in one transaction: compare-and-set on ``(id, from)`` (RowCount when the
        instance is not in ``from``), the event, the validation hook.

        Args:
            from_state: the state the instance must be in.
            to_state: the destination.
            payload: an instance of ``to_state``'s payload type, carrying the id; its
                fields are merged into the instance's data.

        Returns:
            The seq of the event written.

        Raises:
            UnknownStatus, InvalidType, InvalidStateTransition: see above.
            IDTypeMismatch: the payload's id is missing or of the wrong type.
            TimestampRequired: a declared updated_at left zero or None.
            RowCount: the instance is missing or not in ``from_state``; nothing changed.
            FSMStoreError: the database failed.
            Exception: whatever the metadata provider or the validation hook raised
                (nothing is written then).
        """
        from_label, to_label = _label(from_state), _label(to_state)
        to = self._defs.get(state_name(to_state) or "")
        if to is None:
            raise UnknownStatus("unknown 'to' status", from_state=from_label, to_state=to_label)
        if type(payload) is not to.payload.cls:
            raise InvalidType(
                f"payload type {type(payload).__qualname__} can't be used for this "
                f"transition (expected {to.payload.cls.__qualname__})",
                from_state=from_label,
                to_state=to_label,
            )
        frm = self._defs.get(state_name(from_state) or "")
        if frm is None:
            raise UnknownStatus("unknown 'from' status", from_state=from_label, to_state=to_label)
        if to_label not in frm.next:
            raise InvalidStateTransition(
                "invalid state transition", from_state=from_label, to_state=to_label
            )
        return self._update(from_label, to_label, to.payload, payload)

    def mermaid(self, direction: str = "LR") -> str:
        """The graph as a mermaid state diagram (GEN-01): ``[*]-->initial``, the edges in
        declaration order, ``S-->[*]`` for each state without next states."""
        edges = [(n, m) for n, d in self._defs.items() for m in d.next]
        terminals = [n for n, d in self._defs.items() if not d.next]
        return _mermaid([self._initial], edges, terminals, direction)


def _check_state(state: Any) -> str:
    name = state_name(state)
    if name is None or not name:
        raise FSMBuildError(f"a state is a non-empty str or an Enum member, not {state!r}")
    return name


def _trace_for(
    machine: str,
    states: Sequence[str],
    edges: Sequence[tuple[str, str]],
    initial: Sequence[str],
    final: Sequence[str],
    *,
    sink: Any,
    url: str | None,
    parent: Any,
    sanitizer: Any,
    limit: int,
    kind: str,
) -> _Trace | None:
    if sink is None and url is None:
        return None
    if sink is not None and url is not None:
        raise FSMBuildError("build() takes a sink or a url for tracing, not both")
    options: dict[str, Any] = {"sink": sink} if sink is not None else {"url": url}
    if parent is not None:
        options["parent"] = parent
    if sanitizer is not None:
        options["sanitizer"] = sanitizer
    seen: dict[tuple[str, str], None] = dict.fromkeys(edges)
    return _Trace(machine, states, list(seen), initial, final, options, limit, kind)


def _open_store(store: FSMStore | str) -> tuple[FSMStore, bool]:
    if isinstance(store, str):
        return open_fsm_store(store), True
    return store, False


def _check_options(
    metadata: bool | MetadataFn, validation: bool | ValidateFn, payloads: Iterable[_Payload]
) -> None:
    for option, method, value in (
        ("metadata", "get_metadata", metadata),
        ("validation", "validate", validation),
    ):
        if value is True:
            for p in payloads:
                if not callable(getattr(p.cls, method, None)):
                    raise MisconfiguredOption(
                        f"{option} is on but payload {p.cls.__qualname__} has no "
                        f"{method}(self, ctx) method (or pass {option}=a function)"
                    )
        elif not (value is False or value is None or callable(value)):
            raise MisconfiguredOption(f"{option} must be True, False or a function, not {value!r}")


class FSMBuilder:
    """Declares an :class:`FSM`: exactly one initial state, then the other states.

    Args:
        name: the machine's name (its rows and events are keyed by it; also the traced
            machine id prefix, ``"{name}-{id}"``).
        metadata: True to have each payload's ``get_metadata(self, ctx)`` give the event
            metadata, or a function ``f(ctx)`` for all of them.
        validation: True to run each payload's ``validate(self, ctx)`` after the event
            write, or a function ``f(ctx)``; raising rolls the transition back.
        id_type: int or str; by default the payloads' ``id`` annotations decide (int when
            none declares one).

    Raises:
        FSMBuildError: an empty name.
    """

    def __init__(
        self,
        name: str,
        *,
        metadata: bool | MetadataFn = False,
        validation: bool | ValidateFn = False,
        id_type: type | None = None,
    ) -> None:
        if not name:
            raise FSMBuildError("an FSM needs a non-empty name")
        self.name = name
        self._metadata = metadata
        self._validation = validation
        self._id_type = id_type
        self._defs: dict[str, _StateDef] = {}
        self._raw_next: dict[str, list[Any]] = {}
        self._initial: str | None = None

    def _add(self, state: Any, payload_type: Any, next: Iterable[Any], insert: bool) -> None:
        name = _check_state(state)
        if name in self._defs:
            raise StateAlreadyAdded(f"state already added: {name!r}")
        spec = _payload(payload_type, name, insert=insert)
        raw = list(next)
        nxt = tuple(dict.fromkeys(_check_state(s) for s in raw))
        self._defs[name] = _StateDef(state, spec, nxt)
        self._raw_next[name] = raw

    def initial(self, state: Any, payload_type: Any, next: Iterable[Any] = ()) -> FSMBuilder:
        """Declare the initial state (entering it inserts an instance).

        Raises:
            StateAlreadyAdded: an initial state was declared already, or this state was.
            FSMBuildError, IDRuleError: a bad state or payload type.
        """
        if self._initial is not None:
            raise StateAlreadyAdded(f"state already added: initial state {self._initial!r}")
        self._add(state, payload_type, next, insert=True)
        self._initial = _check_state(state)
        return self

    def add_state(self, state: Any, payload_type: Any, next: Iterable[Any] = ()) -> FSMBuilder:
        """Declare a state reached by updates, its payload type and its next states.

        Raises:
            StateAlreadyAdded: the state was declared already (FSM-01).
            FSMBuildError, IDRuleError: a bad state or payload type.
        """
        self._add(state, payload_type, next, insert=False)
        return self

    def build(
        self,
        store: FSMStore | str,
        *,
        sink: Any = None,
        url: str | None = None,
        parent: Any = None,
        sanitizer: Any = None,
        trace_limit: int = 1024,
    ) -> FSM:
        """Check the graph and the options, and bind the machine to a store.

        Args:
            store: an open store, or a URL/path (``sqlite:///orders.db``) the FSM opens
                and closes with ``close()``.
            sink: trace each instance into this sink (a backend, a MemorySink...).
            url: or trace to an aminspect server at ``ws://...``.
            parent: the traced parent machine (a TraceHandle or a machine id).
            sanitizer: passed to ``tracer.attach`` to redact record args.
            trace_limit: at most this many instances stay attached at once.

        Returns:
            The FSM.

        Raises:
            NoInitialState: no initial state was declared.
            UndeclaredState: a next state that is never declared.
            EdgeIntoInitial: an edge back into the initial state (FSM-04).
            UnreachableState: a state not reachable from the initial one (FSM-07).
            IDTypeMismatch: payloads disagree on the id type (FSM-12).
            MisconfiguredOption: metadata/validation on without a provider (FSM-10).
            FSMStoreError: the store cannot be opened.
        """
        if self._initial is None:
            raise NoInitialState(f"FSM {self.name!r} has no initial state")
        initial = self._initial
        for name, d in self._defs.items():
            for n in d.next:
                if n not in self._defs:
                    raise UndeclaredState(
                        f"next state {n!r} of {name!r} is not declared", from_state=name, to_state=n
                    )
                if n == initial:
                    raise EdgeIntoInitial(
                        "an edge into the initial state is not allowed: entering it inserts "
                        "a new instance",
                        from_state=name,
                        to_state=n,
                    )
        reached = {initial}
        todo = [initial]
        while todo:  # DFS; the visited set breaks cycles
            for n in self._defs[todo.pop()].next:
                if n not in reached:
                    reached.add(n)
                    todo.append(n)
        for name in self._defs:
            if name not in reached:
                raise UnreachableState(f"status not reachable: {name!r}", to_state=name)
        payloads = [d.payload for d in self._defs.values()]
        id_type = _common_id_type(payloads, self._id_type)
        _check_options(self._metadata, self._validation, payloads)
        edges = [(n, m) for n, d in self._defs.items() for m in d.next]
        final = [n for n, d in self._defs.items() if not d.next]
        trace = _trace_for(
            self.name,
            list(self._defs),
            edges,
            [initial],
            final,
            sink=sink,
            url=url,
            parent=parent,
            sanitizer=sanitizer,
            limit=trace_limit,
            kind="fsm",
        )
        opened, owns = _open_store(store)
        try:
            return FSM(
                self.name,
                opened,
                dict(self._defs),
                initial,
                id_type,
                self._metadata,
                self._validation,
                trace,
                owns,
            )
        except BaseException:
            if owns:
                opened.close()
            raise


# -- the Arc FSM ----------------------------------------------------------------------------
class ArcFSM(_Machine):
    """An FSM without the graph restrictions (ARC-01): several initial states, each with
    one or more payload types, and arbitrary ``(from, to, payload type)`` arcs, including
    back into an initial state. Every routing error is InvalidStateTransition."""

    def __init__(
        self,
        name: str,
        store: FSMStore,
        states: dict[str, Any],
        inserts: list[tuple[str, _Payload]],
        arcs: dict[str, list[tuple[str, _Payload]]],
        id_type: type,
        metadata: bool | MetadataFn,
        validation: bool | ValidateFn,
        trace: _Trace | None,
        owns_store: bool,
    ) -> None:
        self._inserts = inserts
        self._arcs = arcs
        graph = {
            "kind": "arcfsm",
            "inserts": [[s, p.cls.__qualname__] for s, p in inserts],
            "arcs": [[f, t, p.cls.__qualname__] for f, tl in arcs.items() for t, p in tl],
        }
        super().__init__(
            name, store, states, id_type, metadata, validation, graph, trace, owns_store
        )

    def is_valid_transition(self, from_state: Any, to_state: Any) -> bool:
        """True iff an arc leads from ``from_state`` to ``to_state`` (any payload type)."""
        to = state_name(to_state)
        return any(t == to for t, _ in self._arcs.get(state_name(from_state) or "", ()))

    def insert(self, state: Any, payload: Any) -> InstanceID:
        """Create an instance in the initial state ``state``.

        Returns:
            The new instance's id.

        Raises:
            InvalidStateTransition: ``state`` is not initial for this payload type.
            IDTypeMismatch, TimestampRequired, DuplicateID, FSMStoreError: as FSM.insert.
        """
        name = state_name(state)
        for s, p in self._inserts:
            if s == name and type(payload) is p.cls:
                return self._insert(s, p, payload)
        raise InvalidStateTransition("invalid insert status and payload", to_state=_label(state))

    def update(self, from_state: Any, to_state: Any, payload: Any) -> int:
        """Move ``payload.id`` along the arc ``(from_state, to_state, type(payload))``.

        Returns:
            The seq of the event written.

        Raises:
            InvalidStateTransition: no arc leaves ``from_state``, or none matches
                ``to_state`` with this payload type.
            IDTypeMismatch, TimestampRequired, RowCount, FSMStoreError: as FSM.update.
        """
        from_label, to_label = _label(from_state), _label(to_state)
        arcs = self._arcs.get(state_name(from_state) or "")
        if not arcs:
            raise InvalidStateTransition(
                "invalid update from status", from_state=from_label, to_state=to_label
            )
        to = state_name(to_state)
        for t, p in arcs:
            if t == to and type(payload) is p.cls:
                return self._update(from_label, to_label, p, payload)
        raise InvalidStateTransition(
            "invalid update to status and payload", from_state=from_label, to_state=to_label
        )

    def mermaid(self, direction: str = "LR") -> str:
        """The graph as a mermaid state diagram (GEN-01): ``[*]-->S`` per initial state,
        de-duplicated edges, no terminal markers."""
        starts = list(dict.fromkeys(s for s, _ in self._inserts))
        edges = [(f, t) for f, tl in self._arcs.items() for t, _ in tl]
        return _mermaid(starts, edges, [], direction)


class ArcFSMBuilder:
    """Declares an :class:`ArcFSM` (same options as :class:`FSMBuilder`)."""

    def __init__(
        self,
        name: str,
        *,
        metadata: bool | MetadataFn = False,
        validation: bool | ValidateFn = False,
        id_type: type | None = None,
    ) -> None:
        if not name:
            raise FSMBuildError("an ArcFSM needs a non-empty name")
        self.name = name
        self._metadata = metadata
        self._validation = validation
        self._id_type = id_type
        self._states: dict[str, Any] = {}
        self._inserts: list[tuple[str, _Payload]] = []
        self._arcs: dict[str, list[tuple[str, _Payload]]] = {}

    def _state(self, state: Any) -> str:
        name = _check_state(state)
        self._states.setdefault(name, state)
        return name

    def insert(self, state: Any, payload_type: Any) -> ArcFSMBuilder:
        """Allow inserting into ``state`` with ``payload_type`` (repeats are ignored)."""
        name = self._state(state)
        spec = _payload(payload_type, name, insert=True)
        if all(not (s == name and p.cls is spec.cls) for s, p in self._inserts):
            self._inserts.append((name, spec))
        return self

    def update(self, from_state: Any, to_state: Any, payload_type: Any) -> ArcFSMBuilder:
        """Allow the arc ``from_state -> to_state`` with ``payload_type`` (repeats ignored)."""
        f, t = self._state(from_state), self._state(to_state)
        spec = _payload(payload_type, t, insert=False)
        arcs = self._arcs.setdefault(f, [])
        if all(not (s == t and p.cls is spec.cls) for s, p in arcs):
            arcs.append((t, spec))
        return self

    def build(
        self,
        store: FSMStore | str,
        *,
        sink: Any = None,
        url: str | None = None,
        parent: Any = None,
        sanitizer: Any = None,
        trace_limit: int = 1024,
    ) -> ArcFSM:
        """Check the options and bind the machine to a store (see FSMBuilder.build).

        Raises:
            NoInitialState: no insert was declared.
            IDTypeMismatch, MisconfiguredOption, FSMStoreError: as FSMBuilder.build.
        """
        if not self._inserts:
            raise NoInitialState(f"ArcFSM {self.name!r} has no initial (insert) state")
        payloads = [p for _, p in self._inserts] + [p for tl in self._arcs.values() for _, p in tl]
        id_type = _common_id_type(payloads, self._id_type)
        _check_options(self._metadata, self._validation, payloads)
        edges = [(f, t) for f, tl in self._arcs.items() for t, _ in tl]
        trace = _trace_for(
            self.name,
            list(self._states),
            edges,
            [s for s, _ in self._inserts],
            # no arc leaves these: their traced instances can be detached there
            [s for s in self._states if not self._arcs.get(s)],
            sink=sink,
            url=url,
            parent=parent,
            sanitizer=sanitizer,
            limit=trace_limit,
            kind="arcfsm",
        )
        opened, owns = _open_store(store)
        try:
            return ArcFSM(
                self.name,
                opened,
                dict(self._states),
                list(self._inserts),
                {f: list(tl) for f, tl in self._arcs.items()},
                id_type,
                self._metadata,
                self._validation,
                trace,
                owns,
            )
        except BaseException:
            if owns:
                opened.close()
            raise


# -- mermaid --------------------------------------------------------------------------------
def _mermaid(
    starts: Sequence[str],
    edges: Sequence[tuple[str, str]],
    terminals: Sequence[str],
    direction: str,
) -> str:
    if direction not in ("LR", "RL", "TB", "BT"):
        raise ValueError(f"direction must be LR, RL, TB or BT, not {direction!r}")
    ids: dict[str, str] = {}
    lines = ["stateDiagram-v2", f"    direction {direction}"]

    def node(name: str) -> str:
        # Mermaid ids are word characters; other names get an id and a label.
        if name.replace("_", "a").isalnum() and name.isascii():
            return name
        if name not in ids:
            ids[name] = f"s{len(ids) + 1}"
            label = name.replace('"', "'")
            lines.insert(2 + len(ids) - 1, f'    state "{label}" as {ids[name]}')
        return ids[name]

    body: list[str] = []
    body += ["", *(f"    [*]-->{node(s)}" for s in dict.fromkeys(starts))]
    unique = list(dict.fromkeys(edges))
    if unique:
        body += ["", *(f"    {node(a)}-->{node(b)}" for a, b in unique)]
    if terminals:
        body += ["", *(f"    {node(t)}-->[*]" for t in dict.fromkeys(terminals))]
    return "\n".join(lines + body) + "\n"
