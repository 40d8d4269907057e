"""The demo's machines: a shop (manual API), orders (transitions, parallel regions) and
workers (python-statemachine), with realistic timing, errors and refused events.

This is app code: it imports the tracer only, as a user's program would.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from statemachine import State, StateChart
from statemachine.exceptions import TransitionNotAllowed
from transitions import MachineError
from transitions.extensions import LockedHierarchicalMachine

import tracer
from tracer import ManualMachine, StateSpec

__all__ = ["Order", "PaymentDeclined", "Shop", "Worker"]


class PaymentDeclined(Exception):
    """The card issuer said no (the demo raises it in a callback now and then)."""


ORDER_STATES: list[Any] = [
    "new",
    {
        "name": "processing",
        "parallel": [
            {
                "name": "payment",
                "children": ["pending", "authorized", "captured", "declined"],
                "initial": "pending",
            },
            {
                "name": "shipping",
                "children": ["waiting", "packed", "shipped"],
                "initial": "waiting",
            },
        ],
    },
    "delivered",
    "cancelled",
]

ORDER_TRANSITIONS: list[dict[str, Any]] = [
    {"trigger": "place", "source": "new", "dest": "processing"},
    {
        "trigger": "authorize",
        "source": "processing_payment_pending",
        "dest": "processing_payment_authorized",
    },
    {
        "trigger": "capture",
        "source": "processing_payment_authorized",
        "dest": "processing_payment_captured",
        "before": "charge_card",
    },
    {
        "trigger": "decline",
        "source": "processing_payment_pending",
        "dest": "processing_payment_declined",
    },
    {
        "trigger": "pack",
        "source": "processing_shipping_waiting",
        "dest": "processing_shipping_packed",
        "conditions": "in_stock",
    },
    {
        "trigger": "ship",
        "source": "processing_shipping_packed",
        "dest": "processing_shipping_shipped",
    },
    {
        "trigger": "deliver",
        "source": "processing",
        "dest": "delivered",
        "conditions": "ready_to_deliver",
    },
    {"trigger": "cancel", "source": ["new", "processing"], "dest": "cancelled"},
]


class Order:
    """An order's workflow: payment and shipping run in parallel regions."""

    def __init__(self, number: int, rng: random.Random, script: set[str] | None = None) -> None:
        self.number = number
        self.rng = rng
        # events the shop makes sure happen early, each once (see Shop.script)
        self.script = script if script is not None else set()
        self.machine = LockedHierarchicalMachine(
            model=self,
            states=ORDER_STATES,
            transitions=ORDER_TRANSITIONS,
            initial="new",
            auto_transitions=False,
        )

    def charge_card(self, *args: Any, **kwargs: Any) -> None:
        if self._scripted("decline") or self.rng.random() < 0.1:
            raise PaymentDeclined(f"card declined for order {self.number}")

    def _scripted(self, event: str) -> bool:
        if event in self.script:
            self.script.discard(event)
            return True
        return False

    def in_stock(self, *args: Any, **kwargs: Any) -> bool:
        return self.rng.random() > 0.1

    def ready_to_deliver(self, *args: Any, **kwargs: Any) -> bool:
        state = self.state  # type: ignore[attr-defined]
        return isinstance(state, list) and set(state) == {
            "processing_payment_captured",
            "processing_shipping_shipped",
        }

    def step(self) -> bool:
        """Fire the next plausible event; False once the order is finished."""
        state = self.state  # type: ignore[attr-defined]
        if state in ("delivered", "cancelled"):
            return False
        if state == "new":
            self.place(items=self.rng.randint(1, 4))  # type: ignore[attr-defined]
            return True
        active = set(state) if isinstance(state, list) else {state}
        choices: list[Callable[..., Any]] = []
        if "processing_payment_pending" in active:
            choices += [self.authorize] * 4 + [self.decline]  # type: ignore[attr-defined]
        if "processing_payment_authorized" in active:
            choices.append(self.capture)  # type: ignore[attr-defined]
        if "processing_payment_declined" in active:
            choices.append(self.cancel)  # type: ignore[attr-defined]
        if "processing_shipping_waiting" in active:
            choices.append(self.pack)  # type: ignore[attr-defined]
        if "processing_shipping_packed" in active:
            choices.append(self.ship)  # type: ignore[attr-defined]
        if "processing_shipping_shipped" in active:
            # the guard refuses until the payment is captured too
            choices.append(self.deliver)  # type: ignore[attr-defined]
        if "processing_shipping_waiting" in active and (
            self._scripted("early ship") or self.rng.random() < 0.08
        ):
            choices = [self.ship]  # type: ignore[attr-defined]  # not packed yet: refused
        if not choices:
            return True
        try:
            self.rng.choice(choices)(amount=round(self.rng.uniform(5, 250), 2))
        except (MachineError, PaymentDeclined):
            pass  # the inspector shows these as refused or failed
        return True


