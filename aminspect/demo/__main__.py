"""Run the demo shop: ``python -m aminspect.demo [--url ws://127.0.0.1:6830] [--ticks N]``."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any

from aminspect.demo.shop import Shop


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
    shop.run(ticks=opts.ticks, pace=opts.pace)


if __name__ == "__main__":
    main()
