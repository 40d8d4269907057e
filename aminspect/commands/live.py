"""Headless commands that talk WebSocket: ``record`` (a recorder) and ``replay``."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import typer

from aminspect.commands._common import (
    EXIT_USAGE,
    counted,
    echo_json,
    errors,
    fail,
    located,
    open_source,
    progress,
)
from backends._base import BaseBackend as Backend
from tracer.records import MachineRecord, TransitionRecord
from tracer.sinks import Sink

__all__ = ["ReplayStats", "record", "replay", "replay_into"]


def record(
    listen: str = typer.Option(
        "127.0.0.1:6830",
        "--listen",
        "-l",
        metavar="HOST:PORT",
        help="Where tracers connect (port 0 picks a free one).",
    ),
    to: str = typer.Option(
        ...,
        "--to",
        "-t",
        metavar="URL",
        help="The backend to store into: x.amj, sqlite:///x.db, lmdb:///dir.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="AMINSPECT_TOKEN",
        help="Shared secret tracers must send (required off loopback).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print nothing but errors."),
) -> None:
    """Record tracers into a backend without a screen, until SIGINT or SIGTERM.

    Prints ``listening on ws://HOST:PORT`` once ready. On a signal it closes the
    connections, stores everything already acknowledged and closes the backend.
    """
    from aminspect.server import IngestServer, InsecureBind, parse_listen, tune_gc

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    backend = open_source(to, read_only=False)

    async def run() -> int:
        server = IngestServer(backend, host, port, token=token)
        await server.start()
        tune_gc()  # a recording process: see tune_gc (a third of the CPU was collection)
        if not quiet:
            typer.echo(f"listening on {server.url}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.stop()
        if not quiet:
            typer.echo(
                f"stored {server.stored} records ({server.dropped} reported dropped "
                f"by tracers) in {located(backend)}",
                err=True,
            )
        return 0

    with errors():
        try:
            asyncio.run(run())
        except InsecureBind as exc:
            fail(str(exc), EXIT_USAGE)
        finally:
            backend.close()


@dataclass(slots=True)
class ReplayStats:
    """What a replay sent."""

    machines: int = 0
    records: int = 0  # records sent
    skipped: int = 0  # records the server already held (D-07: not sent again)


def _merged(
    backend: Backend, starts: dict[str, int]
) -> Iterator[tuple[int, int, TransitionRecord]]:
    """Records of every machine merged by time; each machine's stay in seq order."""
    order = list(starts)

    def stream(n: int, mid: str) -> Iterator[tuple[int, int, TransitionRecord]]:
        it = backend.iter_records
        for rec in it(mid, starts[mid]):
            yield rec.time, n, rec

    return heapq.merge(*(stream(n, mid) for n, mid in enumerate(order)), key=lambda t: (t[0], t[1]))


