"""The demo shop run headless into a MemorySink: within its first ~30 s of business it
shows every behaviour the demo promises a new user (errors, refused events, parallel
regions, parent/child machines, three tracer front ends)."""

from __future__ import annotations

import pytest

from aminspect.demo.shop import Shop
from aminspect.session import Outcome, outcome_of
from tracer.machine_time import MachineTime
from tracer.sinks import MemorySink

pytestmark = pytest.mark.timeout(60)

# about 30 s at the default pace (0.4 s a tick on average)
TICKS = 75


def run(seed: int, ticks: int = TICKS) -> MemorySink:
    sink = MemorySink()
    Shop(seed=seed, sink=sink).run(ticks=ticks, pace=0)
    return sink


@pytest.mark.parametrize("seed", [7, 1, 2, 3])
def test_first_half_minute_shows_errors_and_refused_events(seed: int):
    sink = run(seed)
    outcomes: dict[tuple[str, str, Outcome], int] = {}
    for mid, records in sink.records.items():
        for r in records:
            key = (mid.split("-")[0], r.name, outcome_of(r))
            outcomes[key] = outcomes.get(key, 0) + 1
    # a card declined in capture's callback: an error
    assert outcomes.get(("order", "capture", Outcome.ERROR))
    errors = [r.error for rs in sink.records.values() for r in rs if r.error]
    assert any("PaymentDeclined" in e[0] for e in errors)
    # ship before packing (transitions' MachineError) and a stray "fetched" to a worker
    # (python-statemachine's TransitionNotAllowed): refused, not errors
    assert outcomes.get(("order", "ship", Outcome.REJECTED))
    assert outcomes.get(("agent", "fetched", Outcome.REJECTED))
    refused = {r.error[0] for rs in sink.records.values() for r in rs if r.error and not r.accepted}
    assert {"MachineError", "TransitionNotAllowed"} <= refused
    # every worker works; the shop changes pace (rush / calm)
    assert all(len(sink.records[f"agent-{n}"]) > 5 for n in (1, 2, 3))
    assert {r.name for r in sink.records["shop"]} >= {"open", "close"}


def test_machines_nest_under_the_shop_and_use_three_front_ends():
    sink = run(7)
    kinds = {mid.split("-")[0]: m.kind for mid, m in sink.machines.items()}
    assert kinds == {"shop": "manual", "order": "transitions", "agent": "statemachine"}
    assert sink.machines["shop"].parent_id is None
    children = [m for mid, m in sink.machines.items() if mid != "shop"]
    assert len(children) >= 8 and all(m.parent_id == "shop" for m in children)
    # finished orders are detached (disposed); the inspector keeps their history
    assert any(mid.startswith("order-") for mid in sink.disposed)
    assert not any(mid.startswith("agent-") for mid in sink.disposed)


def test_orders_run_payment_and_shipping_in_parallel():
    sink = run(7)
    schema = sink.machines["order-1"].schema
    names = [s.name for s in schema.states]
    assert schema.states[names.index("processing")].parallel
    both = 0
    for mid, records in sink.records.items():
        if not mid.startswith("order-"):
            continue
        time = MachineTime.for_schema(sink.machines[mid].schema)
        for r in records:
            time.apply(r)
            active = {names[i] for i in time.active()}
            payment = {n for n in active if n.startswith("processing_payment_")}
            shipping = {n for n in active if n.startswith("processing_shipping_")}
            if payment and shipping:
                both += 1
                assert len(payment) == len(shipping) == 1  # one state per region
    assert both > 20


def test_same_seed_same_business():
    a, b = run(5, 30), run(5, 30)
    assert sorted(a.records) == sorted(b.records)
    for mid in a.records:
        assert [(r.name, r.accepted, r.error) for r in a.records[mid]] == [
            (r.name, r.accepted, r.error) for r in b.records[mid]
        ]


def test_a_failing_child_leaves_its_output_and_no_file():
    import tempfile
    from pathlib import Path

    from aminspect.demo.launch import DemoProcess

    before = set(Path(tempfile.gettempdir()).glob("aminspect-demo-*"))
    child = DemoProcess(pace="not-a-number")  # type: ignore[arg-type]  # argparse refuses
    child.start("ws://127.0.0.1:9")
    assert child.process is not None
    child.process.wait(30)
    assert child.stop() == 2 and child.failed
    assert "--pace" in child.output and "invalid float value" in child.output
    assert set(Path(tempfile.gettempdir()).glob("aminspect-demo-*")) == before
    never = DemoProcess()
    assert never.stop() is None and not never.failed and never.output == ""
