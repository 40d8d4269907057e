"""Write the fixed recorded journals the TUI tests and screenshots use.

Run ``python tests/data/make_journals.py`` (from the repository root) to rebuild
``tests/data/shop.amj``. The output is deterministic: fixed machine ids, fixed times
(a fixed start plus fixed steps), fixed durations and arguments. Only the tracer's
public API produces the records (ManualMachine attached to a MemorySink); their times
are then replaced by the fixed ones, so the same journal comes out on every machine.

The recording: a ``shop`` machine (flat states, manual add/remove/set) and two child
machines ``order-1`` and ``order-2`` (nested and parallel states, accepted and refused
events, an error, arguments, causes across machines).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import backends
from tracer import ManualMachine, MemorySink, StateSpec, TransitionRecord, attach
from tracer.records import MachineRecord, TransitionSpec

HERE = Path(__file__).resolve().parent
START = 1_767_323_045_000_000_000  # 2026-01-02T03:04:05Z
STEP = 1_250_000  # 1.25 ms between records of one machine

ORDER_STATES = [
    StateSpec("Idle", initial=True),
    StateSpec("Active"),
    StateSpec("Active.Picking", "Active", initial=True),
    StateSpec("Active.Packing", "Active"),
    StateSpec("Shipping", parallel=True),
    StateSpec("Shipping.Carrier", "Shipping"),
    StateSpec("Shipping.Carrier.Waiting", "Shipping.Carrier", initial=True),
    StateSpec("Shipping.Carrier.InTransit", "Shipping.Carrier"),
    StateSpec("Shipping.Billing", "Shipping"),
    StateSpec("Shipping.Billing.Unpaid", "Shipping.Billing", initial=True),
    StateSpec("Shipping.Billing.Paid", "Shipping.Billing"),
    StateSpec("Done", final=True),
    StateSpec("PaymentFailed"),
]
ORDER_TRANSITIONS = [
    TransitionSpec("Idle", "start", "Active"),
    TransitionSpec("Active.Picking", "pack", "Active.Packing"),
    TransitionSpec("Active.Packing", "ship", "Shipping"),
    TransitionSpec("Shipping.Carrier.Waiting", "depart", "Shipping.Carrier.InTransit"),
    TransitionSpec("Shipping.Billing.Unpaid", "pay", "Shipping.Billing.Paid"),
    TransitionSpec("Shipping", "deliver", "Done"),
    TransitionSpec("Shipping", "fail", "PaymentFailed"),
    TransitionSpec("Done", "reset", "Idle"),
    TransitionSpec("PaymentFailed", "reset", "Idle"),
]
SHIPPING = [
    "Shipping",
    "Shipping.Carrier",
    "Shipping.Carrier.Waiting",
    "Shipping.Billing",
    "Shipping.Billing.Unpaid",
]


def order_cycle(m: ManualMachine, n: int, fail: bool) -> None:
    """One order from Idle to Done (or PaymentFailed), with refused and failing events."""
    m.event("start", ["Idle"], ["Active", "Active.Picking"], args={"order": n}, duration=41_000)
    m.event("ship", accepted=False, duration=3_000)  # refused: not packed yet
    m.event("pack", ["Active.Picking"], ["Active.Packing"], args={"items": n % 4 + 1})
    m.event("ship", ["Active", "Active.Packing"], SHIPPING, duration=1_200_000)
    m.event("depart", ["Shipping.Carrier.Waiting"], ["Shipping.Carrier.InTransit"])
    if fail:
        m.event(
            "pay",
            accepted=False,
            error=("PaymentError", "card declined"),
            args={"amount": 12.5, "card": "****4242"},
            duration=88_000_000,
        )
        exits = ["Shipping", "Shipping.Carrier", "Shipping.Carrier.InTransit"]
        exits += ["Shipping.Billing", "Shipping.Billing.Unpaid"]
        m.event("fail", exits, ["PaymentFailed"])
        m.event("reset", ["PaymentFailed"], ["Idle"])
        return
    m.event(
        "pay",
        ["Shipping.Billing.Unpaid"],
        ["Shipping.Billing.Paid"],
        args={"amount": 12.5, "card": "****4242"},
        duration=35_500_000,
    )
    exits = ["Shipping", "Shipping.Carrier", "Shipping.Carrier.InTransit"]
    exits += ["Shipping.Billing", "Shipping.Billing.Paid"]
    m.event("deliver", exits, ["Done"], duration=5_000)
    m.event("reset", ["Done"], ["Idle"])


def record() -> tuple[list[MachineRecord], dict[str, list[TransitionRecord]]]:
    """Run the scripted machines into a MemorySink; return machines and records."""
    sink = MemorySink()
    shop = ManualMachine(["Closed", "Open", "Busy", "Exception"], initial=["Closed"])
    shop_h = attach(shop, sink=sink, name="shop")
    orders = []
    for i in (1, 2):
        m = ManualMachine(ORDER_STATES, initial=["Idle"], transitions=ORDER_TRANSITIONS)
        orders.append((m, attach(m, sink=sink, name=f"order-{i}", parent=shop_h)))
    shop.set("Open", args={"opened_by": "alice"})
    for n in range(12):
        shop.add("Busy")
        order_cycle(orders[0][0], n, fail=n % 5 == 3)
        if n % 2 == 0:
            order_cycle(orders[1][0], n, fail=n == 6)
        shop.remove("Busy")
    shop.add("Exception", name="+Exception", args={"reason": "printer jammed"})
    shop.remove("Exception")
    shop.set("Closed")
    for _, h in orders:
        h.flush(5)
        h.detach()
    shop_h.flush(5)
    shop_h.detach()
    machines = [sink.machines[mid] for mid in ("shop", "order-1", "order-2")]
    return machines, {m.id: sink.history(m.id) for m in machines}


def normalise(
    machines: list[MachineRecord], history: dict[str, list[TransitionRecord]]
) -> tuple[list[MachineRecord], dict[str, list[TransitionRecord]]]:
    """Fixed times, and causes: each order's ``start`` was caused by the shop going Busy."""
    out_m = [replace(m, created=START, updated=START, tags={"demo": "shop"}) for m in machines]
    out: dict[str, list[TransitionRecord]] = {}
    busy = [r.seq for r in history["shop"] if r.name == "+Busy"]
    for k, m in enumerate(machines):
        recs = []
        starts = 0
        for r in history[m.id]:
            fixed = replace(r, time=START + k * 400_000 + r.seq * STEP)
            if m.id != "shop" and r.name == "start":
                fixed.source = ("shop", busy[min(starts, len(busy) - 1)])
                starts += 1
            if r.name == "ship" and r.accepted and r.seq > 0:
                fixed.parent_seq = r.seq - 1  # fired from inside "pack" (nested trigger)
            recs.append(fixed)
        out[m.id] = recs
    return out_m, out


def write(
    path: Path, machines: list[MachineRecord], history: dict[str, list[TransitionRecord]]
) -> None:
    """Write a fresh journal at ``path`` (snapshots every 16 records)."""
    if path.exists():
        path.unlink()
    backend = backends.open(str(path), snapshot_every=16)
    try:
        for m in machines:
            backend.put_machine(m)
            backend.append(m.id, history[m.id])
    finally:
        backend.close()


def main() -> None:
    machines, history = normalise(*record())
    write(HERE / "shop.amj", machines, history)
    total = sum(len(v) for v in history.values())
    print(f"wrote {HERE / 'shop.amj'}: {len(machines)} machines, {total} records")


if __name__ == "__main__":
    main()
