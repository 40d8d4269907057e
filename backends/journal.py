"""JournalBackend: an append-only file of checksummed msgpack frames (``journal://``, ``*.amj``).

The format is in ``backends/_framing.py``. How the backend uses it:

* One ``write()`` per appended batch: the BATCH frame followed by the snapshots the batch
  triggered, so a snapshot never outlives the records it describes. ``durability="full"``
  (default) fsyncs (``fdatasync``) after every batch before ``append`` returns;
  ``"fast"`` fsyncs only on ``flush()`` and ``close()``: a crash of the machine (not of
  the process) may then lose the latest batches, never consistency.
* On open every frame is verified. A torn or damaged **last** frame (nothing valid after
  it) is dropped, truncated away on a writable open, and reported in
  ``recovered_tail_bytes``, ``dropped_frames`` and ``recovery_message`` (D-02). Damage
  followed by valid frames refuses to open with CorruptError giving the byte offset of
  the first bad frame (D-03), unless ``repair=True``.
* ``repair=True`` keeps every valid frame, skipping the damaged byte ranges, and cuts each
  machine's history at its first missing seq (a stream stays a contiguous prefix; later
  records of that machine are dropped, other machines keep theirs). A writable repair
  rewrites the journal atomically and keeps the damaged original as ``<path>.damaged``.
* One writer per file: a writable open takes ``flock(LOCK_EX | LOCK_NB)`` and a second
  writer (another process or another backend object) is refused with BackendError naming
  the file (D-08). Read-only opens take no lock, so ``aminspect open`` can read a journal
  that is being recorded; they see the frames complete at open time.
* Deleted records, replaced machine records and deleted snapshots stay in the file until
  ``compact()`` rewrites it (temp file, fsync, rename, directory fsync: D-04); a writable
  backend compacts on ``close()`` when more than half of a file over 1 MiB is dead.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import zlib
from array import array
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgpack

from backends import _framing as fr
from backends._base import BaseBackend, parse_url
from backends.base import BackendError, CorruptError, Snapshot
from tracer.codec import DecodeError
from tracer.records import MachineRecord, TransitionRecord

__all__ = ["JournalBackend", "atomic_write"]

log = logging.getLogger(__name__)

# What stays in memory (SPEC §10 asks for 1,000,000 records): per machine, three arrays
# with one entry per BATCH frame (first seq, offset, length: 20 bytes per batch) plus the
# snapshots, and an LRU of decoded batches bounded by record count. Records themselves are
# read back with pread and decoded on demand: a decoded TransitionRecord costs ~350 bytes
# of Python objects (measured with tracemalloc), so keeping 1,000,000 decoded would take
# ~350 MB, whereas the index of the same history in batches of 100 takes 0.2 MB and even
# one frame per record (the worst case) only 20 MB. Measured by tests/bench/bench_backends.py
# at 1,000,000 records in batches of 1000: ~50 bytes per record in process memory, of which
# ~23 are the full LRU and most of the rest the shared query index (backends.query).
_CACHE_RECORDS = 65_536  # ~23 MB of decoded records at most
# A slice of fewer records than this from an uncached batch is decoded alone, uncached.
_PARTIAL_BELOW = 512
_COMPACT_MIN_DEAD = 1 << 20  # never rewrite a file for less than 1 MiB of dead frames

# The query index sidecar ``<journal>.idx``: SIDECAR_MAGIC, crc32 u32 LE of the rest, then
# zlib-compressed msgpack ``{machine_id: [last_seq, batch_offset, batch_crc,
# MachineIndex.to_bytes()]}``.
# It is only a cache (rebuilding a machine's index decodes every record: ~10 s per million),
# so it is replaced by rename without fsync; a torn or stale one is detected and ignored.
# An entry is used only when the BATCH frame holding ``last_seq`` (the last indexed record)
# is still at ``batch_offset`` with checksum ``batch_crc``: a rewritten (compacted,
# repaired) or different journal does not match it. The entries' layout is this magic's
# version; each index's own format is ``MachineIndex._FORMAT``, checked by ``from_bytes``, so an
# index saved by older code (format 2, without refusals) is rebuilt, not trusted.
SIDECAR_MAGIC = b"\x89AMI\r\n\x1a\n"
_SIDECAR_SUFFIX = ".idx"


def _fsync_dir(path: str) -> None:
    """fsync the directory holding ``path`` so a create or rename in it is durable."""
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync(fd: int) -> None:
    # fdatasync also flushes the file size, which is all an append changes in the inode.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def atomic_write(path: str, chunks: Sequence[bytes]) -> None:
    """Replace ``path`` with ``chunks`` so a crash at any point leaves the old file or the
    new one, never a mix (D-04): write a temporary file in the same directory, fsync it,
    rename it over ``path``, fsync the directory.

    Raises:
        OSError: from any step; the temporary file is removed and ``path`` is untouched.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path)


