"""A traced app for the end-to-end tests (run as ``python -m tests.e2e.app MODE ...``).

- ``ship URL N``: trace a 2-model ring, the order and the quest to an aminspect server
  at URL, run N incs on each ring model, flush, print ``done``.
- ``crash JOURNAL``: trace the same machines straight into a journal and inc the ring
  forever, printing ``flushed K`` after each flush (the test kills it with SIGKILL).
- ``resume JOURNAL N``: resurrect every machine from the journal, carry on (N incs per
  ring model, the order ships, the quest resumes through its history state), print the
  final states as JSON.
"""

from __future__ import annotations

import json
import sys

import backends
import tracer
from aminspect.resurrect import resurrect
from tests.e2e.machines import Quest, make_order, make_ring


def build():
    return make_ring(2), make_order(), Quest()


def prologue(order, quest) -> None:
    o = order.models[0]
    o.start()
    o.packed()
    o.send()
    quest.send("step")
    quest.send("turn")
    quest.send("truce")


def ship(url: str, n: int) -> None:
    ring, order, quest = build()
    handles = [
        tracer.attach(ring, url=url, name="ring"),
        tracer.attach(order, url=url, name="order"),
        tracer.attach(quest, url=url, name="quest"),
    ]
    prologue(order, quest)
    a, b = ring.models
    for i in range(n):
        a.inc()
        if i % 2:
            b.inc()
    for h in handles:
        assert h.flush(30), h.stats
    print("done", flush=True)


def crash(path: str) -> None:
    backend = backends.open(path)
    ring, order, quest = build()
    handles = [
        tracer.attach(ring, sink=backend, name="ring"),
        tracer.attach(order, sink=backend, name="order"),
        tracer.attach(quest, sink=backend, name="quest"),
    ]
    prologue(order, quest)
    a, b = ring.models
    k = 0
    while True:
        a.inc()
        if k % 3 == 0:
            b.inc()
        k += 1
        if k % 10 == 0:
            handles[0].flush(10)
            print(f"flushed {k}", flush=True)


def resume(path: str, n: int) -> None:
    backend = backends.open(path)
    ring, order, quest = build()
    results = [
        resurrect(ring, backend, ["ring", "ring-2"]),
        resurrect(order, backend, "order"),
        resurrect(quest, backend, "quest"),
    ]
    restored = {
        "ring": [m.state for m in ring.models],
        "order": order.models[0].state,
        "quest": sorted(quest.configuration_values),
        "callbacks": sum(sum(m.entered.values()) for m in ring.models + order.models),
    }
    a, b = ring.models
    for _ in range(n):
        a.inc()
        b.inc()
    order.models[0].move()
    order.models[0].pay()
    quest.send("resume")
    for r in results:
        assert r.handle is not None and r.handle.flush(30)
        r.handle.detach()
    backend.close()
    after = {
        "ring": [m.state for m in ring.models],
        "order": order.models[0].state,
        "quest": sorted(quest.configuration_values),
    }
    print(json.dumps({"restored": restored, "after": after}), flush=True)


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "ship":
        ship(argv[1], int(argv[2]))
    elif mode == "crash":
        crash(argv[1])
    elif mode == "resume":
        resume(argv[1], int(argv[2]))
    else:
        print(f"unknown mode {mode!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
