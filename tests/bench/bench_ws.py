"""WebSocket benchmarks: tracer overhead over the wire, and server ingest rate.

Run: ``.venv/bin/python tests/bench/bench_ws.py [--events N] [--rounds R] [--records N]``

1. Overhead (SPEC §10 target: >= 60%): a flat ``transitions`` Machine traced into a
   ``WebSocketSink`` that ships to a recorder subprocess (``python -m aminspect.server``,
   memory backend) on loopback, against the same loop on an untraced machine; rounds
   alternate. "loop" times only the app's loop; "loop+flush" also waits until the server
   acknowledged every record.
2. Ingest (targets: journal >= 200,000/s, SQLite >= 100,000/s, zero loss): 4 client
   processes each open one connection, declare their machines, pre-encode their txs
   frames (so the measurement is the server's), then all send at once; the rate is records
   over the time from the first send to the last ack. The backend is reopened afterwards
   and every machine's highest seq and count checked. "server us/rec" is the recorder
   process's CPU time (user + system) over the same span per record: it moves far less
   with the box's load than the rate, so compare changes by it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def start_recorder(to: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aminspect.server", "--listen", "127.0.0.1:0", "--to", to],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"recorder did not start: {line!r}")
    return proc, line.split()[-1]


def stop_recorder(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return out.strip()


# -- 1. overhead -----------------------------------------------------------------------------


class Model:
    pass


def flat_machine() -> tuple[Any, Any]:
    from transitions import Machine

    model = Model()
    machine = Machine(
        model,
        states=["idle", "busy"],
        transitions=[["start", "idle", "busy"], ["stop", "busy", "idle"]],
        initial="idle",
    )
    return machine, model


_cpu: list[float] = []  # app-thread CPU seconds of the last loop() calls


def loop(model: Any, events: int) -> float:
    start, stop = model.start, model.stop
    gc.collect()
    c = time.thread_time()
    t = time.perf_counter()
    for _ in range(events // 2):
        start()
        stop()
    elapsed = time.perf_counter() - t
    _cpu.append(time.thread_time() - c)
    return elapsed


def bench_overhead(events: int, rounds: int) -> None:
    from tracer import attach
    from tracer.ws_sink import WebSocketSink

    proc, url = start_recorder("memory://")
    try:
        _plain_machine, plain = flat_machine()
        traced_machine, traced = flat_machine()
        sink = WebSocketSink(url)
        handle = attach(traced_machine, sink=sink, name="bench")
        loop(plain, events // 10)  # warm up both
        loop(traced, events // 10)
        handle.flush(30)
        untraced_t: list[float] = []
        traced_t: list[float] = []
        flushed_t: list[float] = []
        untraced_cpu: list[float] = []
        traced_cpu: list[float] = []
        for _ in range(rounds):
            untraced_t.append(loop(plain, events))
            untraced_cpu.append(_cpu[-1])
            t = time.perf_counter()
            traced_t.append(loop(traced, events))
            traced_cpu.append(_cpu[-1])
            ok = handle.flush(60)
            flushed_t.append(time.perf_counter() - t)
            assert ok, "records were not acknowledged within 60 s"
        stats = handle.stats
        sink.close()
    finally:
        summary = stop_recorder(proc)
    u = events / statistics.median(untraced_t)
    tr = events / statistics.median(traced_t)
    f = events / statistics.median(flushed_t)
    print(f"\nTracer overhead over WebSocket ({events:,} events x {rounds} alternating rounds)")
    print(f"{'run':<34}{'events/s':>14}{'vs untraced':>14}")
    print(f"{'untraced':<34}{u:>14,.0f}{'100.0%':>14}")
    print(f"{'traced, loop':<34}{tr:>14,.0f}{tr / u:>14.1%}")
    print(f"{'traced, loop+flush (acked)':<34}{f:>14,.0f}{f / u:>14.1%}")
    # CPU of the app thread alone: what tracing costs the app, without the time it waits
    # for a core (2 CPUs shared with the recorder) or for the GIL (sender threads).
    uc = events / statistics.median(untraced_cpu)
    tc = events / statistics.median(traced_cpu)
    print(f"{'traced, app-thread CPU only':<34}{tc:>14,.0f}{tc / uc:>14.1%}")
    print(f"target: traced loop >= 60% of untraced -> {'MET' if tr / u >= 0.6 else 'NOT MET'}")
    print(f"tracer stats: {stats}; recorder: {summary}")


# -- 2. ingest -------------------------------------------------------------------------------


async def client_main(url: str, tag: int, machines: int, records: int, batch: int) -> None:
    """One tracer connection: declare, pre-encode, wait for 'go', send everything."""
    import msgpack
    from websockets.asyncio.client import connect

    from tracer.protocol import encode_hello, encode_machine, encode_txs
    from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

    schema = Schema.flat(["idle", "busy", "done"], initial="idle")
    ids = [f"c{tag}-m{k}" for k in range(machines)]
    now = time.time_ns()
    frames: list[bytes] = []
    for mid in ids:
        recs = [
            TransitionRecord(
                mid,
                s,
                Kind.EVENT,
                "go",
                0,
                now + s * 1000,
                2500,
                None,
                True,
                None,
                (s % 3,),
                ((s + 1) % 3,),
            )
            for s in range(records)
        ]
        frames.extend(encode_txs(mid, recs[i : i + batch]) for i in range(0, records, batch))
    # interleave machines like a real multi-machine app
    per = len(frames) // machines
    frames = [frames[k * per + i] for i in range(per) for k in range(machines)]
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(encode_hello(f"bench-{tag}", "localhost", os.getpid(), None, ids))
        msgpack.unpackb(await ws.recv())
        for mid in ids:
            await ws.send(encode_machine(MachineRecord(mid, "manual", schema)))
            msgpack.unpackb(await ws.recv())
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        highest = dict.fromkeys(ids, -1)

        async def acks() -> None:
            while min(highest.values()) < records - 1:
                msg = msgpack.unpackb(await ws.recv())
                if msg[0] != "ack":
                    raise SystemExit(f"server error: {msg}")
                highest.update(msg[1])

        start = time.time()
        reader = asyncio.create_task(acks())
        for frame in frames:
            await ws.send(frame)
        await reader
        end = time.time()
    print(json.dumps({"start": start, "end": end}), flush=True)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_ingest(to: str, label: str, clients: int, machines: int, records: int) -> None:
    import backends

    proc, url = start_recorder(to)
    total = clients * machines * records
    kids = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--client",
                url,
                "--tag",
                str(i),
                "--machines",
                str(machines),
                "--records",
                str(records),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(clients)
    ]
    try:
        for k in kids:
            assert k.stdout is not None and k.stdout.readline().strip() == "ready"
        cpu_before = process_cpu(proc.pid)
        for k in kids:
            assert k.stdin is not None
            k.stdin.write("go\n")
            k.stdin.flush()
        spans = []
        for k in kids:
            out, _ = k.communicate(timeout=600)
            spans.append(json.loads(out.strip().splitlines()[-1]))
            assert k.returncode == 0
        cpu = process_cpu(proc.pid) - cpu_before
    finally:
        summary = stop_recorder(proc)
    seconds = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    backend = backends.open(to)
    lost = 0
    for i in range(clients):
        for k in range(machines):
            mid = f"c{i}-m{k}"
            if backend.highest(mid) != records - 1:
                lost += records - 1 - backend.highest(mid)
    count = sum(len(backend.read(f"c{i}-m0")) for i in range(clients)) * machines
    backend.close()
    rate = total / seconds
    # The recorder's CPU per record moves far less with the box's load than the rate does.
    us = cpu / total * 1e6
    print(
        f"{label:<10}{total:>12,}{seconds:>10.2f}{rate:>16,.0f}{us:>14.2f}{lost:>6}{count:>12,}"
        f"  {summary}"
    )


def bench_breakdown(records: int) -> None:
    """Where the server's time goes, per stage, in one process (no network)."""
    import backends
    from aminspect.server import tune_gc

    tune_gc()  # the recorder's garbage-collector settings (see aminspect.server.tune_gc)
    from tracer.protocol import ServerSession, encode_hello, encode_machine, encode_txs
    from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

    schema = Schema.flat(["idle", "busy", "done"], initial="idle")
    machine = MachineRecord("m", "manual", schema)
    now = time.time_ns()
    recs = [
        TransitionRecord(
            "m",
            s,
            Kind.EVENT,
            "go",
            0,
            now + s,
            2500,
            None,
            True,
            None,
            (s % 3,),
            ((s + 1) % 3,),
        )
        for s in range(records)
    ]
    t = time.perf_counter()
    frames = [encode_txs("m", recs[i : i + 2048]) for i in range(0, records, 2048)]
    encode = records / (time.perf_counter() - t)
    session = ServerSession()
    session.receive(encode_hello("b", "h", 1, None, []))
    session.welcome({})
    session.receive(encode_machine(machine))
    session.machine_ready(machine, -1)
    t = time.perf_counter()
    batches = [session.receive(f) for f in frames]
    decode = records / (time.perf_counter() - t)
    print(
        f"\nServer path per stage ({records:,} records, batches of 2048, one thread, "
        "GC tuned as in the recorder)"
    )
    print(f"{'stage':<40}{'records/s':>14}")
    print(f"{'tracer: encode txs (protocol)':<40}{encode:>14,.0f}")
    print(f"{'server: decode + validate (protocol)':<40}{decode:>14,.0f}")
    rows_session = ServerSession(rows=True)
    rows_session.receive(encode_hello("b", "h", 1, None, []))
    rows_session.welcome({})
    rows_session.receive(encode_machine(machine))
    rows_session.machine_ready(machine, -1)
    t = time.perf_counter()
    row_batches = [rows_session.receive(f) for f in frames]
    decode_rows = records / (time.perf_counter() - t)
    print(f"{'server: decode + validate, rows mode':<40}{decode_rows:>14,.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, url in (
            ("memory", "memory://"),
            ("journal", f"journal:///{tmp}/b.amj"),
            ("sqlite", f"sqlite:///{tmp}/b.db"),
        ):
            backend = backends.open(url)
            backend.put_machine(machine)
            t = time.perf_counter()
            for b in batches:
                backend.append("m", b.records)  # type: ignore[union-attr]
            rate = records / (time.perf_counter() - t)
            backend.close()
            print(f"{'server: backend.append, ' + label:<40}{rate:>14,.0f}")
            backend = backends.open(url.replace("/b.", "/r."))
            backend.put_machine(machine)
            t = time.perf_counter()
            for b in row_batches:
                backend.append_rows("m", b.first, b.rows)  # type: ignore[union-attr]
            rate = records / (time.perf_counter() - t)
            backend.close()
            print(f"{'server: backend.append_rows, ' + label:<40}{rate:>14,.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--records", type=int, default=50_000, help="per machine (ingest)")
    p.add_argument("--machines", type=int, default=4, help="per client (ingest)")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-ingest", action="store_true")
    p.add_argument("--client", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tag", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        asyncio.run(client_main(args.client, args.tag, args.machines, args.records, 2048))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    if not args.skip_overhead:
        bench_overhead(args.events, args.rounds)
    if not args.skip_ingest:
        bench_breakdown(args.records * 4)
        total = args.clients * args.machines * args.records
        print(
            f"\nIngest: {args.clients} concurrent connections x {args.machines} machines x "
            f"{args.records:,} records = {total:,}"
        )
        print(f"{'backend':<10}{'records':>12}{'seconds':>10}{'records/s':>16}"
              f"{'server us/rec':>14}{'lost':>6}{'stored':>12}  recorder")  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            bench_ingest(f"journal:///{tmp}/bench.amj", "journal", args.clients,
                         args.machines, args.records)  # fmt: skip
            bench_ingest(f"sqlite:///{tmp}/bench.db", "sqlite", args.clients,
                         args.machines, args.records)  # fmt: skip
        print("targets: journal >= 200,000/s, sqlite >= 100,000/s, zero loss")


if __name__ == "__main__":
    main()
