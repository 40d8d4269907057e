"""The tracer's engine: per-machine channels, the bounded buffer and the sender thread.

The app thread only gives a record its position (an atomic counter per channel) and
appends one plain tuple to a bounded deque (no lock, no wake-up per record). A daemon
sender thread orders records by position, assigns the final contiguous seqs, builds the
TransitionRecords, turns dropped records into ``gap`` records and writes batches to the
sink; it stops when its sink has no channel left. Nothing here raises into the app."""

from __future__ import annotations

import atexit
import contextvars
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from tracer._accel import speedups
from tracer.codec import KIND_CODES
from tracer.records import Kind, MachineRecord, TransitionRecord
from tracer.sinks import Sink

__all__ = [
    "DEFAULT_BUFFER",
    "Capture",
    "Channel",
    "Dispatcher",
    "OpenEvent",
    "Stats",
    "TraceHandle",
    "current_event",
    "dispatcher_for",
    "error_of",
    "pop_async_event",
    "pop_event",
    "push_async_event",
    "push_event",
]

DEFAULT_BUFFER = 100_000
BATCH_MAX = 4096  # records per sink write
LINGER = 0.03  # seconds the sender lets a batch build up after a wake-up (fewer GIL hand-offs)
FLUSH_AT_EXIT = 2.0  # seconds the interpreter may wait at exit for records to reach the sink

_PENDING = -1  # seq of a record whose capture position is not assigned yet
_GAP_CODE = KIND_CODES[Kind.GAP]
# Records are stamped with this monotonic clock on the app thread; the sender turns the
# stamp into UTC wall time (one clock read per record instead of two: the same stamp
# also starts the duration).
_clock = time.perf_counter_ns


def error_of(exc: BaseException | None) -> tuple[str, str] | None:
    """The (type, message) pair stored for an exception."""
    if exc is None:
        return None
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    return type(exc).__qualname__, message[:500]


class OpenEvent:
    """An event being processed; the stack of these gives nesting (parent_seq, source).

    ``capture`` is what a nested record names as its parent or source: anything with a
    ``position`` (and, once the sender wrote it, a ``seq``).
    """

    __slots__ = ("capture", "channel", "started_ns")

    def __init__(self, channel: Channel, capture: Any, started_ns: int) -> None:
        self.channel = channel
        self.capture = capture
        self.started_ns = started_ns


class _Stacks(threading.local):
    """Open events of synchronous code, per thread: a list is cheaper than a contextvar
    (no new context per push), and synchronous callbacks cannot interleave on one thread."""

    def __init__(self) -> None:
        self.stack: list[OpenEvent] = []


class _StackHolder(Protocol):
    @property
    def stack(self) -> list[OpenEvent]: ...


# The C version keeps each thread's stack in its thread state (cheaper to reach).
_local: _StackHolder = _Stacks() if speedups is None else speedups.ThreadStacks()

# Open events of asynchronous code, per asyncio task (a task copies its parent's context,
# so a child task sees the event that created it). Synchronous code uses ``_local``.
_event_stack: contextvars.ContextVar[tuple[OpenEvent, ...]] = contextvars.ContextVar(
    "aminspect_event_stack", default=()
)


def current_event() -> OpenEvent | None:
    """The innermost open event of this thread (synchronous) or task (asynchronous)."""
    stack = _local.stack
    if stack:
        return stack[-1]
    astack = _event_stack.get()
    return astack[-1] if astack else None


def push_event(ev: OpenEvent) -> None:
    """Open ``ev`` on this thread (synchronous machines)."""
    _local.stack.append(ev)


def pop_event(ev: OpenEvent) -> None:
    """Close ``ev`` on this thread; a callback that left the stack unbalanced is mended."""
    stack = _local.stack
    if stack and stack[-1] is ev:
        stack.pop()
    elif ev in stack:  # drop ev and what it opened
        del stack[stack.index(ev) :]


def push_async_event(ev: OpenEvent) -> None:
    """Open ``ev`` in this asyncio task (asynchronous machines)."""
    _event_stack.set((*_event_stack.get(), ev))


def pop_async_event(ev: OpenEvent) -> None:
    stack = _event_stack.get()
    if stack and stack[-1] is ev:
        _event_stack.set(stack[:-1])
    elif ev in stack:
        _event_stack.set(stack[: stack.index(ev)])


