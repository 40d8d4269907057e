"""Journal rules J-01..J-10 of event-sourced streams, through Provider, on every backend."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import backends
from aminspect.machines.es_store import DuplicateIndex, Provider, StoredEvent
from aminspect.machines.eventsourced import (
    EventRejected,
    EventSourced,
    PersistFailed,
    RecoveryError,
    RecoveryGap,
    WriterStopped,
)
from backends import BackendError, GapError
from tracer.records import TransitionRecord

URLS: dict[str, Callable[[Path], str]] = {
    "memory": lambda p: "memory://",
    "sqlite": lambda p: f"sqlite:///{p / 'es.db'}",
    "journal": lambda p: f"journal:///{p / 'es.amj'}",
    "lmdb": lambda p: f"lmdb:///{p / 'es.lmdb'}",
}
PERSISTENT = [k for k in URLS if k != "memory"]


@pytest.fixture(params=sorted(URLS))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return URLS[request.param](tmp_path)


@pytest.fixture
def provider(url: str) -> Iterator[Provider]:
    p = Provider(url)
    yield p
    p.close()


def _four(p: Provider, stream: str = "s") -> None:
    p.write_events(stream, 0, [("e", {"n": n}) for n in (1, 2, 3, 4)])


def _ns(events: list[StoredEvent]) -> list[int]:
    return [e.payload["n"] for e in events]


def _counter(stream: str, provider: Provider, **kw: object) -> EventSourced[int, dict[str, int]]:
    return EventSourced(stream, provider, initial=0, apply=lambda s, e: s + e["n"], **kw)  # type: ignore[arg-type]


def test_J01_indexes_start_at_zero_contiguous_with_highest(provider: Provider) -> None:
    assert provider.highest("s") == -1
    _four(provider)
    events = provider.read_events("s")
    assert [e.index for e in events] == [0, 1, 2, 3]
    assert provider.highest("s") == 3
    obj = _counter("t", provider)
    assert obj.persist({"n": 5}) == 0
    assert obj.persist({"n": 5}, {"n": 1}) == 2
    assert provider.highest("t") == obj.highest == 2


def test_J02_half_open_reads(provider: Provider) -> None:
    _four(provider)
    assert _ns(provider.read_events("s")) == [1, 2, 3, 4]
    assert _ns(provider.read_events("s", 0, 0)) == [1, 2, 3, 4]  # end 0 = to the end
    assert _ns(provider.read_events("s", 1, 3)) == [2, 3]
    assert _ns(provider.read_events("s", 2)) == [3, 4]
    assert provider.read_events("s", 2, 2) == []
    assert provider.read_events("s", 10, 20) == []  # out of range: empty, no crash
    assert provider.read_events("s", 3, 1) == []
    with pytest.raises(BackendError, match="non-negative"):
        provider.read_events("s", -1)
    with pytest.raises(BackendError, match="non-negative"):
        provider.read_events("s", 0, -2)


def test_J03_streams_are_isolated(provider: Provider) -> None:
    _four(provider, "a")
    provider.write_events("b", 0, [("e", {"n": 9})])
    assert _ns(provider.read_events("a")) == [1, 2, 3, 4]
    assert _ns(provider.read_events("b")) == [9]
    assert provider.read_events("unknown") == []
    assert provider.latest_snapshot("unknown") is None
    assert provider.highest("unknown") == -1


def test_J04_delete_is_inclusive_and_keeps_highest(provider: Provider) -> None:
    _four(provider)
    provider.delete_events("s", 1)
    assert _ns(provider.read_events("s")) == [3, 4]
    assert provider.highest("s") == 3
    provider.delete_events("s", 3)
    assert provider.read_events("s") == []
    assert provider.highest("s") == 3  # never lowered, even when everything is deleted
    with pytest.raises(BackendError, match="highest is 3"):
        provider.delete_events("s", 4)
    provider.write_events("s", 4, [("e", {"n": 5})])  # continues after the old highest
    assert [e.index for e in provider.read_events("s")] == [4]


def test_J05_existing_index_is_rejected(provider: Provider) -> None:
    _four(provider)
    for payload in ({"n": 4}, {"n": 99}):  # also an identical resend: never silently kept
        with pytest.raises(DuplicateIndex, match="already stored"):
            provider.write_events("s", 3, [("e", payload)])
    assert _ns(provider.read_events("s")) == [1, 2, 3, 4]


def test_J05_two_objects_on_one_stream_one_wins(provider: Provider) -> None:
    a = _counter("s", provider)
    b = _counter("s", provider)
    a.persist({"n": 1})
    with pytest.raises(PersistFailed, match="another writer"):
        b.persist({"n": 2})
    with pytest.raises(WriterStopped):
        b.persist({"n": 2})
    b.recover()  # re-reads the stream: sees a's event
    assert b.state == 1
    b.persist({"n": 2})
    assert _ns(provider.read_events("s")) == [1, 2]


def test_J06_gap_on_append_is_refused(provider: Provider) -> None:
    _four(provider)
    with pytest.raises(GapError):
        provider.write_events("s", 6, [("e", {"n": 7})])
    assert provider.highest("s") == 3


def test_J06_missing_index_on_replay_is_a_gap_error(tmp_path: Path) -> None:
    path = tmp_path / "gap.db"
    with Provider(f"sqlite:///{path}") as p:
        obj = _counter("s", p)
        obj.persist(*({"n": n} for n in range(5)))
        obj.close()
    db = sqlite3.connect(path)  # lose event 2 behind the backend's back
    db.execute(
        "DELETE FROM records WHERE seq = 2 AND mid = (SELECT mid FROM machines WHERE id = 's')"
    )
    db.commit()
    db.close()
    with Provider(f"sqlite:///{path}") as p:
        with pytest.raises(RecoveryGap) as info:
            _counter("s", p)
        assert (info.value.stream, info.value.index) == ("s", 2)
        assert isinstance(info.value.cause, GapError)


def test_J06_deleted_events_without_snapshot_are_a_gap(provider: Provider) -> None:
    obj = _counter("s", provider)
    obj.persist(*({"n": n} for n in range(4)))
    obj.delete_events(1)
    with pytest.raises(RecoveryGap, match=r"events \[0, 2\) were deleted") as info:
        obj.recover()
    assert info.value.index == 0
    assert obj.state == 6  # the state from before the failed recovery is kept
    with pytest.raises(WriterStopped):
        obj.persist({"n": 1})


def test_J07_undecodable_event_fails_recovery_whole(provider: Provider) -> None:
    provider.write_events("s", 0, [("e", {"n": 1}), ("e", {"n": 2}), ("e", {"x": 3})])
    seen: list[object] = []
    with pytest.raises(RecoveryError) as info:
        _counter("s", provider, on_recovery=seen.append)
    err = info.value
    assert (err.stream, err.index) == ("s", 2)
    assert isinstance(err.cause, KeyError)
    assert "s: recovery failed at event 2: KeyError" in str(err)
    assert seen == []  # nothing delivered, nothing half-applied
    obj = _counter("s", provider, start=False)
    with pytest.raises(RecoveryError):
        obj.recover()
    assert obj.state == 0 and obj.index == 0
    with pytest.raises(WriterStopped):
        obj.persist({"n": 1})


def test_J07_corrupt_stored_record_names_the_index(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    with Provider(f"sqlite:///{path}") as p:
        p.write_events("s", 0, [("e", {"n": n}) for n in range(4)])
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE records SET data = x'c1c1c1' WHERE seq = 3 "
        "AND mid = (SELECT mid FROM machines WHERE id = 's')"
    )
    db.commit()
    db.close()
    with Provider(f"sqlite:///{path}") as p:
        with pytest.raises(RecoveryError) as info:
            _counter("s", p)
        assert info.value.index == 3
        assert isinstance(info.value.cause, backends.CorruptError)


def test_J08_bounded_replay(provider: Provider) -> None:
    _four(provider)
    assert _ns(provider.replay("s", 1, 2)[0]) == [2, 3]  # from/to inclusive
    assert _ns(provider.replay("s", 0, None, 3)[0]) == [1, 2, 3]
    assert provider.replay("s", 0, 3, 0) == ([], 3)  # max 0: none, highest reported
    assert provider.replay("s", 3, 1) == ([], 3)  # from > to: none
    assert provider.replay("s", 7) == ([], 3)
    assert provider.replay("unknown") == ([], -1)
    with pytest.raises(BackendError):
        provider.replay("s", -1)


def test_J09_multi_event_persist_is_all_or_none(provider: Provider) -> None:
    obj = _counter("s", provider)
    obj.persist({"n": 1})
    with pytest.raises(EventRejected, match="cannot be encoded"):
        obj.persist({"n": 2}, {"n": object()}, {"n": 3})  # type: ignore[dict-item]
    assert provider.highest("s") == 0 and obj.state == 1 and obj.index == 1
    with pytest.raises(BackendError, match="cannot be encoded"):
        provider.write_events("s", 1, [("e", {"n": 2}), ("e", {"n": object()})])
    assert provider.highest("s") == 0


def test_J09_rejected_event_leaves_neighbours(provider: Provider) -> None:
    obj = _counter("s", provider)
    obj.persist({"n": 6})
    with pytest.raises(EventRejected):
        obj.persist({"n": {1, 2}})  # type: ignore[dict-item]  # a set cannot be serialized: rejected, not stored
    with pytest.raises(EventRejected, match="refused by apply"):
        obj.persist({"m": 7})  # apply raises: also a rejection
    obj.persist({"n": 8})
    assert _ns(provider.read_events("s")) == [6, 8]
    assert obj.state == 14 and obj.stopped is None


class _FlakyProvider(Provider):
    """Stores the events, then reports a failure: an append of unknown outcome."""

    fail = False

    def append(self, stream: str, records: Sequence[TransitionRecord]) -> None:
        super().append(stream, records)
        if self.fail:
            self.fail = False
            raise BackendError("connection lost after the write")


def test_J09_failed_append_stops_writer_until_highest_is_reread() -> None:
    p = _FlakyProvider("memory://")
    obj = _counter("s", p)
    obj.persist({"n": 1})
    p.fail = True
    with pytest.raises(PersistFailed, match="connection lost"):
        obj.persist({"n": 10})
    assert obj.stopped is not None and obj.state == 1
    with pytest.raises(WriterStopped, match="call recover"):
        obj.persist({"n": 100})
    done = obj.recover()
    assert done.highest == 1 and obj.state == 11  # the unknown outcome was a success
    obj.persist({"n": 100})
    assert _ns(p.read_events("s")) == [1, 10, 100]
    life = p.backend.read("s.lifecycle")
    assert [r.name for r in life].count("stopped") == 1
    p.close()


@pytest.mark.parametrize("kind", PERSISTENT)
def test_J10_reopen_never_loses_acknowledged_events(kind: str, tmp_path: Path) -> None:
    url = URLS[kind](tmp_path)
    acked = 0
    for round_ in range(3):
        with Provider(url) as p:
            obj = _counter("acct", p, strategy=None)
            assert obj.state == sum(range(acked)) and obj.index == acked
            for _ in range(7):
                obj.persist({"n": acked})
                acked += 1
            obj.close()
        assert round_ < 3
    with Provider(url) as p:
        assert _ns(p.read_events("acct")) == list(range(acked))


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_J10_close_waits_for_persists_in_flight(kind: str, tmp_path: Path) -> None:
    url = URLS[kind](tmp_path)
    p = Provider(url)
    obj = _counter("acct", p)
    acked: list[int] = []
    lock = threading.Lock()
    go = threading.Event()

    def writer(w: int) -> None:
        go.wait(5)
        for k in range(50):
            try:
                obj.persist({"n": 1})
            except Exception:
                return  # closed: not acknowledged
            with lock:
                acked.append(w * 100 + k)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    go.set()
    obj.close()  # races the writers: waits for the persist it interrupts
    for t in threads:
        t.join(10)
    p.close()
    with Provider(url) as again:
        assert len(again.read_events("acct")) >= len(acked)
        restored = _counter("acct", again)
        assert restored.state == restored.index >= len(acked)
