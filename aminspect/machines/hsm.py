"""A tree of typed, persisted state machines keyed by ``(type, id)`` paths (Temporal's hsm).

Every node holds its serialized data, its children, the versioned transitions of its creation
and last update and its own transition count. ``Node.transition`` counts a transition before the
user function runs and undoes everything (re-reading the data from its serialized bytes) when it
fails. The root keeps an operation log (transitions and deletions) compacted under deletions.
:mod:`aminspect.machines.hsm_tree` adds the tree-wide clock, commits and references;
:mod:`aminspect.machines.hsm_store` persists trees.

A tree is not thread-safe: one thread (or one transaction) changes it at a time, as in Temporal
where the workflow lock guards it.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

import msgpack

__all__ = [
    "AlreadyExists",
    "Collection",
    "DeleteOperation",
    "DuplicateRegistration",
    "HSMError",
    "IncompatibleType",
    "InitialTransitionMismatch",
    "InvalidState",
    "InvalidTask",
    "InvalidTransition",
    "Key",
    "MachineDef",
    "MsgpackSerializer",
    "Node",
    "NotFound",
    "NotRegistered",
    "Operation",
    "Path",
    "Registry",
    "SerializationError",
    "Serializer",
    "StaleReference",
    "StaleState",
    "StaleTransition",
    "Task",
    "TransitionDef",
    "TransitionOperation",
    "TransitionOutput",
    "VersionedTransition",
    "compact",
    "compare",
    "format_path",
    "is_prefix",
    "keys_of",
    "parse_path",
    "staleness_check",
]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
E = TypeVar("E")


# -- errors ---------------------------------------------------------------------------------
class HSMError(Exception):
    """Base of every error the HSM tree raises; the message is one line."""


class DuplicateRegistration(HSMError):
    """A machine type, task serializer or event type was registered twice."""


class NotRegistered(HSMError):
    """A machine, task or event type the registry does not know."""


class NotFound(HSMError):
    """No node at that key or path (or no stored tree under that id)."""


class AlreadyExists(HSMError):
    """A child with that key already exists."""


class InvalidState(HSMError):
    """The node cannot do that in its state (it was deleted, or it is not the root)."""


class IncompatibleType(HSMError, TypeError):
    """The node's data is not of the type asked for."""


class SerializationError(HSMError):
    """The machine's serializer refused the data (or the bytes)."""


class InvalidTransition(HSMError):
    """The transition is not possible from the current state."""


class InitialTransitionMismatch(HSMError):
    """Sync of a node whose initial versioned transition differs: it is another node."""


class StaleReference(HSMError):
    """The reference (a task or a request) points at a state the node has moved past."""


class StaleState(HSMError):
    """The loaded state is older than the reference: reload it and try again."""


class StaleTransition(StaleReference, InvalidTransition):
    """The node is no longer in the state the reference expects."""


class InvalidTask(HSMError, ValueError):
    """A task that is both a timer (deadline) and outbound (destination)."""


# -- keys and paths -------------------------------------------------------------------------
@dataclass(frozen=True, order=True, slots=True)
class Key:
    """Where a node sits under its parent: the machine type and the id among its siblings."""

    type: str
    id: str

    def __str__(self) -> str:
        return f"{self.type}:{self.id}"


Path = tuple[Key, ...]

ROOT_DISPLAY = "<root>"


def format_path(path: Sequence[Key]) -> str:
    """``type:id/type:id``, or ``<root>`` for the empty path."""
    return "/".join(str(k) for k in path) if path else ROOT_DISPLAY


def parse_path(text: str) -> Path:
    """The inverse of :func:`format_path`.

    Raises:
        ValueError: for a segment without ``type:id``.
    """
    if text in ("", ROOT_DISPLAY):
        return ()
    keys = []
    for part in text.split("/"):
        t, sep, i = part.partition(":")
        if not sep or not t:
            raise ValueError(f"bad path segment {part!r}: expected type:id")
        keys.append(Key(t, i))
    return tuple(keys)


def is_prefix(prefix: Sequence[Key], path: Sequence[Key]) -> bool:
    """True when ``path`` starts with ``prefix``, comparing keys (``node1`` is no prefix of
    ``node10``)."""
    return len(prefix) <= len(path) and tuple(path[: len(prefix)]) == tuple(prefix)