class Capture:
    """A record on its way out of a channel; it carries the record's fields itself.

    ``position`` orders records by the moment they changed the machine, not by when they
    finished: a trigger fired from inside another finishes first but may change state
    later. The sender turns positions into final seqs (and sets ``seq``).
    """

    __slots__ = (
        "accepted",
        "args",
        "done",
        "duration",
        "entered",
        "error",
        "exited",
        "kind",
        "name",
        "parent",
        "position",
        "seq",
        "source",
        "time",
    )

    def __init__(self, kind: str, name: str, time_ns: int) -> None:
        self.kind = kind
        self.name = name
        self.time = time_ns
        self.duration = 0
        self.args: Any = None
        self.accepted = True
        self.error: tuple[str, str] | None = None
        self.exited: tuple[int, ...] = ()
        self.entered: tuple[int, ...] = ()
        self.position = _PENDING
        self.seq = _PENDING
        self.done = False  # committed
        self.parent: Any = None  # the open capture of the same machine that caused this
        self.source: tuple[Channel, Any] | None = None  # ... of another machine

    @property
    def record(self) -> Capture:
        """The record fields (kind, name, args, exited, ...) live on the capture itself."""
        return self


# What the app thread hands to the sender for one record (a plain tuple: one allocation):
# (channel key, position, holder, parent, source, after mask,
#  kind code, name, time, duration, args, accepted, error, exited, entered, mach_tick)
# ``time`` is a _clock() stamp; ``after mask`` is ``config_mask(after)``.
# ``holder`` is the capture (or open event) other records may name as parent or source:
# the sender sets its ``seq``. Drops are kept as (position, after mask, time).
#
# In the usual record every field is an int, a str, None or a tuple of those: nothing the
# garbage collector tracks. Its first collection then untracks the tuple, so the records
# waiting for the sender are never promoted to the old generation; with the channel, a
# frozenset and a Kind member in them, a burst of records set off full collections of the
# app's whole heap (TrackMany: 2 per 50,000 records, 26 ms of 158).
_Item = tuple[Any, ...]

_KIND_BY_CODE: dict[int, Kind] = {code: Kind(kind) for kind, code in KIND_CODES.items()}
_next_channel_key = itertools.count(1).__next__

# Configurations as bit masks (bit i set: state i is active), cached by configuration.
# Cleared when full: a mask decodes without the cache (mask_config), so no entry must stay.
# Callers inline ``_MASKS.get(c) or config_mask(c)`` (the ``or`` also covers the empty
# configuration, whose mask is 0).
_MASKS: dict[frozenset[int], int] = {}
_MASKS_MAX = 4096


def config_mask(config: frozenset[int]) -> int:
    """``config`` as a bit mask: an int, which the garbage collector does not track."""
    mask = _MASKS.get(config)
    if mask is None:
        mask = 0
        for index in config:
            mask |= 1 << index
        if len(_MASKS) >= _MASKS_MAX:
            _MASKS.clear()
        _MASKS[config] = mask
    return mask


def mask_config(mask: int) -> frozenset[int]:
    """The configuration a ``config_mask`` stands for."""
    return frozenset(i for i in range(mask.bit_length()) if mask >> i & 1)


