"""A sender thread appending while reader threads query, on every backend (bounded)."""

from __future__ import annotations

import random
import threading

from backends.base import Query
from tests.contract.helpers import machine, random_history


def test_one_writer_and_readers_share_a_backend(backend):
    backend.put_machine(machine())
    recs = random_history("m", 2000, random.Random(5))
    errors: list[BaseException] = []
    done = threading.Event()

    def writer() -> None:
        try:
            for i in range(0, len(recs), 50):
                backend.append("m", recs[i : i + 50])
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while not done.is_set():
                high = backend.highest("m")
                got = backend.read("m", max(0, high - 20), high + 1)
                assert got == recs[max(0, high - 20) : high + 1]
                if high >= 0:
                    backend.state_at("m", high)
                    backend.count(Query(machine_id="m", active=frozenset({"A"})))
                    backend.active_between("m", "B", 0, 2**62)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert backend.read("m") == recs