# -- versioned transitions ------------------------------------------------------------------
@dataclass(frozen=True, order=True, slots=True)
class VersionedTransition:
    """A point in a tree's history: the failover version and the tree's transition count.

    Ordering is lexicographic (version first), as Temporal's ``Compare``.
    """

    failover_version: int = 0
    transition_count: int = 0

    def to_list(self) -> list[int]:
        return [self.failover_version, self.transition_count]

    @classmethod
    def from_value(cls, value: Any) -> VersionedTransition:
        if not value:
            return cls()
        return cls(int(value[0]), int(value[1]))


def compare(a: VersionedTransition | None, b: VersionedTransition | None) -> int:
    """-1, 0 or 1 as ``a`` is older than, equal to or newer than ``b`` (None = empty)."""
    a = a or VersionedTransition()
    b = b or VersionedTransition()
    return (a > b) - (a < b)


def staleness_check(history: Sequence[VersionedTransition], ref: VersionedTransition) -> None:
    """Check that ``ref`` lies in a transition history (one entry per failover version, each
    holding the last transition count of that version).

    Raises:
        StaleState: the state is behind the reference (reload it and retry).
        StaleReference: the reference points at a state that never existed or was passed.
        HSMError: the history is empty.
    """
    if not history:
        raise HSMError("state has an empty transition history")
    low, index = 0, -1
    high = 0
    prev_max = -1
    for i, item in enumerate(history):
        if item.failover_version == ref.failover_version:
            index, low, high = i, prev_max + 1, item.transition_count
            break
        prev_max = item.transition_count
    if index == -1:
        last = history[-1]
        if last.failover_version < ref.failover_version:
            raise StaleState(
                f"state failover version {last.failover_version} < reference version "
                f"{ref.failover_version}"
            )
        raise StaleReference(
            f"reference failover version {ref.failover_version} is not in the state's history"
        )
    if index == len(history) - 1 and high < ref.transition_count:
        raise StaleState(
            f"state transition count {high} < reference transition count {ref.transition_count}"
        )
    if not low <= ref.transition_count <= high:
        raise StaleReference(
            f"reference transition count {ref.transition_count} not in [{low}, {high}] for "
            f"version {ref.failover_version}"
        )


# -- registry -------------------------------------------------------------------------------
class Serializer(Protocol):
    """Turns a machine's data into bytes and back."""

    def serialize(self, data: Any) -> bytes: ...

    def deserialize(self, blob: bytes) -> Any: ...


class MsgpackSerializer(Generic[T]):
    """Serializer for a dataclass whose fields are msgpack values or enums (stored by value)."""

    def __init__(self, cls: type[T]) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__qualname__} is not a dataclass")
        self.cls = cls
        self._hints: dict[str, Any] | None = None

    def _enum_fields(self) -> dict[str, type[enum.Enum]]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.cls)
            except Exception:  # a class defined in a function: its annotations may not resolve
                self._hints = {f.name: f.type for f in dataclasses.fields(self.cls)}  # type: ignore[arg-type]
        return {
            k: v for k, v in self._hints.items() if isinstance(v, type) and issubclass(v, enum.Enum)
        }

    def serialize(self, data: Any) -> bytes:
        if not isinstance(data, self.cls):
            raise SerializationError(
                f"invalid state type: expected {self.cls.__qualname__}, "
                f"got {type(data).__qualname__}"
            )
        values = {
            f.name: (v.value if isinstance(v := getattr(data, f.name), enum.Enum) else v)
            for f in dataclasses.fields(data)  # type: ignore[arg-type]
        }
        try:
            return msgpack.packb(values, use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"cannot serialize {self.cls.__qualname__}: {exc}") from exc

    def deserialize(self, blob: bytes) -> T:
        try:
            values = msgpack.unpackb(blob, raw=False)
            for name, enum_type in self._enum_fields().items():
                if name in values:
                    values[name] = enum_type(values[name])
            return self.cls(**values)
        except Exception as exc:
            raise SerializationError(f"cannot deserialize {self.cls.__qualname__}: {exc}") from exc


def _default_state_of(data: Any) -> str | None:
    state = getattr(data, "state", None)
    if isinstance(state, enum.Enum):
        return str(state.name)
    return None if state is None else str(state)


