"""LMDBBackend: history in an LMDB environment (``lmdb:///path``), a crash-safe B+tree store.

Four named databases: ``machines`` (id -> machine record), ``records`` (id + ``\\0`` +
8-byte big-endian seq -> positional msgpack record), ``snapshots`` (id + ``\\0`` + index ->
[clocks, time, tick]) and ``meta`` (id -> [highest, first]). Big-endian seqs make LMDB's
byte order the seq order, so a range read is one cursor walk.

Each appended batch (its records, the snapshots it triggered and the new ``highest``) is
one write transaction. ``durability="full"`` (default) syncs data and meta pages at every
commit; ``"fast"`` opens with ``metasync=False``, which may lose the last transaction on a
power loss but never corrupts the database (D-06). ``nosync`` and ``writemap`` are never
used. The map starts at 256 MiB and doubles whenever a write finds it full.

LMDB itself serializes writers across processes; aminspect additionally refuses a second
writing backend on the same path (``flock`` on ``aminspect.lock`` in the directory), because
each backend caches ``highest`` and must be the only one appending (D-08).
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, TypeVar

import lmdb
import msgpack

from backends._base import BaseBackend, parse_url
from backends.base import BackendError, CorruptError, Snapshot
from tracer.codec import DecodeError, machine_from_list, machine_to_list, transition_from_list
from tracer.codec import transition_to_list as _to_list
from tracer.records import MachineRecord, TransitionRecord

__all__ = ["LMDBBackend"]

_SEQ = struct.Struct(">Q")
_INITIAL_MAP = 256 << 20  # virtual address space only; the file grows with the data
_MAX_ID_BYTES = 400  # LMDB's default key limit is 511 bytes, and keys add 9 to the id
_T = TypeVar("_T")


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptError(f"{what} is not valid msgpack: {exc}") from None


class LMDBBackend(BaseBackend):
    """History in an LMDB environment directory.

    Args:
        path: the environment directory (created by a writable open).
        map_size: the initial map size in bytes (it doubles when full).
        **options: the BaseBackend options (``read_only``, ``durability``, ...).

    Raises:
        BackendError: another aminspect writer holds the environment, a read-only open of a
            missing one, a path that is a file, or an LMDB error (one line).
    """

    scheme = "lmdb"
    supports_delete = True
    persistent = True

    def __init__(self, path: str, *, map_size: int = _INITIAL_MAP, **options: Any) -> None:
        super().__init__(f"lmdb:///{path}", **options)
        if not path:
            raise BackendError("lmdb:// needs a directory path, e.g. lmdb:///history.lmdb")
        if type(map_size) is not int or map_size < 1 << 20:
            raise BackendError(f"map_size must be an integer of at least 1 MiB, got {map_size!r}")
        self.path = path
        self._lock_fd = -1
        self._meta: dict[str, tuple[int, int]] = {}  # id -> (highest, first), write-through
        self._machine_cache: dict[str, MachineRecord] = {}
        self._packer = msgpack.Packer(use_bin_type=True)
        self._key_structs: dict[bytes, struct.Struct] = {}
        if os.path.exists(path) and not os.path.isdir(path):
            raise BackendError(f"{path} is a file, not an LMDB environment directory")
        if self.read_only and not os.path.isdir(path):
            raise BackendError(f"no LMDB environment at {path}")
        if not self.read_only:
            os.makedirs(path, exist_ok=True)
            self._lock_fd = os.open(os.path.join(path, "aminspect.lock"), os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = -1
                raise BackendError(
                    f"LMDB environment {path} is already open for writing (by another process "
                    f"or backend); open it read-only or close the other writer"
                ) from None
        try:
            self._env = lmdb.open(
                path,
                map_size=map_size,
                subdir=True,
                readonly=self.read_only,
                metasync=self.durability == "full",
                sync=True,
                writemap=False,
                max_dbs=5,
                create=not self.read_only,
            )
            if not self.read_only:
                # Free reader slots left by processes that died (kill -9) inside a read.
                self._env.reader_check()
            # Read-only environments cannot create databases; open those that exist.
            self._dbs = {
                name: self._env.open_db(name.encode(), create=not self.read_only)
                for name in ("machines", "records", "snapshots", "meta")
            }
            # The persisted query index (a cache, see BaseBackend._save_index). An
            # environment written before it existed has none: a read-only open skips it.
            try:
                self._dbs["qindex"] = self._env.open_db(b"qindex", create=not self.read_only)
            except lmdb.NotFoundError:
                pass
        except lmdb.Error as exc:
            self._release()
            raise BackendError(f"cannot open LMDB environment {path}: {exc}") from None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> LMDBBackend:
        """``lmdb:///relative/dir`` or ``lmdb:////absolute/dir``.

        Raises:
            BackendError: a URL of another scheme or without a path.
        """
        path, url_options = parse_url(url, "lmdb")
        return cls(path, **cls._merge(url_options, options))

    # ------------------------------------------------------------------ helpers
    def _key_prefix(self, machine_id: str) -> bytes:
        return machine_id.encode() + b"\0"

    def _write(self, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        """Run ``fn`` in one write transaction, growing the map when it is full."""
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                # The aborted transaction left nothing; double the map and retry it.
                self._env.set_mapsize(self._env.info()["map_size"] * 2)
            except lmdb.Error as exc:
                raise BackendError(f"LMDB write to {self.path} failed: {exc}") from None

    def _meta_of(self, machine_id: str) -> tuple[int, int]:
        meta = self._meta.get(machine_id)
        if meta is None:
            with self._env.begin(db=self._dbs["meta"]) as txn:
                raw = txn.get(machine_id.encode())
            if raw is None:
                return (-1, 0)
            highest, first = _unpack(raw, f"meta of {machine_id!r}")
            meta = self._meta[machine_id] = (int(highest), int(first))
        return meta

    def _set_meta(self, txn: lmdb.Transaction, machine_id: str, highest: int, first: int) -> None:
        txn.put(machine_id.encode(), _pack([highest, first]), db=self._dbs["meta"])

    # ------------------------------------------------------------------ machines
    def _put_machine(self, machine: MachineRecord) -> None:
        key = machine.id.encode()
        if b"\0" in key or len(key) > _MAX_ID_BYTES:
            raise BackendError(
                f"the lmdb:// backend needs machine ids without NUL of at most "
                f"{_MAX_ID_BYTES} bytes, got {machine.id[:40]!r}"
            )
        value = _pack(machine_to_list(machine))
        self._write(lambda txn: txn.put(key, value, db=self._dbs["machines"]))
        self._machine_cache[machine.id] = machine

    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        cached = self._machine_cache.get(machine_id)
        if cached is not None:
            return cached
        with self._env.begin(db=self._dbs["machines"]) as txn:
            raw = txn.get(machine_id.encode())
        if raw is None:
            return None
        try:
            machine = machine_from_list(_unpack(raw, f"machine {machine_id!r}"))
        except DecodeError as exc:
            raise CorruptError(f"{self.path}: machine {machine_id!r}: {exc}") from None
        self._machine_cache[machine_id] = machine
        return machine

    def _machines(self) -> list[MachineRecord]:
        with self._env.begin(db=self._dbs["machines"]) as txn:
            ids = [bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)]
        out = []
        for mid in ids:
            machine = self._get_machine(mid)
            if machine is not None:
                out.append(machine)
        return out

    # ------------------------------------------------------------------ records
    def _highest(self, machine_id: str) -> int:
        return self._meta_of(machine_id)[0]

    def _first(self, machine_id: str) -> int:
        highest, first = self._meta_of(machine_id)
        return min(first, highest + 1)

    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        prefix = self._key_prefix(machine_id)
        pack = self._packer.pack  # one Packer for the batch: ~30% faster than packb
        try:
            items = [(prefix + _SEQ.pack(r.seq), pack(_to_list(r))) for r in records]
        except (TypeError, ValueError, OverflowError) as exc:
            raise BackendError(f"{machine_id}: cannot encode the batch: {exc}") from None
        self._put_items(machine_id, items, records[-1].seq, snapshots, len(items), items[0][0])

    _stores_rows = True

    def _append_rows_batch(
        self,
        machine_id: str,
        rows: Sequence[Sequence[Any]],
        snapshots: Sequence[Snapshot],
    ) -> None:
        # A wire row is the record's transition_to_list: stored as it is. Keys and values
        # are built in C loops (map/zip), ~1 us a record less than a Python loop.
        first, n = rows[0][0], len(rows)
        prefix = self._key_prefix(machine_id)
        keys = map(self._key_struct(prefix).pack, repeat(prefix, n), range(first, first + n))
        # Streamed into putmulti, not listed first: zip then reuses one pair tuple for
        # every record (fewer allocations the garbage collector counts and scans).
        items = zip(keys, map(self._packer.pack, rows), strict=True)
        try:
            self._put_items(
                machine_id, items, first + n - 1, snapshots, n, prefix + _SEQ.pack(first)
            )
        except (TypeError, ValueError, OverflowError) as exc:  # from packing a row
            raise BackendError(f"{machine_id}: cannot encode the batch: {exc}") from None

    def _key_struct(self, prefix: bytes) -> struct.Struct:
        """Packs (prefix, seq) into a record key in one call."""
        found = self._key_structs.get(prefix)
        if found is None:
            found = self._key_structs[prefix] = struct.Struct(f">{len(prefix)}sQ")
        return found

    def _put_items(
        self,
        machine_id: str,
        items: Iterable[tuple[bytes, bytes]],
        highest: int,
        snapshots: Sequence[Snapshot],
        count: int,
        first_key: bytes,
    ) -> None:
        """Write ``count`` records (``items``, keys ascending from ``first_key``), the
        batch's snapshots and the new ``highest`` in one transaction."""
        prefix = self._key_prefix(machine_id)
        snaps = [
            (prefix + _SEQ.pack(s.index), _pack([list(s.clocks), s.time, s.mach_tick]))
            for s in snapshots
        ]
        _, first = self._meta_of(machine_id)

        def put(txn: lmdb.Transaction) -> None:
            with txn.cursor(db=self._dbs["records"]) as cur:
                # MDB_APPEND (no tree search per key, full pages) needs keys above every
                # key of the database: true when this machine's keys sort last (one
                # machine, or the newest one); the batch's own keys ascend.
                append = not cur.last() or bytes(cur.key()) < first_key
                _, added = cur.putmulti(items, overwrite=False, append=append)
            if added != count:
                raise BackendError(f"{machine_id}: {self.path} already holds some of these seqs")
            for key, value in snaps:
                txn.put(key, value, db=self._dbs["snapshots"])
            self._set_meta(txn, machine_id, highest, first)

        self._write(put)
        self._meta[machine_id] = (highest, first)

    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        if start >= end:
            return []
        prefix = self._key_prefix(machine_id)
        stop = prefix + _SEQ.pack(end)
        out: list[TransitionRecord] = []
        with self._env.begin(db=self._dbs["records"], buffers=False) as txn:
            cur = txn.cursor()
            if not cur.set_range(prefix + _SEQ.pack(start)):
                return out
            for key, value in cur:
                if key >= stop or not key.startswith(prefix):
                    break
                try:
                    out.append(transition_from_list(machine_id, _unpack(value, "a record")))
                except (DecodeError, CorruptError) as exc:
                    seq = _SEQ.unpack(key[len(prefix) :])[0]
                    raise CorruptError(
                        f"{self.path}: {machine_id} seq {seq} cannot be decoded: {exc}"
                    ) from None
        return out

    def _delete_upto(self, machine_id: str, seq: int) -> None:
        prefix = self._key_prefix(machine_id)
        highest, first = self._meta_of(machine_id)
        stop = prefix + _SEQ.pack(seq + 1)

        def delete(txn: lmdb.Transaction) -> None:
            cur = txn.cursor(db=self._dbs["records"])
            if cur.set_range(prefix):
                while True:
                    key = bytes(cur.key())
                    if key >= stop or not key.startswith(prefix) or not cur.delete():
                        break
            self._set_meta(txn, machine_id, highest, max(first, seq + 1))

        self._write(delete)
        self._meta[machine_id] = (highest, max(first, seq + 1))

    # ------------------------------------------------------------------ snapshots
    def _save_snapshot(self, snapshot: Snapshot) -> None:
        key = self._key_prefix(snapshot.machine_id) + _SEQ.pack(snapshot.index)
        value = _pack([list(snapshot.clocks), snapshot.time, snapshot.mach_tick])
        self._write(lambda txn: txn.put(key, value, db=self._dbs["snapshots"]))

    def _snapshot_of(self, machine_id: str, key: bytes, value: bytes) -> Snapshot:
        index = _SEQ.unpack(key[-8:])[0]
        fields = _unpack(value, f"snapshot {index} of {machine_id!r}")
        try:
            clocks, time, tick = fields
            return Snapshot(machine_id, index, tuple(int(c) for c in clocks), int(time), int(tick))
        except (TypeError, ValueError) as exc:
            raise CorruptError(f"{self.path}: snapshot {index} of {machine_id!r}: {exc}") from None

    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        prefix = self._key_prefix(machine_id)
        upto = min(upto, (1 << 64) - 2)
        with self._env.begin(db=self._dbs["snapshots"]) as txn:
            cur = txn.cursor()
            # The last key <= prefix + upto: position after it, then step back.
            found = cur.prev() if cur.set_range(prefix + _SEQ.pack(upto + 1)) else cur.last()
            key = bytes(cur.key())
            if not found or not key.startswith(prefix) or len(key) != len(prefix) + 8:
                return None
            return self._snapshot_of(machine_id, key, bytes(cur.value()))

    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        prefix = self._key_prefix(machine_id)
        out = []
        with self._env.begin(db=self._dbs["snapshots"]) as txn:
            cur = txn.cursor()
            if cur.set_range(prefix):
                for key, value in cur:
                    if not key.startswith(prefix):
                        break
                    out.append(self._snapshot_of(machine_id, key, value))
        return out

    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        if upto < 0:
            return
        prefix = self._key_prefix(machine_id)
        stop = prefix + _SEQ.pack(upto + 1)

        def delete(txn: lmdb.Transaction) -> None:
            cur = txn.cursor(db=self._dbs["snapshots"])
            if cur.set_range(prefix):
                while True:
                    key = bytes(cur.key())
                    if key >= stop or not key.startswith(prefix) or not cur.delete():
                        break

        self._write(delete)

    # ------------------------------------------------------------------ query index
    def _load_index(self, machine_id: str) -> bytes | None:
        db = self._dbs.get("qindex")
        if db is None:
            return None
        with self._env.begin(db=db) as txn:
            raw = txn.get(machine_id.encode())
        return None if raw is None else bytes(raw)

    def _save_index(self, machine_id: str, data: bytes) -> None:
        db = self._dbs.get("qindex")
        if db is None:
            return
        key = machine_id.encode()
        self._write(lambda txn: txn.put(key, data, db=db))

    # ------------------------------------------------------------------ lifecycle
    def _flush(self) -> None:
        if not self.read_only:
            self._env.sync(True)

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _close(self) -> None:
        try:
            self._env.close()
        finally:
            self._release()
