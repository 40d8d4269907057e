"""Run the demo shop: ``python -m aminspect.demo [--url ws://127.0.0.1:6830] [--ticks N]``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from aminspect.demo.shop import Shop


def _persistent_demos() -> list[tuple[str, Callable[..., Any]]]:
    """The persistent-machine scenarios that run next to the shop (imported lazily)."""
    from aminspect.machines import es_demo, fsm_demo, hsm_demo

    return [("fsm", fsm_demo.run_demo), ("hsm", hsm_demo.run_demo), ("es", es_demo.run_demo)]


def start_persistent_demos(url: str, stop: threading.Event, pace: float) -> list[threading.Thread]:
    """Start the FSM, HSM-tree and event-sourced scenarios, one thread each.

    A scenario that fails reports one line on stderr and ends; the shop keeps running.
    """

    def run(label: str, demo: Callable[..., Any]) -> None:
        try:
            demo(url, stop, pace=pace * 2)
        except Exception as exc:  # a demo's failure must not take the shop down
            print(f"aminspect demo: the {label} scenario stopped: {exc}", file=sys.stderr)

    threads = [
        threading.Thread(target=run, args=(label, demo), name=f"demo-{label}", daemon=True)
        for label, demo in _persistent_demos()
    ]
    for t in threads:
        t.start()
    return threads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="aminspect's demo shop, traced over WebSocket")
    parser.add_argument("--url", default="ws://127.0.0.1:6830", help="inspector or recorder")
    parser.add_argument("--token", default=None, help="token the inspector expects")
    parser.add_argument("--ticks", type=int, default=None, help="stop after N ticks")
    parser.add_argument("--pace", type=float, default=0.4, help="seconds per tick (0 = flat out)")
    parser.add_argument("--seed", type=int, default=7)
    opts = parser.parse_args(argv)
    if opts.token:
        os.environ["AMINSPECT_TOKEN"] = opts.token  # read by attach(url=...)
    shop = Shop(seed=opts.seed, url=opts.url)

    def stop(*_: Any) -> None:
        shop.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    others = start_persistent_demos(opts.url, shop.stop, opts.pace)
    shop.run(ticks=opts.ticks, pace=opts.pace)
    shop.stop.set()
    for t in others:
        t.join(timeout=5)


if __name__ == "__main__":
    main()