class Channel:
    """One traced machine instance: gives its records their order and hands them on."""

    def __init__(self, machine: MachineRecord, dispatcher: Dispatcher) -> None:
        self.machine = machine
        self.id = machine.id
        self.dispatcher = dispatcher
        self.active: frozenset[int] = frozenset()  # configuration after the last capture
        self.captured = 0
        self.sent = 0
        self.dropped = 0
        self.closed = False
        # Set for a resurrected machine (``attach(restore=...)``): its first ``init``
        # record is written as a ``restore`` record instead.
        self.restoring = False
        # next() on a count is atomic under the GIL: positions need no lock.
        self.positions = itertools.count()  # the C hot path reads it directly
        self.next_position = self.positions.__next__
        self.key = _next_channel_key()  # names the channel in the records it enqueues

    def begin(self, kind: str, name: str = "", parent: OpenEvent | None = None) -> Capture:
        """Start a record; ``parent`` is the event open on this thread or task, if any."""
        if self.restoring and kind == Kind.INIT:
            self.restoring = False
            kind, name = Kind.RESTORE, "restore"
        cap = Capture(kind, name, _clock())
        if parent is not None:
            if parent.channel is self:
                cap.parent = parent.capture
            else:
                cap.source = (parent.channel, parent.capture)
        return cap

    def position(self, cap: Any) -> None:
        """Give ``cap`` its place in the order now: it is about to change the machine."""
        if cap.position == _PENDING:
            cap.position = self.next_position()

    def commit(self, cap: Capture, after: frozenset[int]) -> None:
        """The record is complete; ``after`` is the configuration after it."""
        if self.closed:
            return
        cap.done = True
        position = cap.position
        if position == _PENDING:
            position = cap.position = self.next_position()
        self.active = after
        self.captured += 1
        self.dispatcher.enqueue(
            (
                self.key,
                position,
                cap,
                cap.parent,
                cap.source,
                _MASKS.get(after) or config_mask(after),
                KIND_CODES[cap.kind],
                cap.name,
                cap.time,
                cap.duration,
                cap.args,
                cap.accepted,
                cap.error,
                tuple(cap.exited),
                tuple(cap.entered),
                self.machine.mach_tick,
            )
        )

    def emit(
        self,
        kind: str,
        name: str,
        exited: Iterable[int],
        entered: Iterable[int],
        after: frozenset[int],
        *,
        args: Any = None,
        accepted: bool = True,
        error: tuple[str, str] | None = None,
        duration: int = 0,
        parent: Any = None,
        nested: bool = True,
    ) -> None:
        """Record a mutation that opens no event, in one step.

        The parent (same machine) or source (another machine) is the event open on this
        thread or task; with ``nested=False`` it is only the ``parent`` given, if any.
        """
        if self.closed:
            return
        if self.restoring and kind == Kind.INIT:
            self.restoring = False
            kind, name = Kind.RESTORE, "restore"
        source = None
        if nested and parent is None:
            ev = current_event()
            if ev is not None:
                if ev.channel is self:
                    parent = ev.capture
                else:
                    source = (ev.channel, ev.capture)
        self.active = after
        self.captured += 1
        self.dispatcher.enqueue(
            (
                self.key,
                self.next_position(),
                None,
                parent,
                source,
                _MASKS.get(after) or config_mask(after),
                KIND_CODES[kind],
                name,
                _clock(),
                duration,
                args,
                accepted,
                error,
                tuple(exited),
                tuple(entered),
                self.machine.mach_tick,
            )
        )

    def emit_change(
        self,
        kind_code: int,
        name: str,
        exited: tuple[int, ...],
        entered: tuple[int, ...],
        after: frozenset[int],
        args: Any,
    ) -> None:
        """``emit`` for an accepted, instant add/remove/set (any kind but ``init``, given by
        its ``KIND_CODES`` code) whose exited and entered are already sorted tuples: the
        adapters' hot path, with no keyword arguments to parse. Parent or source: the
        event open here, as ``emit``."""
        if self.closed:
            return
        parent = source = None
        stack = _local.stack or _event_stack.get()  # current_event(), inlined
        ev = stack[-1] if stack else None
        if ev is not None:
            if ev.channel is self:
                parent = ev.capture
            else:
                source = (ev.channel, ev.capture)
        self.active = after
        self.captured += 1
        self.dispatcher.enqueue(
            (
                self.key, self.next_position(), None, parent, source,
                _MASKS.get(after) or config_mask(after), kind_code, name, _clock(), 0, args, True,
                None, exited, entered, self.machine.mach_tick,
            )
        )  # fmt: skip


class Stats:
    """Counters of a trace handle (read-only snapshot)."""

    __slots__ = ("captured", "dropped", "last_error", "reconnects", "sent")

    def __init__(
        self, captured: int, sent: int, dropped: int, reconnects: int, last_error: str | None
    ) -> None:
        self.captured = captured
        self.sent = sent
        self.dropped = dropped
        self.reconnects = reconnects
        self.last_error = last_error

    def __repr__(self) -> str:
        return (
            f"Stats(captured={self.captured}, sent={self.sent}, dropped={self.dropped}, "
            f"reconnects={self.reconnects}, last_error={self.last_error!r})"
        )