@dataclass(frozen=True)
class MachineDef:
    """A machine type: its name, serializer and (for tracing) its states.

    Args:
        name: the type in keys (``Key(name, id)``).
        serializer: data to bytes and back; ``MsgpackSerializer(cls)`` for a dataclass.
        states: the state names the tracer declares, in order; empty for a stateless machine.
        state_of: reads the current state name from the data (default: ``data.state``, an
            enum's name or a string).
        regenerate_tasks: tasks a node of this type should have in its current state; used by
            ``Node.sync`` (Temporal's TaskRegenerator).
    """

    name: str
    serializer: Serializer
    states: tuple[str, ...] = ()
    state_of: Callable[[Any], str | None] = _default_state_of
    regenerate_tasks: Callable[[Any, Node], Sequence[Task]] | None = None


class Registry:
    """Machine types, task serializers and event types, each registered once."""

    def __init__(self) -> None:
        self._machines: dict[str, MachineDef] = {}
        self._tasks: dict[str, Serializer | None] = {}
        self._events: dict[str, type | None] = {}

    def register_machine(self, definition: MachineDef) -> None:
        """Raises: DuplicateRegistration when the type is already registered."""
        if definition.name in self._machines:
            raise DuplicateRegistration(f"machine type already registered: {definition.name!r}")
        self._machines[definition.name] = definition

    def machine(self, name: str) -> MachineDef:
        """Raises: NotRegistered for an unknown type."""
        try:
            return self._machines[name]
        except KeyError:
            raise NotRegistered(f"machine type not registered: {name!r}") from None

    def register_task(self, task_type: str, serializer: Serializer | None = None) -> None:
        """Raises: DuplicateRegistration when the task type is already registered."""
        if task_type in self._tasks:
            raise DuplicateRegistration(f"task serializer already registered: {task_type!r}")
        self._tasks[task_type] = serializer

    def task(self, task_type: str) -> Serializer | None:
        """Raises: NotRegistered for an unknown task type."""
        try:
            return self._tasks[task_type]
        except KeyError:
            raise NotRegistered(f"task type not registered: {task_type!r}") from None

    def register_event(self, name: str, cls: type | None = None) -> None:
        """Raises: DuplicateRegistration when the event type is already registered."""
        if name in self._events:
            raise DuplicateRegistration(f"event type already registered: {name!r}")
        self._events[name] = cls

    def event(self, name: str) -> type | None:
        """Raises: NotRegistered for an unknown event type."""
        try:
            return self._events[name]
        except KeyError:
            raise NotRegistered(f"event type not registered: {name!r}") from None


