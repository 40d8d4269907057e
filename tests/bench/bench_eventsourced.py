"""Event-sourced objects: persist rate and recovery time per backend (prints a table).

Run: ``.venv/bin/python tests/bench/bench_eventsourced.py [--events N] [--runs R]``

Persist: N single-event ``persist`` calls of a counter (each one atomic append, durable
in ``durability=full``). Recover: opening the object on a stream of N events, with no
snapshot and with a snapshot every 100 events. Medians of R runs, runs of the variants
interleaved. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from aminspect.machines.es_store import Provider
from aminspect.machines.eventsourced import EventSourced, IntervalStrategy

URLS = {
    "memory": lambda d: "memory://",
    "sqlite full": lambda d: f"sqlite:///{d / 'b.db'}",
    "sqlite fast": lambda d: f"sqlite:///{d / 'b.db'}?durability=fast",
    "journal full": lambda d: f"journal:///{d / 'b.amj'}",
    "lmdb full": lambda d: f"lmdb:///{d / 'b.lmdb'}",
}


def add(state: int, event: dict[str, int]) -> int:
    return state + event["n"]


def one_run(name: str, events: int) -> tuple[float, float, float]:
    folder = Path(tempfile.mkdtemp(prefix="es-bench-"))
    try:
        provider = Provider(URLS[name](folder))
        for stream, every in (("plain", 0), ("snap", 100)):
            obj = EventSourced(
                stream, provider, initial=0, apply=add, strategy=IntervalStrategy(every)
            )
            t0 = time.perf_counter()
            for _ in range(events):
                obj.persist({"n": 1})
            if stream == "plain":
                persist = events / (time.perf_counter() - t0)
            obj.close()
        times = []
        for stream in ("plain", "snap"):
            t0 = time.perf_counter()
            again = EventSourced(stream, provider, initial=0, apply=add, lifecycle=False)
            times.append((time.perf_counter() - t0) * 1000)
            assert again.state == events
            again.close()
        provider.close()
        return persist, times[0], times[1]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in URLS}
    for _ in range(opts.runs):
        for name in URLS:
            results[name].append(one_run(name, opts.events))
    print(f"{opts.events} events, median of {opts.runs} runs")
    print(f"{'backend':<14}{'persist/s':>11}{'recover ms':>12}{'w/ snaps ms':>13}")
    for name, rows in results.items():
        p, r, s = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"{name:<14}{p:>11.0f}{r:>12.1f}{s:>13.1f}")


if __name__ == "__main__":
    main()