class _SeqMap:
    """Sender-side state of one channel: positions waiting for their turn, and seqs."""

    __slots__ = (
        "gaps",
        "last_after",
        "lost",
        "lost_after",
        "lost_time",
        "next_pos",
        "next_seq",
        "pending",
    )

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self.next_pos = 0
        self.pending: dict[int, _Item] = {}  # by position, until every earlier one is out
        self.lost = 0  # records a failed write lost: the next record is a gap for them
        self.lost_after = 0  # configuration masks (see config_mask)
        self.lost_time = 0
        self.last_after = 0  # after the record numbered last
        self.gaps = 0  # gap records made for the batch being written


_popleft = deque.popleft
_DROPPED = object()  # first field of a pending entry standing for a dropped record


class Dispatcher:
    """The bounded buffer and the sender thread of one sink.

    The app thread appends one tuple per record to a deque (atomic, no lock) and wakes the
    sender only when it is not already due to run. The sender thread orders records by
    position, assigns seqs, builds the records, turns drops into gap records and writes.
    It stops when no channel is left and is started again by the next ``add``.

    A sink with ``write_rows`` (``tracer.sinks.RowSink``) gets rows instead of records:
    tuples of plain values, about half the cost of a TransitionRecord to build, and not
    tracked by the garbage collector once they survive a collection.
    """

    def __init__(self, sink: Sink, capacity: int = DEFAULT_BUFFER) -> None:
        self.sink = sink
        self._rows = _takes_rows(sink)
        self.capacity = max(1, capacity)
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._buffer: deque[_Item] = deque()
        self._drops: dict[Channel, list[tuple[int, int, int]]] = {}
        self._channels: dict[int, Channel] = {}  # by key (records name channels by key)
        self._register: list[Channel] = []
        self._dispose: list[Channel] = []
        self._maps: dict[Channel, _SeqMap] = {}  # sender thread only
        self._wake = threading.Event()
        self._signalled = False  # a wake-up is pending; enqueue need not signal again
        # A flush or control message: ship without lingering (cuts one already begun).
        self._urgent = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._busy = False
        self._stopped = False
        self._running = False
        self._offset = 0  # wall time minus _clock(), sender thread
        self._thread: threading.Thread | None = None
        atexit.register(self._at_exit)

    # -- app side ---------------------------------------------------------------------
    def _ensure_running(self) -> None:
        """Start the sender thread if it is not running (call with the lock held)."""
        if not self._running and not self._stopped:
            self._running = True
            self._thread = threading.Thread(target=self._run, name="aminspect-tracer", daemon=True)
            self._thread.start()

    def _wake_now(self) -> None:
        """Wake the sender to ship at once: a flush or a control message."""
        self._urgent.set()
        self._wake.set()

    def add(self, channel: Channel) -> None:
        with self._lock:
            self._channels[channel.key] = channel
            self._register.append(channel)
            self._ensure_running()
        self._wake_now()

    def remove(self, channel: Channel) -> None:
        with self._lock:
            self._dispose.append(channel)
            self._ensure_running()
        self._wake.set()

    def enqueue(self, item: _Item) -> None:
        """Hand one record (see ``_Item``) to the sender; drops the oldest when full."""
        buf = self._buffer
        if len(buf) >= self.capacity:
            self._drop_oldest()
        buf.append(item)
        if not self._signalled:  # one wake-up per batch, not per record
            self._signalled = True
            self._wake.set()

    def _drop_oldest(self) -> None:
        with self._lock:
            try:
                old = self._buffer.popleft()
            except IndexError:  # the sender took everything meanwhile
                return
            channel = self._channels.get(old[0])
            if channel is not None:
                self._drops.setdefault(channel, []).append((old[1], old[5], old[8]))
                channel.dropped += 1

    # -- sender thread ------------------------------------------------------------------
    def _run(self) -> None:
        buf = self._buffer
        while True:
            self._wake.wait(0.25)
            # Let a batch build up: waking per record costs the app a GIL hand-off each
            # time (measured: ~20 us per record on a busy 2-core machine). A flush ends
            # the wait at once (a sleep made it wait the rest out: 15 ms on average).
            self._urgent.wait(LINGER)
            self._urgent.clear()
            self._wake.clear()
            self._signalled = False  # before draining: a later append signals again
            # A method of its own: nothing it took (records holding the app's objects,
            # channels registered or disposed) stays referenced here while we wait.
            stopped = self._ship_pending()
            with self._lock:
                self._busy = False
                idle = not (buf or self._drops or self._register or self._dispose)
                if idle:
                    self._idle.notify_all()
                if stopped or (idle and not self._maps):
                    self._running = False
                    return

    def _ship_pending(self) -> bool:
        """Take what is pending and ship it, phase by phase; returns whether the
        dispatcher was stopped when it was taken."""
        buf = self._buffer
        with self._lock:
            drops, self._drops = self._drops, {}
            register, self._register = self._register, []
            dispose, self._dispose = self._dispose, []
            self._busy = True
            stopped = self._stopped
            # What is there now, taken in one C-level loop: it holds the GIL, so no
            # append interleaves, and the lock keeps _drop_oldest out.
            items: list[_Item] = list(map(_popleft, itertools.repeat(buf, len(buf))))
        if items or drops or register or dispose:
            try:
                for batch in _phases(register, drops, items, dispose):
                    self._ship(*batch)
            except Exception as exc:  # a bug here must not kill the thread
                self.last_error = f"tracer sender: {type(exc).__name__}: {exc}"
        return stopped

    def _ship(
        self,
        register: list[Channel],
        drops: dict[Channel, list[tuple[int, int, int]]],
        items: list[_Item],
        dispose: list[Channel],
    ) -> None:
        """Order, number and write one batch (sender thread)."""
        maps = self._maps
        # Stamps are _clock() values: wall time = stamp + offset, read once per batch.
        self._offset = offset = time.time_ns() - _clock()
        for ch in register:
            self._guard(self._start, ch)
        smap: _SeqMap | None
        for ch, lost in drops.items():
            smap = maps.get(ch)
            if smap is not None:
                for position, after, when in lost:
                    smap.pending[position] = (_DROPPED, position, None, None, None, after, when)
        # Records, or rows (tuples in tracer.codec's positional form) for a RowSink.
        out: dict[Channel, list[Any]] = {}
        channels = self._channels
        last = 0  # channel keys start at 1
        owner: Channel | None = None
        smap = None
        recs: list[Any] = []
        append = recs.append
        record = TransitionRecord
        kinds = _KIND_BY_CODE
        rows = self._rows
        mid = ""
        if rows and items:
            items = self._bulk_rows(items, out, offset)
        for item in items:
            if item[0] != last:
                last = item[0]
                owner = channels.get(last)
                smap = None if owner is None else maps.get(owner)
                if owner is not None and smap is not None:
                    ch = owner
                    recs = out.get(ch) or out.setdefault(ch, [])
                    append = recs.append
                    mid = ch.id
            if smap is None:
                if owner is not None:
                    owner.dropped += 1  # registration failed; the reason is in last_error
                continue
            if (
                item[1] == smap.next_pos
                and item[3] is None
                and item[4] is None
                and not smap.pending
                and not smap.lost
            ):
                # The usual record: next in order, no parent, no source (_record, inlined).
                seq = smap.next_seq
                smap.next_seq = seq + 1
                smap.next_pos += 1
                holder = item[2]
                if holder is not None:
                    holder.seq = seq
                if rows:
                    append(
                        (
                            seq, item[15], item[8] + offset, item[9], item[6], item[7],
                            item[10], item[11], item[12], item[13], item[14], None, None,
                        )
                    )  # fmt: skip
                else:
                    append(
                        record(
                            mid, seq, kinds[item[6]], item[7], item[15], item[8] + offset, item[9],
                            item[10], item[11], item[12], item[13], item[14], None, None,
                        )
                    )  # fmt: skip
                smap.last_after = item[5]
            elif (
                item[1] == smap.next_pos
                and not smap.pending
                and (item[3] is None or item[3].position != _PENDING)
            ):
                self._record(ch, smap, item, recs)
            else:  # out of order (nesting) or after a drop: wait for the earlier ones
                smap.pending[item[1]] = item
                self._drain(ch, smap, recs)
        for ch in drops:
            smap = maps.get(ch)
            if smap is not None and smap.pending:
                self._drain(ch, smap, out.get(ch) or out.setdefault(ch, []))
        for ch, recs in out.items():
            if recs:
                smap = maps[ch]
                self._write(ch, smap, recs)
                smap.gaps = 0
        for ch in dispose:
            self._guard(self.sink.dispose, ch.id)
            maps.pop(ch, None)
            channels.pop(ch.key, None)

    def _bulk_rows(
        self, items: list[_Item], out: dict[Channel, list[Any]], offset: int
    ) -> list[_Item]:
        """The usual batch for a RowSink, in bulk: one channel, every record next in order,
        none naming a parent or source. Returns what is left for the record-by-record
        path (everything, unless the whole batch was done here)."""
        key = items[0][0]
        ch = self._channels.get(key)
        smap = None if ch is None else self._maps.get(ch)
        if ch is None or smap is None or smap.pending or smap.lost:
            return items
        first = smap.next_pos
        n = len(items)
        seq = smap.next_seq
        if speedups is not None:  # the same, in C (tracer/_speedups.c)
            rows = speedups.bulk_rows(items, key, first, seq, offset)
            if rows is None:
                return items
        else:
            # One pass of C-level loops: same channel, positions first..first+n-1 in
            # order, no parent, no source.
            if [it[1] for it in items] != list(range(first, first + n)) or any(
                [it[0] != key or it[3] is not None or it[4] is not None for it in items]
            ):
                return items
            rows = [
                (
                    s, it[15], it[8] + offset, it[9], it[6], it[7], it[10], it[11], it[12],
                    it[13], it[14], None, None,
                )
                for s, it in zip(range(seq, seq + n), items, strict=True)
            ]  # fmt: skip
            for s, it in zip(range(seq, seq + n), items, strict=True):
                if it[2] is not None:  # an event a nested record named: it needs its seq
                    it[2].seq = s
        smap.next_seq = seq + n
        smap.next_pos = first + n
        smap.last_after = items[-1][5]
        out.setdefault(ch, []).extend(rows)
        return []

    def _record(self, ch: Channel, smap: _SeqMap, item: _Item, out: list[Any]) -> None:
        """Number ``item`` (the next position of ``ch``) and build its record."""
        if smap.lost:
            self._gap(ch, smap, smap.lost, smap.lost_after, smap.lost_time, out)
            smap.lost = 0
        seq = smap.next_seq
        smap.next_seq = seq + 1
        smap.next_pos += 1
        holder = item[2]
        if holder is not None:
            holder.seq = seq
        parent = item[3]
        parent_seq = None
        if parent is not None:
            parent_seq = parent.seq
            if parent_seq < 0:  # changes state after this record: it is not numbered yet
                parent_seq = seq + parent.position - item[1]
        source = item[4]
        if source is not None:
            src_channel, src = source
            src_seq = src.seq
            if src_seq < 0:
                src_map = self._maps.get(src_channel)
                if src_map is None or src.position == _PENDING:
                    src_seq = None
                else:
                    src_seq = src_map.next_seq + src.position - src_map.next_pos
            source = None if src_seq is None else (src_channel.id, src_seq)
        if self._rows:
            out.append(
                (
                    seq, item[15], item[8] + self._offset, item[9], item[6], item[7],
                    item[10], item[11], item[12], item[13], item[14], parent_seq, source,
                )
            )  # fmt: skip
        else:
            out.append(
                TransitionRecord(
                    ch.id, seq, _KIND_BY_CODE[item[6]], item[7], item[15], item[8] + self._offset,
                    item[9], item[10], item[11], item[12], item[13], item[14], parent_seq, source,
                )
            )  # fmt: skip
        smap.last_after = item[5]

    def _drain(self, ch: Channel, smap: _SeqMap, out: list[Any]) -> None:
        """Number the pending records whose turn has come; runs of drops become one gap."""
        pending = smap.pending
        while True:
            item = pending.get(smap.next_pos)
            if item is None:
                return
            if item[0] is _DROPPED:
                count = 0
                while item is not None and item[0] is _DROPPED:
                    del pending[smap.next_pos]
                    smap.next_pos += 1
                    count += 1
                    last = item
                    item = pending.get(smap.next_pos)
                if smap.lost:  # lost by a failed write before these: one gap for both
                    count += smap.lost
                    smap.lost = 0
                self._gap(ch, smap, count, last[5], last[6] + self._offset, out)
                continue
            parent = item[3]
            if parent is not None and parent.position == _PENDING:
                return  # its parent has not changed the machine yet: wait for it
            del pending[smap.next_pos]
            self._record(ch, smap, item, out)

    def _gap(
        self,
        ch: Channel,
        smap: _SeqMap,
        count: int,
        after: int,
        when: int,
        out: list[Any],
    ) -> None:
        """One record standing for ``count`` lost ones, carrying the configuration after
        (``after`` is its mask)."""
        entered = tuple(sorted(mask_config(after)))
        seq, tick, args = smap.next_seq, ch.machine.mach_tick, {"dropped": count}
        if self._rows:
            out.append(
                (
                    seq,
                    tick,
                    when,
                    0,
                    _GAP_CODE,
                    "dropped",
                    args,
                    True,
                    None,
                    (),
                    entered,
                    None,
                    None,
                )
            )
        else:
            rec = TransitionRecord(ch.id, seq, Kind.GAP, "dropped", tick, when)
            rec.args = args
            rec.entered = entered
            out.append(rec)
        smap.next_seq += 1
        smap.gaps += 1
        smap.last_after = after

    def _write(self, ch: Channel, smap: _SeqMap, recs: list[Any]) -> None:
        rows = self._rows
        # (seq, kind, args, time) of a record or a row
        if rows:
            fields: Callable[[Any], tuple[int, Any, Any, int]] = _row_fields
            gap: Any = _GAP_CODE
        else:
            fields, gap = _record_fields, Kind.GAP
        for i in range(0, len(recs), BATCH_MAX):
            chunk = recs[i : i + BATCH_MAX]
            if rows:
                ok = self._guard(self.sink.write_rows, ch.id, chunk[0][0], chunk)  # type: ignore[attr-defined]
            else:
                ok = self._guard(self.sink.write, ch.id, chunk)
            if ok:
                gaps = 0
                if smap.gaps:  # only _gap() makes gap records: count them when it did
                    for r in chunk:
                        if fields(r)[1] == gap:
                            gaps += 1
                ch.sent += len(chunk) - gaps
                continue
            # Lost, with every later record of this batch: the next write starts with a
            # gap record standing for them, at the first lost seq.
            rest = recs[i:]
            smap.next_seq = fields(rest[0])[0]
            lost = 0
            for r in rest:
                _, kind, args, _ = fields(r)
                if kind == gap:
                    lost += args["dropped"]
                else:
                    lost += 1
                    ch.dropped += 1  # records a gap stands for were counted when dropped
            smap.lost += lost
            smap.lost_after = smap.last_after  # rest ends with the record numbered last
            smap.lost_time = fields(rest[-1])[3]
            return

    def _start(self, ch: Channel) -> None:
        self._maps[ch] = _SeqMap(self.sink.register(ch.machine))

    def _guard(self, fn: Callable[..., Any], *args: Any) -> bool:
        try:
            fn(*args)
            return True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    # -- control ------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered record has been written and the sink has flushed it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wake_now()
        with self._lock:
            while self._buffer or self._drops or self._register or self._dispose or self._busy:
                self._ensure_running()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(0.05 if left is None else min(left, 0.05))
                self._wake_now()
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return bool(self.sink.flush(left))
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    def _at_exit(self) -> None:
        self.flush(FLUSH_AT_EXIT)

    def close(self, timeout: float | None = FLUSH_AT_EXIT) -> None:
        self.flush(timeout)
        with self._lock:
            self._stopped = True
        self._wake_now()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        atexit.unregister(self._at_exit)


