"""Bad input gets one clear line and exit code 1 (failure) or 2 (bad usage), never a
traceback, and never changes the source."""

from __future__ import annotations

import pytest

from tests.cli.conftest import digest

pytestmark = pytest.mark.timeout(120)

READERS = [
    ["query"],
    ["stats"],
    ["export", "-f", "jsonl"],
    ["resurrect", "-m", "ring"],
    ["check", "-d", "tests.e2e.machines:make_ring"],
    ["replay", "--to", "ws://127.0.0.1:9", "--as-fast-as-possible"],
]


def source_then(cmd: list[str], source) -> list:
    return [cmd[0], source, *cmd[1:]]


@pytest.mark.parametrize("cmd", [*READERS, ["convert"]], ids=lambda c: c[0])
def test_missing_file(run, tmp_path, cmd):
    args = source_then(cmd, tmp_path / "nope.amj")
    if cmd[0] == "convert":
        args.append(tmp_path / "out.amj")
    result = run(*args, code=1)
    assert result.stderr.startswith("error: no journal at ")
    assert not (tmp_path / "out.amj").exists()


@pytest.mark.parametrize("cmd", READERS, ids=lambda c: c[0])
def test_corrupt_journal_is_refused_and_left_alone(run, journal, cmd):
    data = bytearray(journal.read_bytes())
    data[len(data) // 2] ^= 0xFF
    journal.write_bytes(bytes(data))
    before = digest(journal)
    result = run(*source_then(cmd, journal), code=1)
    assert "corrupt frame at byte offset" in result.stderr
    assert "repair" in result.stderr
    assert digest(journal) == before


def test_torn_tail_is_reported_and_the_file_kept(run, journal):
    journal.write_bytes(journal.read_bytes()[:-3])
    before = digest(journal)
    result = run("stats", journal)
    assert "warning: journal" in result.stderr and "torn last frame" in result.stderr
    total = int(result.stdout.split("records ", 1)[1].split()[0])
    assert 20 < total <= 26  # what the torn last frame held (if records) is not read
    assert digest(journal) == before


@pytest.mark.parametrize(
    "url", ["bogus://x", "notes.txt", "ftp://host/x.amj"], ids=["scheme", "no-scheme", "ftp"]
)
@pytest.mark.parametrize("cmd", [["query"], ["stats"], ["export", "-f", "dot"]], ids=str)
def test_bad_url_is_bad_usage(run, url, cmd):
    result = run(*source_then(cmd, url), code=2)
    assert "known schemes: journal, lmdb, memory, postgresql, sqlite" in result.stderr


def test_unknown_machine(run, journal):
    before = digest(journal)
    for args in (
        ["query", journal, "-m", "ghost"],
        ["resurrect", journal, "-m", "ghost"],
        ["export", journal, "-f", "mermaid", "-m", "ghost"],
        ["stats", journal, "-m", "ghost"],
        ["convert", journal, journal.parent / "o.amj", "-m", "ghost"],
        ["check", journal, "-m", "ghost", "-d", "tests.e2e.machines:make_ring"],
    ):
        result = run(*args, code=1)
        assert "ghost" in result.stderr, args
    assert (
        "machines: order, quest, ring, ring-2"
        in run("resurrect", journal, "-m", "ghost", code=1).stderr
    )
    assert digest(journal) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{j}", "-f", "svg"], "unknown format 'svg' (known: jsonl, mermaid, dot)"),
        (["query", "{j}", "--kind", "jump"], "unknown kind(s): jump"),
        (["query", "{j}", "--since", "yesterday"], "--since: not a time: 'yesterday'"),
        (["query", "{j}", "-m", "ring", "--predicate", "active"], "--predicate needs --state"),
        (
            ["query", "{j}", "-m", "ring", "--predicate", "busy", "--state", "r0"],
            "unknown predicate 'busy'",
        ),
        (["query", "{j}", "--state-at", "3"], "--predicate and --state-at need --machine"),
        (["convert", "{j}", "{j}"], "the destination is the source"),
        (["convert", "{j}", "bogus://x"], "unknown backend scheme 'bogus'"),
        (["replay", "{j}", "--to", "http://127.0.0.1:1"], "--to must be a ws:// or wss:// URL"),
        (
            ["replay", "{j}", "--to", "ws://127.0.0.1:1", "--speed", "0"],
            "--speed must be greater than 0",
        ),
        (["check", "{j}", "-d", "no_such_module_xyz:f"], "cannot import 'no_such_module_xyz'"),
        (["check", "{j}", "-d", "tests.e2e.machines"], "--definition must be MODULE:NAME"),
        (["check", "{j}", "-d", "tests.e2e.machines:RING"], "is not a machine"),
        (["record", "--listen", "nowhere", "--to", "memory://"], "bad listen address 'nowhere'"),
        (["record", "--listen", "127.0.0.1:0", "--to", "bogus://x"], "unknown backend scheme"),
        (["record", "--listen", "0.0.0.0:0", "--to", "memory://"], "without a token"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_usage_exits_2(run, journal, args, message):
    before = digest(journal)
    result = run(*[a.format(j=journal) if isinstance(a, str) else a for a in args], code=2)
    assert message in result.stderr
    assert digest(journal) == before


def test_option_errors_from_typer_are_bad_usage(run, journal):
    assert run("query", journal, "--limit", "-1", code=2).exit_code == 2
    assert run("resurrect", journal, code=2).exit_code == 2  # --machine is required


def test_bad_seq_and_unreachable_server_fail(run, journal):
    assert "no record 99" in run("resurrect", journal, "-m", "ring", "--seq", 99, code=1).stderr
    result = run("replay", journal, "--to", "ws://127.0.0.1:9", "--as-fast-as-possible", code=1)
    assert result.stderr.startswith("error: cannot reach ws://127.0.0.1:9")