def replay_into(
    backend: Backend,
    url: str,
    *,
    speed: float | None = 1.0,
    machine_ids: list[str] | None = None,
    token: str | None = None,
    advance: object = None,
    timeout: float = 60.0,
) -> ReplayStats:
    """Stream a recording to an aminspect server the way a tracer does (wire protocol v1).

    Records keep their seqs, mach_ticks and times; what the server already holds is not
    sent again. ``speed`` scales the recorded pacing (2.0 = twice as fast); None sends
    as fast as possible. Nothing but the wire is touched: no machine runs (D-09).

    Raises:
        BackendError: the recording cannot be read.
        ConnectionError: the server cannot be reached or did not acknowledge in time.
        ValueError: a bad URL.
    """
    from tracer.ws_sink import WebSocketSink

    sink = WebSocketSink(
        url, token=token, sync_timeout=5.0, write_timeout=timeout, client="aminspect-replay"
    )
    stats = ReplayStats()
    step = advance if callable(advance) else (lambda _n: None)
    try:
        machines: list[MachineRecord] = (
            [backend.get_machine(m) for m in machine_ids] if machine_ids else backend.machines()
        )
        starts: dict[str, int] = {}
        for m in machines:
            first = backend.first(m.id)
            base = sink.register(m)
            if not sink.connected and sink.last_error:
                raise ConnectionError(f"cannot reach {url}: {sink.last_error}")
            if base < first and backend.highest(m.id) >= first:
                raise ConnectionError(
                    f"{m.id}: the server holds seqs up to {base - 1} but the recording starts "
                    f"at {first}; its first seqs were deleted"
                )
            starts[m.id] = max(base, first)
            stats.skipped += max(0, min(base, backend.highest(m.id) + 1) - first)
            stats.machines += 1
        pending: dict[str, list[TransitionRecord]] = {}
        t0_rec: int | None = None
        t0_wall = time.monotonic()
        high_water = 0
        for rec_time, _n, rec in _merged(backend, starts):
            if speed is not None:
                if t0_rec is None:
                    t0_rec = rec_time
                high_water = max(high_water, rec_time - t0_rec)
                due = t0_wall + high_water / 1e9 / speed
                wait = due - time.monotonic()
                if wait > 0:
                    _send(sink, pending, stats, step)
                    time.sleep(wait)
            batch = pending.setdefault(rec.machine_id, [])
            batch.append(rec)
            if len(batch) >= 1024:
                _send(sink, pending, stats, step)
        _send(sink, pending, stats, step)
        if not sink.flush(timeout):
            raise ConnectionError(
                f"{url} did not acknowledge {sink.unacked} records within {timeout:g} s"
                + (f" ({sink.last_error})" if sink.last_error else "")
            )
        for m in machines:
            sink.dispose(m.id)
        sink.flush(5.0)
        return stats
    finally:
        sink.close()


def _send(
    sink: Sink, pending: dict[str, list[TransitionRecord]], stats: ReplayStats, step: object
) -> None:
    write = sink.write
    for mid, records in pending.items():
        if records:
            write(mid, records)
            stats.records += len(records)
            if callable(step):
                step(len(records))
    pending.clear()


def replay(
    source: str = typer.Argument(..., help="The recording: a backend URL or a .amj file."),
    to: str = typer.Option(
        ..., "--to", "-t", metavar="ws://HOST:PORT", help="A live inspector or recorder."
    ),
    speed: float = typer.Option(
        1.0, "--speed", "-s", min=0.0, help="Pacing factor (2 = twice as fast)."
    ),
    fast: bool = typer.Option(False, "--as-fast-as-possible", help="Do not pace: send at once."),
    machine: Annotated[
        list[str] | None, typer.Option("--machine", "-m", help="Only these machines.")
    ] = None,
    token: str | None = typer.Option(
        None, "--token", envvar="AMINSPECT_TOKEN", help="The server's shared secret."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was sent as JSON."),
) -> None:
    """Stream a recording into a live inspector or recorder, as a tracer would.

    Records keep their seqs and times; records the server already holds are skipped,
    so replaying twice stores nothing twice.
    """
    if not (to.startswith("ws://") or to.startswith("wss://")):
        fail(f"--to must be a ws:// or wss:// URL, got {to!r}", EXIT_USAGE)
    if speed <= 0 and not fast:
        fail("--speed must be greater than 0", EXIT_USAGE)
    backend = open_source(source)
    with errors(), backend:
        ids = machine or None
        mids = ids or [m.id for m in backend.machines()]
        total = sum(max(0, backend.highest(m) + 1 - backend.first(m)) for m in mids)
        try:
            with progress(total, "replaying") as advance:
                result = replay_into(
                    backend,
                    to,
                    speed=None if fast else speed,
                    machine_ids=ids,
                    token=token,
                    advance=advance,
                )
        except (ConnectionError, ValueError) as exc:
            fail(str(exc))
    if as_json:
        echo_json(
            {"machines": result.machines, "records": result.records, "skipped": result.skipped}
        )
    else:
        typer.echo(
            f"replayed {counted(result.records, 'record')} of "
            f"{counted(result.machines, 'machine')} to {to}"
            + (f" ({result.skipped} already there)" if result.skipped else "")
        )