class _Stream:
    """The in-memory index of one machine's frames."""

    __slots__ = (
        "batch_highest",
        "dead",
        "first",
        "firsts",
        "highest",
        "lengths",
        "lo",
        "machine_frame",
        "offsets",
        "record",
        "snap_index",
        "snaps",
    )

    def __init__(self, record: MachineRecord, frame: tuple[int, int]) -> None:
        self.record = record
        self.machine_frame = frame  # (offset, payload length) of the latest MACHINE frame
        self.firsts = array("q")  # first seq of each BATCH frame
        self.offsets = array("q")  # its offset in the file
        self.lengths = array("l")  # its payload length
        self.lo = 0  # batches before this position are deleted
        self.highest = -1
        self.batch_highest = -1  # last seq of the last BATCH frame
        self.first = 0  # lowest retained seq
        self.snaps: dict[int, tuple[Snapshot, int]] = {}  # index -> (snapshot, frame bytes)
        self.snap_index: list[int] = []  # sorted keys of snaps
        self.dead = 0  # bytes of this machine's frames that compaction would drop

    def add_batch(self, first_seq: int, count: int, offset: int, length: int) -> None:
        self.firsts.append(first_seq)
        self.offsets.append(offset)
        self.lengths.append(length)
        self.batch_highest = first_seq + count - 1
        self.highest = max(self.highest, self.batch_highest)

    def continues(self, first_seq: int) -> bool:
        """Whether a batch starting at ``first_seq`` continues this history: right after
        the last batch, or (none yet, as after a compaction that dropped every record) at
        or before the first retained seq."""
        if self.batch_highest >= 0:
            return first_seq == self.batch_highest + 1
        return first_seq <= self.first

    def delete_upto(self, seq: int) -> None:
        self.first = max(self.first, seq + 1)
        self.highest = max(self.highest, seq)
        # Batches that end at or before ``seq`` are wholly dead.
        while self.lo < len(self.firsts) and self._batch_end(self.lo) <= self.first:
            self.dead += self.lengths[self.lo] + fr.FRAME_HEAD_SIZE
            self.lo += 1
        if self.lo > 1024 and self.lo * 2 > len(self.firsts):
            del self.firsts[: self.lo]
            del self.offsets[: self.lo]
            del self.lengths[: self.lo]
            self.lo = 0

    def _batch_end(self, i: int) -> int:
        return self.firsts[i + 1] if i + 1 < len(self.firsts) else self.highest + 1

    def put_snapshot(self, snap: Snapshot, size: int) -> None:
        old = self.snaps.get(snap.index)
        if old is None:
            insort(self.snap_index, snap.index)
        else:
            self.dead += old[1]
        self.snaps[snap.index] = (snap, size)

    def delete_snapshots(self, upto: int) -> None:
        cut = bisect_right(self.snap_index, upto)
        for index in self.snap_index[:cut]:
            self.dead += self.snaps.pop(index)[1]
        del self.snap_index[:cut]

    def live_batches(self) -> range:
        return range(self.lo, len(self.firsts))


