"""The WebSocket sink: ships traced records to an aminspect server (wire protocol v1).

The tracer's sender thread calls ``register``/``write``; this sink keeps the records in a
bounded retransmit buffer until the server acknowledges them, and a background thread
running its own asyncio loop connects, batches, sends, reconnects with capped
exponential backoff and resumes from what the server says it holds. See
``docs/protocol.md`` ("The tracer's sink") for the seq and gap rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import ssl as ssl_module
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any
from urllib.parse import urlsplit

import msgpack
from websockets.asyncio.client import ClientConnection, connect

from tracer._version import __version__
from tracer.codec import KIND_CODES
from tracer.protocol import (
    CONFLICT,
    Ack,
    ClientSession,
    ErrorMessage,
    ProtocolError,
    Welcome,
    encode_dispose,
    encode_gap,
    encode_hello,
    encode_machine,
)
from tracer.records import RESET_KINDS, Kind, MachineRecord, TransitionRecord

__all__ = ["BufferFull", "WebSocketSink", "sink_for_url"]

_jitter = random.Random()  # our own: never touch the app's global random state

DEFAULT_RETRANSMIT = 65_536  # unacknowledged records kept for resending
DEFAULT_BATCH = 2048  # records per txs message (capped by the server's max_batch)
DEFAULT_DELAY = 0.002  # seconds to wait for more records before sending a small batch


# Records are kept as rows: tracer.codec's positional form (kind as its code), as tuples;
# a txs message carries them as they are.
_Row = tuple[Any, ...]
_GAP_CODE = KIND_CODES[Kind.GAP]
_RESET_CODES = frozenset(KIND_CODES[k] for k in RESET_KINDS)
_KIND_OF, _EXITED_OF, _ENTERED_OF = itemgetter(4), itemgetter(9), itemgetter(10)


def _to_row(rec: TransitionRecord) -> _Row:
    return (
        rec.seq, rec.mach_tick, rec.time, rec.duration, KIND_CODES[rec.kind], rec.name,
        rec.args, rec.accepted, rec.error, tuple(rec.exited), tuple(rec.entered),
        rec.parent_seq, rec.source,
    )  # fmt: skip


def _encode_txs(
    machine_id: str, rows: Sequence[_Row], shift: int, sources: Mapping[str, int]
) -> bytes:
    """``tracer.protocol.encode_txs`` for rows (the same bytes for the same records)."""
    if shift or sources:
        out: list[_Row] = []
        for r in rows:
            parent, src = r[11], r[12]
            out.append(
                (
                    r[0] + shift, *r[1:11], None if parent is None else parent + shift,
                    None if src is None else (src[0], src[1] + sources.get(src[0], 0)),
                )
            )  # fmt: skip
        rows = out
    data: bytes = msgpack.packb(["txs", machine_id, rows[0][0], rows], use_bin_type=True)
    return data


def advance_config(config: set[int], rows: Sequence[_Row]) -> None:
    """Apply rows to ``config`` in place: the configuration after the last of them.

    The same as replaying every row in order (a reset kind replaces the configuration,
    any other row exits then enters), but the per-row work is C-level: a state's last
    touch decides it, and a backward scan stops once every touched state is decided
    (after a row or two for most machines). This runs on every acknowledgement.

    Args:
        config: the configuration before the rows (state indexes); updated.
        rows: rows in seq order (``tracer.sinks.RowSink`` layout).
    """
    if not rows:
        return
    last_reset = -1
    if not _RESET_CODES.isdisjoint(map(_KIND_OF, rows)):
        last_reset = max(i for i, r in enumerate(rows) if r[4] in _RESET_CODES)
    tail = rows[last_reset + 1 :]
    undecided = set(chain.from_iterable(map(_EXITED_OF, tail)))
    undecided.update(chain.from_iterable(map(_ENTERED_OF, tail)))
    entered: set[int] = set()
    exited: set[int] = set()
    for r in reversed(tail):
        if not undecided:
            break
        for i in r[10]:  # an entry wins over an exit in the same row (a re-entry)
            if i in undecided:
                undecided.discard(i)
                entered.add(i)
        for i in r[9]:
            if i in undecided:
                undecided.discard(i)
                exited.add(i)
    if last_reset >= 0:
        config.clear()
        config.update(rows[last_reset][10])
    config.difference_update(exited)
    config.update(entered)


class BufferFull(RuntimeError):
    """The retransmit buffer stayed full for ``write_timeout``: the batch is not kept.

    The dispatcher turns a failed write into a gap record, so the loss is reported.
    """


class _Stream:
    """One machine's records on their way to the server."""

    __slots__ = (
        "acked",
        "base",
        "buf",
        "buf_base",
        "config",
        "declared",
        "dispose",
        "failed",
        "first_highest",
        "head",
        "machine",
        "next_local",
        "next_wire",
        "offset",
        "ready",
        "registered",
        "synced",
    )

    def __init__(self, machine: MachineRecord) -> None:
        self.machine = machine
        self.buf: list[_Row] = []  # rows of the records from local seq buf_base on
        self.buf_base = 0
        self.head = 0  # index in buf of the first unacknowledged record
        self.next_local = 0  # local seq of the next record written
        self.offset: int | None = None  # wire seq = local seq + offset; None until synced
        self.base = 0  # what register() returned
        self.registered = False
        self.first_highest: int | None = None  # the server's highest at the first sync
        self.synced = threading.Event()
        self.acked = -1  # highest wire seq the server acknowledged
        self.config: set[int] = set()  # configuration after the acknowledged records
        # per connection
        self.declared = False  # machine message sent on this connection
        self.ready = False  # the server answered it: next_wire is known
        self.next_wire = 0  # the wire seq the server expects next on this connection
        self.dispose = False
        self.failed = False  # the server holds conflicting records; stop sending

    def unacked(self) -> int:
        return len(self.buf) - self.head