def _takes_rows(sink: Any) -> bool:
    """Whether ``sink`` gets rows: it has ``write_rows``, defined no less derived than its
    ``write`` (a subclass that overrides only ``write`` still sees every record there)."""
    if not callable(getattr(sink, "write_rows", None)):
        return False
    cls = type(sink)

    def owner(name: str) -> type | None:
        return next((c for c in cls.__mro__ if name in c.__dict__), None)

    rows_cls, write_cls = owner("write_rows"), owner("write")
    if rows_cls is None:  # set on the instance
        return write_cls is None or "write" in getattr(sink, "__dict__", {})
    return write_cls is None or issubclass(rows_cls, write_cls)


def _row_fields(row: tuple[Any, ...]) -> tuple[int, Any, Any, int]:
    return row[0], row[4], row[6], row[2]


def _record_fields(rec: TransitionRecord) -> tuple[int, Any, Any, int]:
    return rec.seq, rec.kind, rec.args, rec.time


_dispatchers: weakref.WeakKeyDictionary[Any, Dispatcher] = weakref.WeakKeyDictionary()
_dispatchers_by_id: dict[int, Dispatcher] = {}
_dispatchers_lock = threading.Lock()


_Batch = tuple[list[Channel], dict[Channel, list[tuple[int, int, int]]], list[_Item], list[Channel]]