class JournalBackend(BaseBackend):
    """History in one append-only ``.amj`` file (see the module docstring for the rules).

    Args:
        path: the journal file; created (with its header) by a writable open.
        repair: open a journal damaged in the middle by skipping the damaged frames.
        **options: the BaseBackend options (``read_only``, ``durability``, ...).

    Raises:
        CorruptError: damage in the middle of the file (and not ``repair``), a file that is
            not a journal, or a frame that verifies but cannot be decoded.
        BackendError: another writer holds the file, a read-only open of a missing file,
            or any I/O error (one line naming the file).
    """

    scheme = "journal"
    supports_delete = True
    persistent = True

    def __init__(self, path: str, *, repair: bool = False, **options: Any) -> None:
        url = path if path.endswith(".amj") and "://" not in path else f"journal:///{path}"
        super().__init__(url, **options)
        if type(repair) is not bool:
            raise BackendError(f"repair must be true or false, got {repair!r}")
        if not path:
            raise BackendError("journal:// needs a file path, e.g. journal:///history.amj")
        self.path = path
        self.repair = repair
        #: bytes dropped from the end of the file at open (a torn or damaged last frame)
        self.recovered_tail_bytes = 0
        #: frames dropped at open (torn tail, or damaged ranges skipped by ``repair``)
        self.dropped_frames = 0
        #: (offset, length) of the damaged byte ranges ``repair`` skipped
        self.skipped_ranges: list[tuple[int, int]] = []
        #: one line describing what the open recovered or repaired, else None
        self.recovery_message: str | None = None
        self._streams: dict[str, _Stream] = {}
        self._cache_lru: OrderedDict[int, list[TransitionRecord]] = OrderedDict()
        self._cached = 0
        self._end = 0  # end of the last good frame = where the next append goes
        self._failed: str | None = None
        self._dirty = False  # bytes written since the last fsync (durability "fast")
        self._fd = -1
        # Query index sidecar: entries read from it (popped as machines load them) and
        # entries saved since the last write of it.
        self._sidecar: dict[str, list[Any]] | None = None
        self._sidecar_pending: dict[str, list[Any]] = {}
        self._sidecar_batched = False  # inside flush()/close(): write the sidecar once
        self._in_group = False  # inside BaseBackend.group(): one fsync at its end
        try:
            self._open()
        except OSError as exc:
            self._release()
            raise BackendError(f"cannot open journal {path}: {exc.strerror or exc}") from None
        except BaseException:
            self._release()
            raise

    @classmethod
    def from_url(cls, url: str, **options: Any) -> JournalBackend:
        """``journal:///rel.amj``, ``journal:////abs.amj`` or a bare ``*.amj`` path.

        Raises:
            BackendError: a URL of another scheme or without a path.
        """
        if "://" not in url:
            return cls(url, **options)
        path, url_options = parse_url(url, "journal")
        return cls(path, **cls._merge(url_options, options))

    # ------------------------------------------------------------------ open
    def _open(self) -> None:
        path = self.path
        if self.read_only:
            try:
                self._fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise BackendError(f"no journal at {path}") from None
        else:
            created = not os.path.exists(path)
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackendError(
                    f"journal {path} is already open for writing (by another process or "
                    f"backend); open it read-only or close the other writer"
                ) from None
            if created:
                _fsync_dir(path)
            # Temporary files of a rewrite that crashed before its rename.
            folder = os.path.dirname(os.path.abspath(path))
            stems = (os.path.basename(path) + ".tmp-", os.path.basename(path) + ".idx.tmp-")
            for name in os.listdir(folder):
                if name.startswith(stems):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(folder, name))
        size = os.fstat(self._fd).st_size
        if size < fr.HEADER_SIZE:
            head = os.pread(self._fd, size, 0)
            if head != fr.HEADER[:size]:
                raise CorruptError(f"{path} is not an aminspect journal (bad magic bytes)")
            # Empty, or the header itself was torn at creation: an empty journal.
            if not self.read_only:
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, fr.HEADER, 0)
                os.fsync(self._fd)
            self._end = fr.HEADER_SIZE
            return
        with mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) as buf:
            try:
                fr.check_header(buf)
            except fr.FrameError as exc:
                raise CorruptError(f"{path}: {exc}") from None
            ranges = self._scan(buf, size)
            self._index(buf, ranges)
        if self.skipped_ranges and not self.read_only:
            self._rewrite(keep_damaged=True)
        elif self.recovered_tail_bytes and not self.read_only:
            os.ftruncate(self._fd, self._end)
            os.fsync(self._fd)
        if self.recovery_message:
            log.warning("%s", self.recovery_message)

    def _scan(self, buf: mmap.mmap, size: int) -> list[list[tuple[int, int]]]:
        """Verified frames as runs of contiguous frames (more than one only on repair)."""
        runs: list[list[tuple[int, int]]] = []
        start = fr.HEADER_SIZE
        while True:
            result = fr.scan(buf, start)
            runs.append(result.frames)
            if result.bad_offset is None:
                self._end = result.end
                break
            if result.torn:
                self._end = result.end
                self.recovered_tail_bytes = size - result.end
                self.dropped_frames += 1
                break
            assert result.resume_offset is not None
            if not self.repair:
                raise CorruptError(
                    f"{self.path}: corrupt frame at byte offset {result.bad_offset} "
                    f"({result.bad_reason}), valid frames follow at {result.resume_offset}; "
                    f"open with repair=True to skip the damaged frames"
                )
            self.skipped_ranges.append(
                (result.bad_offset, result.resume_offset - result.bad_offset)
            )
            self.dropped_frames += 1
            start = result.resume_offset
        notes = []
        if self.recovered_tail_bytes:
            notes.append(
                f"dropped a torn last frame ({self.recovered_tail_bytes} bytes at offset "
                f"{self._end})"
            )
        if self.skipped_ranges:
            spans = ", ".join(f"{o}+{n}" for o, n in self.skipped_ranges)
            notes.append(f"repaired: skipped damaged bytes at {spans}")
        if notes:
            self.recovery_message = f"journal {self.path}: " + "; ".join(notes)
        return runs

    def _index(self, buf: mmap.mmap, runs: list[list[tuple[int, int]]]) -> None:
        streams = self._streams
        cut: set[str] = set()  # machines whose history has a hole (repair only)
        for run in runs:
            for offset, payload in fr.iter_payloads(buf, run):
                try:
                    info = fr.frame_info(payload)
                except DecodeError as exc:
                    payload.release()
                    if self.repair:
                        self.skipped_ranges.append((offset, len(payload)))
                        continue
                    raise CorruptError(
                        f"{self.path}: frame at byte offset {offset} cannot be decoded: {exc}"
                    ) from None
                size = len(payload) + fr.FRAME_HEAD_SIZE
                payload.release()
                if isinstance(info, MachineRecord):
                    s = streams.get(info.id)
                    if s is None:
                        streams[info.id] = _Stream(info, (offset, size - fr.FRAME_HEAD_SIZE))
                    else:
                        s.dead += s.machine_frame[1] + fr.FRAME_HEAD_SIZE
                        s.record = info
                        s.machine_frame = (offset, size - fr.FRAME_HEAD_SIZE)
                    continue
                owner = streams.get(info.machine_id)
                if owner is None or info.machine_id in cut:
                    if owner is None and not self.repair:
                        raise CorruptError(
                            f"{self.path}: frame at byte offset {offset} belongs to machine "
                            f"{info.machine_id!r}, which has no machine record before it"
                        )
                    continue
                s = owner
                if isinstance(info, fr.BatchInfo):
                    if not s.continues(info.first_seq):
                        if self.repair:
                            cut.add(info.machine_id)
                            continue
                        raise CorruptError(
                            f"{self.path}: frame at byte offset {offset}: {info.machine_id} "
                            f"seq {info.first_seq} follows {s.highest} (seqs are missing)"
                        )
                    s.add_batch(info.first_seq, info.count, offset, size - fr.FRAME_HEAD_SIZE)
                elif isinstance(info, fr.DeleteInfo):
                    s.delete_upto(info.upto)
                    s.dead += size
                elif isinstance(info, fr.SnapshotInfo):
                    s.put_snapshot(
                        Snapshot(
                            info.machine_id, info.index, info.clocks, info.time, info.mach_tick
                        ),
                        size,
                    )
                else:
                    s.delete_snapshots(info.upto)
                    s.dead += size
        if cut:
            self.recovery_message = (
                f"{self.recovery_message or f'journal {self.path}: repaired'}; histories cut "
                f"at their first missing seq: {', '.join(sorted(cut))}"
            )

    # ------------------------------------------------------------------ writing
    def _write(self, data: bytes) -> None:
        """Append ``data`` at the end of the journal in one write() (and fsync in "full").

        On an I/O error the file is cut back to the last good frame and the backend refuses
        further writes (after a failed fsync the kernel's page cache state is unknown).
        """
        if self._failed is not None:
            raise BackendError(self._failed)
        start = self._end
        try:
            view = memoryview(data)
            pos = start
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
            if self.durability == "full" and not self._in_group:
                _sync(self._fd)
            else:
                self._dirty = True
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            self._failed = (
                f"journal {self.path}: write failed ({exc.strerror or exc}); reopen it to continue"
            )
            raise BackendError(self._failed) from None
        self._end = start + len(data)

    def _put_machine(self, machine: MachineRecord) -> None:
        frame = fr.encode_machine_frame(machine)
        offset = self._end
        self._write(frame)
        s = self._streams.get(machine.id)
        if s is None:
            self._streams[machine.id] = _Stream(machine, (offset, len(frame) - 8))
        else:
            s.dead += s.machine_frame[1] + fr.FRAME_HEAD_SIZE
            s.record = machine
            s.machine_frame = (offset, len(frame) - fr.FRAME_HEAD_SIZE)

    def _append_batch(
        self,
        machine_id: str,
        records: Sequence[TransitionRecord],
        snapshots: Sequence[Snapshot],
    ) -> None:
        s = self._streams[machine_id]
        try:
            batch = fr.encode_batch(machine_id, records)
        except (TypeError, ValueError, OverflowError) as exc:
            # Nothing stored: an unpackable ``args`` is a rejection, not a failure (J-09).
            raise BackendError(f"{machine_id}: cannot encode the batch: {exc}") from None
        frames = [batch]
        snap_frames = [
            fr.encode_snapshot(machine_id, sn.index, sn.clocks, sn.time, sn.mach_tick)
            for sn in snapshots
        ]
        frames.extend(snap_frames)
        offset = self._end
        self._write(b"".join(frames))
        s.add_batch(records[0].seq, len(records), offset, len(batch) - fr.FRAME_HEAD_SIZE)
        self._remember(offset, list(records))
        pos = offset + len(batch)
        for sn, f in zip(snapshots, snap_frames, strict=True):
            s.put_snapshot(sn, len(f))
            pos += len(f)

    _stores_rows = True

    def _append_rows_batch(
        self,
        machine_id: str,
        rows: Sequence[Sequence[Any]],
        snapshots: Sequence[Snapshot],
    ) -> None:
        s = self._streams[machine_id]
        try:
            batch = fr.encode_batch_rows(machine_id, rows)
        except (TypeError, ValueError, OverflowError) as exc:
            raise BackendError(f"{machine_id}: cannot encode the batch: {exc}") from None
        snap_frames = [
            fr.encode_snapshot(machine_id, sn.index, sn.clocks, sn.time, sn.mach_tick)
            for sn in snapshots
        ]
        offset = self._end
        self._write(b"".join([batch, *snap_frames]))
        s.add_batch(rows[0][0], len(rows), offset, len(batch) - fr.FRAME_HEAD_SIZE)
        for sn, f in zip(snapshots, snap_frames, strict=True):
            s.put_snapshot(sn, len(f))

    def _delete_upto(self, machine_id: str, seq: int) -> None:
        frame = fr.encode_delete(machine_id, seq)
        self._write(frame)
        s = self._streams[machine_id]
        s.delete_upto(seq)
        s.dead += len(frame)

    def _save_snapshot(self, snapshot: Snapshot) -> None:
        s = self._streams.get(snapshot.machine_id)
        if s is None:
            raise BackendError(f"unknown machine {snapshot.machine_id!r} in {self.url}")
        frame = fr.encode_snapshot(
            snapshot.machine_id,
            snapshot.index,
            snapshot.clocks,
            snapshot.time,
            snapshot.mach_tick,
        )
        self._write(frame)
        s.put_snapshot(snapshot, len(frame))

    def _delete_snapshots(self, machine_id: str, upto: int) -> None:
        s = self._streams.get(machine_id)
        if s is None or not s.snap_index or s.snap_index[0] > upto:
            return
        frame = fr.encode_delete_snapshots(machine_id, max(upto, 0))
        self._write(frame)
        s.delete_snapshots(upto)
        s.dead += len(frame)

    def _flush(self) -> None:
        if self._dirty and self._fd >= 0 and not self.read_only:
            _sync(self._fd)
            self._dirty = False
        self._write_sidecar()

    def _group_begin(self) -> None:
        self._in_group = True

    def _group_end(self) -> None:
        self._in_group = False
        if self.durability != "full" or not self._dirty or self._failed is not None:
            return
        try:
            _sync(self._fd)
        except OSError as exc:
            # As in _write: the page cache's state is unknown; refuse further writes.
            self._failed = (
                f"journal {self.path}: fsync failed ({exc.strerror or exc}); reopen it to continue"
            )
            raise BackendError(self._failed) from None
        self._dirty = False

    # ------------------------------------------------------------------ query index sidecar
    @property
    def sidecar_path(self) -> str:
        """Where the persisted query index lives: the journal's path plus ``.idx``."""
        return self.path + _SIDECAR_SUFFIX

    def _read_sidecar(self) -> dict[str, list[Any]]:
        """The sidecar's entries; empty when it is missing, torn or not one."""
        try:
            with open(self.sidecar_path, "rb") as f:
                data = f.read()
        except OSError:
            return {}
        head = len(SIDECAR_MAGIC) + 4
        if len(data) < head or not data.startswith(SIDECAR_MAGIC):
            return {}
        crc = int.from_bytes(data[len(SIDECAR_MAGIC) : head], "little")
        body = memoryview(data)[head:]
        if zlib.crc32(body) != crc:
            return {}
        try:
            entries = msgpack.unpackb(zlib.decompress(body), raw=False)
        except Exception:  # zlib and msgpack raise several unrelated types; a cache: ignore
            return {}
        if not isinstance(entries, dict):
            return {}
        return {
            k: v
            for k, v in entries.items()
            if isinstance(k, str)
            and isinstance(v, list)
            and len(v) == 4
            and all(type(x) is int for x in v[:3])
            and isinstance(v[3], bytes)
        }

    def _anchor(self, machine_id: str, last: int) -> tuple[int, int]:
        """(offset, checksum) of the BATCH frame holding seq ``last``; (-1, 0) if none."""
        s = self._streams.get(machine_id)
        if s is None or last < 0:
            return (-1, 0)
        i = bisect_right(s.firsts, last) - 1
        if i < 0 or i >= len(s.firsts):
            return (-1, 0)
        offset = s.offsets[i]
        head = os.pread(self._fd, fr.FRAME_HEAD_SIZE, offset)
        if len(head) != fr.FRAME_HEAD_SIZE:
            return (-1, 0)
        return (offset, int.from_bytes(head[4:8], "little"))

    def _load_index(self, machine_id: str) -> bytes | None:
        pending = self._sidecar_pending.get(machine_id)
        if pending is not None:
            return bytes(pending[3])
        if self._sidecar is None:
            self._sidecar = self._read_sidecar()
        entry = self._sidecar.pop(machine_id, None)
        if entry is None:
            return None
        last, offset, crc, data = entry
        if last >= 0 and (offset < 0 or self._anchor(machine_id, last) != (offset, crc)):
            return None  # the journal was rewritten or replaced since: rebuild
        return bytes(data)

    def _save_index(self, machine_id: str, data: bytes) -> None:
        # The index's end is in its header: first + len(times) // 8 (see to_bytes).
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(data)
        unpacker.read_array_header()
        unpacker.skip()  # format
        first = unpacker.unpack()
        for _ in range(3):  # base, clocks, monotonic
            unpacker.skip()
        end = first + len(unpacker.unpack()) // 8
        # Anchored when written (a compaction on close may move the frames meanwhile).
        self._sidecar_pending[machine_id] = [end - 1, -1, 0, data]
        if not self._sidecar_batched:
            self._write_sidecar()  # a periodic save while appending (no flush may come)

    def flush(self, timeout: float | None = None) -> bool:
        """Make acknowledged writes durable (see BaseBackend.flush); also saves the query
        indexes to the sidecar file, once for every machine."""
        with self._lock:
            self._sidecar_batched = True
            try:
                return super().flush(timeout)
            finally:
                self._sidecar_batched = False

    def close(self) -> None:
        """Release the journal (see BaseBackend.close); idempotent."""
        with self._lock:
            self._sidecar_batched = True
            try:
                super().close()
            finally:
                self._sidecar_batched = False

    # The sidecar is a cache beside the journal, never the recording: a read-only open
    # (the TUI, aminspect open) that had to build an index saves it too, so the next open
    # of a journal whose sidecar was missing, stale or of an older format is fast again.
    _saves_index_read_only = True

    def _write_sidecar(self) -> None:
        """Write the saved indexes (and the other machines' entries already in the file)."""
        if not self._sidecar_pending or self._fd < 0:
            return
        entries = self._read_sidecar()
        for mid, (last, _, _, data) in self._sidecar_pending.items():
            offset, crc = self._anchor(mid, last)
            entries[mid] = [last, offset, crc, data]
        # zlib level 1: ~24 -> ~7 bytes per record on disk for ~0.1 s per million records.
        body = zlib.compress(msgpack.packb(entries, use_bin_type=True), 1)
        path = self.sidecar_path
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                f.write(SIDECAR_MAGIC + zlib.crc32(body).to_bytes(4, "little"))
                f.write(body)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            # A read-only open on read-only media: expected, and only a cache.
            (log.debug if self.read_only else log.warning)(
                "journal %s: cannot save the query index (%s)", self.path, exc
            )
            return
        self._sidecar_pending.clear()

    # ------------------------------------------------------------------ reading
    def _get_machine(self, machine_id: str) -> MachineRecord | None:
        s = self._streams.get(machine_id)
        return None if s is None else s.record

    def _machines(self) -> list[MachineRecord]:
        return [s.record for s in self._streams.values()]

    def _highest(self, machine_id: str) -> int:
        s = self._streams.get(machine_id)
        return -1 if s is None else s.highest

    def _first(self, machine_id: str) -> int:
        s = self._streams.get(machine_id)
        return 0 if s is None else min(s.first, s.highest + 1)

    def _remember(self, offset: int, records: list[TransitionRecord]) -> None:
        lru = self._cache_lru
        lru[offset] = records
        self._cached += len(records)
        while self._cached > _CACHE_RECORDS and len(lru) > 1:
            _, old = lru.popitem(last=False)
            self._cached -= len(old)

    def _batch(
        self, offset: int, length: int, lo: int = 0, hi: int | None = None
    ) -> list[TransitionRecord]:
        """Records ``[lo, hi)`` of the batch frame at ``offset`` (all by default).

        Whole batches go through the LRU; a small slice of an uncached batch (``state_at``
        replaying a few records of a batch of thousands) is decoded alone and not cached.
        """
        lru = self._cache_lru
        records = lru.get(offset)
        if records is not None:
            lru.move_to_end(offset)
            return records if lo == 0 and hi is None else records[lo:hi]
        data = os.pread(self._fd, length + fr.FRAME_HEAD_SIZE, offset)
        n, reason = fr.check_frame(data, 0, len(data))
        if n != length:
            raise CorruptError(
                f"{self.path}: frame at byte offset {offset} changed since open "
                f"({reason or 'bad length'})"
            )
        partial = hi is not None and hi - lo < _PARTIAL_BELOW
        try:
            if partial:
                return fr.decode_batch(memoryview(data)[fr.FRAME_HEAD_SIZE :], lo, hi)
            records = fr.decode_batch(memoryview(data)[fr.FRAME_HEAD_SIZE :])
        except DecodeError as exc:
            info = fr.frame_info(memoryview(data)[fr.FRAME_HEAD_SIZE :])
            where = (
                f"{info.machine_id} seqs from {info.first_seq}"
                if isinstance(info, fr.BatchInfo)
                else "a batch"
            )
            raise CorruptError(
                f"{self.path}: cannot decode {where} at byte offset {offset}: {exc}"
            ) from None
        self._remember(offset, records)
        return records if lo == 0 and hi is None else records[lo:hi]

    def _read(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        s = self._streams.get(machine_id)
        if s is None or start >= end:
            return []
        firsts = s.firsts
        i = max(bisect_right(firsts, start, s.lo) - 1, s.lo)
        out: list[TransitionRecord] = []
        n = len(firsts)
        while i < n and firsts[i] < end:
            base = firsts[i]
            count = (firsts[i + 1] if i + 1 < n else s.batch_highest + 1) - base
            lo = max(start - base, 0)
            hi = min(end - base, count)
            if lo == 0 and hi == count:
                out.extend(self._batch(s.offsets[i], s.lengths[i]))
            else:
                out.extend(self._batch(s.offsets[i], s.lengths[i], lo, hi))
            i += 1
        first = s.first
        if out and out[0].seq < first:
            out = out[first - out[0].seq :]
        return out

    def _latest_snapshot(self, machine_id: str, upto: int) -> Snapshot | None:
        s = self._streams.get(machine_id)
        if s is None:
            return None
        i = bisect_right(s.snap_index, upto)
        return s.snaps[s.snap_index[i - 1]][0] if i else None

    def _snapshots(self, machine_id: str) -> list[Snapshot]:
        s = self._streams.get(machine_id)
        return [] if s is None else [s.snaps[i][0] for i in s.snap_index]

    # ------------------------------------------------------------------ compaction
    @property
    def dead_bytes(self) -> int:
        """Bytes of deleted or replaced frames that ``compact()`` would drop."""
        return sum(s.dead for s in self._streams.values())

    @property
    def size(self) -> int:
        """The journal's size in bytes (up to the last good frame)."""
        return self._end

    def compact(self) -> None:
        """Rewrite the journal without deleted records, snapshots or replaced machine
        records, atomically (temp file, fsync, rename, directory fsync: D-04).

        Raises:
            ReadOnlyError: when open read-only.
            BackendError: on an I/O error (the old journal stays as it was).
        """
        with self._lock:
            self._check_write()
            self._rewrite(keep_damaged=False)

    def _live_frames(self) -> list[bytes]:
        chunks = [fr.HEADER]

        def raw(offset: int, length: int) -> bytes:
            return os.pread(self._fd, length + fr.FRAME_HEAD_SIZE, offset)

        for mid in sorted(self._streams):
            s = self._streams[mid]
            chunks.append(fr.encode_machine_frame(s.record))
            if s.first > 0:
                # Keeps ``highest`` (J-04) and hides the deleted head of a partial batch.
                chunks.append(fr.encode_delete(mid, s.first - 1))
            for i in s.live_batches():
                chunks.append(raw(s.offsets[i], s.lengths[i]))
            for index in s.snap_index:
                sn = s.snaps[index][0]
                chunks.append(fr.encode_snapshot(mid, sn.index, sn.clocks, sn.time, sn.mach_tick))
        return chunks

    def _rewrite(self, *, keep_damaged: bool) -> None:
        path = self.path
        chunks = self._live_frames()
        try:
            if keep_damaged:
                damaged = f"{path}.damaged"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(damaged)
                os.link(path, damaged)
            atomic_write(path, chunks)
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            message = f"cannot rewrite journal {path}: {exc.strerror or exc}"
            if self._replaced():
                # The new file is in place but our descriptor (and lock) is the old inode's.
                self._failed = f"{message}; reopen it to continue"
            raise BackendError(message) from None
        # The lock belongs to the old inode; take it on the new one before switching.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BackendError(f"journal {path} was taken by another writer") from None
        old, self._fd = self._fd, fd
        os.close(old)
        self._streams.clear()
        self._cache_lru.clear()
        self._cached = 0
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as buf:
            result = fr.scan(buf)
            if result.bad_offset is not None:  # pragma: no cover - we just wrote it
                raise CorruptError(f"{path}: rewrite produced a bad frame at {result.bad_offset}")
            self._end = result.end
            repair, self.repair = self.repair, False
            try:
                self._index(buf, [result.frames])
            finally:
                self.repair = repair
        self._indexes.clear()

    def _replaced(self) -> bool:
        """Whether ``path`` no longer names the file this backend has open."""
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except OSError:
            return True

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1

    def _close(self) -> None:
        try:
            if not self.read_only and self._failed is None:
                pending, self._sidecar_pending = self._sidecar_pending, {}
                self._flush()
                dead = self.dead_bytes
                if dead > _COMPACT_MIN_DEAD and dead * 2 > self._end:
                    self._rewrite(keep_damaged=False)
                self._sidecar_pending = pending
                self._write_sidecar()
            elif self.read_only:
                self._write_sidecar()  # an index extended over a growing journal meanwhile
        finally:
            self._release()
