"""Where HSM trees are kept: an in-memory store and a SQLite file, one blob per tree id."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Protocol

from aminspect.machines.hsm import HSMError, NotFound, Registry, StaleState
from aminspect.machines.hsm_tree import Commit, Tree

__all__ = [
    "MemoryTreeStore",
    "SQLiteTreeStore",
    "StoreError",
    "TreeStore",
    "load_tree",
    "save_tree",
]


class StoreError(HSMError):
    """The store cannot be opened, read or written."""


class TreeStore(Protocol):
    """The smallest store a tree needs: a blob and its transition count per tree id.

    ``put`` is one atomic write; with ``expected`` it is a compare-and-set on the stored
    count (None: the tree must not exist yet, when ``create`` is true).
    """

    def get(self, tree_id: str) -> tuple[bytes, int] | None: ...

    def put(
        self, tree_id: str, blob: bytes, count: int, *, expected: int | None, create: bool
    ) -> None: ...

    def delete(self, tree_id: str) -> bool: ...

    def ids(self) -> list[str]: ...

    def close(self) -> None: ...


def _conflict(tree_id: str, expected: int | None, found: int | None) -> StaleState:
    want = "no tree" if expected is None else f"transition count {expected}"
    got = "none" if found is None else f"count {found}"
    return StaleState(f"tree {tree_id!r} changed in the store: expected {want}, found {got}")


class MemoryTreeStore:
    """Trees in process memory (tests, embedding); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: dict[str, tuple[bytes, int]] = {}

    def get(self, tree_id: str) -> tuple[bytes, int] | None:
        with self._lock:
            return self._trees.get(tree_id)

    def put(
        self, tree_id: str, blob: bytes, count: int, *, expected: int | None, create: bool
    ) -> None:
        with self._lock:
            found = self._trees.get(tree_id)
            found_count = None if found is None else found[1]
            if not (create and found is None) and found_count != expected:
                raise _conflict(tree_id, expected, found_count)
            self._trees[tree_id] = (bytes(blob), count)

    def delete(self, tree_id: str) -> bool:
        with self._lock:
            return self._trees.pop(tree_id, None) is not None

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._trees)

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hsm_trees (
    id TEXT PRIMARY KEY,
    blob BLOB NOT NULL,
    transition_count INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
)
"""


class SQLiteTreeStore:
    """Trees in a SQLite file: one row per tree, each save one transaction (WAL, full sync),
    so a crash leaves either the old or the new tree, never a mix."""

    def __init__(self, path: str) -> None:
        """Raises: StoreError when the file cannot be opened as a SQLite database."""
        self.path = path
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open HSM store {path!r}: {exc}") from None

    def get(self, tree_id: str) -> tuple[bytes, int] | None:
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT blob, transition_count FROM hsm_trees WHERE id = ?", (tree_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read tree {tree_id!r}: {exc}") from None
        return None if row is None else (bytes(row[0]), int(row[1]))

    def put(
        self, tree_id: str, blob: bytes, count: int, *, expected: int | None, create: bool
    ) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    row = self._db.execute(
                        "SELECT transition_count FROM hsm_trees WHERE id = ?", (tree_id,)
                    ).fetchone()
                    found = None if row is None else int(row[0])
                    if not (create and row is None) and found != expected:
                        raise _conflict(tree_id, expected, found)
                    self._db.execute(
                        "INSERT INTO hsm_trees (id, blob, transition_count, updated_ns) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET blob = excluded.blob, "
                        "transition_count = excluded.transition_count, "
                        "updated_ns = excluded.updated_ns",
                        (tree_id, blob, count, time.time_ns()),
                    )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write tree {tree_id!r}: {exc}") from None

    def delete(self, tree_id: str) -> bool:
        with self._lock:
            try:
                cur = self._db.execute("DELETE FROM hsm_trees WHERE id = ?", (tree_id,))
            except sqlite3.Error as exc:
                raise StoreError(f"cannot delete tree {tree_id!r}: {exc}") from None
        return cur.rowcount > 0

    def ids(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM hsm_trees ORDER BY id").fetchall()
        return [str(r[0]) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def save_tree(store: TreeStore, tree: Tree) -> Commit | None:
    """Commit the tree's transaction (if any) and write it, compare-and-set on the count it
    was loaded or last saved with.

    Returns:
        The commit (tasks, timers, tombstones), or None when nothing changed.

    Raises:
        StaleState: another writer saved the tree since (reload it and retry).
        StoreError, SerializationError.
    """
    commit = tree.commit() if tree.root.dirty() or tree.root.op_log() else None
    blob = tree.to_bytes()
    store.put(
        tree.id,
        blob,
        tree.transition_count,
        expected=tree.stored_count,
        create=tree.stored_count is None,
    )
    tree.stored_count = tree.transition_count
    return commit


def load_tree(store: TreeStore, registry: Registry, tree_id: str) -> Tree:
    """Read a tree back; nodes and data decode lazily as they are reached.

    Raises:
        NotFound: no tree under that id. SerializationError: the blob is not a tree.
        StoreError: the store failed.
    """
    found = store.get(tree_id)
    if found is None:
        raise NotFound(f"no HSM tree {tree_id!r} in the store")
    tree = Tree.from_bytes(registry, found[0])
    tree.stored_count = found[1]
    return tree