# -- outputs, tasks and operations ----------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """Work a transition asks for: a timer (``deadline``, epoch seconds), an outbound call
    (``destination``) or an immediate task (neither).

    ``validate(node)`` (optional) says whether the task still makes sense; a task that is not
    valid when the transaction commits is dropped.

    Raises:
        InvalidTask: when both a deadline and a destination are given.
    """

    type: str
    deadline: float | None = None
    destination: str | None = None
    data: Any = None
    validate: Callable[[Node], bool] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.deadline is not None and self.destination is not None:
            raise InvalidTask(f"task {self.type!r} has both a deadline and a destination")


@dataclass(frozen=True)
class TransitionOutput:
    """What a transition produced (the tasks it wants run)."""

    tasks: tuple[Task, ...] = ()


@dataclass(frozen=True)
class TransitionOperation:
    """A successful transition of the node at ``path``; ``transition_count`` is its count."""

    path: Path
    output: TransitionOutput
    transition_count: int

    def __str__(self) -> str:
        return f"Transition({format_path(self.path)})[count={self.transition_count}]"


@dataclass(frozen=True)
class DeleteOperation:
    """The deletion of the node at ``path`` (and of everything under it)."""

    path: Path

    def __str__(self) -> str:
        return f"Delete({format_path(self.path)})"


Operation = TransitionOperation | DeleteOperation


def compact(ops: Sequence[Operation]) -> list[Operation]:
    """Drop operations under deleted nodes, keeping chronological order.

    An operation whose path crosses a deleted node is dropped, except the Delete of that node
    itself when it is the first deleted node on the path.
    """
    deleted = {op.path for op in ops if isinstance(op, DeleteOperation)}
    if not deleted:
        return list(ops)
    out: list[Operation] = []
    for op in ops:
        path = op.path
        first = next((i for i in range(1, len(path) + 1) if path[:i] in deleted), None)
        # keep: nothing on the path deleted, or the Delete of the first deleted node itself
        if first is None or (first == len(path) and isinstance(op, DeleteOperation)):
            out.append(op)
    return out


class _Clock(Protocol):
    def current_version(self) -> int: ...

    def next_transition_count(self) -> int: ...


class _FixedClock:
    def __init__(self, version: int = 0, count: int = 0) -> None:
        self.version, self.count = version, count

    def current_version(self) -> int:
        return self.version

    def next_transition_count(self) -> int:
        return self.count


class _Observer(Protocol):
    """What the tracer hears from a tree (see hsm_trace); methods must not raise."""

    def on_added(self, node: Node) -> None: ...

    def on_transition(self, node: Node, name: str, before: str | None) -> None: ...

    def on_deleted(self, node: Node) -> None: ...


def _new_repr(data: bytes, vt: VersionedTransition | None = None) -> dict[str, Any]:
    vt_list = (vt or VersionedTransition()).to_list()
    return {
        "data": data,
        "children": {},
        "initial_vt": vt_list,
        "last_update_vt": list(vt_list),
        "transition_count": 0,
    }


# -- nodes ----------------------------------------------------------------------------------
class Node:
    """A node of the tree: one typed machine, its persisted form and its cached children.

    Change data only through :meth:`transition` (or a :class:`Collection`) so the tree counts
    transitions, tracks dirtiness and logs the operation.
    """

    __slots__ = (
        "_children",
        "_clock",
        "_data",
        "_deleted",
        "_dirty",
        "_loaded",
        "_observers",
        "_oplog",
        "_repr",
        "definition",
        "key",
        "parent",
        "registry",
    )

    def __init__(
        self,
        registry: Registry,
        definition: MachineDef,
        persisted: dict[str, Any],
        clock: _Clock,
        key: Key | None = None,
        parent: Node | None = None,
    ) -> None:
        self.registry = registry
        self.definition = definition
        self.key = key
        self.parent = parent
        self._repr = persisted
        self._clock = clock
        self._data: Any = None
        self._loaded = False
        self._children: dict[Key, Node] = {}
        self._dirty = False
        self._deleted = False
        self._oplog: list[Operation] = []
        self._observers: list[_Observer] = []

    @classmethod
    def new_root(
        cls,
        registry: Registry,
        machine_type: str,
        data: Any,
        children: Mapping[str, Mapping[str, Any]] | None = None,
        clock: _Clock | None = None,
    ) -> Node:
        """A root node holding ``data``; ``children`` is a persisted children map to rehydrate.

        Raises:
            NotRegistered: for an unknown type. SerializationError: when data does not serialize.
        """
        definition = registry.machine(machine_type)
        persisted = _new_repr(_serialize(definition, data))
        persisted["children"] = dict(children or {})
        node = cls(registry, definition, persisted, clock or _FixedClock())
        node._data, node._loaded = data, True
        return node

    @classmethod
    def from_persisted(
        cls,
        registry: Registry,
        machine_type: str,
        persisted: dict[str, Any],
        clock: _Clock | None = None,
    ) -> Node:
        """A root over a persisted node map (lazy: nothing is decoded until asked).

        Raises:
            NotRegistered: for an unknown type.
        """
        persisted.setdefault("children", {})
        return cls(registry, registry.machine(machine_type), persisted, clock or _FixedClock())

    # -- identity -----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        keys: list[Key] = []
        node: Node | None = self
        while node is not None and node.key is not None:
            keys.append(node.key)
            node = node.parent
        return tuple(reversed(keys))

    @property
    def root(self) -> Node:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    @property
    def deleted(self) -> bool:
        return self._deleted

    def __repr__(self) -> str:
        return f"<Node {format_path(self.path)} count={self.transition_count}>"

    # -- persisted fields ---------------------------------------------------------------
    @property
    def transition_count(self) -> int:
        return int(self._repr.get("transition_count", 0))

    @property
    def initial_vt(self) -> VersionedTransition:
        return VersionedTransition.from_value(self._repr.get("initial_vt"))

    @property
    def last_update_vt(self) -> VersionedTransition:
        return VersionedTransition.from_value(self._repr.get("last_update_vt"))

    @property
    def persisted(self) -> dict[str, Any]:
        """The node's persisted map (framework use: serialization and sync)."""
        return self._repr

    def _child_maps(self) -> dict[str, dict[str, Any]]:
        children = self._repr.get("children")
        if children is None:  # a missing children map is tolerated (and created on write)
            children = self._repr["children"] = {}
        return children

    # -- data ---------------------------------------------------------------------------
    @overload
    def data(self, cls: type[T]) -> T: ...

    @overload
    def data(self, cls: None = None) -> Any: ...

    def data(self, cls: type[T] | None = None) -> Any:
        """The node's data, decoded on first use.

        Raises:
            IncompatibleType: when the data is not a ``cls``.
            SerializationError: when the stored bytes do not decode.
        """
        if not self._loaded:
            self._data = _deserialize(self.definition, self._repr["data"])
            self._loaded = True
        if cls is not None and not isinstance(self._data, cls):
            raise IncompatibleType(
                f"{format_path(self.path)} holds {type(self._data).__qualname__}, "
                f"not {cls.__qualname__}"
            )
        return self._data

    def state(self) -> str | None:
        """The current state name as the machine definition reads it (None if stateless)."""
        return self.definition.state_of(self.data())

    # -- tree ---------------------------------------------------------------------------
    def child(self, path: Sequence[Key]) -> Node:
        """The node at ``path`` below this one, loaded and cached on first use.

        Raises:
            NotRegistered: a key's type is unknown. NotFound: no node at that path.
        """
        node = self
        for key in path:
            cached = node._children.get(key)
            if cached is None:
                definition = node.registry.machine(key.type)
                persisted = node._child_maps().get(key.type, {}).get(key.id)
                if persisted is None:
                    raise NotFound(f"no state machine at {format_path((*node.path, key))}")
                cached = Node(node.registry, definition, persisted, node._clock, key, node)
                node._children[key] = cached
            node = cached
        return node

    def child_keys(self) -> list[Key]:
        """Immediate children's keys, sorted by (type, id)."""
        return sorted(Key(t, i) for t, ids in self._child_maps().items() for i in ids)

    def children(self) -> list[Node]:
        """Immediate children, sorted by (type, id)."""
        return [self.child((k,)) for k in self.child_keys()]

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first, siblings sorted by (type, id)."""
        yield self
        for child in self.children():
            yield from child.walk()

    def collection(self, machine_type: str, cls: type[T] | None = None) -> Collection[T]:
        """The children of one type (``cls`` types their data)."""
        return Collection(self, machine_type, cls)

    def add_child(self, key: Key, data: Any) -> Node:
        """Add an immediate child holding ``data``; it is dirty with count 0.

        Raises:
            AlreadyExists, NotRegistered, SerializationError, InvalidState (deleted node).
        """
        if self._deleted:
            raise InvalidState(f"cannot add a child to deleted node {format_path(self.path)}")
        maps = self._child_maps()
        if key.id in maps.get(key.type, {}):
            raise AlreadyExists(f"state machine already exists: {format_path((*self.path, key))}")
        definition = self.registry.machine(key.type)
        vt = VersionedTransition(self._clock.current_version(), self._clock.next_transition_count())
        persisted = _new_repr(_serialize(definition, data), vt)
        node = Node(self.registry, definition, persisted, self._clock, key, self)
        node._data, node._loaded, node._dirty = data, True, True
        maps.setdefault(key.type, {})[key.id] = persisted
        self._children[key] = node
        self.root._notify("on_added", node)
        return node

    def delete_child(self, key: Key) -> None:
        """Delete a child and everything under it; they refuse transitions from now on.

        Raises:
            InvalidState: this node is deleted. NotFound: no such (live) child.
        """
        if self._deleted:
            raise InvalidState(f"cannot delete from deleted node {format_path(self.path)}")
        child = self.child((key,))
        root = self.root
        for node in list(child.walk()):
            node._deleted = True
        root._oplog.append(DeleteOperation(child.path))
        root._notify("on_deleted", child)
        maps = self._child_maps()
        by_id = maps.get(key.type)
        if by_id is not None:
            by_id.pop(key.id, None)
            if not by_id:
                del maps[key.type]
        self._children.pop(key, None)
        # Unlike Temporal (where the mutable state notices the delete on its own), the parent
        # becomes dirty: the persisted tree changed and must be saved.
        self._dirty = True

    # -- transactions -------------------------------------------------------------------
    def dirty(self) -> bool:
        """True when this node or any loaded node below it changed in this transaction."""
        return self._dirty or any(c.dirty() for c in self._children.values())

    def op_log(self) -> list[Operation]:
        """The compacted operation log of the transaction (root only).

        Raises:
            InvalidState: when called on a node other than the root.
        """
        if self.parent is not None:
            raise InvalidState("op_log() can only be called on the root node")
        return compact(self._oplog)

    def clear_transaction_state(self) -> None:
        """Forget the transaction's operations and dirty flags (call after committing)."""
        self.root._oplog = []
        self._clear_dirty()

    def _clear_dirty(self) -> None:
        self._dirty = False
        for c in self._children.values():
            c._clear_dirty()

    @overload
    def transition(
        self, fn: Callable[[T], TransitionOutput | None], cls: type[T], *, name: str = ""
    ) -> TransitionOutput: ...

    @overload
    def transition(
        self, fn: Callable[[Any], TransitionOutput | None], cls: None = None, *, name: str = ""
    ) -> TransitionOutput: ...

    def transition(
        self,
        fn: Callable[[Any], TransitionOutput | None],
        cls: type[Any] | None = None,
        *,
        name: str = "",
    ) -> TransitionOutput:
        """Run ``fn(data)`` as one transition of this node.

        The count and last-update versioned transition move *before* ``fn`` runs (so it can
        make references to the node). On success the data is re-serialized, the node is dirty
        and one operation joins the root's log. On any failure nothing changes: count and
        versioned transition are restored and the data is re-read from its bytes, even if
        ``fn`` mutated it in place.

        Args:
            fn: mutates the data; may return a TransitionOutput (tasks).
            cls: the data type expected (IncompatibleType otherwise).
            name: the event name the tracer records (default: ``fn``'s name).

        Returns:
            The transition's output.

        Raises:
            InvalidState: the node was deleted. IncompatibleType. SerializationError. Whatever
            ``fn`` raised.
        """
        if self._deleted:
            raise InvalidState(f"cannot transition deleted node {format_path(self.path)}")
        data = self.data(cls)
        before = _safe_state(self.definition, data)
        repr_ = self._repr
        prev_vt = repr_.get("last_update_vt")
        repr_["transition_count"] = self.transition_count + 1
        repr_["last_update_vt"] = VersionedTransition(
            self._clock.current_version(), self._clock.next_transition_count()
        ).to_list()
        try:
            result = fn(data)
            output = TransitionOutput() if result is None else result
            if not isinstance(output, TransitionOutput):
                raise TypeError(
                    f"a transition returns a TransitionOutput or None, not {type(result).__name__}"
                )
            serialized = _serialize(self.definition, data)
        except BaseException:
            repr_["transition_count"] -= 1
            repr_["last_update_vt"] = prev_vt
            self._data, self._loaded = None, False  # re-read from the serialized bytes
            raise
        repr_["data"] = serialized
        self._dirty = True
        root = self.root
        root._oplog.append(TransitionOperation(self.path, output, self.transition_count))
        if not name:
            name = getattr(fn, "__name__", "")
            name = "transition" if not name or name == "<lambda>" else name
        root._notify("on_transition", self, name, before)
        return output

    def sync(self, incoming: Node | Mapping[str, Any]) -> None:
        """Force this node's data to an incoming copy of it (replication or import).

        Children are untouched. The count goes up by one (a local transition, regenerating
        the type's tasks) and the incoming last-update versioned transition is adopted.

        Raises:
            InitialTransitionMismatch: the incoming node has a different initial failover
            version, or a different non-zero initial transition count.
        """
        theirs = incoming.persisted if isinstance(incoming, Node) else incoming
        mine, other = self.initial_vt, VersionedTransition.from_value(theirs.get("initial_vt"))
        if mine.failover_version != other.failover_version:
            raise InitialTransitionMismatch(
                f"initial failover version {mine.failover_version} != {other.failover_version}"
            )
        if (
            mine.transition_count
            and other.transition_count
            and mine.transition_count != other.transition_count
        ):
            raise InitialTransitionMismatch(
                f"initial transition count {mine.transition_count} != {other.transition_count}"
            )
        old = self._repr["data"]
        self._repr["data"] = bytes(theirs["data"])
        self._data, self._loaded = None, False
        regenerate = self.definition.regenerate_tasks

        def _sync(data: Any) -> TransitionOutput:
            return TransitionOutput(tuple(regenerate(data, self)) if regenerate else ())

        try:
            self.transition(_sync, name="sync")
        except BaseException:
            self._repr["data"] = old
            self._data, self._loaded = None, False
            raise
        self._repr["last_update_vt"] = VersionedTransition.from_value(
            theirs.get("last_update_vt")
        ).to_list()

    # -- observers (the tracer) ---------------------------------------------------------
    def add_observer(self, observer: _Observer) -> None:
        self.root._observers.append(observer)

    def remove_observer(self, observer: _Observer) -> None:
        observers = self.root._observers
        if observer in observers:
            observers.remove(observer)

    def _notify(self, method: str, *args: Any) -> None:
        for obs in list(self._observers):
            try:
                getattr(obs, method)(*args)
            except Exception:  # tracing must never break the application
                pass


