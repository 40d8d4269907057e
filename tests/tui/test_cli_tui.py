"""The TUI commands of the CLI: bad input is one line and an exit code, never a traceback.

The TUI itself is started by the Pilot tests (they build the App directly, STYLE 9);
these cover what the command line checks before it.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aminspect.cli import app

pytestmark = pytest.mark.timeout(60)


class Result:
    def __init__(self, args: tuple[str, ...]) -> None:
        result = CliRunner().invoke(app, list(args))
        self.returncode = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr


def run(*args: str) -> Result:
    return Result(args)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["open", "missing.amj"], 1, "error: no journal at missing.amj"),
        (["open", "foo://x"], 2, "error: unknown backend scheme 'foo'"),
        (["open", "notes.txt"], 2, "error: not a backend URL: 'notes.txt'"),
        (["--listen", "nonsense"], 2, "error: bad listen address 'nonsense'"),
        (["--listen", "10.1.2.3:7000"], 2, "error: refusing to listen on '10.1.2.3'"),
        (["--backend", "foo://x"], 2, "error: unknown backend scheme 'foo'"),
    ],
)
def test_bad_input_is_one_line(args, code, message):
    result = run(*args)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_help_and_version_still_work_without_starting_the_tui():
    result = run("--help")
    assert result.returncode == 0
    assert "open" in result.stdout and "--listen" in result.stdout
    result = run("open", "--help")
    assert result.returncode == 0 and "read-only" in result.stdout
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("aminspect ")


@pytest.mark.parametrize(("built", "says"), [(True, "C"), (False, "pure Python")])
def test_version_says_which_tracer_hot_path_runs(
    monkeypatch: pytest.MonkeyPatch, built: bool, says: str
) -> None:
    from tracer import _accel

    monkeypatch.setattr(_accel, "speedups", object() if built else None)
    result = run("--version")
    assert result.returncode == 0
    assert f"tracer hot path: {says}" in result.stdout.splitlines()[1]
