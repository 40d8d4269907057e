"""Backend benchmarks: asyncmachine-go's TrackMany, and a 1,000,000-record history.

Run: ``.venv/bin/python tests/bench/bench_backends.py [--records N] [--toggles N]
[--backends memory,sqlite,lmdb,journal,postgresql] [--queries Q] [--no-memory-pass]
[--pg-url URL] [--writers K] [--ingest N] [--rounds R]``; ``--records 0`` skips (b).

``postgresql`` runs against ``--pg-url`` (or ``$AMINSPECT_PG_URL``), else against a
throwaway local cluster started through ``tests/pg_server.py`` (``fsync=off``: the numbers
are the client's and the server's CPU, not a disk's; each store is a fresh schema).

(a) TrackMany, after asyncmachine-go's ``pkg/history`` test (``AssertBasics``): a 7-state
    machine, one tracked state, 50,000 toggles of one state recorded through the tracer
    into the backend, then ``activated_between`` on the tracked and an untracked state and
    ``find`` newest 25. Prints cumulative ms after the mutations, after the flush and after
    the queries, next to asyncmachine-go's published numbers (Go, same shape of work);
    with ``--rounds R`` each backend runs R times (alternating) and each column is the
    median, so one run disturbed by the load of a shared machine does not decide.
(b) 1,000,000 records of one 7-state machine appended in batches of 1000: append rate,
    reopen time, latency of each predicate (first call, which builds the query index,
    separately), ``state_at`` at random seqs, ``find`` newest 25, ``count`` of one event
    name (median of 3), bytes per record on
    disk and in memory (tracemalloc, in a separate pass so it does not slow the timings).
(c) Several writers (``--writers K``, SQLite and PostgreSQL): K processes each append
    their own machine's history into one store at once; the aggregate rate.
(d) Ingest through ``aminspect record`` (``--ingest N`` records per machine): the
    ``bench_ws`` ingest run (4 tracer connections) into SQLite and PostgreSQL.

SPEC §10 targets: predicates under 1 ms (memory) and 5 ms (SQLite) on 1,000,000 records,
``state_at`` under 5 ms, memory backend at most 150 bytes and journal at most 40 bytes on
disk per transition. These are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import backends
from backends.base import Query
from tracer import ManualMachine, attach
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

BASIC_STATES = (  # asyncmachine-go's pkg/states BasicStates (7 states)
    "Exception",
    "ErrNetwork",
    "ErrHandlerTimeout",
    "Start",
    "Ready",
    "Healthcheck",
    "Heartbeat",
)
# asyncmachine-go pkg/history README, TrackMany (50k toggles), cumulative ms:
# after mutations / after flush / after queries.
REFERENCE = {
    "memory": ("in-process", 147, 147, 148),
    "sqlite": ("GORM/SQLite", 189, 998, 999),
    "lmdb": ("bbolt", 140, 155, 155),
}
ALL = ("memory", "sqlite", "lmdb", "journal", "postgresql")

PG: dict[str, Any] = {"base": None, "server": None, "urls": {}}


def pg_base(url: str | None) -> str | None:
    """The PostgreSQL URL stores are made in: the given one, else a throwaway cluster
    (None when no server binary is installed)."""
    if PG["base"] is None:
        from tests import pg_server

        url = url or os.environ.get(pg_server.ENV_URL)
        if url is None:
            if pg_server.binaries() is None:
                return None
            PG["server"] = pg_server.start()
            url = PG["server"].local_url
        PG["base"] = url
    return str(PG["base"])


def url_for(name: str, folder: Path) -> str:
    if name == "postgresql":
        from tests import pg_server

        urls: dict[Path, str] = PG["urls"]
        if folder not in urls:
            urls[folder] = pg_server.fresh_schema_url(str(PG["base"]))
        return urls[folder]
    return {
        "memory": "memory://",
        "sqlite": f"sqlite:///{folder / 'h.db'}",
        "lmdb": f"lmdb:///{folder / 'h.lmdb'}",
        "journal": f"journal:///{folder / 'h.amj'}",
    }[name]


def clean(name: str, folder: Path) -> None:
    """Remove a store (its folder, and its schema for PostgreSQL)."""
    shutil.rmtree(folder)
    url = PG["urls"].pop(folder, None)
    if url is not None:
        import psycopg

        from backends.postgres import split_url

        conninfo, options = split_url(url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{options["schema"]}" CASCADE')


def disk_bytes(name: str, folder: Path) -> int:
    if name == "memory":
        return 0
    if name == "postgresql":  # tables, their indexes and TOAST
        import psycopg

        from backends.postgres import split_url

        conninfo, options = split_url(url_for(name, folder))
        with psycopg.connect(conninfo) as conn:
            row = conn.execute(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r'",
                (options["schema"],),
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0
    total = 0
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.endswith((".lock", "-shm")) and p.name != "lock.mdb":
            total += p.stat().st_size
    return total


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)))


# --------------------------------------------------------------------------- (a)
def track_many(name: str, folder: Path, toggles: int) -> list[str]:
    backend = backends.open(url_for(name, folder), tracked_states=["Start"])
    machine = ManualMachine(BASIC_STATES)
    gc.collect()
    start_ns = time.time_ns()
    t0 = time.perf_counter()
    handle = attach(machine, sink=backend, name="bench")
    for _ in range(toggles):
        if machine.is_active("Start"):
            machine.remove("Start")
        else:
            machine.add("Start")
    t_mut = time.perf_counter()
    if not handle.flush(600):
        raise SystemExit(f"{name}: the tracer did not flush within 600 s")
    t_flush = time.perf_counter()
    end_ns = time.time_ns() + 1
    started = backend.activated_between("bench", "Start", start_ns, end_ns)
    ready = backend.activated_between("bench", "Ready", start_ns, end_ns)
    latest = backend.find(Query(machine_id="bench", newest_first=True, limit=25))
    t_query = time.perf_counter()
    highest = backend.highest("bench")
    ok = (
        started
        and not ready
        and len(latest) == 25
        and [r.seq for r in latest] == list(range(highest, highest - 25, -1))
        and handle.stats.dropped == 0
        and highest == toggles  # the init record plus one per toggle
    )
    handle.detach()
    backend.close()
    ref = REFERENCE.get(name)
    return [
        name,
        f"{(t_mut - t0) * 1000:.0f}",
        f"{(t_flush - t0) * 1000:.0f}",
        f"{(t_query - t0) * 1000:.0f}",
        "ok" if ok else "WRONG",
        ref[0] if ref else "-",
        "/".join(str(x) for x in ref[1:]) if ref else "-",
    ]


def median_row(runs: list[list[str]]) -> list[str]:
    """One table row of several track_many runs: each ms column's median; "ok" only
    when every run checked out."""
    first = runs[0]
    ms = [str(round(statistics.median(int(run[i]) for run in runs))) for i in (1, 2, 3)]
    ok = "ok" if all(run[4] == "ok" for run in runs) else "WRONG"
    return [first[0], *ms, ok, *first[5:]]


# --------------------------------------------------------------------------- (b)
NAMES = ("start", "ready", "ping", "pong", "fail", "retry")


def history(n: int, batch: int, seed: int = 7) -> Iterator[list[TransitionRecord]]:
    """A realistic history: mostly accepted events moving between 7 states."""
    rnd = random.Random(seed)
    t = 1_767_323_045_000_000_000
    current = 0
    out: list[TransitionRecord] = []
    for seq in range(n):
        t += rnd.randint(1_000, 100_000)
        if seq == 0:
            rec = TransitionRecord("big", 0, Kind.INIT, "init", time=t, entered=(0,))
        elif rnd.random() < 0.02:  # a refused event
            rec = TransitionRecord(
                "big",
                seq,
                Kind.EVENT,
                rnd.choice(NAMES),
                time=t,
                accepted=False,
                duration=rnd.randint(2_000, 20_000),
            )
        else:
            nxt = rnd.randrange(6)
            nxt += nxt >= current
            rec = TransitionRecord(
                "big",
                seq,
                Kind.EVENT,
                rnd.choice(NAMES),
                time=t,
                duration=rnd.randint(3_000, 60_000),
                args={"id": seq} if rnd.random() < 0.01 else None,
                exited=(current,),
                entered=(nxt,),
            )
            current = nxt
        out.append(rec)
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def big_machine() -> MachineRecord:
    return MachineRecord("big", "manual", Schema.flat(BASIC_STATES), created=1, updated=1)


def fill(backend: Any, n: int, batch: int) -> float:
    """Append the history; seconds spent in ``append`` and ``flush`` (not generating it)."""
    backend.put_machine(big_machine())
    spent = 0.0
    for records in history(n, batch):
        t0 = time.perf_counter()
        backend.append("big", records)
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.flush()
    return spent + time.perf_counter() - t0


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and p95 latency of ``fn`` in ms."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))]


def million(name: str, folder: Path, n: int, batch: int, queries: int) -> dict[str, str]:
    url = url_for(name, folder)
    backend = backends.open(url)
    gc.collect()
    elapsed = fill(backend, n, batch)
    row: dict[str, str] = {"backend": name, "append rec/s": f"{n / elapsed:,.0f}"}
    if name != "memory":
        backend.close()
        t0 = time.perf_counter()
        backend = backends.open(url)
        row["reopen ms"] = f"{(time.perf_counter() - t0) * 1000:.0f}"
    else:
        row["reopen ms"] = "-"
    first_t = backend.read("big", 0, 1)[0].time
    last_t = backend.read("big", n - 1, n)[0].time
    rnd = random.Random(3)

    def window() -> tuple[str, int, int]:
        start = rnd.randint(first_t, last_t)
        return rnd.choice(BASIC_STATES), start, start + int(rnd.expovariate(1 / 50_000_000))

    t0 = time.perf_counter()
    backend.activated_between("big", "Start", first_t, last_t)
    row["1st query ms (index)"] = f"{(time.perf_counter() - t0) * 1000:.0f}"
    for pred in ("activated_between", "deactivated_between", "active_between", "inactive_between"):
        fn = getattr(backend, pred)

        def one(fn: Callable[..., bool] = fn) -> None:
            fn("big", *window())

        med, p95 = timed(one, queries)
        row[pred.replace("_between", "") + " ms"] = f"{med:.3f}/{p95:.3f}"
    med, p95 = timed(lambda: backend.state_at("big", rnd.randrange(n)), queries)
    row["state_at ms"] = f"{med:.3f}/{p95:.3f}"
    med, p95 = timed(
        lambda: backend.find(Query(machine_id="big", newest_first=True, limit=25)), queries
    )
    row["find newest 25 ms"] = f"{med:.3f}/{p95:.3f}"
    # A record-level filter: PostgreSQL answers it in SQL, the others decode every record.
    med, _ = timed(lambda: backend.count(Query(machine_id="big", name="ping")), 3)
    row["count by name ms"] = f"{med:.0f}"
    backend.close()
    row["disk B/rec"] = f"{disk_bytes(name, folder) / n:.1f}" if name != "memory" else "-"
    sidecar = folder / "h.amj.idx"  # the journal's persisted query index (a cache)
    if sidecar.exists():
        row["disk B/rec"] += f" ({sidecar.stat().st_size / n:.1f} index)"
    return row


def memory_pass(name: str, folder: Path, n: int, batch: int) -> str:
    """Bytes per record the backend keeps in Python memory after appending ``n`` records
    and answering one predicate (so the query index is included)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    backend = backends.open(url_for(name, folder))
    fill(backend, n, batch)
    backend.activated_between("big", "Start", 0, 2**62)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    backend.close()
    return f"{used / n:.1f}"


