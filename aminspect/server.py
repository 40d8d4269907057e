"""The ingest server: accepts tracer connections over WebSocket and stores what they send.

``IngestServer(backend, host, port)`` speaks wire protocol v1 (``docs/protocol.md``)
through :class:`tracer.protocol.ServerSession`; this module only moves frames between
sockets, the session and one writer thread per server. Run it standalone with
``python -m aminspect.server --listen 127.0.0.1:6830 --to journal:///tmp/x.amj``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import itertools
import logging
import os
import queue
import signal
import ssl as ssl_module
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from backends.base import Backend, BackendError, ConflictError, GapError
from tracer.protocol import (
    CONFLICT,
    HANDSHAKE,
    INTERNAL,
    SEQUENCE,
    Dispose,
    Gap,
    Hello,
    Limits,
    MachineMessage,
    ProtocolError,
    ServerSession,
    Txs,
    encode_ack,
    encode_error,
)
from tracer.records import MachineRecord, TransitionRecord

__all__ = [
    "DEFAULT_PORT",
    "Connected",
    "ConnectionInfo",
    "Disconnected",
    "Disposed",
    "GapStored",
    "IngestEvent",
    "IngestServer",
    "InsecureBind",
    "Limits",
    "MachineDeclared",
    "Rejected",
    "Stored",
    "Subscription",
    "main",
    "tune_gc",
]

_log = logging.getLogger("aminspect.server")

DEFAULT_PORT = 6830
ACK_WINDOW = 16  # batches a connection may have queued for storage before reading pauses
RATE_WINDOW = 2.0  # seconds the ingest rate is averaged over


# Net allocations of tracked objects (lists, dicts, ...) between young collections.
_GC_GEN0 = 1_000_000


def tune_gc() -> None:
    """Make Python's cyclic garbage collector cheap for a process that records.

    A decoded record is three lists (its row and its two state lists) that live until
    the writer stored the batch, and no record is part of a reference cycle. With the
    default threshold (700 net allocations) the collector ran every ~250 records and
    traversed every batch still queued for storage each time: 1.25 s of the recorder's
    3.8 s of CPU for 800,000 records (tests/bench/bench_ws.py, journal). This raises the
    young-generation threshold above what the queues usually hold (ACK_WINDOW batches of
    the tracer's 2,048 records are ~100,000 lists per connection), so collections run
    mostly when memory really grows, and freezes the objects that exist already
    (modules, the opened backend) so a full collection skips them.

    It is process-wide, so the recorder entry points (``python -m aminspect.server``,
    ``aminspect record``) call it and an app embedding IngestServer decides for itself.
    A threshold of 0 (collection disabled) is left alone.
    """
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < _GC_GEN0:
        gc.set_threshold(_GC_GEN0, gen1, gen2)
    gc.freeze()


class InsecureBind(ValueError):
    """Binding a non-loopback address without a token."""


# -- events the TUI subscribes to -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    connection: int
    client: str
    host: str
    pid: int
    peer: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    connection: int
    reason: str


@dataclass(frozen=True, slots=True)
class MachineDeclared:
    connection: int
    machine: MachineRecord
    highest: int  # what storage held when the machine was declared


@dataclass(frozen=True, slots=True)
class Stored:
    """Records ``first..last`` of a machine are stored (count may be less on a resend)."""

    connection: int
    machine_id: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class GapStored:
    connection: int
    machine_id: str
    seq: int
    dropped: int


@dataclass(frozen=True, slots=True)
class Disposed:
    connection: int
    machine_id: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message (or a connection, when ``fatal``) was refused with an error."""

    connection: int
    code: int
    reason: str
    fatal: bool


IngestEvent = Connected | Disconnected | MachineDeclared | Stored | GapStored | Disposed | Rejected


@dataclass(slots=True)
class ConnectionInfo:
    """One live tracer connection, as the TUI header and machine tree show it."""

    id: int
    peer: str
    client: str = ""
    host: str = ""
    pid: int = 0
    connected_at: float = field(default_factory=time.time)
    machines: set[str] = field(default_factory=set)
    records: int = 0
    dropped: int = 0
    errors: int = 0


class Subscription:
    """An async iterator of ingest events with a bounded queue.

    When the consumer falls behind by more than ``maxsize`` events, the newest are
    counted in ``overflowed`` and not queued (the TUI re-reads storage anyway).
    """

    def __init__(self, server: IngestServer, maxsize: int) -> None:
        self._server = server
        self._queue: asyncio.Queue[IngestEvent | None] = asyncio.Queue(maxsize)
        self.overflowed = 0

    def _put(self, event: IngestEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed += 1

    def close(self) -> None:
        self._server.remove_listener(self._put)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[IngestEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[IngestEvent]:
        while True:
            event = await self._queue.get()
            if event is None:
                return
            yield event


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only the local machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Rate:
    """Records stored per second over the last RATE_WINDOW seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, count: int) -> None:
        now = time.monotonic()
        self._samples.append((now, count))
        self._trim(now)

    def _trim(self, now: float) -> None:
        samples = self._samples
        while samples and samples[0][0] < now - RATE_WINDOW:
            samples.popleft()

    def value(self) -> float:
        self._trim(time.monotonic())
        return sum(c for _, c in self._samples) / RATE_WINDOW


class IngestServer:
    """A WebSocket server that validates tracer messages and stores them in a backend.

    Backend calls run on one writer thread, so writes keep their arrival order and the
    event loop never blocks on storage. An ``ack`` is sent only after the backend's
    ``append`` returned.

    Args:
        backend: where records are stored (any ``backends`` backend).
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (see ``address``).
        token: shared secret clients must send in ``hello``; required off loopback.
        limits: what one connection may send.
        ssl: a server SSL context, for ``wss://``.
        name: the server name sent in ``welcome``.

    Raises:
        InsecureBind: when ``host`` is not loopback and no token is given.
    """

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        limits: Limits | None = None,
        ssl: ssl_module.SSLContext | None = None,
        name: str = "aminspect",
    ) -> None:
        if not is_loopback(host) and not token:
            raise InsecureBind(
                f"refusing to listen on {host!r} without a token: binding a non-loopback "
                "address exposes the recorder to the network (set a token, e.g. "
                "AMINSPECT_TOKEN, or listen on 127.0.0.1)"
            )
        self.backend = backend
        self.host = host
        self.port = port
        self.limits = limits if limits is not None else Limits()
        self.ssl = ssl
        self.name = name
        self._token = token or None
        self._server: Server | None = None
        self._writer: _Writer | None = None
        self._ids = itertools.count(1)
        self._connections: dict[int, ConnectionInfo] = {}
        self._listeners: list[Callable[[IngestEvent], None]] = []
        self._rate = _Rate()
        self._highest: dict[str, int] = {}  # writer thread only: cache of backend.highest
        self.stored = 0  # records stored since start
        self.dropped = 0  # records the tracers reported dropped (gap messages)
        self.rejected = 0  # messages answered with an error
        self.last_error: str | None = None  # the last internal failure, for the UI

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and start accepting connections.

        Raises:
            OSError: when the address cannot be bound.
        """
        if self._server is not None:
            return
        # A failed group commit leaves storage unknown: forget the cached highest seqs.
        self._writer = _Writer(self.backend, self._highest.clear)
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self.ssl,
            max_size=self.limits.max_frame,
            compression=None,  # no inflate bombs; tracer frames are small msgpack
            max_queue=64,
            # Tracer apps can be CPU-bound: give their sender thread time to answer.
            ping_interval=20,
            ping_timeout=60,
        )

    async def stop(self) -> None:
        """Close every connection (1001 going away), finish pending writes, stop."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        writer, self._writer = self._writer, None
        if writer is not None:
            await asyncio.get_running_loop().run_in_executor(None, writer.shutdown)

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what the UI reads ---------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._server is None:
            return self.host, self.port
        for sock in self._server.sockets:
            host, port = sock.getsockname()[:2]
            return str(host), int(port)
        return self.host, self.port

    @property
    def url(self) -> str:
        host, port = self.address
        if ":" in host:
            host = f"[{host}]"
        return f"{'wss' if self.ssl else 'ws'}://{host}:{port}"

    @property
    def connections(self) -> list[ConnectionInfo]:
        """Live connections that completed the handshake."""
        return list(self._connections.values())

    @property
    def machines_per_connection(self) -> dict[int, set[str]]:
        return {c.id: set(c.machines) for c in self._connections.values()}

    @property
    def ingest_rate(self) -> float:
        """Records stored per second, averaged over the last two seconds."""
        return self._rate.value()

    def add_listener(self, callback: Callable[[IngestEvent], None]) -> None:
        """Call ``callback(event)`` on the event loop for every ingest event.

        The callback must not block; exceptions it raises are ignored.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[IngestEvent], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        """An async iterator of ingest events; call ``close()`` on it to end it."""
        sub = Subscription(self, maxsize)
        self.add_listener(sub._put)
        return sub

    def _emit(self, event: IngestEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a faulty listener must not break ingest
                pass

    # -- storage (writer thread) ---------------------------------------------------------
    def _store(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        assert self._writer is not None
        return self._writer.submit(fn, *args)

    def _highest_of(self, machine_id: str) -> int:
        h = self._highest.get(machine_id)
        if h is None:
            h = self._highest[machine_id] = self.backend.highest(machine_id)
        return h

    def _lookup(self, machine_ids: Sequence[str]) -> dict[str, int]:
        return {mid: self._highest_of(mid) for mid in machine_ids}

    def _put_machine(self, machine: MachineRecord) -> int:
        self.backend.put_machine(machine)
        return self._highest_of(machine.id)

    def _append(self, machine_id: str, records: list[TransitionRecord]) -> tuple[int, int]:
        """Append; returns (records new to storage, highest stored)."""
        before = self._highest_of(machine_id)
        try:
            self.backend.append(machine_id, records)
        except BackendError:
            self._highest[machine_id] = self.backend.highest(machine_id)
            raise
        after = max(before, records[-1].seq)
        self._highest[machine_id] = after
        return after - before, after

    def _append_rows(self, machine_id: str, first: int, rows: list[list[Any]]) -> tuple[int, int]:
        """``_append`` for wire rows (``Backend.append_rows``: no record objects built)."""
        before = self._highest_of(machine_id)
        try:
            self.backend.append_rows(machine_id, first, rows)  # type: ignore[attr-defined]
        except BackendError:
            self._highest[machine_id] = self.backend.highest(machine_id)
            raise
        after = max(before, first + len(rows) - 1)
        self._highest[machine_id] = after
        return after - before, after

    # -- connections ---------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        conn = ConnectionInfo(next(self._ids), _peer(ws))
        # Backends with ``append_rows`` take the records as validated wire rows, so the
        # server never builds record objects only for the backend to encode them again.
        rows = callable(getattr(self.backend, "append_rows", None))
        session = ServerSession(self.limits, self._token, self.name, rows=rows)
        try:
            if await self._handshake(ws, session, conn):
                await self._serve(ws, session, conn)
        except ConnectionClosed:
            pass
        finally:
            if self._connections.pop(conn.id, None) is not None:
                self._let_go(conn.machines)
                code = ws.close_code
                self._emit(Disconnected(conn.id, f"closed ({code})"))

    def _let_go(self, machine_ids: Iterable[str]) -> None:
        """Machines no connection traces here any more: the backend lets go of them (a
        PostgreSQL claim, so another recorder may take the machine over; cached clocks).

        Queued behind the batches already submitted (one writer thread, in order), so a
        claim is released only once everything received before it is stored.
        """
        writer = self._writer
        if writer is None:  # stopping: closing the backend releases everything
            return
        held = {mid for c in self._connections.values() for mid in c.machines}
        for mid in set(machine_ids) - held:
            writer.submit(self.backend.dispose, mid).add_done_callback(_consume)

    async def _reject(self, ws: ServerConnection, conn: ConnectionInfo, exc: ProtocolError) -> None:
        self.rejected += 1
        conn.errors += 1
        self._emit(Rejected(conn.id, exc.code, exc.reason, exc.fatal))
        await ws.send(encode_error(exc.code, exc.reason, exc.fatal, exc.machine_id))
        if exc.fatal:
            # Close reasons are capped at 123 bytes by RFC 6455.
            reason = exc.reason.encode()[:120].decode(errors="ignore")
            closing = asyncio.create_task(ws.close(exc.code, reason))
            # Discard what the client sent meanwhile: a full incoming queue pauses
            # reading, and the client's close frame would sit unread until close_timeout.
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass
            await closing

    async def _handshake(
        self, ws: ServerConnection, session: ServerSession, conn: ConnectionInfo
    ) -> bool:
        try:
            frame = await asyncio.wait_for(ws.recv(), self.limits.hello_timeout)
        except TimeoutError:
            await self._reject(
                ws,
                conn,
                ProtocolError(HANDSHAKE, f"no hello within {self.limits.hello_timeout:g} s"),
            )
            return False
        try:
            hello = session.receive(frame)
        except ProtocolError as exc:
            await self._reject(ws, conn, exc)
            return False
        assert isinstance(hello, Hello)
        highest = await self._store(self._lookup, hello.machines)
        await ws.send(session.welcome(highest))
        conn.client, conn.host, conn.pid = hello.client, hello.host, hello.pid
        self._connections[conn.id] = conn
        self._emit(Connected(conn.id, hello.client, hello.host, hello.pid, conn.peer))
        return True

    async def _serve(
        self, ws: ServerConnection, session: ServerSession, conn: ConnectionInfo
    ) -> None:
        line = _Pipeline()
        acker = asyncio.create_task(self._ack_guard(ws, session, conn, line))
        try:
            async for frame in ws:
                try:
                    msg = session.receive(frame)
                except ProtocolError as exc:
                    await self._reject(ws, conn, exc)
                    if exc.fatal:
                        return
                    continue
                if isinstance(msg, Txs):
                    if msg.rows is not None:
                        stored = self._store(self._append_rows, msg.machine_id, msg.first, msg.rows)
                    else:
                        stored = self._store(self._append, msg.machine_id, msg.records)
                    await line.submit(stored, msg)
                elif isinstance(msg, Gap):
                    await line.submit(self._store(self._append, msg.machine_id, [msg.record]), msg)
                elif isinstance(msg, MachineMessage):
                    await self._declare(ws, session, conn, msg)
                elif isinstance(msg, Dispose):
                    conn.machines.discard(msg.machine_id)
                    self._let_go([msg.machine_id])
                    self._emit(Disposed(conn.id, msg.machine_id))
        finally:
            line.finished = True
            line.more.set()
            # Let stored batches be acked while the socket may still be open.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(acker), 5.0)
            acker.cancel()
            with contextlib.suppress(BaseException):
                await acker
            line.abandon()

    async def _declare(
        self,
        ws: ServerConnection,
        session: ServerSession,
        conn: ConnectionInfo,
        msg: MachineMessage,
    ) -> None:
        try:
            highest = await self._store(self._put_machine, msg.machine)
        except BackendError as exc:
            await self._reject(
                ws,
                conn,
                ProtocolError(
                    CONFLICT, f"cannot store machine: {exc}", fatal=False, machine_id=msg.machine.id
                ),
            )
            return
        conn.machines.add(msg.machine.id)
        await ws.send(session.machine_ready(msg.machine, highest))
        self._emit(MachineDeclared(conn.id, msg.machine, highest))

    async def _ack_guard(
        self,
        ws: ServerConnection,
        session: ServerSession,
        conn: ConnectionInfo,
        line: _Pipeline,
    ) -> None:
        try:
            await self._ack_loop(ws, session, conn, line)
        except ConnectionClosed:
            line.break_()
        except Exception as exc:  # a server bug: drop this connection, keep the server
            line.break_()
            self.last_error = f"{type(exc).__name__}: {exc}"
            _log.exception("connection %d: ack loop failed", conn.id)
            self._emit(Rejected(conn.id, INTERNAL, self.last_error, True))
            with contextlib.suppress(Exception):
                await ws.close(INTERNAL, "internal server error")

    async def _ack_loop(
        self,
        ws: ServerConnection,
        session: ServerSession,
        conn: ConnectionInfo,
        line: _Pipeline,
    ) -> None:
        pending = line.pending
        while True:
            if not pending:
                if line.finished:
                    return
                line.more.clear()
                await line.more.wait()
                continue
            with contextlib.suppress(BackendError):
                await pending[0][0]  # in arrival order; failures are handled below
            acks: dict[str, int] = {}
            # Coalesce: one ack for every batch already stored.
            while pending and pending[0][0].done():
                fut, msg = pending.popleft()
                line.window.release()
                exc = fut.exception()
                if exc is not None:
                    if acks:
                        await ws.send(encode_ack(acks))
                        acks = {}
                    if not isinstance(exc, BackendError):
                        raise exc
                    await self._storage_error(ws, session, conn, msg, exc)
                    continue
                new, highest = fut.result()
                acks[msg.machine_id] = highest
                if isinstance(msg, Gap):
                    conn.dropped += msg.dropped
                    self.dropped += msg.dropped
                    self._emit(GapStored(conn.id, msg.machine_id, msg.seq, msg.dropped))
                else:
                    conn.records += new
                    self.stored += new
                    self._rate.add(new)
                    self._emit(Stored(conn.id, msg.machine_id, msg.first, msg.last))
            if acks:
                await ws.send(encode_ack(acks))

    async def _storage_error(
        self,
        ws: ServerConnection,
        session: ServerSession,
        conn: ConnectionInfo,
        msg: Txs | Gap,
        exc: BackendError,
    ) -> None:
        mid = msg.machine_id
        highest = await self._store(self._highest_of, mid)
        session.storage_failed(mid, highest)
        if isinstance(exc, ConflictError):
            err = ProtocolError(CONFLICT, str(exc), fatal=False, machine_id=mid)
        elif isinstance(exc, GapError):
            err = ProtocolError(SEQUENCE, str(exc), fatal=False, machine_id=mid)
        else:
            err = ProtocolError(INTERNAL, f"storage failed: {exc}", fatal=False, machine_id=mid)
        await self._reject(ws, conn, err)
        await ws.send(encode_ack({mid: highest}))


_GROUP_MAX = 64  # jobs made durable together at most (bounds an ack's extra wait)


class _Writer:
    """The one thread that runs every backend call, in arrival order.

    Jobs that queued up while it was busy run as one ``group()`` of the backend when it
    has one (one transaction / one fsync for all of them: group commit), and their
    results are delivered only once the group is durable, so an ``ack`` never runs ahead
    of storage.
    """

    def __init__(self, backend: Backend, on_group_failure: Callable[[], None]) -> None:
        self._backend = backend
        group = getattr(backend, "group", None)
        self._group = None if getattr(backend, "read_only", False) else group
        self._on_group_failure = on_group_failure
        self._jobs: queue.SimpleQueue[
            tuple[
                asyncio.AbstractEventLoop, asyncio.Future[Any], Callable[..., Any], tuple[Any, ...]
            ]
            | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="aminspect-writer", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def shutdown(self) -> None:
        """Finish the queued jobs and stop the thread."""
        self._jobs.put(None)
        self._thread.join()

    def _run(self) -> None:
        jobs = self._jobs
        stop = False
        while not stop:
            job = jobs.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < _GROUP_MAX:
                try:
                    more = jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            results: list[tuple[bool, Any]] = []
            try:
                group = self._group() if self._group is not None and len(batch) > 1 else None
                with group if group is not None else contextlib.nullcontext():
                    for _, _, fn, args in batch:
                        try:
                            results.append((True, fn(*args)))
                        except BaseException as exc:  # delivered to the awaiting coroutine
                            results.append((False, exc))
            except BaseException as exc:  # the group could not be made durable
                self._on_group_failure()
                results = [(False, exc)] * len(batch)
            for (loop, fut, _, _), result in zip(batch, results, strict=False):
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(_deliver, fut, result)


def _deliver(fut: asyncio.Future[Any], result: tuple[bool, Any]) -> None:
    if fut.done():
        return
    if result[0]:
        fut.set_result(result[1])
    else:
        fut.set_exception(result[1])


class _Pipeline:
    """Batches of one connection on their way through the writer, in arrival order."""

    def __init__(self) -> None:
        self.pending: deque[tuple[asyncio.Future[Any], Txs | Gap]] = deque()
        self.window = asyncio.Semaphore(ACK_WINDOW)  # reading pauses when storage lags
        self.more = asyncio.Event()
        self.finished = False
        self.broken = False

    async def submit(self, fut: asyncio.Future[Any], msg: Txs | Gap) -> None:
        await self.window.acquire()
        self.pending.append((fut, msg))
        self.more.set()
        if self.broken:  # nobody acks any more: stop reading this connection
            raise ConnectionClosed(None, None)

    def break_(self) -> None:
        self.broken = True
        for _ in range(ACK_WINDOW):  # wake a reader waiting for room
            self.window.release()

    def abandon(self) -> None:
        """The connection is gone: batches still queued get stored, never acked."""
        for fut, _ in self.pending:
            fut.add_done_callback(_consume)
        self.pending.clear()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: a storage error of an abandoned batch is not news


def _peer(ws: ServerConnection) -> str:
    try:
        addr = ws.remote_address
        return f"{addr[0]}:{addr[1]}"
    except Exception:
        return "?"


# -- standalone recorder -----------------------------------------------------------------


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``PORT`` -> (host, port).

    Raises:
        ValueError: naming the bad part.
    """
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad listen address {value!r}: expected HOST:PORT")
    return host, int(port)


async def _run(args: argparse.Namespace) -> int:
    import backends

    try:
        host, port = parse_listen(args.listen)
        backend = backends.open(args.to)
    except (ValueError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ctx = None
    if args.certfile:
        ctx = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.certfile, args.keyfile)
    token = args.token or os.environ.get("AMINSPECT_TOKEN") or None
    try:
        server = IngestServer(backend, host, port, token=token, ssl=ctx)
        await server.start()
    except (InsecureBind, OSError) as exc:
        backend.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tune_gc()
    print(f"listening on {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    backend.close()
    print(f"stored {server.stored} records, {server.dropped} reported dropped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a recorder until SIGINT/SIGTERM; prints ``listening on ws://HOST:PORT``."""
    parser = argparse.ArgumentParser(prog="python -m aminspect.server", description=__doc__)
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_PORT}", help="HOST:PORT")
    parser.add_argument("--to", default="memory://", help="backend URL to store into")
    parser.add_argument("--token", default=None, help="shared secret (or AMINSPECT_TOKEN)")
    parser.add_argument("--certfile", default=None, help="PEM certificate: serve wss://")
    parser.add_argument("--keyfile", default=None, help="PEM private key of --certfile")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