def _phases(
    register: list[Channel],
    drops: dict[Channel, list[tuple[int, int, int]]],
    items: list[_Item],
    dispose: list[Channel],
) -> list[_Batch]:
    """Split a batch so that a machine detached in it is disposed before its id is
    registered again.

    Sinks know machines by id: a machine traced again under the id of one detached in the
    same batch must reach the sink after that dispose, or the dispose would end the new
    one (a WebSocket server then refuses its records as undeclared) and both would number
    their records from the same seq. Each id's channels in the batch form generations
    (one registered earlier and disposed now, then each registered now, in order); phase
    k ships every id's k-th generation.
    """
    if not (register and dispose):  # the usual batch: nothing to reorder
        return [(register, drops, items, dispose)]
    registered = set(register)
    seen: dict[str, int] = {}
    generation: dict[Channel, int] = {}
    for ch in [c for c in dispose if c not in registered] + register:
        generation[ch] = seen.get(ch.id, -1) + 1
        seen[ch.id] = generation[ch]
    phases = max(seen.values(), default=0) + 1
    if phases == 1:
        return [(register, drops, items, dispose)]
    by_key = {ch.key: k for ch, k in generation.items()}  # records name channels by key

    def of(k: int) -> _Batch:
        return (
            [ch for ch in register if generation[ch] == k],
            {ch: d for ch, d in drops.items() if generation.get(ch, 0) == k},
            [it for it in items if by_key.get(it[0], 0) == k],
            [ch for ch in dispose if generation[ch] == k],
        )

    return [of(k) for k in range(phases)]


