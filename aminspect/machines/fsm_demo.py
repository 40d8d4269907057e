"""A demo scenario for the validated FSM: orders (FSM) and payments (ArcFSM) in SQLite, traced.

``run_demo(url_or_sink, stop)`` drives a few orders and their payments at a human pace
until ``stop`` is set. Now and then a transition is refused (a validation hook finds the
item out of stock, a duplicate message loses the compare-and-set), so the inspector shows
not-accepted records next to the committed ones.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from aminspect.machines.fsm import (
    ArcFSM,
    ArcFSMBuilder,
    FSMBuilder,
    FSMError,
    SQLiteFSMStore,
    TransitionContext,
)

__all__ = ["OrderState", "PaymentState", "build_machines", "run_demo"]


class OrderState(StrEnum):
    CREATED = "created"
    PAID = "paid"
    PACKED = "packed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class PaymentState(StrEnum):
    PENDING = "pending"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    CAPTURED = "captured"


@dataclass
class NewOrder:
    customer: str
    items: int


@dataclass
class Pay:
    id: int
    payment: int


@dataclass
class Pack:
    id: int
    warehouse: str


@dataclass
class Ship:
    id: int
    carrier: str


@dataclass
class Deliver:
    id: int


@dataclass
class Cancel:
    id: int
    reason: str


@dataclass
class Charge:
    amount: float


@dataclass
class Authorize:
    id: int
    code: str


@dataclass
class Decline:
    id: int
    reason: str


@dataclass
class Retry:
    id: int


@dataclass
class Capture:
    id: int


class OutOfStock(Exception):
    """The warehouse cannot pack the order (raised by the validation hook)."""


def _check_stock(ctx: TransitionContext) -> None:
    # Runs inside the transaction, after the event write: raising rolls both back.
    payload = ctx.payload
    if isinstance(payload, Pack) and payload.warehouse == "north" and payload.id % 4 == 0:
        raise OutOfStock(f"order {ctx.id}: out of stock in the north warehouse")


def build_machines(store: SQLiteFSMStore, **trace: Any) -> tuple[Any, ArcFSM]:
    """The demo's order FSM and payment ArcFSM on ``store``; ``trace`` goes to build()."""
    orders = (
        FSMBuilder("fsm-orders", validation=_check_stock)
        .initial(OrderState.CREATED, NewOrder, next=[OrderState.PAID, OrderState.CANCELLED])
        .add_state(OrderState.PAID, Pay, next=[OrderState.PACKED, OrderState.REFUNDED])
        .add_state(OrderState.PACKED, Pack, next=[OrderState.SHIPPED])
        .add_state(OrderState.SHIPPED, Ship, next=[OrderState.DELIVERED])
        .add_state(OrderState.DELIVERED, Deliver)
        .add_state(OrderState.CANCELLED, Cancel)
        .add_state(OrderState.REFUNDED, Cancel)
        .build(store, **trace)
    )
    payments = (
        ArcFSMBuilder("fsm-payments")
        .insert(PaymentState.PENDING, Charge)
        .update(PaymentState.PENDING, PaymentState.AUTHORIZED, Authorize)
        .update(PaymentState.PENDING, PaymentState.DECLINED, Decline)
        .update(PaymentState.DECLINED, PaymentState.PENDING, Retry)  # back to an initial state
        .update(PaymentState.AUTHORIZED, PaymentState.CAPTURED, Capture)
        .build(store, **trace)
    )
    return orders, payments


