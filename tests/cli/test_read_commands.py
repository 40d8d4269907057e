"""CliRunner tests of the commands that read a recording: query, resurrect, convert,
export, stats and check. Every one leaves its source byte for byte unchanged."""

from __future__ import annotations

import json

import pytest

import backends
import tracer
from tests.cli.conftest import digest

pytestmark = pytest.mark.timeout(120)

COMMANDS = ["record", "replay", "query", "resurrect", "check", "convert", "export", "stats"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run, command):
    out = run(command, "--help").output
    assert "Usage:" in out and command in out


def records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


# -- query ----------------------------------------------------------------------------


def test_query_lists_records_readably(run, journal):
    out = run("query", journal, "-m", "ring", "--seq-start", 10).output.splitlines()
    assert len(out) == 2
    assert out[0].split()[:2] == ["ring", "10"] and "inc  -r2 +r3" in out[0]
    assert "forced" in out[1] and "set_state  -r3 +r2" in out[1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-m", "ring"], [("ring", s) for s in range(12)]),
        (["-m", "ring", "--seq-start", "3", "--seq-end", "5"], [("ring", 3), ("ring", 4)]),
        (["-m", "ring-2", "--kind", "init"], [("ring-2", 0)]),
        (["--kind", "forced"], [("ring", 11)]),
        (["-m", "ring", "--name", "inc", "--entered", "r3"], [("ring", 3), ("ring", 10)]),
        (["-m", "ring", "--exited", "r6"], [("ring", 7)]),
        (["-m", "ring", "--active", "r2", "--kind", "forced"], [("ring", 11)]),
        (["-m", "ring-2", "--inactive", "r0", "--limit", "2"], [("ring-2", 1), ("ring-2", 2)]),
        (["--rejected"], [("order", 5)]),
        (["--errors"], [("order", 5)]),
        (
            ["-m", "order", "--no-errors", "--accepted", "--newest-first", "--limit", "2"],
            [("order", 4), ("order", 3)],
        ),
        (["-m", "quest", "--entered", "peace"], [("quest", 3)]),
        (["-m", "order", "--active", "ship_bill_paid"], [("order", 4), ("order", 5)]),
    ],
)
def test_query_filters(run, session_journal, args, expected):
    before = digest(session_journal)
    out = run("query", session_journal, "--json", *args).output
    assert [(r["machine_id"], r["seq"]) for r in records(out)] == expected
    assert digest(session_journal) == before


def test_query_time_range_and_count(run, session_journal):
    with backends.open(str(session_journal), read_only=True) as b:
        recs = b.read("ring")
    since, until = recs[2].time, recs[5].time
    out = run(
        "query", session_journal, "-m", "ring", "--since", since, "--until", until, "--json"
    ).output
    assert [r["seq"] for r in records(out)] == [2, 3, 4]
    assert (
        run(
            "query", session_journal, "-m", "ring", "--since", since, "--until", until, "--count"
        ).output.strip()
        == "3"
    )
    iso = "2000-01-01T00:00:00Z"
    assert run("query", session_journal, "--since", iso, "--count").output.strip() == "26"
    assert (
        run("query", session_journal, "--until", iso, "--count", "--json").output.count(
            '"count": 0'
        )
        == 1
    )


@pytest.mark.parametrize(
    ("predicate", "state", "until", "answer"),
    [
        ("activated", "r6", None, "true"),
        ("deactivated", "r0", None, "true"),
        ("active", "r2", None, "true"),
        ("inactive", "r0", None, "true"),
        ("activated", "r4", 4, "false"),  # entered by seq 4: --until is exclusive
        ("active", "r4", 4, "false"),
        ("inactive", "r1", 2, "false"),  # r1 is active over the whole window
        ("deactivated", "r2", 3, "false"),
    ],
)
def test_query_predicates(run, session_journal, predicate, state, until, answer):
    with backends.open(str(session_journal), read_only=True) as b:
        recs = b.read("ring")
    args = ["--since", recs[1].time]
    if until is not None:
        args += ["--until", recs[until].time]
    out = run(
        "query", session_journal, "-m", "ring", "--predicate", predicate, "--state", state, *args
    ).output
    assert out.strip() == answer


