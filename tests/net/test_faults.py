"""Faults with real processes on loopback: a killed server, a stalled server, a dead one."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

import backends
from tests.net.conftest import Proc, start_app, start_server
from tracer.records import Kind

pytestmark = [pytest.mark.network, pytest.mark.timeout(90)]


def check_history(url: str, per_machine: dict[str, int]) -> int:
    """Every machine's stored seqs are contiguous and account exactly for what was
    captured: stored records plus the records gaps stand for. Returns the gap total."""
    b = backends.open(url)
    try:
        gap_total = 0
        for mid, captured in per_machine.items():
            records = b.read(mid)
            assert [r.seq for r in records] == list(range(len(records))), mid
            gaps = [r for r in records if r.kind == Kind.GAP]
            dropped = sum(r.args["dropped"] for r in gaps)
            assert len(records) - len(gaps) + dropped == captured, (mid, len(records), dropped)
            gap_total += dropped
        return gap_total
    finally:
        b.close()


def result(app: Proc) -> dict[str, Any]:
    line = app.line(60)
    while not line.startswith("{"):
        line = app.line(60)
    out: dict[str, Any] = json.loads(line)
    assert app.wait(30) == 0
    return out


def stop(server: Proc) -> None:
    server.signal(signal.SIGTERM)
    assert server.wait(30) == 0


def test_server_killed_and_restarted(tmp_path: Path, procs: list[Proc]) -> None:
    store = f"journal:///{tmp_path}/rec.amj"
    url = start_server(procs, store)
    port = url.rsplit(":", 1)[1]
    wait_file = tmp_path / "go"
    app = start_app(
        procs, url, "--machines", "3", "--n", "6000", "--prefix", "kr",
        "--wait-file", str(wait_file), "--pace", "0.002",
    )  # fmt: skip
    assert app.line() == "ready"
    assert app.line() == "half"
    procs[0].kill()  # SIGKILL in the middle of the stream
    wait_file.touch()  # the app goes on while no server runs
    assert app.line() == "loopdone"
    server = start_server(procs, store, f"127.0.0.1:{port}")
    assert server.startswith("ws://")
    out = result(app)
    stop(procs[-1])
    assert out["flushed"] and out["reconnects"] >= 1
    dropped = check_history(store, out["per_machine"])
    assert dropped == out["dropped"]  # the gap, if any, is exact
    assert out["captured"] == 3 * 6001


def test_stalled_server_never_blocks_the_app(tmp_path: Path, procs: list[Proc]) -> None:
    store = f"journal:///{tmp_path}/rec.amj"
    url = start_server(procs, store)
    wait_file = tmp_path / "go"
    app = start_app(
        procs, url, "--n", "40000", "--prefix", "st", "--buffer", "500",
        "--retransmit", "1000", "--wait-file", str(wait_file),
    )  # fmt: skip
    assert app.line() == "ready"
    assert app.line() == "half"
    procs[0].signal(signal.SIGSTOP)  # the server stops reading and acking
    wait_file.touch()
    assert app.line() == "loopdone"  # the whole second half ran with the server stalled
    procs[0].signal(signal.SIGCONT)
    out = result(app)
    stop(procs[0])
    assert out["flushed"], out
    assert out["dropped"] > 0 and out["gaps_sent"] >= 1  # dropped oldest, and said so
    assert check_history(store, out["per_machine"]) == out["dropped"]


def test_app_exits_promptly_while_the_server_is_down(procs: list[Proc]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    # exits through the tracer's atexit flush (bounded), with records never sent
    app = start_app(procs, url, "--n", "3000", "--machines", "2", "--no-flush")
    assert app.line() == "ready"
    assert app.wait(30) == 0
    # an explicit flush gives up after its timeout and reports why
    app = start_app(procs, url, "--n", "100", "--flush", "0.5")
    assert app.line() == "ready"
    out = result(app)
    assert out["flushed"] is False
    assert "Connect" in out["last_error"] or "refused" in out["last_error"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--listen", "0.0.0.0:0"], 1, "without a token"),
        (["--to", "nope://x"], 2, "unknown backend scheme"),
        (["--listen", "host:port"], 2, "expected HOST:PORT"),
    ],
)
def test_recorder_refuses_bad_setups(args: list[str], code: int, words: str) -> None:
    import subprocess

    from tests.net.conftest import PYTHON, ROOT, env

    done = subprocess.run(
        [PYTHON, "-m", "aminspect.server", *args],
        cwd=ROOT,
        env=env(""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == code
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1