class WebSocketSink:
    """A tracer sink that streams records to ``ws://`` or ``wss://`` servers.

    Never raises into the app and never blocks a transition: ``register`` waits at most
    ``sync_timeout`` and ``write`` at most ``write_timeout``, both on the tracer's sender
    thread. Attributes ``reconnects``, ``last_error`` and ``connected`` describe the link.

    Args:
        url: ``ws://host:port`` or ``wss://host:port``.
        token: the server's shared secret, if it requires one.
        retransmit: unacknowledged records kept for resending; when full, ``write``
            waits up to ``write_timeout`` and then gives the batch up as a gap.
        batch_size: records per txs message (the server's ``max_batch`` caps it).
        batch_delay: seconds to wait for more records before sending a partial batch.
        sync_timeout: seconds ``register`` waits for the server to say which seq a
            machine continues from.
        write_timeout: seconds ``write`` waits for room in the retransmit buffer.
        backoff: (first, cap) seconds between reconnection attempts, doubling.
        ssl: client SSL context for ``wss://`` (default: system trust store).
        client: the client name sent in hello.

    Raises:
        ValueError: when the URL is not ws:// or wss://.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        retransmit: int = DEFAULT_RETRANSMIT,
        batch_size: int = DEFAULT_BATCH,
        batch_delay: float = DEFAULT_DELAY,
        sync_timeout: float = 1.0,
        write_timeout: float = 0.5,
        backoff: tuple[float, float] = (0.05, 2.0),
        open_timeout: float = 5.0,
        ssl: ssl_module.SSLContext | None = None,
        client: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL: {url!r} (expected ws://HOST:PORT)")
        self.url = url
        self.token = token
        self.retransmit = max(1, retransmit)
        self.batch_size = max(1, batch_size)
        self.batch_delay = batch_delay
        self.sync_timeout = sync_timeout
        self.write_timeout = write_timeout
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.ssl = ssl
        self.client = client or f"aminspect-tracer/{__version__} {os.path.basename(sys.argv[0])}"
        self.reconnects = 0
        self.last_error: str | None = None
        self.connected = False
        self.gaps_sent = 0  # gap messages sent (dropped records reported)
        self._lock = threading.Condition()
        self._streams: dict[str, _Stream] = {}
        self._unacked = 0
        self._down = False  # the last connection attempt failed
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._established = False
        self._max_batch = self.batch_size

    # -- Sink protocol (tracer sender thread) ----------------------------------------------
    def register(self, machine: MachineRecord) -> int:
        """Declare a machine; returns the seq its records continue from.

        Waits up to ``sync_timeout`` for the server's answer (its highest stored seq).
        Without one it returns 0 and renumbers this machine's records once the server
        answers, so they continue after what the server holds.
        """
        with self._lock:
            s = self._streams.get(machine.id)
            if s is not None:  # traced again under the same id: continue its numbering
                s.machine = machine
                s.dispose = False
                s.declared = s.ready = False
                self._start()
                return s.next_local
            s = self._streams[machine.id] = _Stream(machine)
            wait = 0.0 if self._down else self.sync_timeout
            self._start()
        self._poke()
        if wait > 0:
            s.synced.wait(wait)
        with self._lock:
            s.registered = True
            if s.first_highest is not None:
                s.offset = 0
                s.base = s.first_highest + 1
                s.acked = s.first_highest
            else:
                s.base = 0
            s.next_local = s.buf_base = s.base
            return s.base

    def write(self, machine_id: str, records: Sequence[TransitionRecord]) -> None:
        """Keep records for sending; waits up to ``write_timeout`` for buffer room.

        Raises:
            BufferFull: when the retransmit buffer stayed full (the dispatcher reports
                the batch as a gap).
            KeyError: for a machine never registered.
        """
        if records:
            self.write_rows(machine_id, records[0].seq, [_to_row(r) for r in records])

    def write_rows(self, machine_id: str, first_seq: int, rows: Sequence[_Row]) -> None:
        """``write`` for rows (``tracer.sinks.RowSink``): kept and sent as they are.

        Raises:
            As ``write``.
        """
        if not rows:
            return
        n = len(rows)
        with self._lock:
            s = self._streams[machine_id]
            if self._unacked + n > self.retransmit and self._unacked:
                deadline = time.monotonic() + self.write_timeout
                while self._unacked + n > self.retransmit and self._unacked:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._closing:
                        raise BufferFull(
                            f"{self._unacked} records unacknowledged by {self.url} "
                            f"(retransmit buffer {self.retransmit}); batch of {n} dropped"
                        )
                    self._lock.wait(left)
            if first_seq != s.next_local or rows[0][0] != first_seq:
                raise ValueError(f"{machine_id}: expected seq {s.next_local}, got {rows[0][0]}")
            s.buf.extend(rows)
            s.next_local = rows[-1][0] + 1
            self._unacked += n
        self._poke()

    def dispose(self, machine_id: str) -> None:
        with self._lock:
            s = self._streams.get(machine_id)
            if s is not None:
                s.dispose = True
        self._poke()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the server acknowledged every record written; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._poke()
        with self._lock:
            while self._unacked:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(0.1 if left is None else min(left, 0.1))
            return True

    def close(self) -> None:
        """Stop the background thread (waits at most ~1 s); unsent records are lost."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
            thread = self._thread
        self._poke()
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    @property
    def unacked(self) -> int:
        """Records written and not yet acknowledged by the server."""
        return self._unacked

    # -- plumbing ----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(
                target=self._thread_main, name="aminspect-ws-sink", daemon=True
            )
            self._thread.start()

    def _poke(self) -> None:
        """Wake the sender coroutine (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or self._wake_pending:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # never let the thread die with a traceback
            self.last_error = f"{type(exc).__name__}: {exc}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        first, cap = self.backoff
        delay = first
        attempts = 0
        while not self._closing:
            if attempts:
                self.reconnects += 1
            attempts += 1
            self._established = False
            try:
                await self._session()
            except Exception as exc:
                self.last_error = _describe(exc)
            established = self._established
            self.connected = False
            with self._lock:
                self._down = True
                for s in self._streams.values():
                    s.declared = s.ready = False
                    s.synced.set()  # release register() calls waiting for this connection
                self._lock.notify_all()
            if self._closing:
                break
            delay = first if established else min(cap, delay * 2)
            await self._sleep(delay * (0.5 + _jitter.random() / 2))

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._closing and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    async def _session(self) -> None:
        """One connection, until it closes."""
        extra: dict[str, Any] = {}
        if self.ssl is not None and self.url.startswith("wss"):
            extra["ssl"] = self.ssl  # else websockets uses the system trust store for wss
        async with connect(
            self.url,
            **extra,
            open_timeout=self.open_timeout,
            close_timeout=1.0,
            compression=None,
            max_size=None,
            # A server whose storage lags stops reading for a while (back-pressure) and
            # answers pings late; that is not a dead server.
            ping_interval=20,
            ping_timeout=60,
        ) as ws:
            session = ClientSession()
            with self._lock:
                names = [mid for mid, s in self._streams.items() if not s.failed]
            await ws.send(
                encode_hello(self.client, socket.gethostname(), os.getpid(), self.token, names)
            )
            reply = session.receive(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if isinstance(reply, ErrorMessage):
                raise ProtocolError(reply.code, f"server refused: {reply.reason}")
            assert isinstance(reply, Welcome)
            server_batch = reply.limits.get("max_batch", self.batch_size)
            self._max_batch = max(1, min(self.batch_size, server_batch))
            self.connected = self._established = True
            with self._lock:
                self._down = False
            receiver = asyncio.create_task(self._receive(ws, session))
            try:
                await self._send_loop(ws, receiver)
            finally:
                receiver.cancel()
                with contextlib.suppress(BaseException):
                    await receiver

    async def _receive(self, ws: ClientConnection, session: ClientSession) -> None:
        async for frame in ws:
            msg = session.receive(frame)
            if isinstance(msg, Ack):
                self._on_ack(msg.highest)
            elif isinstance(msg, ErrorMessage):
                self._on_error(msg)
                if msg.fatal:
                    return
                if msg.machine_id is not None and msg.code != CONFLICT:
                    # Out of step with the server on that machine: a new connection
                    # resumes from what it holds.
                    await ws.close()
                    return

    async def _send_loop(self, ws: ClientConnection, receiver: asyncio.Task[None]) -> None:
        assert self._wake is not None
        wake = self._wake
        while not self._closing:
            if receiver.done():
                receiver.result()  # raise what ended it
                return
            # Clear before collecting: a write that lands meanwhile sets it again.
            self._wake_pending = False
            wake.clear()
            frames = self._collect()
            if frames:
                for frame in frames:
                    await ws.send(frame)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.25)
            if self.batch_delay and self._unsent() < self._max_batch:
                await asyncio.sleep(self.batch_delay)

    def _unsent(self) -> int:
        n = 0
        with self._lock:
            for s in self._streams.values():
                if s.ready and s.offset is not None:
                    n += s.next_local - (s.next_wire - s.offset)
        return n

    def _collect(self) -> list[bytes]:
        """Frames to send now: machine declarations, records, gaps, disposals."""
        # In the order they must reach the server: frames, or record chunks encoded after
        # the lock is released. A machine's dispose must follow its last records.
        ordered: list[bytes | tuple[_Stream, list[_Row], int]] = []
        budget = self._max_batch * 8  # records per round, so acks keep flowing
        gap_kind = _GAP_CODE
        with self._lock:
            sources = {mid: s.offset for mid, s in self._streams.items() if s.offset}
            for mid, s in list(self._streams.items()):
                if s.failed:
                    continue
                if not s.declared:
                    ordered.append(encode_machine(s.machine))
                    s.declared = True
                    continue
                if not s.ready or s.offset is None:
                    continue
                while budget > 0:
                    start = s.next_wire - s.offset - s.buf_base
                    if start < s.head:  # the server lacks records we no longer hold
                        ordered.append(self._gap_frame(s))
                        continue
                    if start >= len(s.buf):
                        break
                    chunk = s.buf[start : start + min(self._max_batch, budget)]
                    # GAP records travel as gap messages: cut the chunk at the first one.
                    for i, rec in enumerate(chunk):
                        if rec[4] == gap_kind:
                            chunk = [rec] if i == 0 else chunk[:i]
                            break
                    ordered.append((s, chunk, s.offset))
                    s.next_wire += len(chunk)
                    budget -= len(chunk)
                if s.dispose and s.next_wire - s.offset >= s.next_local:
                    ordered.append(encode_dispose(mid))
                    s.dispose = False
                    if not s.unacked():
                        del self._streams[mid]
        # Encoding outside the lock: the tracer's sender thread keeps appending.
        frames: list[bytes] = []
        for item in ordered:
            if isinstance(item, bytes):
                frames.append(item)
                continue
            s, chunk, offset = item
            first = chunk[0]
            if first[4] == _GAP_CODE:
                args = first[6]
                dropped = args.get("dropped", 1) if isinstance(args, dict) else 1
                frames.append(
                    encode_gap(
                        s.machine.id,
                        first[0] + offset,
                        max(1, int(dropped)),
                        first[1],
                        first[2],
                        first[10],
                    )
                )
                self.gaps_sent += 1
            else:
                frames.append(_encode_txs(s.machine.id, chunk, offset, sources))
        return frames

    def _gap_frame(self, s: _Stream) -> bytes:
        """The server holds less than it acknowledged before (it lost data): report the
        records it lost as one gap and renumber what follows. Called with the lock held."""
        assert s.offset is not None
        head_local = s.buf_base + s.head
        head_wire = head_local + s.offset
        dropped = head_wire - s.next_wire
        tick = s.buf[s.head][1] if s.head < len(s.buf) else s.machine.mach_tick
        frame = encode_gap(s.machine.id, s.next_wire, dropped, tick, time.time_ns(), s.config)
        s.offset = s.next_wire + 1 - head_local
        s.next_wire += 1
        self.gaps_sent += 1
        return frame

    def _on_ack(self, highest: dict[str, int]) -> None:
        with self._lock:
            for mid, h in highest.items():
                s = self._streams.get(mid)
                if s is None:
                    continue
                if not s.ready:  # the answer to this connection's machine message
                    s.ready = True
                    if s.offset is None:
                        if s.registered:
                            s.offset = h + 1 - s.base
                            s.acked = h
                        else:
                            s.first_highest = h
                    s.next_wire = h + 1
                    if s.offset is not None and h < s.acked:
                        s.acked = h  # the server lost acknowledged records: see _gap_frame
                    s.synced.set()
                if s.offset is None or h <= s.acked:
                    continue
                s.acked = h
                upto = h - s.offset - s.buf_base + 1  # index after the last stored record
                if upto > s.head:
                    upto = min(upto, len(s.buf))
                    # Track the configuration after the acknowledged records: a gap for
                    # records a restarted server lost must carry it (see _gap_frame).
                    advance_config(s.config, s.buf[s.head : upto])
                    self._unacked -= upto - s.head
                    s.head = upto
                    if s.head > 4096 and s.head * 2 > len(s.buf):
                        del s.buf[: s.head]
                        s.buf_base += s.head
                        s.head = 0
            self._lock.notify_all()

    def _on_error(self, msg: ErrorMessage) -> None:
        self.last_error = f"server error {msg.code}: {msg.reason}"
        if msg.code == CONFLICT and msg.machine_id is not None:
            with self._lock:
                s = self._streams.get(msg.machine_id)
                if s is not None:  # the server will never take these: stop trying
                    s.failed = True
                    self._unacked -= s.unacked()
                    s.head = len(s.buf)
                    self._lock.notify_all()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


_sinks: dict[tuple[str, str | None], WebSocketSink] = {}
_sinks_lock = threading.Lock()


def sink_for_url(url: str, token: str | None = None, **options: Any) -> WebSocketSink:
    """The process-wide sink for ``url``, so machines traced to one server share a link.

    Raises:
        ValueError: when the URL is not ws:// or wss://.
    """
    with _sinks_lock:
        sink = _sinks.get((url, token))
        if sink is None or sink._closing:
            sink = _sinks[(url, token)] = WebSocketSink(url, token=token, **options)
        return sink