class Worker(StateChart):  # type: ignore[type-arg]
    """A background job runner: fetches, processes, sometimes fails and is reset."""

    # Refuse events that do not apply, so the inspector shows them as not accepted.
    allow_event_without_transition = False

    idle = State(initial=True)

    class busy(State.Compound):  # lower case: the class is a state, named as users see it
        fetching = State(initial=True)
        processing = State()
        fetched = fetching.to(processing)

    failed = State()

    start = idle.to(busy)
    finish = busy.to(idle)
    fail = busy.to(failed)
    reset = failed.to(idle)


class Shop:
    """The root machine (manual API): open or closed, with orders and workers under it."""

    def __init__(self, seed: int = 7, url: str | None = None, sink: Any = None) -> None:
        self.rng = random.Random(seed)
        self.options: dict[str, Any] = {"url": url} if url else {"sink": sink}
        self.machine = ManualMachine(
            ["closed", "open", StateSpec("open_quiet", "open"), StateSpec("open_rush", "open")],
            initial=["closed"],
        )
        self.handle = tracer.attach(self.machine, name="shop", **self.options)
        self.orders: list[Order] = []
        self.workers: list[Worker] = []
        self.handles: list[tracer.TraceHandle] = [self.handle]
        self.next_order = 1
        self.stop = threading.Event()
        self.ticks = 0
        # What a new user should see in the first half minute whatever the seed: a card
        # declined in a capture (an error), a ship before packing and a stray "fetched"
        # to a worker (refused events). Each happens once at the first chance.
        self.script = {"decline", "early ship", "stray fetch"}

    def open(self, workers: int = 3) -> None:
        self.machine.set("open_quiet", name="open")
        for n in range(1, workers + 1):
            w = Worker()
            self.workers.append(w)
            self.handles.append(
                # "agent" sorts before "order": the three stay in view at the top of the
                # tree while finished orders pile up below them
                tracer.attach(w, name=f"agent-{n}", parent=self.handle, **self.options)
            )

    def new_order(self) -> None:
        order = Order(self.next_order, self.rng, self.script)
        self.handles.append(
            tracer.attach(
                order.machine, name=f"order-{self.next_order}", parent=self.handle, **self.options
            )
        )
        self.next_order += 1
        self.orders.append(order)

    def finish(self, order: Order) -> None:
        """A delivered or cancelled order stops being traced (the inspector keeps it)."""
        for h in self.handles:
            if h.machine_ids == [f"order-{order.number}"]:
                h.detach()
                self.handles.remove(h)
                break

    def work(self, w: Worker) -> None:
        config = set(w.configuration_values)
        if "idle" in config:
            w.send("start", job=self.rng.randint(100, 999))
        elif "fetching" in config:
            w.send("fetched", size=self.rng.randint(1, 9))
        elif "processing" in config:
            w.send("fail" if self.rng.random() < 0.15 else "finish")
        elif "failed" in config:
            w.send("reset")
        stray = "stray fetch" in self.script and self.ticks >= 8
        if stray or self.rng.random() < 0.04:
            # a duplicate "fetched" message: only valid while fetching, so it is refused
            idle = [x for x in self.workers if "fetching" not in set(x.configuration_values)]
            if idle:
                self.script.discard("stray fetch")
                try:
                    self.rng.choice(idle).send("fetched")
                except TransitionNotAllowed:
                    pass

    def tick(self) -> None:
        """One unit of simulated business."""
        self.ticks += 1
        live = []
        for order in self.orders:
            # orders move at their own pace: ~8 s each at the default pace, so a few
            # run side by side and their machines do not pile up too fast
            if self.rng.random() < 0.35 and not order.step():
                self.finish(order)
            else:
                live.append(order)
        self.orders = live
        if not live or (len(live) < 3 and self.rng.random() < 0.25):
            self.new_order()
        if self.workers:
            self.work(self.rng.choice(self.workers))
        rush = len(live) >= 3
        if rush != self.machine.is_active("open_rush"):
            self.machine.set("open_rush" if rush else "open_quiet", name="rush" if rush else "calm")

    def run(self, ticks: int | None = None, pace: float = 0.4) -> None:
        """Run until ``stop`` is set (or for ``ticks`` ticks), sleeping ~``pace`` s a tick."""
        self.open()
        n = 0
        while not self.stop.is_set() and (ticks is None or n < ticks):
            self.tick()
            n += 1
            if pace:
                self.stop.wait(self.rng.uniform(0.3, 1.7) * pace)
        self.machine.set("closed", name="close")
        for h in self.handles:
            h.flush(2)
