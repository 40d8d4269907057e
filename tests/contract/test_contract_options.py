"""Backend options on every backend: max_records, durability, URL options, bad values."""

from __future__ import annotations

import pytest

import backends
from backends.base import BackendError, Query
from tests.contract.helpers import counter_records, machine
from tracer.machine_time import MachineTime


def test_max_records_drops_the_oldest_and_keeps_highest(store):
    b = store.open(max_records=5, snapshot_every=0)
    if not b.supports_delete:
        pytest.skip("backend cannot delete")
    b.put_machine(machine())
    recs = counter_records("m", 12)
    for i in range(0, 12, 3):
        b.append("m", recs[i : i + 3])
        assert len(b.read("m")) <= 5
    assert b.read("m") == recs[7:]
    assert b.highest("m") == 11
    mt = MachineTime(4)
    for r in recs:
        mt.apply(r)
    assert b.state_at("m", 11).clocks == mt.clocks
    assert b.state_at("m", 7).clocks != [0, 0, 0, 0]
    assert b.count(Query(machine_id="m")) == 5
    # the newest-first window asyncmachine's tests check (FindLatest(N))
    assert [r.seq for r in b.find(Query(machine_id="m", newest_first=True, limit=3))] == [11, 10, 9]


@pytest.mark.parametrize("durability", ["full", "fast"])
def test_durability_modes_store_the_same(store, durability):
    b = store.open(durability=durability)
    b.put_machine(machine())
    b.append("m", counter_records("m", 3))
    assert b.flush()
    assert b.durability == durability
    assert len(b.read("m")) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"durability": "maybe"}, "durability"),
        ({"max_records": 0}, "max_records"),
        ({"max_records": "x"}, "max_records"),
        ({"snapshot_every": "often"}, "snapshot_every"),
        ({"snapshot_seconds": -1}, "snapshot_seconds"),
        ({"read_only": "yes please"}, "read_only"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_are_one_line_errors(store, options, message):
    with pytest.raises(BackendError, match=message) as info:
        store.open(**options)
    assert "\n" not in str(info.value)


def test_options_in_the_url_query_string(store):
    sep = "&" if "?" in store.url else "?"
    b = backends.open(f"{store.url}{sep}snapshot_every=2&durability=fast")
    store.opened.append(b)
    assert (b.snapshot_every, b.durability) == (2, "fast")
    b.put_machine(machine())
    b.append("m", counter_records("m", 5))
    assert [s.index for s in b.snapshots("m")] == [0, 2, 4]


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(backends.UnknownScheme, match="memory"):
        backends.open("nosuch://x")