class _Scenario:
    def __init__(self, orders: Any, payments: ArcFSM, rng: random.Random) -> None:
        self.orders = orders
        self.payments = payments
        self.rng = rng
        self.live: dict[int, int | None] = {}  # order id -> payment id

    def step(self) -> None:
        rng = self.rng
        if len(self.live) < 3 and rng.random() < 0.5:
            oid = self.orders.insert(NewOrder(rng.choice(["ada", "bob", "cy"]), rng.randint(1, 5)))
            self.live[oid] = None
        for oid in list(self.live):
            if rng.random() < 0.5:
                try:
                    self._advance(oid)
                except (FSMError, OutOfStock):
                    pass  # refused: the inspector shows it as not accepted

    def _advance(self, oid: int) -> None:
        rng = self.rng
        inst = self.orders.get(oid)
        if inst is None:
            del self.live[oid]
            return
        state = inst.state
        pid = self.live[oid]
        if state is OrderState.CREATED:
            if pid is None:
                new = self.payments.insert(
                    PaymentState.PENDING, Charge(round(rng.uniform(5, 250), 2))
                )
                self.live[oid] = int(new)
            elif rng.random() < 0.08:
                self.orders.update(state, OrderState.CANCELLED, Cancel(oid, "customer"))
            else:
                self._pay(oid, pid)
        elif state is OrderState.PAID:
            if rng.random() < 0.05:
                self.orders.update(state, OrderState.REFUNDED, Cancel(oid, "changed mind"))
            else:
                wh = rng.choice(["north", "south"])
                self.orders.update(state, OrderState.PACKED, Pack(oid, wh))
        elif state is OrderState.PACKED:
            self.orders.update(state, OrderState.SHIPPED, Ship(oid, rng.choice(["ups", "dhl"])))
            if rng.random() < 0.2:
                # a duplicate "ship" message: the compare-and-set refuses it (RowCount)
                self.orders.update(state, OrderState.SHIPPED, Ship(oid, "dup"))
        elif state is OrderState.SHIPPED:
            self.orders.update(state, OrderState.DELIVERED, Deliver(oid))
        else:
            del self.live[oid]

    def _pay(self, oid: int, pid: int) -> None:
        rng = self.rng
        pay = self.payments.get(pid)
        if pay is None:
            return
        ps = pay.state
        if ps is PaymentState.PENDING:
            if rng.random() < 0.25:
                self.payments.update(ps, PaymentState.DECLINED, Decline(pid, "insufficient funds"))
            else:
                self.payments.update(ps, PaymentState.AUTHORIZED, Authorize(pid, f"A{pid:04d}"))
        elif ps is PaymentState.DECLINED:
            self.payments.update(ps, PaymentState.PENDING, Retry(pid))
        elif ps is PaymentState.AUTHORIZED:
            self.payments.update(ps, PaymentState.CAPTURED, Capture(pid))
            self.orders.update(OrderState.CREATED, OrderState.PAID, Pay(oid, pid))


def run_demo(
    url_or_sink: Any,
    stop: threading.Event,
    *,
    pace: float = 0.5,
    seed: int = 11,
    db: str | None = None,
    ticks: int | None = None,
    parent: Any = None,
) -> None:
    """Drive orders and payments through the FSMs until ``stop`` is set.

    Args:
        url_or_sink: a ``ws://`` URL of an aminspect server, or a tracer sink (a backend,
            a MemorySink).
        stop: set it to end the demo; the machines are detached and flushed.
        pace: seconds per tick, roughly (0 for as fast as possible).
        seed: the random seed.
        db: the SQLite file for the machines' rows and events; a temporary one (deleted
            at the end) when None.
        ticks: stop after this many ticks (tests), else only when ``stop`` is set.
        parent: the traced parent machine of every instance (a TraceHandle or an id).

    Raises:
        FSMError: the database cannot be opened.
    """
    tmp = None
    if db is None:
        tmp = tempfile.mkdtemp(prefix="aminspect-fsm-demo-")
        db = os.path.join(tmp, "fsm.db")
    trace: dict[str, Any] = (
        {"url": url_or_sink} if isinstance(url_or_sink, str) else {"sink": url_or_sink}
    )
    if parent is not None:
        trace["parent"] = parent
    store = SQLiteFSMStore(db, durability="fast")
    orders, payments = build_machines(store, **trace)
    try:
        scenario = _Scenario(orders, payments, random.Random(seed))
        n = 0
        while not stop.is_set() and (ticks is None or n < ticks):
            scenario.step()
            n += 1
            if pace:
                stop.wait(scenario.rng.uniform(0.5, 1.5) * pace)
    finally:
        for m in (orders, payments):
            m.flush(2)
            m.close()
        store.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
