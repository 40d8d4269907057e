"""Child process of the crash tests: records deterministic histories into a backend URL.

Usage: ``python -m tests.crash._recorder URL DURABILITY SEED``. After each ``append``
returns it prints ``MACHINE HIGHEST`` and flushes stdout, so every printed line is an
acknowledged append. It stops by itself after 60 s in case the test died.
"""

from __future__ import annotations

import random
import sys
import time

import backends
from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

MACHINES = ("a", "b")
STATES = ("A", "B", "C")
MAX_BATCH = 40


def machine(mid: str) -> MachineRecord:
    return MachineRecord(mid, "manual", Schema.flat(STATES), created=1, updated=1)


def record(mid: str, seq: int) -> TransitionRecord:
    """Record ``seq`` of ``mid``: after it, state ``seq % 3`` is the only active one."""
    t = 1_767_323_045_000_000_000 + seq * 1_000_003
    if seq == 0:
        return TransitionRecord(mid, 0, Kind.INIT, "init", time=t, entered=(0,))
    return TransitionRecord(
        mid,
        seq,
        Kind.EVENT,
        ("go", "next", "retry")[seq % 3],
        time=t,
        duration=1_000 + seq % 977,
        args={"n": seq, "pad": "x" * (seq % 17)} if seq % 5 == 0 else None,
        exited=((seq - 1) % 3,),
        entered=(seq % 3,),
    )


def main() -> None:
    url, durability, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rnd = random.Random(seed)
    backend = backends.open(url, durability=durability, snapshot_every=16)
    nxt = {}
    for mid in MACHINES:
        nxt[mid] = backend.register(machine(mid))
    deadline = time.monotonic() + 60
    out = sys.stdout
    while time.monotonic() < deadline:
        mid = rnd.choice(MACHINES)
        n = rnd.randint(1, MAX_BATCH)
        start = nxt[mid]
        backend.append(mid, [record(mid, s) for s in range(start, start + n)])
        nxt[mid] = start + n
        out.write(f"{mid} {start + n - 1}\n")
        out.flush()
    backend.close()


if __name__ == "__main__":
    main()
