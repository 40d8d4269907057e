"""End to end, with real processes: ``aminspect record`` fed by a traced app, ``replay``
into a second recorder, and an app killed with SIGKILL that resurrects and carries on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import backends
from aminspect.export import machine_to_json, record_to_json
from tracer import MachineTime
from tracer.records import Kind

pytestmark = [pytest.mark.timeout(120), pytest.mark.network]

ROOT = Path(__file__).resolve().parents[2]
AMINSPECT = [sys.executable, "-c", "from aminspect.cli import main; main()"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("AMINSPECT_URL", None)
    return e


class Recorder:
    """``aminspect record`` in a subprocess, on a free loopback port."""

    def __init__(self, to: str) -> None:
        self.proc = subprocess.Popen(
            [*AMINSPECT, "record", "--listen", "127.0.0.1:0", "--to", to],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on ws://"), (line, self.stop(signal.SIGKILL))
        self.url = line.split()[-1]

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        return self.proc.returncode, err


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done


def dump(url: str) -> list[dict]:
    """Every machine and record of a store, as the JSON export has them."""
    out = []
    with backends.open(url, read_only=True) as b:
        for m in b.machines():
            out.append(machine_to_json(m))
            out.extend(record_to_json(r, m.schema) for r in b.read(m.id))
    return out


@pytest.mark.parametrize("scheme", ["journal", "sqlite", "lmdb"])
def test_record_then_replay_into_a_second_recorder_is_identical(tmp_path, scheme):
    first = {
        "journal": str(tmp_path / "first.amj"),
        "sqlite": f"sqlite:///{tmp_path}/first.db",
        "lmdb": f"lmdb:///{tmp_path}/first.lmdb",
    }[scheme]
    rec1 = Recorder(first)
    run(sys.executable, "-m", "tests.e2e.app", "ship", rec1.url, "40")
    code, err = rec1.stop(signal.SIGINT)
    assert code == 0 and "stored 70 records" in err  # 4 init, 6 prologue, 40 + 20 incs
    recorded = dump(first)
    kinds = [r["kind"] for r in recorded if r["type"] == "record"]
    assert kinds.count("init") == 4 and kinds.count("event") == 6 + 40 + 20

    second = str(tmp_path / "second.amj")
    rec2 = Recorder(second)
    out = run(*AMINSPECT, "replay", first, "--to", rec2.url, "--as-fast-as-possible").stdout
    assert "replayed 70 records of 4 machines" in out
    code, err = rec2.stop(signal.SIGTERM)
    assert code == 0 and "stored 70 records" in err
    assert dump(second) == recorded


def check_story(b, machine_id: str) -> list:
    """One continuous history: contiguous seqs, every record applies strictly, exactly
    one restore whose configuration is the one the history had reached."""
    records = b.read(machine_id)
    assert [r.seq for r in records] == list(range(len(records)))
    restores = [r for r in records if r.kind == Kind.RESTORE]
    assert len(restores) == 1
    mt = MachineTime.for_schema(b.get_machine(machine_id).schema)
    for rec in records:
        if rec.kind == Kind.RESTORE:
            assert frozenset(rec.entered) == mt.active()
        mt.apply(rec)
        assert rec.mach_tick == (1 if rec.seq >= restores[0].seq else 0)
    assert b.get_machine(machine_id).mach_tick == 1
    return records


def test_killed_app_resurrects_from_its_journal_and_carries_on(tmp_path):
    journal = tmp_path / "app.amj"
    app = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.app", "crash", str(journal)],
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert app.stdout is not None
    try:
        for line in app.stdout:
            if line.startswith("flushed") and int(line.split()[1]) >= 60:
                break
        app.send_signal(signal.SIGKILL)  # mid-run: it keeps inc'ing until killed
    finally:
        app.kill()
        app.wait(30)
        app.stdout.close()
    assert app.returncode == -signal.SIGKILL

    with backends.open(str(journal), read_only=True) as b:
        incs_before = {
            mid: sum(1 for r in b.read(mid) if r.name == "inc") for mid in ("ring", "ring-2")
        }
    assert incs_before["ring"] >= 60

    out = run(sys.executable, "-m", "tests.e2e.app", "resume", str(journal), "5").stdout
    result = json.loads(out)
    restored, after = result["restored"], result["after"]
    assert restored["callbacks"] == 0  # no entry callback ran while restoring
    # counters: the ring's state is its inc count mod 7, before and after the restart
    assert restored["ring"] == [f"r{incs_before[m] % 7}" for m in ("ring", "ring-2")]
    assert after["ring"] == [f"r{(incs_before[m] + 5) % 7}" for m in ("ring", "ring-2")]
    assert restored["order"] == ["ship_carrier_wait", "ship_bill_due"]
    assert after["order"] == ["ship_carrier_moving", "ship_bill_paid"]
    assert restored["quest"] == ["peace"]
    assert after["quest"] == ["left", "right", "u", "war", "y"]  # history state: y

    with backends.open(str(journal), read_only=True) as b:
        for mid in ("ring", "ring-2"):
            records = check_story(b, mid)
            assert sum(1 for r in records if r.name == "inc") == incs_before[mid] + 5
        assert [r.name for r in check_story(b, "order")[-3:]] == ["restore", "move", "pay"]
        assert [r.name for r in check_story(b, "quest")[-2:]] == ["restore", "resume"]


def test_progress_bar_on_a_terminal_and_quiet_when_piped(tmp_path):
    """Long work shows a rich progress bar on a terminal, nothing when piped."""
    import pty

    journal = tmp_path / "p.amj"
    with backends.open(str(journal)) as b:
        from tracer import ManualMachine, attach

        m = ManualMachine(["a", "b"], initial=["a"])
        h = attach(m, sink=b, name="m")
        for _ in range(1000):
            m.set("b")
            m.set("a")
        assert h.flush(30)
        h.detach()
    dst = tmp_path / "copy.db"
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [*AMINSPECT, "convert", str(journal), f"sqlite:///{dst}?durability=fast"],
            cwd=ROOT,
            env={**env(), "TERM": "xterm", "COLUMNS": "80"},
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=60,
        )
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    on_terminal = b"".join(chunks).decode(errors="replace")
    assert "converting" in on_terminal and "\x1b[" in on_terminal
    again = f"sqlite:///{tmp_path}/again.db?durability=fast"
    piped = run(*AMINSPECT, "convert", str(journal), again)
    assert piped.stderr == "" and piped.stdout.startswith("copied 1 machine, 2001 records")
