"""A traced app for the network tests: streams ManualMachine transitions to $AMINSPECT_URL.

Prints ``ready``, optionally ``half`` (then waits for --wait-file), and at the end one
JSON line of stats. Run: python -m tests.net._app --machines 3 --n 1000 --prefix p1
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import tracer
from tracer.ws_sink import WebSocketSink


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--machines", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="transitions per machine")
    p.add_argument("--prefix", default="app")
    p.add_argument("--buffer", type=int, default=100_000, help="dispatcher buffer")
    p.add_argument("--retransmit", type=int, default=65_536)
    p.add_argument("--write-timeout", type=float, default=0.05, help="sink back-pressure wait")
    p.add_argument("--wait-file", default=None, help="after half, wait for this file")
    p.add_argument("--pace", type=float, default=0.0, help="sleep after every 100 steps")
    p.add_argument("--flush", type=float, default=20.0, help="flush timeout at the end")
    p.add_argument("--no-flush", action="store_true", help="exit right away (atexit flush)")
    args = p.parse_args()

    url = os.environ["AMINSPECT_URL"]
    sink = WebSocketSink(
        url,
        token=os.environ.get("AMINSPECT_TOKEN"),
        retransmit=args.retransmit,
        sync_timeout=2.0,
        write_timeout=args.write_timeout,
    )
    machines = []
    handles = []
    for i in range(args.machines):
        m = tracer.ManualMachine(["idle", "busy", "done"], initial=["idle"])
        h = tracer.attach(m, sink=sink, name=f"{args.prefix}-{i}", buffer_size=args.buffer)
        machines.append(m)
        handles.append(h)
    print("ready", flush=True)
    states = ("busy", "done", "idle")
    t0 = time.perf_counter()
    for step in range(args.n):
        if step == args.n // 2 and args.wait_file:
            print("half", flush=True)
            while not os.path.exists(args.wait_file):
                time.sleep(0.01)
        target = states[step % 3]
        for m in machines:
            m.set(target)
        if args.pace and step % 100 == 99:
            time.sleep(args.pace)
    loop = time.perf_counter() - t0
    print("loopdone", flush=True)
    if args.no_flush:
        stats = handles[0].stats
        print(json.dumps({"loop": loop, "captured": stats.captured}), flush=True)
        return 0
    flushed = all(h.flush(args.flush) for h in handles)
    out = {
        "loop": loop,
        "flushed": flushed,
        "captured": sum(h.stats.captured for h in handles),
        "sent": sum(h.stats.sent for h in handles),
        "dropped": sum(h.stats.dropped for h in handles),
        "per_machine": {h.machine_id: h.stats.captured for h in handles},
        "reconnects": sink.reconnects,
        "gaps_sent": sink.gaps_sent,
        "last_error": sink.last_error,
    }
    print(json.dumps(out), flush=True)
    sink.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
