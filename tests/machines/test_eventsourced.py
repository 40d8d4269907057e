"""Event-sourced objects: snapshots S-01..S-06, strategies ST-01/ST-02, codecs, tracing."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aminspect.machines.es_store import (
    FileSnapshotStore,
    MemorySnapshotStore,
    Provider,
    StoredSnapshot,
    snapshot_store_for,
)
from aminspect.machines.eventsourced import (
    AnyStrategy,
    DataclassCodec,
    EventRejected,
    EventReplayed,
    EventSourced,
    EventSourcedError,
    IntervalStrategy,
    RecoveryError,
    RecoveryInProgress,
    RecoveryStep,
    ReplayComplete,
    SnapshotOffered,
    TimeStrategy,
    WriterStopped,
    lifecycle_id,
)
from backends import BackendError
from tracer.records import Kind, MachineRecord, TransitionRecord
from tracer.sinks import MemorySink

URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda p: "memory://",
    "sqlite": lambda p: f"sqlite:///{p / 'es.db'}",
    "journal": lambda p: f"journal:///{p / 'es.amj'}",
    "lmdb": lambda p: f"lmdb:///{p / 'es.lmdb'}",
}


@pytest.fixture(params=sorted(URLS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return URLS[request.param](tmp_path)


@pytest.fixture
def provider(url: str) -> Iterator[Provider]:
    p = Provider(url)
    yield p
    p.close()


def add(state: int, event: dict[str, int]) -> int:
    return state + event["n"]


def counter(stream: str, provider: Provider, **kw: Any) -> EventSourced[int, dict[str, int]]:
    return EventSourced(stream, provider, initial=0, apply=add, **kw)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------ ST-01, ST-02
@pytest.mark.parametrize(
    ("n", "hits", "misses"),
    [(4, [0, 4, 8], [1, 2, 3, 5]), (5, [0], [1, 2, 3, 4]), (0, [], [0, 1, 4]), (-1, [], [0, 1])],
)
def test_ST01_interval_strategy(n: int, hits: list[int], misses: list[int]) -> None:
    strategy = IntervalStrategy(n)
    assert all(strategy.should_snapshot(i) for i in hits)
    assert not any(strategy.should_snapshot(i) for i in misses)


@pytest.mark.parametrize(("n", "expected"), [(4, [0, 4, 8]), (0, []), (-1, [])])
def test_ST01_interval_snapshots_of_an_object(n: int, expected: list[int]) -> None:
    p = Provider("memory://")
    obj = counter("s", p, strategy=IntervalStrategy(n))
    for _ in range(9):
        obj.persist({"n": 1})
    assert [s.index for s in p.all_snapshots("s")] == expected
    # S-01: the snapshot at k is the state after events [0, k)
    assert all(msgpack.unpackb(s.data) == s.index for s in p.all_snapshots("s"))


def test_ST02_time_strategy_with_injected_clock() -> None:
    clock = FakeClock()
    strategy = TimeStrategy(0.1, clock)
    seen = []
    for ms in (0, 50, 100, 100, 200):
        clock.now = ms / 1000
        seen.append(strategy.should_snapshot(0))
    assert seen == [False, False, True, False, True]


def test_ST02_time_snapshots_of_an_object() -> None:
    clock = FakeClock()
    p = Provider("memory://")
    obj = counter("s", p, strategy=TimeStrategy(0.1, clock))
    for ms in (0, 50, 100, 100, 200):
        clock.now = ms / 1000
        obj.persist({"n": 1})
    assert [s.index for s in p.all_snapshots("s")] == [2, 4]
    both = AnyStrategy(IntervalStrategy(3), TimeStrategy(10, clock))
    obj2 = counter("t", p, strategy=both)
    obj2.persist(*({"n": 1} for _ in range(4)))
    assert [s.index for s in p.all_snapshots("t")] == [0, 3]


# ------------------------------------------------------------------------------ S-01
def test_S01_snapshot_covers_events_before_its_index(provider: Provider) -> None:
    obj = counter("s", provider, strategy=IntervalStrategy(2))
    for n in (1, 10, 100):
        obj.persist({"n": n})
    snaps = {s.index: msgpack.unpackb(s.data) for s in provider.all_snapshots("s")}
    assert snaps == {0: 0, 2: 11}  # taken after event k is written, before it is applied
    steps: list[RecoveryStep] = []
    again = counter("s", provider, on_recovery=steps.append)
    assert steps[:2] == [SnapshotOffered(2, 11), EventReplayed(2, {"n": 100}, 111)]
    assert again.state == 111 and again.index == 3


def test_S01_explicit_snapshot_at_current_index(provider: Provider) -> None:
    obj = counter("s", provider)
    obj.persist({"n": 5}, {"n": 7})
    assert obj.snapshot() == 2
    assert provider.latest_snapshot("s") is not None
    steps: list[RecoveryStep] = []
    again = counter("s", provider, on_recovery=steps.append)
    assert steps == [SnapshotOffered(2, 12), ReplayComplete(1, 12, 2, 0)]
    assert again.state == 12


# ------------------------------------------------------------------------------ S-02
# protoactor's TestRecovery cases with counters: (interval, seed events, snapshot index,
# new events, state after). Each seed event adds a distinct power of ten, so replaying one
# event twice or skipping one changes the sum.
RECOVERY_CASES = {
    "empty": (5, [], None, [], 0),
    "snapshot-only": (8, [1, 10, 100], 3, [], 111),
    "snapshot-tail-new": (8, [1, 10, 100], 1, [1000], 1111),
    "interval-4": (4, [1, 10, 100, 1000], 1, [10_000], 11_111),
    "two-new": (4, [1, 10, 100, 1000], 1, [10_000, 100_000], 111_111),
}


@pytest.mark.parametrize("case", sorted(RECOVERY_CASES))
def test_S02_recovery_round_trip(case: str, provider: Provider) -> None:
    interval, seed, snap_at, new, expected = RECOVERY_CASES[case]
    provider.write_events("actor", 0, [("add", {"n": n}) for n in seed])
    if snap_at is not None:
        provider.save_snapshot("actor", snap_at, pack(sum(seed[:snap_at])))
    obj = counter("actor", provider, strategy=IntervalStrategy(interval))
    for n in new:
        obj.persist({"n": n})
    assert obj.state == expected
    obj.close()
    steps: list[RecoveryStep] = []
    again = counter(
        "actor", provider, strategy=IntervalStrategy(interval), on_recovery=steps.append
    )
    assert again.state == expected
    assert again.index == len(seed) + len(new)
    latest = provider.latest_snapshot("actor")
    if case in ("interval-4", "two-new"):
        assert latest is not None and latest.index == 4  # the new event 4 triggered it
        assert steps[0] == SnapshotOffered(4, 1111)
    again.persist({"n": 7})
    again.close()
    assert counter("actor", provider).state == expected + 7


@pytest.mark.parametrize("kind", ["sqlite", "journal", "lmdb"])
def test_S02_round_trip_across_process_style_reopen(kind: str, tmp_path: Path) -> None:
    url = URLS[kind](tmp_path)
    with Provider(url) as p:
        obj = counter("acct", p, strategy=IntervalStrategy(3))
        for n in range(1, 11):
            obj.persist({"n": n})
        before = obj.state
        obj.close()
    with Provider(url) as p:
        steps: list[RecoveryStep] = []
        again = counter("acct", p, strategy=IntervalStrategy(3), on_recovery=steps.append)
        assert again.state == before == 55
        assert steps[0] == SnapshotOffered(9, 45)
        assert again.mach_tick == 1


# ------------------------------------------------------------------------------ S-03
def _mix(state: int, event: dict[str, int]) -> int:
    return (state * 31 + event["n"]) % (1 << 61)  # order-sensitive and not idempotent


@settings(max_examples=40)
@given(st.lists(st.integers(0, 1000), max_size=16), st.data())
def test_S03_snapshot_equivalence_for_every_k(events: list[int], data: st.DataObject) -> None:
    full = 0
    for n in events:
        full = _mix(full, {"n": n})
    ks = range(len(events) + 1)
    for k in data.draw(st.lists(st.sampled_from(ks), min_size=1, unique=True)) if events else [0]:
        p = Provider("memory://")
        p.write_events("s", 0, [("mix", {"n": n}) for n in events])
        prefix = 0
        for n in events[:k]:
            prefix = _mix(prefix, {"n": n})
        p.save_snapshot("s", k, pack(prefix))
        obj = EventSourced("s", p, initial=0, apply=_mix, lifecycle=False)
        assert obj.state == full, f"snapshot at {k}"
        assert obj.index == len(events)
        p.close()


@settings(max_examples=30)
@given(
    st.lists(st.tuples(st.integers(0, 99), st.booleans()), max_size=30),
    st.integers(-1, 6),
)
def test_S02_S03_random_restarts_never_change_the_state(
    steps: list[tuple[int, bool]], interval: int
) -> None:
    p = Provider("memory://")
    obj = EventSourced("s", p, initial=0, apply=_mix, strategy=IntervalStrategy(interval))
    expected = 0
    for n, restart in steps:
        obj.persist({"n": n})
        expected = _mix(expected, {"n": n})
        if restart:
            obj.close()
            obj = EventSourced("s", p, initial=0, apply=_mix, strategy=IntervalStrategy(interval))
        assert obj.state == expected
    assert obj.index == len(steps)
    p.close()


# ------------------------------------------------------------------------------ S-04, S-05
def test_S04_latest_is_the_highest_index_and_same_index_replaces(provider: Provider) -> None:
    provider.save_snapshot("s", 5, b"five")
    provider.save_snapshot("s", 2, b"two")  # written last, but lower
    latest = provider.latest_snapshot("s")
    assert latest is not None and (latest.index, latest.data) == (5, b"five")
    provider.save_snapshot("s", 5, b"FIVE")
    assert [(s.index, s.data) for s in provider.all_snapshots("s")] == [(2, b"two"), (5, b"FIVE")]


def _rows_on_disk(url: str, tmp_path: Path) -> int | None:
    if url.startswith("sqlite"):
        db = sqlite3.connect(tmp_path / "es.db")
        try:
            return int(db.execute("SELECT count(*) FROM es_snapshots").fetchone()[0])
        finally:
            db.close()
    for name in ("es.amj.es-snapshots", "es.lmdb.es-snapshots"):
        folder = tmp_path / name
        if folder.exists():
            return sum(len(files) for _, _, files in os.walk(folder))
    return None


def test_S05_delete_snapshots_is_inclusive_and_really_deletes(
    provider: Provider, url: str, tmp_path: Path
) -> None:
    for i in (1, 3, 5):
        provider.save_snapshot("s", i, pack(i))
    provider.save_snapshot("other", 1, pack(1))
    provider.delete_snapshots("s", 3)
    assert [s.index for s in provider.all_snapshots("s")] == [5]
    provider.delete_snapshots("s", 5)
    assert provider.latest_snapshot("s") is None
    assert provider.all_snapshots("s") == []
    assert provider.latest_snapshot("other") is not None
    on_disk = _rows_on_disk(url, tmp_path)
    if on_disk is not None:
        assert on_disk == 1  # only "other" is left in storage


def test_S05_selection_by_max_index_and_time(provider: Provider) -> None:
    for i in (2, 4, 6):
        provider.save_snapshot("s", i, pack(i))
    times = {s.index: s.time for s in provider.all_snapshots("s")}
    found = provider.select_snapshot("s", max_index=5)
    assert found is not None and found.index == 4
    found = provider.select_snapshot("s", max_time=times[2])
    assert found is not None and found.index == 2
    assert provider.select_snapshot("s", max_index=1) is None


# ------------------------------------------------------------------------------ S-06
def test_S06_lifecycle_order_and_recovering_window(provider: Provider) -> None:
    provider.write_events("s", 0, [("add", {"n": n}) for n in (1, 2, 3)])
    provider.save_snapshot("s", 1, pack(1))
    log: list[tuple[str, bool]] = []
    refused: list[str] = []

    class Account(EventSourced[int, dict[str, int]]):
        def apply(self, state: int, event: dict[str, int]) -> int:
            return state + event["n"]

        def on_recovery(self, step: RecoveryStep) -> None:
            log.append((type(step).__name__, self.recovering))
            if not isinstance(step, ReplayComplete):
                for attempt in (lambda: self.persist({"n": 9}), lambda: self.delete_events(0)):
                    try:
                        attempt()
                    except RecoveryInProgress as exc:
                        refused.append(str(exc))

    obj = Account("s", provider, initial=0)
    assert log == [
        ("SnapshotOffered", True),
        ("EventReplayed", True),
        ("EventReplayed", True),
        ("ReplayComplete", False),
    ]
    assert len(refused) == 6
    assert not obj.recovering
    assert obj.state == 6 and provider.highest("s") == 2
    obj.persist({"n": 4})  # accepted after replay-complete
    assert obj.state == 10


def test_S06_a_raising_notification_fails_recovery_without_state(provider: Provider) -> None:
    provider.write_events("s", 0, [("add", {"n": 1})])

    def boom(step: RecoveryStep) -> None:
        if isinstance(step, EventReplayed):
            raise RuntimeError("listener bug")

    with pytest.raises(RecoveryError, match="listener bug"):
        counter("s", provider, on_recovery=boom)


# ------------------------------------------------------------------------------ codecs, states
@dataclasses.dataclass(frozen=True)
class Deposited:
    amount: int


@dataclasses.dataclass(frozen=True)
class Withdrawn:
    amount: int


@dataclasses.dataclass(frozen=True)
class Account:
    balance: int = 0
    ops: int = 0


def bank(state: Account, event: Deposited | Withdrawn) -> Account:
    delta = event.amount if isinstance(event, Deposited) else -event.amount
    return Account(state.balance + delta, state.ops + 1)


def bank_labels(state: Account) -> Sequence[str]:
    return ["overdrawn"] if state.balance < 0 else ["open"]


def open_account(p: Provider, **kw: Any) -> EventSourced[Account, Deposited | Withdrawn]:
    return EventSourced(
        "acct",
        p,
        initial=Account(),
        apply=bank,
        event_types=[Deposited, Withdrawn],
        states=["open", "overdrawn"],
        labels=bank_labels,
        **kw,
    )


def test_dataclass_events_and_state_round_trip(provider: Provider) -> None:
    obj = open_account(provider, strategy=IntervalStrategy(2))
    obj.persist(Deposited(10), Withdrawn(25), Deposited(20))
    assert obj.state == Account(5, 3)
    stored = provider.read_events("acct")
    assert [(e.name, e.payload) for e in stored] == [
        ("Deposited", {"amount": 10}),
        ("Withdrawn", {"amount": 25}),
        ("Deposited", {"amount": 20}),
    ]
    obj.close()
    again = open_account(provider)
    assert again.state == Account(5, 3) and again.active == {"open"}
    # the stream's records carry the inspector states: open, overdrawn, open
    recs = provider.backend.read("acct")
    assert [(r.exited, r.entered) for r in recs] == [((), (0,)), ((0,), (1,)), ((1,), (0,))]
    assert provider.backend.state_at("acct", 1).clocks == [2, 1]  # open exited, overdrawn on


def test_states_may_grow_but_not_change_order(provider: Provider) -> None:
    def labels(state: int) -> list[str]:
        return ["even"] if state % 2 == 0 else ["odd"]

    obj = counter("s", provider, states=["even", "odd"], labels=labels)
    obj.persist({"n": 1})
    obj.close()
    grown = counter("s", provider, states=["even", "odd", "big"], labels=labels)
    assert grown.active == {"odd"}
    assert provider.backend.get_machine("s").schema.names == ("even", "odd", "big")
    grown.close()
    assert counter("s", provider, states=["even", "odd"], labels=labels).state == 1
    with pytest.raises(RecoveryError, match="new states may only be added after them"):
        counter("s", provider, states=["odd", "even"], labels=labels)


def test_dataclass_codec_rules() -> None:
    codec = DataclassCodec(Deposited, Withdrawn)
    assert codec.encode(Withdrawn(3)) == ("Withdrawn", {"amount": 3})
    assert codec.decode("Withdrawn", {"amount": 3}) == Withdrawn(3)
    with pytest.raises(ValueError, match="not a map"):
        codec.decode("Withdrawn", [3])
    with pytest.raises(TypeError, match="not a dataclass"):
        DataclassCodec(int)
    Other = dataclasses.make_dataclass("Deposited", [("x", int)])
    with pytest.raises(TypeError, match="two event types"):
        DataclassCodec(Deposited, Other)
    with pytest.raises(TypeError, match="not a registered"):
        codec.encode(Other(1))  # same name, another class


def test_unregistered_event_is_rejected(provider: Provider) -> None:
    obj = open_account(provider)
    with pytest.raises(EventRejected, match="not a registered event type"):
        obj.persist({"amount": 1})  # type: ignore[arg-type]
    assert provider.highest("acct") == -1


def test_unknown_event_type_in_the_stream_fails_recovery(provider: Provider) -> None:
    provider.write_events("acct", 0, [("Deposited", {"amount": 1}), ("Refunded", {"amount": 1})])
    with pytest.raises(RecoveryError, match="unknown event type 'Refunded'") as info:
        open_account(provider)
    assert info.value.index == 1


def test_undecodable_snapshot_fails_recovery_with_its_index(provider: Provider) -> None:
    provider.write_events("s", 0, [("add", {"n": 1})])
    provider.save_snapshot("s", 1, b"\xc1")
    with pytest.raises(RecoveryError) as info:
        counter("s", provider)
    assert info.value.index == 1


def test_snapshot_past_the_events_is_refused(provider: Provider) -> None:
    provider.save_snapshot("s", 4, pack(4))
    with pytest.raises(RecoveryError, match="past the events"):
        counter("s", provider)


def test_torn_snapshot_file_is_detected(tmp_path: Path) -> None:
    store = FileSnapshotStore(str(tmp_path / "snaps"))
    store.save(StoredSnapshot("a/b", 3, b"payload", 7))
    assert store.latest("a/b") == StoredSnapshot("a/b", 3, b"payload", 7)
    assert store.streams() == ["a/b"]
    (path,) = [Path(d) / f for d, _, fs in os.walk(tmp_path / "snaps") for f in fs]
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BackendError, match="checksum"):
        store.latest("a/b")
    path.write_bytes(b"xx")
    with pytest.raises(BackendError, match="not a snapshot file"):
        store.latest("a/b")


def test_bad_arguments_are_one_line_errors(provider: Provider) -> None:
    with pytest.raises(BackendError, match="stream name"):
        provider.read_events("")
    with pytest.raises(BackendError, match="snapshot index"):
        provider.save_snapshot("s", -1, b"")
    with pytest.raises(BackendError, match="bytes"):
        provider.save_snapshot("s", 0, "text")  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="event name"):
        provider.write_events("s", 0, [(1, {})])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="apply"):
        EventSourced("s", provider, initial=0)
    with pytest.raises(ValueError, match="states"):
        EventSourced("s", provider, initial=0, apply=add, states=["a"])
    with pytest.raises(ValueError, match="at least one"):
        counter("s", provider).persist()


def test_provider_needs_a_store_for_unknown_backends() -> None:
    class Odd:
        scheme = "odd"

    with pytest.raises(BackendError, match="no snapshot store for odd://"):
        snapshot_store_for(Odd())  # type: ignore[arg-type]
    p = Provider("memory://", snapshots=MemorySnapshotStore())
    assert counter("s", p).state == 0


def test_read_only_backend_recovers_but_refuses_writes(tmp_path: Path) -> None:
    url = URLS["sqlite"](tmp_path)
    with Provider(url) as p:
        counter("s", p, strategy=IntervalStrategy(2)).persist({"n": 1}, {"n": 2}, {"n": 3})
    import backends

    ro = backends.open(url, read_only=True)
    p = Provider(ro)
    obj = counter("s", p)
    assert obj.state == 6
    from aminspect.machines.eventsourced import PersistFailed

    with pytest.raises(PersistFailed, match="read-only"):
        obj.persist({"n": 1})
    ro.close()


class FailingStore(MemorySnapshotStore):
    def save(self, snapshot: StoredSnapshot) -> None:
        raise BackendError("disk full")


def test_failed_snapshot_never_fails_the_persist() -> None:
    p = Provider("memory://", snapshots=FailingStore())
    obj = counter("s", p, strategy=IntervalStrategy(1))
    obj.persist({"n": 1}, {"n": 2})
    assert obj.state == 3 and p.highest("s") == 1
    assert isinstance(obj.last_snapshot_error, BackendError)
    with pytest.raises(BackendError, match="disk full"):
        obj.snapshot()  # asked for explicitly: the error is the caller's


def test_unencodable_state_skips_the_snapshot_not_the_event() -> None:
    p = Provider("memory://")
    obj: EventSourced[frozenset[int], int] = EventSourced(
        "s", p, initial=frozenset(), apply=lambda s, e: s | {e}, strategy=IntervalStrategy(1)
    )
    obj.persist(1, 2)
    assert obj.state == {1, 2} and p.all_snapshots("s") == []
    assert isinstance(obj.last_snapshot_error, TypeError)
    with pytest.raises(BackendError, match="cannot encode a snapshot"):
        obj.snapshot()


def test_writes_need_a_recovered_open_object() -> None:
    p = Provider("memory://")
    obj = counter("s", p, start=False)
    with pytest.raises(WriterStopped, match="not recovered"):
        obj.persist({"n": 1})
    obj.recover()
    obj.persist({"n": 1})
    obj.close()
    obj.close()  # idempotent
    with pytest.raises(EventSourcedError, match="closed"):
        obj.persist({"n": 1})
    with pytest.raises(EventSourcedError, match="closed"):
        obj.recover()
    assert repr(counter("s", p)) == "EventSourced('s', index=1)"


# ------------------------------------------------------------------------------ tracing
def test_lifecycle_machine_records_init_snapshots_and_restores(provider: Provider) -> None:
    obj = counter("s", provider, strategy=IntervalStrategy(2))
    obj.persist({"n": 1}, {"n": 2}, {"n": 3})
    obj.close()
    counter("s", provider).close()
    again = counter("s", provider)
    life = provider.backend.read(lifecycle_id("s"))
    assert [(r.kind, r.name) for r in life] == [
        ("init", "init"),
        ("event", "snapshot"),
        ("event", "snapshot"),
        ("restore", "restore"),
        ("restore", "restore"),
    ]
    assert life[3].args == {"snapshot": 2, "replayed": 1, "highest": 2, "tick": 1}
    assert life[-1].mach_tick == 2 and again.mach_tick == 2
    machine = provider.backend.get_machine(lifecycle_id("s"))
    assert machine.parent_id == "s"
    assert provider.backend.get_machine("s").mach_tick == 2
    again.persist({"n": 4})
    assert provider.backend.read("s", 3)[0].mach_tick == 2  # events after a restart
    # the event stream holds the events only: nothing recorded twice
    assert provider.highest("s") == 3


def test_trace_to_a_sink_records_events_and_restores() -> None:
    sink = MemorySink()
    p = Provider("memory://")
    obj = counter("s", p, trace=sink, trace_name="traced")
    obj.persist({"n": 1}, {"n": 2})
    assert obj.flush(5)
    obj.close()
    again = counter("s", p, trace=sink, trace_name="traced")
    again.persist({"n": 3})
    assert again.flush(5)
    again.close()
    hist = sink.history("traced")
    assert [(r.kind, r.name, r.args) for r in hist] == [
        (Kind.INIT, "init", {"snapshot": None, "replayed": 0, "highest": -1, "tick": 0}),
        (Kind.EVENT, "dict", {"n": 1}),
        (Kind.EVENT, "dict", {"n": 2}),
        (Kind.RESTORE, "restore", {"snapshot": None, "replayed": 2, "highest": 1, "tick": 1}),
        (Kind.EVENT, "dict", {"n": 3}),
    ]
    assert hist[3].entered == (0,) and hist[3].mach_tick == 1
    assert [r.seq for r in hist] == [0, 1, 2, 3, 4]


def test_trace_into_the_providers_own_backend_is_not_doubled(provider: Provider) -> None:
    obj = counter("s", provider, trace=provider.backend)
    obj.persist({"n": 1}, {"n": 2})
    obj.close()
    assert [r.seq for r in provider.backend.read("s")] == [0, 1]
    assert all(r.kind == Kind.EVENT for r in provider.backend.read("s"))


class BrokenSink:
    def register(self, machine: MachineRecord) -> int:
        raise OSError("sink down")

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        raise OSError("sink down")

    def dispose(self, machine_id: str) -> None:
        raise OSError("sink down")

    def flush(self, timeout: float | None = None) -> bool:
        raise OSError("sink down")

    def close(self) -> None:
        raise OSError("sink down")


def test_tracing_never_raises_into_app_code() -> None:
    p = Provider("memory://")
    obj = counter("s", p, trace=BrokenSink())
    obj.persist({"n": 1})
    obj.persist({"n": 2})
    obj.close()
    assert counter("s", p).state == 3