def _serialize(definition: MachineDef, data: Any) -> bytes:
    try:
        blob = definition.serializer.serialize(data)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot serialize {definition.name!r} data: {exc}") from exc
    if not isinstance(blob, bytes | bytearray):
        raise SerializationError(f"serializer of {definition.name!r} returned no bytes")
    return bytes(blob)


def _deserialize(definition: MachineDef, blob: bytes) -> Any:
    try:
        return definition.serializer.deserialize(blob)
    except SerializationError:
        raise
    except Exception as exc:
        raise SerializationError(f"cannot deserialize {definition.name!r} data: {exc}") from exc


def _safe_state(definition: MachineDef, data: Any) -> str | None:
    try:
        return definition.state_of(data)
    except Exception:
        return None


class Collection(Generic[T]):
    """The children of one type under a node, with typed data."""

    def __init__(self, node: Node, machine_type: str, cls: type[T] | None = None) -> None:
        self.node = node
        self.type = machine_type
        self.cls = cls

    def node_of(self, machine_id: str) -> Node:
        """Raises: NotFound, NotRegistered."""
        return self.node.child((Key(self.type, machine_id),))

    def list(self) -> list[Node]:
        """Every node of the collection, sorted by id."""
        ids = sorted(self.node._child_maps().get(self.type, {}))
        return [self.node_of(i) for i in ids]

    def size(self) -> int:
        return len(self.node._child_maps().get(self.type, {}))

    def add(self, machine_id: str, data: T) -> Node:
        """Raises: AlreadyExists, NotRegistered, SerializationError."""
        return self.node.add_child(Key(self.type, machine_id), data)

    def data(self, machine_id: str) -> T:
        """Raises: NotFound, IncompatibleType."""
        node = self.node_of(machine_id)
        return node.data(self.cls) if self.cls is not None else node.data()

    def transition(
        self, machine_id: str, fn: Callable[[T], TransitionOutput | None], *, name: str = ""
    ) -> TransitionOutput:
        """Raises: as Node.transition, and NotFound."""
        return self.node_of(machine_id).transition(fn, self.cls, name=name)