def dispatcher_for(sink: Sink, capacity: int = DEFAULT_BUFFER) -> Dispatcher:
    """The one dispatcher of a sink, so every machine traced into it shares one thread."""
    with _dispatchers_lock:
        try:
            found = _dispatchers.get(sink)
        except TypeError:  # sinks that cannot be weakly referenced
            found = _dispatchers_by_id.get(id(sink))
        if found is None:
            found = Dispatcher(sink, capacity)
            try:
                _dispatchers[sink] = found
            except TypeError:
                _dispatchers_by_id[id(sink)] = found
        return found


class TraceHandle:
    """What ``attach()`` returns: the traced machine instances and how to stop tracing."""

    def __init__(
        self, channels: Sequence[Channel], dispatcher: Dispatcher, detach: Callable[[], None]
    ) -> None:
        self.channels = list(channels)
        self.dispatcher = dispatcher
        self._detach = detach
        self.detached = False

    @property
    def machine_ids(self) -> list[str]:
        return [c.id for c in self.channels]

    @property
    def machine_id(self) -> str:
        """The id of the first (usually only) traced machine instance."""
        return self.channels[0].id

    @property
    def stats(self) -> Stats:
        return Stats(
            captured=sum(c.captured for c in self.channels),
            sent=sum(c.sent for c in self.channels),
            dropped=sum(c.dropped for c in self.channels),
            reconnects=int(getattr(self.dispatcher.sink, "reconnects", 0)),
            last_error=self.dispatcher.last_error
            or getattr(self.dispatcher.sink, "last_error", None),
        )

    def flush(self, timeout: float | None = 5.0) -> bool:
        """Wait (at most ``timeout`` seconds) until captured records reach the sink."""
        return self.dispatcher.flush(timeout)

    def detach(self) -> None:
        """Stop tracing; the machine is left exactly as it was before ``attach``."""
        if self.detached:
            return
        self.detached = True
        self._detach()
        for ch in self.channels:
            self.dispatcher.remove(ch)
            ch.closed = True

    def __enter__(self) -> TraceHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()
