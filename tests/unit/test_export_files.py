"""Export files written from a session: every format, atomically, with clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

import backends
from aminspect import export as ex
from aminspect.export_files import EXPORT_FORMATS, default_path, write_export
from backends.base import BackendError, UnknownMachine

pytestmark = pytest.mark.timeout(60)

SHOP = Path(__file__).resolve().parents[1] / "data" / "shop.amj"


@pytest.fixture
def shop():
    backend = backends.open(str(SHOP), read_only=True)
    yield backend
    backend.close()


def test_journal_of_the_session_reopens_with_the_same_records(shop, tmp_path):
    out = tmp_path / "copy.amj"
    result = write_export(shop, "journal", out)
    assert result.machines == 3 and result.records == 29 + 97 + 49
    assert result.size == out.stat().st_size > 0
    with backends.open(str(out), read_only=True) as copy:
        assert sorted(m.id for m in copy.machines()) == ["order-1", "order-2", "shop"]
        for m in shop.machines():
            assert copy.read(m.id) == shop.read(m.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.amj"]  # no temporary left


def test_journal_of_one_machine_replaces_an_older_file(shop, tmp_path):
    out = tmp_path / "one.amj"
    out.write_bytes(b"old contents")
    (tmp_path / "one.amj.idx").write_bytes(b"stale index of the old file")
    result = write_export(shop, "journal", out, ["order-2"])
    assert result.machines == 1 and result.records == 49
    with backends.open(str(out), read_only=True) as copy:
        assert [m.id for m in copy.machines()] == ["order-2"]
        assert copy.read("order-2") == shop.read("order-2")
    assert not (tmp_path / "one.amj.idx").exists()


def test_text_formats_match_the_cli_exports(shop, tmp_path):
    jl = write_export(shop, "jsonl", tmp_path / "x.jsonl", ["order-1"])
    lines = (tmp_path / "x.jsonl").read_text().splitlines()
    assert jl.records == 97 and len(lines) == 98
    assert json.loads(lines[0])["type"] == "machine" and json.loads(lines[1])["seq"] == 0
    mer = write_export(shop, "mermaid", tmp_path / "x.mmd", ["order-1"])
    assert (tmp_path / "x.mmd").read_text() == ex.to_mermaid(ex.visits(shop, "order-1"))
    assert mer.format == "mermaid"
    write_export(shop, "dot", tmp_path / "x.dot")
    text = (tmp_path / "x.dot").read_text()
    assert text.count("digraph") == 3 and "(" in text  # visit counts on every node


def test_bad_input_is_one_clear_error_and_leaves_nothing(shop, tmp_path):
    with pytest.raises(BackendError, match="unknown export format 'png'"):
        write_export(shop, "png", tmp_path / "x.png")
    with pytest.raises(BackendError, match="is not a directory"):
        write_export(shop, "jsonl", tmp_path / "missing" / "x.jsonl")
    with pytest.raises(UnknownMachine):
        write_export(shop, "jsonl", tmp_path / "x.jsonl", ["nope"])
    with pytest.raises(BackendError, match="the file being inspected"):
        write_export(shop, "journal", SHOP)
    assert list(tmp_path.iterdir()) == []


def test_default_path_names_scope_time_and_suffix(tmp_path):
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert default_path(tmp_path, "order/1", "dot", now) == (
        tmp_path / "aminspect-order_1-20260102-030405.dot"
    )
    assert {s for s, _ in EXPORT_FORMATS.values()} == {".amj", ".jsonl", ".mmd", ".dot"}
    with pytest.raises(BackendError, match="unknown export format"):
        default_path(tmp_path, "session", "svg")