# -- transition definitions -----------------------------------------------------------------
class _HasState(Protocol[S]):
    state: S


SM = TypeVar("SM", bound=_HasState[Any])


@dataclass(frozen=True)
class TransitionDef(Generic[S, SM, E]):
    """A named transition from some source states to a destination, with a handler.

    ``apply`` refuses from any state not in ``sources`` (InvalidTransition, state unchanged),
    sets the destination *before* the handler runs, and restores the previous state when the
    handler raises (aminspect's choice, so the definition is safe outside a node transition
    too; inside ``Node.transition`` the whole data is restored anyway).
    """

    sources: frozenset[S]
    destination: S
    handler: Callable[[SM, E], TransitionOutput | None] | None = None
    name: str = ""

    def possible(self, machine: SM) -> bool:
        return machine.state in self.sources

    def apply(self, machine: SM, event: E) -> TransitionOutput:
        """Move ``machine`` to the destination and run the handler.

        Raises:
            InvalidTransition: the machine's state is not a source. Whatever the handler raised.
        """
        prev = machine.state
        if not self.possible(machine):
            raise InvalidTransition(
                f"invalid transition {self.name or 'to ' + str(self.destination)} from {prev}"
            )
        machine.state = self.destination
        try:
            out = self.handler(machine, event) if self.handler is not None else None
        except BaseException:
            machine.state = prev
            raise
        return out if out is not None else TransitionOutput()

    def on(self, node: Node, event: E) -> TransitionOutput:
        """Apply this transition to a node's data inside ``node.transition`` (rolled back on
        failure), recorded under this definition's name."""
        return node.transition(lambda d: self.apply(d, event), name=self.name or "transition")


def keys_of(items: Iterable[tuple[str, str]]) -> Path:
    """``[("job", "1"), ...]`` as a path."""
    return tuple(Key(t, i) for t, i in items)
