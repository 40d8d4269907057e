"""LMDB backend specifics: durability flags (D-06), map growth, bad input, stale readers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import backends
from backends.base import BackendError
from backends.lmdb_store import LMDBBackend
from tests.crash._recorder import machine, record

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("durability", "metasync"), [("full", True), ("fast", False)])
def test_durability_maps_to_lmdb_flags_and_never_nosync(
    tmp_path: Path, durability: str, metasync: bool
) -> None:
    b = LMDBBackend(str(tmp_path / "h"), durability=durability)
    try:
        flags = b._env.flags()
        assert flags["metasync"] is metasync
        assert flags["sync"] is True  # D-06: nosync is never enabled
        assert flags["writemap"] is False
    finally:
        b.close()


def test_the_map_grows_when_it_is_full(tmp_path: Path) -> None:
    path = tmp_path / "h"
    b = LMDBBackend(str(path), map_size=1 << 20, snapshot_every=0)
    try:
        b.put_machine(machine("a"))
        big = [record("a", s) for s in range(3000)]
        for r in big[1:]:
            r.args = "x" * 1000  # ~3 MB in all, three times the initial map
        for k in range(0, 3000, 500):
            b.append("a", big[k : k + 500])
        assert b._env.info()["map_size"] > 1 << 20
        assert b.read("a") == big
    finally:
        b.close()
    with LMDBBackend(str(path), read_only=True, map_size=1 << 20) as again:
        assert again.highest("a") == 2999


def test_bad_locations_and_options_are_one_line_errors(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(BackendError, match="is a file, not an LMDB environment"):
        LMDBBackend(str(afile))
    with pytest.raises(BackendError, match="no LMDB environment at"):
        LMDBBackend(str(tmp_path / "missing"), read_only=True)
    with pytest.raises(BackendError, match="map_size must be an integer of at least 1 MiB"):
        LMDBBackend(str(tmp_path / "h"), map_size=10)
    with pytest.raises(BackendError, match="needs a directory path"):
        backends.open("lmdb:///")
    with LMDBBackend(str(tmp_path / "h")) as b:
        with pytest.raises(BackendError, match="machine ids without NUL"):
            b.put_machine(machine("a\0b"))
        with pytest.raises(BackendError, match="machine ids without NUL"):
            b.put_machine(machine("x" * 500))


def test_machines_whose_keys_interleave_stay_separate(tmp_path: Path) -> None:
    """Keys of ``a`` sort before ``b``'s and ``ab``'s: appends to any order still land."""
    with LMDBBackend(str(tmp_path / "h")) as b:
        for mid in ("b", "ab", "a"):
            b.put_machine(machine(mid))
        for k in range(4):
            for mid in ("b", "ab", "a"):
                b.append(mid, [record(mid, s) for s in range(k * 3, k * 3 + 3)])
        for mid in ("a", "ab", "b"):
            assert b.read(mid) == [record(mid, s) for s in range(12)]
            assert b.read(mid, 5, 7) == [record(mid, 5), record(mid, 6)]


_READER = """
import sys, backends
b = backends.open(sys.argv[1], read_only=True)
with b._env.begin() as txn:
    print("reading", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.timeout(60)
def test_a_reader_killed_inside_a_transaction_does_not_block_the_writer(tmp_path: Path) -> None:
    url = f"lmdb:///{tmp_path / 'h'}"
    with backends.open(url) as b:
        b.put_machine(machine("a"))
        b.append("a", [record("a", 0)])
    with subprocess.Popen(
        [sys.executable, "-c", _READER, url],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as reader:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == b"reading"
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
    with backends.open(url) as b:
        b.append("a", [record("a", s) for s in range(1, 200)])
        assert b.highest("a") == 199