def test_query_state_at(run, session_journal):
    assert run("query", session_journal, "-m", "order", "--state-at", 3).output.strip() == (
        "ship, ship_carrier, ship_carrier_wait, ship_bill, ship_bill_due"
    )
    data = json.loads(
        run("query", session_journal, "-m", "ring", "--state-at", 11, "--json").output
    )
    assert data["active"] == ["r2"] and data["clocks"]["r2"] == 5


# -- resurrect -------------------------------------------------------------------------


def test_resurrect_prints_the_restored_state(run, journal):
    before = digest(journal)
    out = run("resurrect", journal, "--machine", "quest").output
    assert "active    peace" in out and "history   left: y" in out
    assert "mach_tick 0 (a resurrection makes it 1)" in out
    data = json.loads(run("resurrect", journal, "-m", "order", "--seq", 2, "--json").output)
    assert data["seq"] == 2 and data["leaves"] == ["work_pack"] and data["next_mach_tick"] == 1
    assert digest(journal) == before


# -- convert ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["copy.amj", "sqlite:///{d}/copy.db", "lmdb:///{d}/copy.lmdb"])
def test_convert_to_every_file_backend_is_exact(run, journal, tmp_path, target):
    before = digest(journal)
    dst = target.format(d=tmp_path) if "://" in target else str(tmp_path / target)
    out = run("convert", journal, dst).output
    assert "copied 4 machines, 26 records" in out
    assert digest(journal) == before
    a = run("export", journal, "-f", "jsonl").output
    b = run("export", dst, "-f", "jsonl").output
    assert a == b
    again = json.loads(run("convert", journal, dst, "--json").output)
    assert again["records"] == 0  # idempotent (D-07)
    assert run("export", dst, "-f", "jsonl").output == a


def test_convert_says_where_a_relative_url_wrote(run, journal, tmp_path, monkeypatch):
    # lmdb:///x is x under the working directory (lmdb:////x is /x): say which.
    monkeypatch.chdir(tmp_path)
    out = run("convert", journal, "lmdb:///tmp/copy.lmdb").output
    where = tmp_path / "tmp" / "copy.lmdb"
    assert out.strip().endswith(f"to lmdb:///tmp/copy.lmdb ({where})")
    assert (where / "data.mdb").exists()
    out = run("convert", journal, "plain.amj").output
    assert out.strip().endswith("to plain.amj")  # a path says where it is itself


def test_convert_selected_machines(run, journal, tmp_path):
    dst = tmp_path / "one.amj"
    run("convert", journal, dst, "-m", "quest")
    with backends.open(str(dst), read_only=True) as b:
        assert [m.id for m in b.machines()] == ["quest"] and b.highest("quest") == 3


# -- export ----------------------------------------------------------------------------


def test_export_formats(run, journal, tmp_path):
    before = digest(journal)
    lines = records(run("export", journal, "--format", "jsonl").output)
    assert sum(1 for line in lines if line["type"] == "machine") == 4
    assert sum(1 for line in lines if line["type"] == "record") == 26
    mermaid = run("export", journal, "-f", "mermaid", "-m", "ring").output
    assert mermaid.startswith("stateDiagram-v2")
    assert "s0 --> s1 : inc (2)" in mermaid  # r0 -> r1 twice over 10 incs
    assert 'state "r2 (3)" as s2' in mermaid  # entered by 2 incs and the forced write
    assert "s3 --> s2 : set_state (1) (observed)" in mermaid
    dot = tmp_path / "ring.dot"
    run("export", journal, "-f", "dot", "-m", "ring", "-o", dot)
    assert dot.read_text().startswith('digraph "ring"')
    assert digest(journal) == before


