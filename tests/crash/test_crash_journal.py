"""Journal damage and crash rules: torn tails (D-02), damage in the middle (D-03), atomic
rewrites (D-04), one writer per file (D-08), and a failed write stopping the writer (J-09)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import backends
from backends import _framing as fr
from backends import journal as journal_mod
from backends.base import BackendError, CorruptError
from backends.journal import JournalBackend
from tests.crash._recorder import machine, record
from tracer.machine_time import MachineTime

ROOT = Path(__file__).resolve().parents[2]


def _build(path: Path, batches: int = 6, size: int = 3, **options: object) -> list[int]:
    """A journal with machines ``a`` and ``b``, ``a``'s batches alternating with ``b``'s.

    Returns the end offset of every frame group written by one call (one ``write()``).
    """
    b = JournalBackend(str(path), **options)  # type: ignore[arg-type]
    ends = []
    try:
        for mid in ("a", "b"):
            b.put_machine(machine(mid))
            ends.append(b.size)
        for k in range(batches):
            for mid in ("a", "b"):
                b.append(mid, [record(mid, s) for s in range(k * size, (k + 1) * size)])
                ends.append(b.size)
    finally:
        b.close()
    return ends


def _history(b: JournalBackend, mid: str) -> list[object]:
    return [r.seq for r in b.read(mid)]


# ---------------------------------------------------------------------------- D-02
def test_truncating_the_last_frame_at_every_offset_drops_exactly_it(tmp_path: Path) -> None:
    src = tmp_path / "src.amj"
    ends = _build(src, snapshot_every=0)
    data = src.read_bytes()
    start, end = ends[-2], ends[-1]  # the last frame: b's last batch
    assert end == len(data)
    for cut in range(start, end):
        path = tmp_path / f"cut{cut}.amj"
        path.write_bytes(data[:cut])
        b = JournalBackend(str(path))
        try:
            assert b.highest("a") == 17
            assert b.highest("b") == 14  # b's last batch (15..17) was torn away
            assert b.read("b") == [record("b", s) for s in range(15)]
            torn = cut - start
            assert b.recovered_tail_bytes == torn
            assert b.dropped_frames == (1 if torn else 0)
            if torn:
                assert b.recovery_message is not None
                assert f"dropped a torn last frame ({torn} bytes at offset {start})" in (
                    b.recovery_message
                )
            else:
                assert b.recovery_message is None
            # A writable open cut the file back, and appending continues cleanly.
            assert path.stat().st_size == start
            b.append("b", [record("b", s) for s in range(15, 18)])
        finally:
            b.close()
        again = JournalBackend(str(path), read_only=True)
        assert again.dropped_frames == 0
        assert again.read("b") == [record("b", s) for s in range(18)]
        again.close()


def test_flipping_any_bit_of_the_last_frame_drops_it(tmp_path: Path) -> None:
    src = tmp_path / "src.amj"
    ends = _build(src, snapshot_every=0)
    data = src.read_bytes()
    start, end = ends[-2], ends[-1]
    for pos in range(start, end):
        damaged = bytearray(data)
        damaged[pos] ^= 1 << (pos % 8)
        path = tmp_path / f"flip{pos}.amj"
        path.write_bytes(bytes(damaged))
        with JournalBackend(str(path)) as b:
            assert b.highest("b") == 14, pos
            assert b.dropped_frames == 1
            assert b.recovered_tail_bytes == end - start
            assert _history(b, "a") == list(range(18))


def test_a_torn_write_of_batch_and_snapshots_keeps_a_consistent_prefix(tmp_path: Path) -> None:
    """With snapshots, one write() holds the batch frame then its snapshot frames: a tear
    may keep the batch and lose snapshots, never the reverse."""
    src = tmp_path / "src.amj"
    ends = _build(src, snapshot_every=2)
    data = src.read_bytes()
    start, end = ends[-2], ends[-1]
    for cut in range(start, end + 1):
        path = tmp_path / f"cut{cut}.amj"
        path.write_bytes(data[:cut])
        with JournalBackend(str(path), snapshot_every=2) as b:
            highest = b.highest("b")
            assert highest in (14, 17)
            snap = b.latest_snapshot("b")
            assert snap is not None and snap.index <= highest + 1
            mt = MachineTime(3)
            for rec in b.read("b", 0, snap.index):
                mt.apply(rec)
            assert tuple(mt.clocks) == snap.clocks
            assert b.state_at("b", highest).active() == frozenset({highest % 3})


def test_read_only_open_reports_a_torn_tail_without_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.amj"
    _build(path)
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"\x30\x00\x00\x00\x01\x02")
    b = JournalBackend(str(path), read_only=True)
    assert b.dropped_frames == 1 and b.recovered_tail_bytes == 6
    assert b.highest("b") == 17
    b.close()
    assert path.stat().st_size == size + 6


def test_a_torn_header_is_an_empty_journal(tmp_path: Path) -> None:
    path = tmp_path / "x.amj"
    path.write_bytes(fr.HEADER[:5])
    with JournalBackend(str(path)) as b:
        assert b.machines() == []
        b.put_machine(machine("a"))
    with JournalBackend(str(path), read_only=True) as b:
        assert [m.id for m in b.machines()] == ["a"]


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.amj"
    path.write_bytes(b"SQLite format 3\0" + b"\0" * 100)
    with pytest.raises(CorruptError, match="not an aminspect journal"):
        JournalBackend(str(path))
    path.write_bytes(b"hello")
    with pytest.raises(CorruptError, match="not an aminspect journal"):
        backends.open(str(path))
    with pytest.raises(BackendError, match="no journal at"):
        JournalBackend(str(tmp_path / "missing.amj"), read_only=True)


# ---------------------------------------------------------------------------- D-03
@pytest.mark.parametrize("where", ["payload", "length", "crc"])
def test_damage_in_the_middle_refuses_to_open_and_names_the_offset(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / "x.amj"
    ends = _build(path)
    data = bytearray(path.read_bytes())
    bad = ends[5]  # the frame of a's batch 2 (seqs 6..8); valid frames follow
    pos = {"payload": bad + 12, "length": bad + 2, "crc": bad + 5}[where]
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))
    for read_only in (False, True):
        with pytest.raises(CorruptError, match=f"corrupt frame at byte offset {bad} ") as err:
            JournalBackend(str(path), read_only=read_only)
        assert "repair=True" in str(err.value)
        assert "\n" not in str(err.value)
    assert path.read_bytes() == bytes(data)  # refusing never writes


def test_repair_skips_the_damage_and_cuts_only_the_damaged_history(tmp_path: Path) -> None:
    path = tmp_path / "x.amj"
    ends = _build(path)
    data = bytearray(path.read_bytes())
    bad = ends[5]  # a's batch 2 (seqs 6..8)
    data[bad + 12] ^= 0xFF
    path.write_bytes(bytes(data))
    original = bytes(data)

    ro = JournalBackend(str(path), read_only=True, repair=True)
    assert _history(ro, "a") == list(range(6))  # a stops at its first missing seq
    assert _history(ro, "b") == list(range(18))  # b keeps every record
    assert ro.skipped_ranges == [(bad, ends[6] - bad)]
    assert ro.recovery_message is not None and "a" in ro.recovery_message
    ro.close()
    assert path.read_bytes() == original  # a read-only repair does not rewrite

    with JournalBackend(str(path), repair=True) as b:
        assert _history(b, "a") == list(range(6))
        assert b.read("b") == [record("b", s) for s in range(18)]
        b.append("a", [record("a", 6)])
    assert (tmp_path / "x.amj.damaged").read_bytes() == original
    with JournalBackend(str(path)) as b:  # the rewritten journal opens without repair
        assert _history(b, "a") == list(range(7))
        assert _history(b, "b") == list(range(18))
        assert b.recovery_message is None


# ---------------------------------------------------------------------------- D-04
def _state(path: Path) -> tuple[object, ...]:
    with JournalBackend(str(path), read_only=True) as b:
        return (
            b.read("a"),
            b.read("b"),
            b.highest("a"),
            b.first("a"),
            b.snapshots("a"),
            b.latest_snapshot("b"),
        )


class Crash(OSError):
    pass


@pytest.mark.parametrize("step", ["write", "fsync", "replace", "fsync_dir"])
def test_a_crash_between_rewrite_steps_leaves_the_old_journal_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    path = tmp_path / "x.amj"
    _build(path, snapshot_every=4)
    with JournalBackend(str(path), snapshot_every=4) as b:
        b.delete_upto("a", 9)
        b.delete_snapshots("b", 4)
    before = _state(path)
    old_bytes = path.read_bytes()

    def crash(*args: object, **kwargs: object) -> None:
        raise Crash(5, f"injected crash at {step}")

    b = JournalBackend(str(path), snapshot_every=4)
    target = {
        "write": (os, "write"),
        "fsync": (os, "fsync"),
        "replace": (os, "replace"),
        "fsync_dir": (journal_mod, "_fsync_dir"),
    }[step]
    with monkeypatch.context() as m:
        m.setattr(*target, crash)
        with pytest.raises(BackendError, match="cannot rewrite journal"):
            b.compact()
    b.close()
    # Old or new file, the content is the same and the old snapshots are readable.
    assert _state(path) == before
    if step != "fsync_dir":  # the rename had not happened: the old file is untouched
        assert path.read_bytes() == old_bytes
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_compaction_drops_dead_frames_and_keeps_everything_else(tmp_path: Path) -> None:
    path = tmp_path / "x.amj"
    _build(path, batches=40, snapshot_every=4)
    with JournalBackend(str(path), snapshot_every=4) as b:
        b.delete_upto("a", 100)
        b.put_machine(machine("a"))  # a replaced machine record is dead too
        before = _state(path)
        size, dead = b.size, b.dead_bytes
        assert dead > 0
        b.compact()
        assert b.size <= size - dead + 64
        assert b.highest("a") == 119 and b.first("a") == 101
    assert _state(path) == before


# ---------------------------------------------------------------------------- D-08
_HOLDER = """
import sys, backends
b = backends.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
b.close()
"""


@pytest.mark.parametrize(
    "url", ["journal:///{}/x.amj", "lmdb:///{}/x.lmdb"], ids=["journal", "lmdb"]
)
@pytest.mark.timeout(60)
def test_a_second_writer_is_refused(tmp_path: Path, url: str) -> None:
    url = url.format(tmp_path)
    first = backends.open(url)
    with pytest.raises(BackendError, match="already open for writing"):
        backends.open(url)  # same process, second backend object
    first.close()
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as holder:
        _refused_while_held(holder, url, tmp_path)
    backends.open(url).close()  # the lock went with the process


def _refused_while_held(holder: subprocess.Popen[bytes], url: str, tmp_path: Path) -> None:
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == b"ready"
        with pytest.raises(BackendError, match="already open for writing") as err:
            backends.open(url)
        assert str(tmp_path) in str(err.value)
        reader = backends.open(url, read_only=True)  # readers share with the writer
        reader.close()
        holder.stdin.write(b"done\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)


# ---------------------------------------------------------------------------- J-09
def test_a_failed_write_stops_the_writer_and_leaves_the_file_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.amj"
    _build(path)
    size = path.stat().st_size
    b = JournalBackend(str(path))

    def full(*args: object) -> int:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", full)
        with pytest.raises(BackendError, match=r"write failed \(No space left on device"):
            b.append("a", [record("a", 18)])
    with pytest.raises(BackendError, match="reopen it"):
        b.append("a", [record("a", 18)])
    b.close()
    assert path.stat().st_size == size
    with JournalBackend(str(path)) as again:
        assert again.highest("a") == 17
        again.append("a", [record("a", 18)])


# ---------------------------------------------------------------------------- durability
@pytest.mark.parametrize(("durability", "per_append"), [("full", 1), ("fast", 0)])
def test_full_syncs_every_batch_and_fast_only_on_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, per_append: int
) -> None:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    b = backends.open(f"journal:///{tmp_path / 'x.amj'}?durability={durability}")
    try:
        b.put_machine(machine("a"))
        monkeypatch.setattr(os, "fdatasync", counting)
        for k in range(5):
            b.append("a", [record("a", s) for s in range(k * 4, k * 4 + 4)])
        assert len(calls) == 5 * per_append
        b.flush()
        assert len(calls) == 5 * per_append + (1 - per_append)
    finally:
        b.close()


def test_bad_journal_options_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="repair must be true or false"):
        JournalBackend(str(tmp_path / "x.amj"), repair="yes")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="needs a file path"):
        backends.open("journal:///")
    with pytest.raises(BackendError, match="durability must be"):
        backends.open(f"journal:///{tmp_path / 'y.amj'}?durability=sometimes")
    assert not (tmp_path / "y.amj").exists() or (tmp_path / "y.amj").stat().st_size == 0
    folder = tmp_path / "dir.amj"
    folder.mkdir()
    with pytest.raises(BackendError, match=r"dir\.amj"):
        backends.open(str(folder))
