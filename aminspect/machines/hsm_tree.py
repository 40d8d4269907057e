"""The tree around an HSM root: transition clock and history, commits, references, encoding."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgpack

from aminspect.machines.hsm import (
    DeleteOperation,
    Key,
    Node,
    NotFound,
    Operation,
    Path,
    Registry,
    SerializationError,
    StaleReference,
    StaleState,
    StaleTransition,
    Task,
    VersionedTransition,
    format_path,
    is_prefix,
    parse_path,
    staleness_check,
)

__all__ = ["FORMAT", "Commit", "Ref", "TaskRecord", "Tombstone", "Tree", "access"]

R = TypeVar("R")


# -- the tree: clock, commits, references ---------------------------------------------------
@dataclass(frozen=True)
class TaskRecord:
    """A task produced by a committed transition, with the reference that validates it."""

    path: Path
    task: Task
    ref: Ref


@dataclass(frozen=True)
class Tombstone:
    """A deleted node, stamped with the versioned transition of the commit that deleted it."""

    path: Path
    vt: VersionedTransition


@dataclass(frozen=True)
class Commit:
    """What one committed transaction did."""

    vt: VersionedTransition
    operations: tuple[Operation, ...]
    tasks: tuple[TaskRecord, ...]
    dropped: tuple[TaskRecord, ...]
    tombstones: tuple[Tombstone, ...]


@dataclass(frozen=True)
class Ref:
    """A reference to a node at one moment: what a task or a request carries.

    Args:
        path: the node.
        transition_count: the node's count when the reference was made.
        initial_vt: the node's creation (tells a re-created node from the original).
        tree_vt: the tree's committed versioned transition, checked against its history.
        state: the state the holder expects the node to be in, if any.
    """

    path: Path
    transition_count: int
    initial_vt: VersionedTransition
    tree_vt: VersionedTransition | None = None
    state: str | None = None


TimerKey = tuple[str, Path]


class Tree:
    """A root node plus the tree-wide transition clock, history, timers and tombstones.

    The tree's transition count goes up by one per committed transaction that changed
    something; its history holds, per failover version, the last count reached in it.
    """

    def __init__(
        self,
        registry: Registry,
        root_type: str,
        data: Any = None,
        *,
        tree_id: str = "tree",
        failover_version: int = 0,
        _persisted: dict[str, Any] | None = None,
    ) -> None:
        self.id = tree_id
        self.registry = registry
        self.root_type = root_type
        self.failover_version = failover_version
        self.transition_count = 0
        self.history: list[VersionedTransition] = []
        # deadline -> (task type, path) -> task: one timer per type and node per deadline
        self.timers: dict[float, dict[TimerKey, Task]] = {}
        self.outbound: list[TaskRecord] = []
        self.tombstones: list[Tombstone] = []
        self.stored_count: int | None = None  # the count last read from or written to a store
        if _persisted is None:
            self.root = Node.new_root(registry, root_type, data, clock=self)
        else:
            self.root = Node.from_persisted(registry, root_type, _persisted, clock=self)

    # the clock nodes read
    def current_version(self) -> int:
        return self.failover_version

    def next_transition_count(self) -> int:
        return self.transition_count + 1

    @property
    def vt(self) -> VersionedTransition:
        """The last committed versioned transition."""
        return VersionedTransition(self.failover_version, self.transition_count)

    def failover(self, version: int) -> None:
        """Move to a newer failover version.

        Raises:
            ValueError: when ``version`` is not greater than the current one.
        """
        if version <= self.failover_version:
            raise ValueError(f"failover version must grow: {version} <= {self.failover_version}")
        self.failover_version = version

    def node(self, path: Sequence[Key] | str) -> Node:
        """The node at a path (keys or ``type:id/...``). Raises: NotFound, NotRegistered."""
        return self.root.child(parse_path(path) if isinstance(path, str) else path)

    def commit(self) -> Commit:
        """Close the transaction: stamp it, collect tasks, timers and tombstones, clear state.

        A transaction that changed nothing commits nothing (same versioned transition).
        """
        ops = tuple(self.root.op_log())
        if not ops and not self.root.dirty():
            return Commit(self.vt, (), (), (), ())
        self.transition_count += 1
        vt = self.vt
        if self.history and self.history[-1].failover_version == vt.failover_version:
            self.history[-1] = vt
        else:
            self.history.append(vt)
        tasks: list[TaskRecord] = []
        dropped: list[TaskRecord] = []
        tombstones: list[Tombstone] = []
        for op in ops:
            if isinstance(op, DeleteOperation):
                self._drop_timers_under(op.path)
                tombstones.append(Tombstone(op.path, vt))
                continue
            node = self.root.child(op.path)
            ref = Ref(op.path, op.transition_count, node.initial_vt, vt, node.state())
            for task in op.output.tasks:
                record = TaskRecord(op.path, task, ref)
                if task.validate is not None and not _valid(task, node):
                    dropped.append(record)
                    continue
                tasks.append(record)
                if task.deadline is not None:
                    self.timers.setdefault(task.deadline, {})[(task.type, op.path)] = task
                elif task.destination is not None:
                    self.outbound.append(record)
        self.tombstones.extend(tombstones)
        self.root.clear_transaction_state()
        return Commit(vt, ops, tuple(tasks), tuple(dropped), tuple(tombstones))

    def _drop_timers_under(self, path: Path) -> None:
        for deadline in list(self.timers):
            group = self.timers[deadline]
            for key in [k for k in group if is_prefix(path, k[1])]:
                del group[key]
            if not group:
                del self.timers[deadline]
        self.outbound = [r for r in self.outbound if not is_prefix(path, r.path)]

    def ref(self, node: Node | Sequence[Key], *, state: str | None = None) -> Ref:
        """A reference to a node now (tree part: the last committed versioned transition)."""
        target = node if isinstance(node, Node) else self.root.child(node)
        tree_vt = self.vt if self.transition_count else None
        return Ref(target.path, target.transition_count, target.initial_vt, tree_vt, state)

    def validate_ref(self, ref: Ref) -> Node:
        """The node a reference points at, if the reference is still current.

        Raises:
            StaleState: this copy of the tree is older than the reference (reload and retry).
            StaleReference: the node moved on, was deleted or re-created.
            StaleTransition: the node is not in the state the reference expects.
        """
        if ref.tree_vt is not None:
            staleness_check(self.history or [self.vt], ref.tree_vt)
        try:
            node = self.root.child(ref.path)
        except NotFound as exc:
            raise StaleReference(f"{exc} (deleted since the reference was made)") from None
        where = format_path(ref.path)
        if node.initial_vt != ref.initial_vt:
            raise StaleReference(f"{where} was re-created since the reference was made")
        if node.transition_count != ref.transition_count:
            raise StaleReference(
                f"{where} transition count {node.transition_count} != reference "
                f"{ref.transition_count}"
            )
        if ref.state is not None and node.state() != ref.state:
            raise StaleTransition(f"{where} is in {node.state()}, reference expects {ref.state}")
        return node

    # -- persisted form ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole tree as nested maps (the form the stores keep, msgpack-encoded)."""
        return {
            "format": FORMAT,
            "id": self.id,
            "root_type": self.root_type,
            "failover_version": self.failover_version,
            "transition_count": self.transition_count,
            "history": [vt.to_list() for vt in self.history],
            "root": self.root.persisted,
            "timers": [
                [deadline, t.type, format_path(path), t.data]
                for deadline, group in sorted(self.timers.items())
                for (_, path), t in sorted(group.items())
            ],
            "outbound": [
                [
                    r.task.type,
                    r.task.destination,
                    format_path(r.path),
                    r.task.data,
                    r.ref.transition_count,
                    r.ref.initial_vt.to_list(),
                    None if r.ref.tree_vt is None else r.ref.tree_vt.to_list(),
                    r.ref.state,
                ]
                for r in self.outbound
            ],
            "tombstones": [[format_path(t.path), *t.vt.to_list()] for t in self.tombstones],
        }

    def to_bytes(self) -> bytes:
        """msgpack of :meth:`to_dict`. Raises: SerializationError for un-encodable task data."""
        try:
            return msgpack.packb(self.to_dict(), use_bin_type=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError) as exc:
            raise SerializationError(f"cannot encode tree {self.id!r}: {exc}") from exc

    @classmethod
    def from_bytes(cls, registry: Registry, blob: bytes) -> Tree:
        """Rebuild a tree lazily: nodes and their data decode when first reached.

        Raises:
            SerializationError: not a tree (or another format version).
            NotRegistered: the root's type is unknown.
        """
        try:
            doc = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except Exception as exc:
            raise SerializationError(f"not an HSM tree: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("root"), dict):
            raise SerializationError("not an HSM tree: no root node map")
        if doc.get("format") != FORMAT:
            raise SerializationError(f"unsupported HSM tree format {doc.get('format')!r}")
        tree = cls(
            registry,
            str(doc["root_type"]),
            tree_id=str(doc.get("id", "tree")),
            failover_version=int(doc.get("failover_version", 0)),
            _persisted=doc["root"],
        )
        tree.transition_count = int(doc.get("transition_count", 0))
        tree.history = [VersionedTransition.from_value(v) for v in doc.get("history") or ()]
        for deadline, ttype, path, data in doc.get("timers") or ():
            p = parse_path(path)
            tree.timers.setdefault(deadline, {})[(ttype, p)] = Task(ttype, deadline, data=data)
        for ttype, dest, path, data, count, initial, tree_vt, state in doc.get("outbound") or ():
            p = parse_path(path)
            ref = Ref(
                p,
                int(count),
                VersionedTransition.from_value(initial),
                None if tree_vt is None else VersionedTransition.from_value(tree_vt),
                state,
            )
            tree.outbound.append(TaskRecord(p, Task(ttype, destination=dest, data=data), ref))
        tree.tombstones = [
            Tombstone(parse_path(p), VersionedTransition(v, c))
            for p, v, c in doc.get("tombstones") or ()
        ]
        return tree


FORMAT = 1


def _valid(task: Task, node: Node) -> bool:
    try:
        return bool(task.validate(node)) if task.validate is not None else True
    except StaleReference:
        return False


def access(load: Callable[[], Tree], ref: Ref, fn: Callable[[Node], R]) -> R:
    """Validate ``ref`` against a freshly loaded tree and run ``fn`` on its node.

    When the loaded state is older than the reference (StaleState), reload once and retry;
    a second StaleState, or any StaleReference, is raised.

    Raises:
        StaleState, StaleReference (and StaleTransition), whatever ``load`` or ``fn`` raise.
    """
    tree = load()
    try:
        node = tree.validate_ref(ref)
    except StaleState:
        tree = load()
        node = tree.validate_ref(ref)
    return fn(node)