# -- stats -----------------------------------------------------------------------------


def test_stats(run, journal):
    before = digest(journal)
    out = run("stats", journal).output
    # the refused start is rejected, not an error (as in the TUI)
    assert "machines  4   records 26   errors 0   rejected 1" in out
    assert "ring (transitions, mach_tick 0): 12 records, seqs 0..11, 0 errors" in out
    data = json.loads(run("stats", journal, "--json", "-m", "ring").output)
    ring = data["machines"][0]
    assert ring["kinds"] == {"event": 10, "init": 1, "forced": 1}
    assert ring["busiest_events"] == [["inc", 10]]
    assert ring["busiest_states"][0] == ["r1", 2] or ring["busiest_states"][0][1] >= 2
    assert ring["durations_us"]["count"] == 10 and ring["durations_us"]["max"] > 0
    assert data["totals"]["last_time"] >= data["totals"]["first_time"]
    assert digest(journal) == before


# -- check (divergence) ----------------------------------------------------------------


def test_check_agrees_and_diverges(run, journal):
    before = digest(journal)
    out = run("check", journal, "-m", "ring", "-d", "tests.e2e.machines:make_ring").output
    assert out.strip() == "ring: ok (12 records, 10 events)"
    bad = run("check", journal, "-m", "ring", "-d", "tests.e2e.machines:make_ring_changed", code=1)
    assert "ring: DIVERGES: ring seq 4: event 'inc' in r3 now goes to r5" in bad.output
    data = json.loads(
        run(
            "check",
            journal,
            "-m",
            "ring",
            "--json",
            "-d",
            "tests.e2e.machines:make_ring_renamed",
            code=1,
        ).output
    )
    assert data["ok"] is False
    assert data["machines"][0]["divergence"]["reason"] == "missing-state"
    quest = run("check", journal, "-m", "quest", "-d", "tests.e2e.machines:Quest").output
    assert "quest: ok" in quest
    assert digest(journal) == before


@pytest.mark.parametrize("scheme", ["sqlite", "lmdb"])
def test_sqlite_and_lmdb_sources_are_left_unchanged(run, journal, tmp_path, scheme):
    """The stored data is byte for byte the same. (SQLite's WAL mode creates empty
    ``-wal``/``-shm`` side files on a read-only open and LMDB's ``lock.mdb`` is its
    reader table: neither holds data.)"""
    store = tmp_path / "store"
    store.mkdir()
    if scheme == "sqlite":
        url, data = f"sqlite:///{store}/s.db", store / "s.db"
    else:
        url, data = f"lmdb:///{store}/s.lmdb", store / "s.lmdb" / "data.mdb"
    run("convert", journal, url)
    before = digest(data)
    run("query", url, "-m", "ring", "--entered", "r3", "--json")
    run("stats", url, "--json")
    run("export", url, "-f", "dot")
    run("resurrect", url, "-m", "order")
    run("check", url, "-m", "ring", "-d", "tests.e2e.machines:make_ring")
    assert digest(data) == before


def test_stats_counts_errors_apart_from_refusals(run, tmp_path):
    path = tmp_path / "errors.amj"
    machine = tracer.ManualMachine(["idle", "busy"], initial=["idle"])
    with backends.open(str(path)) as backend:
        handle = tracer.attach(machine, sink=backend, name="m")
        machine.event("start", ["idle"], ["busy"], error=("ValueError", "boom"))
        machine.event("start", accepted=False, error=("MachineError", "can't trigger"))
        machine.event("stop", accepted=False)
        handle.flush(5)
        handle.detach()
    data = json.loads(run("stats", path, "--json").output)["machines"][0]
    assert (data["records"], data["errors"], data["rejected"]) == (4, 1, 2)
    assert (
        "m (manual, mach_tick 0): 4 records, seqs 0..3, 1 error, 2 rejected"
        in run("stats", path).output
    )