def writer(url: str, mid: str, n: int, batch: int) -> None:
    """Child of (c): wait for ``go`` on stdin, append ``n`` records of ``mid``, print the
    wall-clock span as JSON."""
    import json

    backend = backends.open(url)
    machine = big_machine()
    backend.put_machine(MachineRecord(mid, machine.kind, machine.schema, created=1, updated=1))
    batches = [
        [TransitionRecord(**{**_fields(r), "machine_id": mid}) for r in records]
        for records in history(n, batch)
    ]
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for records in batches:
        backend.append(mid, records)
    backend.flush()
    end = time.time()
    backend.close()
    print(json.dumps({"start": start, "end": end}), flush=True)


def _fields(r: TransitionRecord) -> dict[str, Any]:
    return {f: getattr(r, f) for f in TransitionRecord.__dataclass_fields__}


def several_writers(name: str, folder: Path, k: int, n: int, batch: int) -> list[str]:
    """(c): ``k`` processes append ``n`` records each into one store at once."""
    import json
    import subprocess

    url = url_for(name, folder)
    backends.open(url).close()  # create the store before the writers race for it
    kids = [
        subprocess.Popen(
            [sys.executable, __file__, "--writer", url, f"w{i}", str(n), str(batch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(k)
    ]
    spans = []
    try:
        for kid in kids:
            assert kid.stdout is not None and kid.stdout.readline().strip() == "ready"
        for kid in kids:
            assert kid.stdin is not None
            kid.stdin.write("go\n")
            kid.stdin.flush()
        for kid in kids:
            out, _ = kid.communicate(timeout=1800)
            if kid.returncode != 0:
                raise SystemExit(f"{name}: a writer failed")
            spans.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for kid in kids:
            if kid.poll() is None:
                kid.kill()
                kid.wait()
    seconds = max(sp["end"] for sp in spans) - min(sp["start"] for sp in spans)
    with backends.open(url, read_only=True) as b:
        ok = all(b.highest(f"w{i}") == n - 1 for i in range(k))
    return [name, str(k), f"{k * n:,}", f"{seconds:.2f}", f"{k * n / seconds:,.0f}",
            "ok" if ok else "WRONG"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--toggles", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1, help="(a): median of R runs")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--backends", default=",".join(ALL))
    parser.add_argument("--no-memory-pass", action="store_true")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL server to use")
    parser.add_argument("--writers", type=int, default=3, help="(c): processes; 0 skips")
    parser.add_argument("--ingest", type=int, default=0, help="(d): records per machine")
    parser.add_argument("--writer", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        url, mid, n, batch = args.writer
        writer(url, mid, int(n), int(batch))
        return
    names = [b for b in args.backends.split(",") if b]
    if "postgresql" in names and pg_base(args.pg_url) is None:
        print("postgresql: skipped (no --pg-url and no PostgreSQL server binary)")
        names.remove("postgresql")
    root = Path(tempfile.mkdtemp(prefix="aminspect-bench-"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, files in {root}")
    try:
        runs: dict[str, list[list[str]]] = {name: [] for name in names}
        for r in range(max(1, args.rounds)):
            for name in names:
                folder = root / f"a-{name}-{r}"
                folder.mkdir()
                runs[name].append(track_many(name, folder, args.toggles))
                clean(name, folder)
        rows = [median_row(runs[name]) for name in names]
        table(
            f"(a) TrackMany: {args.toggles:,} toggles, cumulative ms",
            ["backend", "mutations", "flush", "queries", "check", "asyncmachine-go", "ref ms"],
            rows,
        )
        results = []
        for name in names if args.records > 0 else ():
            folder = root / f"b-{name}"
            folder.mkdir()
            results.append(million(name, folder, args.records, args.batch, args.queries))
            clean(name, folder)
            if not args.no_memory_pass:
                folder.mkdir()
                results[-1]["memory B/rec"] = memory_pass(name, folder, args.records, args.batch)
                clean(name, folder)
        if results:
            header = list(results[0])
            table(
                f"(b) {args.records:,} records, batches of {args.batch}; latencies "
                f"median/p95 over {args.queries} random queries",
                header,
                [[r.get(h, "-") for h in header] for r in results],
            )
        multi = [n for n in names if n in ("sqlite", "postgresql")]
        if args.writers > 0 and multi:
            rows = []
            per = max(1, args.records // args.writers)
            for name in multi:
                folder = root / f"c-{name}"
                folder.mkdir()
                rows.append(several_writers(name, folder, args.writers, per, args.batch))
                clean(name, folder)
            table(
                f"(c) {args.writers} processes appending their own machine into one store "
                f"at once, batches of {args.batch}",
                ["backend", "writers", "records", "seconds", "rec/s", "check"],
                rows,
            )
        if args.ingest > 0 and multi:
            from tests.bench.bench_ws import bench_ingest

            print(f"\n(d) ingest through aminspect record: 4 connections x 4 machines x "
                  f"{args.ingest:,} records")  # fmt: skip
            print(f"{'backend':<10}{'records':>12}{'seconds':>10}{'records/s':>16}{'lost':>8}"
                  f"{'stored':>12}  recorder")  # fmt: skip
            for name in multi:
                folder = root / f"d-{name}"
                folder.mkdir()
                bench_ingest(url_for(name, folder), name, 4, 4, args.ingest)
                clean(name, folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if PG["server"] is not None:
            PG["server"].stop()


if __name__ == "__main__":
    main()
