"""End to end on PostgreSQL: three ``aminspect record`` processes (standing in for three
hosts) write one database at once, and a second recorder of a machine is refused (D-08).

The traced apps are this module run as ``python -m tests.e2e.test_postgres_e2e ship WS
PREFIX N`` (two ManualMachines named ``PREFIX-a``/``PREFIX-b``, N records each, flush,
print the sink's last error or ``ok``). Skips only when no PostgreSQL binary exists.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import backends
from tests import pg_server
from tests.e2e.test_e2e import ROOT as ROOT_DIR
from tests.e2e.test_e2e import Recorder, env

pytestmark = [pytest.mark.timeout(120), pytest.mark.network]

HOSTS = ("h1", "h2", "h3")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh store over TCP, password in the URL (recorders must mask it)."""
    url = pg_server.fresh_schema_url(pg_server.require().url)
    try:
        yield url
    finally:
        pg_server.drop_schema(url)


def recorders(url: str, n: int) -> list[Recorder]:
    """``n`` recorders into ``url``, started at once (each takes a second to import)."""
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(Recorder, [url] * n))


def app(ws: str, prefix: str, n: int, mode: str = "") -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "tests.e2e.test_postgres_e2e", "ship", ws, prefix, str(n)]
    if mode:
        cmd.append(mode)
    return subprocess.Popen(
        cmd,
        cwd=ROOT_DIR,
        env=env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    return out.strip()


def test_three_recorders_write_one_database_at_once(pg_url: str) -> None:
    n = 300
    started = recorders(pg_url, len(HOSTS))
    try:
        apps = [app(r.url, host, n) for r, host in zip(started, HOSTS, strict=True)]
        assert [finish(a) for a in apps] == ["ok"] * len(HOSTS)
    finally:
        results = [r.stop(signal.SIGINT) for r in started]
    for code, err in results:
        assert code == 0 and f"stored {2 * n} records" in err, err
        assert pg_server.PASSWORD not in err and "***" in err
    with backends.open(pg_url, read_only=True) as b:
        ids = [m.id for m in b.machines()]
        assert ids == sorted(f"{h}-{x}" for h in HOSTS for x in "ab")
        for mid in ids:
            recs = b.read(mid)
            # One writer per machine: contiguous, no duplicates, every record its own.
            assert [r.seq for r in recs] == list(range(n))
            assert [r.name for r in recs[1:]] == [f"{mid}:{i}" for i in range(1, n)]
            assert b.state_at(mid, n - 1).active() == frozenset({(n - 1) % 2})


def test_a_second_recorder_of_a_machine_is_refused(pg_url: str) -> None:
    first, second = recorders(pg_url, 2)
    holder = app(first.url, "same", 50, "wait")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ok"  # flushed, still attached
        intruder = finish(app(second.url, "same", 50, "refused"))
        assert "already being recorded" in intruder and "4007" in intruder, intruder
        out, err = holder.communicate("", timeout=60)  # EOF on stdin: detach and exit
        assert holder.returncode == 0 and out == "", (out, err)
        # Detached: the first recorder let go of the machines, so the second takes over.
        assert finish(app(second.url, "same", 50)) == "ok"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        results = [r.stop(signal.SIGINT) for r in (first, second)]
    assert all(code == 0 for code, _ in results), results
    with backends.open(pg_url, read_only=True) as b:
        for mid in ("same-a", "same-b"):
            recs = b.read(mid)
            assert [r.seq for r in recs] == list(range(len(recs)))
            assert len(recs) > 50 and recs[50].kind in ("init", "restore"), recs[50]


# -- the traced app -------------------------------------------------------------------------


def ship(ws: str, prefix: str, n: int, mode: str) -> None:
    import tracer
    from tracer.ws_sink import sink_for_url

    handles = []
    machines = []
    for x in "ab":
        m = tracer.ManualMachine(["even", "odd"], initial=["even"])
        handles.append(tracer.attach(m, url=ws, name=f"{prefix}-{x}"))
        machines.append((m, f"{prefix}-{x}"))
    for i in range(1, n):
        for m, mid in machines:
            m.set("odd" if i % 2 else "even", name=f"{mid}:{i}")
    if mode == "refused":
        # A refused machine's records are never acknowledged: wait for the error instead
        # (the recorder retries the claim for claim_wait = 1 s before refusing).
        deadline = time.monotonic() + 30
        while sink_for_url(ws).last_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        for h in handles:
            assert h.flush(30), h.stats
    error = sink_for_url(ws).last_error
    print(error or "ok", flush=True)
    if mode == "wait":
        sys.stdin.read()  # hold the machines until the test closes stdin
    for h in handles:
        h.detach()


if __name__ == "__main__":
    ship(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "")
