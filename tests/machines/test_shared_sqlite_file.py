"""A persistent machine's tables and aminspect's SQLite history may share one file, in
either order of creation; a file of another program is still refused."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

import backends
from aminspect.machines import FSM, FSMBuilder, SQLiteTreeStore
from backends.base import BackendError


@dataclass
class New:
    name: str


@dataclass
class Done:
    id: int


def build_fsm(path: Path) -> FSM:
    return (
        FSMBuilder("jobs")
        .initial("new", New, next=["done"])
        .add_state("done", Done)
        .build(f"sqlite:///{path}")
    )


def test_history_opens_a_file_the_fsm_created(tmp_path: Path):
    path = tmp_path / "app.db"
    fsm = build_fsm(path)
    oid = fsm.insert(New("a"))
    fsm.update("new", "done", Done(oid))
    with backends.open(f"sqlite:///{path}") as history:
        assert history.machines() == []
    assert [e.type for e in build_fsm(path).events(after=0)] == ["new", "done"]


def test_history_opens_a_file_the_tree_store_created(tmp_path: Path):
    path = tmp_path / "app.db"
    SQLiteTreeStore(str(path)).close()
    with backends.open(f"sqlite:///{path}") as history:
        assert history.machines() == []


def test_a_file_of_another_program_is_still_refused(tmp_path: Path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(BackendError, match="another program"):
        backends.open(f"sqlite:///{path}")
