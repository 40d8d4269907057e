"""The inspector's session model: machines seen, selection, cursor and the views at the cursor.

Plain Python with no UI: the TUI renders what this module computes and calls its methods
for what the user asks. Methods that read the backend are marked "I/O" and run in worker
threads; they return immutable values that the UI thread applies with the pure methods.
"""

from __future__ import annotations

import pprint
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from aminspect.filters import FilteredView, LogFilter, RecordSummary, next_change
from backends.base import Backend, BackendError
from tracer.machine_time import MachineTime
from tracer.records import RESET_KINDS, MachineRecord, Schema, TransitionRecord, is_refusal

__all__ = [
    "CursorView",
    "DetailLine",
    "LogRow",
    "MachineEntry",
    "MachineStatus",
    "MachinesUpdate",
    "Outcome",
    "PageCache",
    "Session",
    "StateRow",
    "TreeRow",
    "called_states",
    "details",
    "format_duration",
    "format_time",
    "is_error_state",
    "log_row",
    "natural_key",
    "outcome_of",
    "state_rows",
]

JUMP = 50  # records moved by "jump back/forward"


HSM_KIND = "hsm"  # MachineRecord.kind of an HSM tree's nodes (aminspect.machines.hsm_trace)


class MachineStatus(StrEnum):
    """Where a machine's records come from right now."""

    LIVE = "live"  # a tracer connection is streaming it
    DISCONNECTED = "disconnected"  # it was live in this session; its tracer went away
    RECORDED = "recorded"  # only known from storage (an opened file, an earlier session)


class Outcome(StrEnum):
    """How a transition ended."""

    ACCEPTED = "accepted"
    REJECTED = "not accepted"
    ERROR = "error"


# --------------------------------------------------------------------------------------
# formatting (pure)


def format_time(ns: int, *, full: bool = False) -> str:
    """UTC wall-clock time of a record: ``HH:MM:SS.mmm``, or ISO 8601 with ``full``.

    UTC, not local time, so that the same recording looks the same on every machine.
    """
    dt = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    if full:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}Z"
    return dt.strftime("%H:%M:%S.") + f"{(ns // 1_000_000) % 1000:03d}"


def format_duration(ns: int) -> str:
    """A duration in at most 7 characters: ``850ns``, ``12.3µs``, ``4.56ms``, ``1.20s``."""
    if ns <= 0:
        return "-"
    if ns < 1_000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)):
        value = ns / scale
        if value < 1000 or unit == "s":
            if value < 10:
                return f"{value:.2f}{unit}"
            if value < 100:
                return f"{value:.1f}{unit}"
            return f"{value:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def is_error_state(name: str) -> bool:
    """Whether a state name marks an error by convention.

    asyncmachine's ``Exception`` and the ``Err*`` family, and ``*Error``/``*Failed``
    states as written in ``transitions`` and ``python-statemachine`` machines. The last
    path segment is tested, so ``order.PaymentFailed`` counts.
    """
    last = name.replace("_", ".").rsplit(".", 1)[-1]
    return (
        last == "Exception"
        or last.startswith("Err")
        or last.endswith(("Error", "Failed"))
        or last in ("error", "failed")
    )


def short_name(schema: Schema, i: int) -> str:
    """The name of state ``i`` without its parent's prefix (``shipping.packed`` -> ``packed``)."""
    name = schema.states[i].name
    parent = schema.states[i].parent
    if parent is not None and len(name) > len(parent) + 1 and name.startswith(parent):
        sep = name[len(parent)]
        if sep in "._/:>":
            return name[len(parent) + 1 :]
    return name


def called_states(schema: Schema, record: TransitionRecord) -> frozenset[int]:
    """The states a record names ("called"): ``+A,B`` / ``-A`` / ``=A`` / ``to_A`` / ``A``.

    Args:
        schema: the machine's schema.
        record: any record.

    Returns:
        Indexes of the states whose full or short name is one of the comma-separated
        tokens of the record's name (the manual API's ``+``, ``-``, ``=`` prefixes and
        ``transitions``' ``to_`` prefix removed).
    """
    name = record.name.strip()
    if not name:
        return frozenset()
    if name[0] in "+-=":
        name = name[1:]
    out: set[int] = set()
    for token in name.split(","):
        token = token.strip()
        candidates = (token, token[3:]) if token.startswith("to_") else (token,)
        for cand in candidates:
            i = schema.get_index(cand)
            if i is not None:
                out.add(i)
    return frozenset(out)


def outcome_of(record: TransitionRecord) -> Outcome:
    """How a record ended: accepted, not accepted (refused, guarded) or an error.

    Args:
        record: the record.

    Returns:
        ``ERROR`` for an exception other than a library's refusal
        (``tracer.records.is_refusal``).
    """
    if record.error is not None and not is_refusal(record.error, record.accepted):
        return Outcome.ERROR
    return Outcome.ACCEPTED if record.accepted else Outcome.REJECTED


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: ``order-2`` before ``order-10``.

    Args:
        name: a machine id.

    Returns:
        A key comparable with every other name's key.
    """
    key = [(0, int(p)) if p.isdigit() else (1, p.lower()) for p in _DIGITS.split(name) if p]
    key.append((2, name))  # names equal but for case: a fixed order all the same
    return tuple(key)


_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of the transition log, as text fields the widget lays out."""

    seq: int
    time: str
    kind: str
    name: str
    changes: str  # "+entered -exited" with short state names
    outcome: Outcome
    duration: str


def _changes(schema: Schema, record: TransitionRecord) -> str:
    n = len(schema)
    entered = [short_name(schema, i) if 0 <= i < n else f"#{i}" for i in record.entered]
    exited = [short_name(schema, i) if 0 <= i < n else f"#{i}" for i in record.exited]
    if record.kind in ("init", "restore", "gap"):
        # a reset record's ``entered`` is the whole configuration after it
        return "=" + ",".join(entered) if entered else "="
    parts = ["+" + s for s in entered] + ["-" + s for s in exited]
    return " ".join(parts)


def log_row(schema: Schema, record: TransitionRecord) -> LogRow:
    """The log line of one record.

    Args:
        schema: the schema of the record's machine (for state names).
        record: the record.

    Returns:
        The formatted fields.
    """
    return LogRow(
        seq=record.seq,
        time=format_time(record.time),
        kind=record.kind,
        name=record.name,
        changes=_changes(schema, record),
        outcome=outcome_of(record),
        duration=format_duration(record.duration),
    )


@dataclass(frozen=True, slots=True)
class DetailLine:
    """One labelled field of the details pane."""

    label: str
    value: str


def _state_list(schema: Schema, indexes: Iterable[int]) -> str:
    n = len(schema)
    names = [schema.states[i].name if 0 <= i < n else f"#{i}" for i in indexes]
    return ", ".join(names) if names else "-"


def details(schema: Schema, record: TransitionRecord) -> list[DetailLine]:
    """Every field of a record, formatted for reading.

    Args:
        schema: the schema of the record's machine.
        record: the record.

    Returns:
        Labelled lines; ``args`` is pretty-printed and may span several lines.
    """
    error = f"{record.error[0]}: {record.error[1]}" if record.error is not None else "-"
    # a refusal's exception is the reason the event was not accepted, not a failure
    error_label = "error" if outcome_of(record) is Outcome.ERROR or error == "-" else "reason"
    source = f"{record.source[0]} seq {record.source[1]}" if record.source is not None else "-"
    args = "-" if record.args is None else pprint.pformat(record.args, width=60, compact=True)
    return [
        DetailLine("id", record.id),
        DetailLine("seq", str(record.seq)),
        DetailLine("kind", record.kind),
        DetailLine("name", record.name or "-"),
        DetailLine("outcome", outcome_of(record).value),
        DetailLine(error_label, error),
        DetailLine("time", format_time(record.time, full=True)),
        DetailLine("duration", format_duration(record.duration)),
        DetailLine("entered", _state_list(schema, record.entered)),
        DetailLine("exited", _state_list(schema, record.exited)),
        DetailLine("args", args),
        DetailLine("parent_seq", "-" if record.parent_seq is None else str(record.parent_seq)),
        DetailLine("source", source),
        DetailLine("mach_tick", str(record.mach_tick)),
    ]


@dataclass(frozen=True, slots=True)
class StateRow:
    """One state of the state tree at the cursor."""

    index: int
    name: str  # full name
    label: str  # name without the parent's prefix
    depth: int
    active: bool
    clock: int
    parallel: bool  # its children are parallel regions
    region: bool  # it is a region of a parallel parent
    entered: bool  # the cursor record entered it
    exited: bool  # the cursor record exited it
    called: bool  # the cursor record names it
    error: bool  # an error state (see is_error_state)
    initial: bool
    final: bool


_Static = tuple[int, str, str, int, bool, bool, bool, bool, bool]
_STATIC_ROWS: dict[int, tuple[Schema, list[_Static]]] = {}


def _static_rows(schema: Schema) -> list[_Static]:
    """What of the state tree does not change with the cursor, in tree order.

    Computed once per schema, not per step (a step spent more time on names and depths
    than on clocks). Schemas are immutable; the cache holds the schema, so its id is not
    reused while cached.
    """
    hit = _STATIC_ROWS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(_STATIC_ROWS) > 256:
        _STATIC_ROWS.clear()
    rows: list[_Static] = []
    for i in _walk_tree(schema):
        spec = schema.states[i]
        parent = schema.parent_of(i)
        rows.append(
            (
                i,
                spec.name,
                short_name(schema, i),
                schema.depth(i),
                spec.parallel,
                parent is not None and schema.states[parent].parallel,
                is_error_state(spec.name),
                spec.initial,
                spec.final,
            )
        )
    _STATIC_ROWS[id(schema)] = (schema, rows)
    return rows


def _walk_tree(schema: Schema) -> list[int]:
    out: list[int] = []
    children: dict[int | None, list[int]] = {}
    for i in range(len(schema)):
        children.setdefault(schema.parent_of(i), []).append(i)

    def walk(parent: int | None) -> None:
        for i in children.get(parent, ()):
            out.append(i)
            walk(i)

    walk(None)
    return out


def state_rows(
    schema: Schema,
    clocks: Sequence[int],
    record: TransitionRecord | None = None,
    changes: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[StateRow]:
    """The state tree after ``record``: every state in depth-first schema order.

    Args:
        schema: the machine's schema.
        clocks: the clock vector after ``record`` (a state is active when its clock is odd).
        record: the record at the cursor, for the entered/exited/called markers.
        changes: ``(exited, entered)`` as applied (MachineTime.changes); defaults to the
            record's own lists, which for reset kinds is the whole configuration.

    Returns:
        One row per state.
    """
    exited: frozenset[int] = frozenset()
    entered: frozenset[int] = frozenset()
    called: frozenset[int] = frozenset()
    if record is not None:
        ex, en = changes if changes is not None else (record.exited, record.entered)
        exited, entered = frozenset(ex), frozenset(en)
        called = called_states(schema, record)
    rows = []
    n = len(clocks)
    for i, name, label, depth, parallel, region, error, initial, final in _static_rows(schema):
        clock = clocks[i] if i < n else 0
        rows.append(
            StateRow(
                index=i,
                name=name,
                label=label,
                depth=depth,
                active=clock & 1 == 1,
                clock=clock,
                parallel=parallel,
                region=region,
                entered=i in entered,
                exited=i in exited,
                called=i in called,
                error=error,
                initial=initial,
                final=final,
            )
        )
    return rows


# --------------------------------------------------------------------------------------
# caches (thread-safe: filled by workers, read by the UI thread)


class PageCache:
    """A small LRU of record pages per machine, so a scroll reads only what it shows.

    A page is ``page_size`` consecutive records starting at a multiple of ``page_size``.
    The last page of a live machine grows: it is stored short and re-read when a row
    past its end is asked for.
    """

    def __init__(self, page_size: int = 256, max_pages: int = 64) -> None:
        self.page_size = page_size
        self.max_pages = max_pages
        self._pages: OrderedDict[tuple[str, int], list[TransitionRecord | None]] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0  # backend reads made, for tests and benchmarks

    def get(self, machine_id: str, seq: int) -> TransitionRecord | None:
        """The cached record, or None when its page is not loaded (no I/O)."""
        no, off = divmod(seq, self.page_size)
        with self._lock:
            page = self._pages.get((machine_id, no))
            if page is None or off >= len(page):
                return None
            self._pages.move_to_end((machine_id, no))
            return page[off]

    def missing(self, machine_id: str, start: int, end: int) -> list[int]:
        """Page numbers in ``[start, end)`` that are absent or too short (no I/O)."""
        size = self.page_size
        out = []
        with self._lock:
            for no in range(max(start, 0) // size, (max(end, 1) - 1) // size + 1):
                page = self._pages.get((machine_id, no))
                need = min(size, end - no * size)
                if page is None or len(page) < need:
                    out.append(no)
        return out

    def load(self, backend: Backend, machine_id: str, start: int, end: int) -> int:
        """I/O: make sure the records ``[start, end)`` are cached.

        Returns:
            The number of backend reads made.
        """
        size = self.page_size
        reads = 0
        for no in self.missing(machine_id, start, end):
            found = backend.read(machine_id, no * size, (no + 1) * size)
            reads += 1
            # records deleted from storage (max_records) leave holes at a page's start
            records: list[TransitionRecord | None] = []
            if found:
                records.extend([None] * (found[0].seq - no * size))
                records.extend(found)
            with self._lock:
                self._pages[(machine_id, no)] = records
                self._pages.move_to_end((machine_id, no))
                while len(self._pages) > self.max_pages:
                    self._pages.popitem(last=False)
        self.reads += reads
        return reads

    def records(self, machine_id: str, start: int, end: int) -> list[TransitionRecord | None]:
        """Cached records ``[start, end)``, None where not loaded (no I/O)."""
        return [self.get(machine_id, s) for s in range(start, end)]

    def clear(self, machine_id: str | None = None) -> None:
        with self._lock:
            if machine_id is None:
                self._pages.clear()
            else:
                for key in [k for k in self._pages if k[0] == machine_id]:
                    del self._pages[key]


StateAt = Callable[[Backend, str, int], Sequence[int]]


class ClockCache:
    """Clock vectors at recently visited seqs, so a step replays one record, not a seek."""

    REPLAY_LIMIT = 512  # replay at most this many records from a cached point; else seek
    REPLAY_LIMIT_CACHED = 64  # on the UI thread, from cached pages only (about 0.2 ms)

    def __init__(self, size: int = 128) -> None:
        self._size = size
        self._clocks: OrderedDict[tuple[str, int], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, machine_id: str, seq: int) -> tuple[int, ...] | None:
        with self._lock:
            return self._clocks.get((machine_id, seq))

    def nearest_below(self, machine_id: str, seq: int) -> tuple[int, tuple[int, ...]] | None:
        best: tuple[int, tuple[int, ...]] | None = None
        with self._lock:
            for (mid, s), clocks in self._clocks.items():
                if mid == machine_id and s <= seq and (best is None or s > best[0]):
                    best = (s, clocks)
        return best

    def put(self, machine_id: str, seq: int, clocks: Sequence[int]) -> None:
        with self._lock:
            self._clocks[(machine_id, seq)] = tuple(clocks)
            self._clocks.move_to_end((machine_id, seq))
            while len(self._clocks) > self._size:
                self._clocks.popitem(last=False)


def default_state_at(backend: Backend, machine_id: str, seq: int) -> Sequence[int]:
    """Clocks after record ``seq``: the backend's ``state_at`` (the nearest snapshot plus
    a short replay)."""
    return backend.state_at(machine_id, seq).clocks


# --------------------------------------------------------------------------------------
# session


@dataclass(slots=True)
class MachineEntry:
    """What the session knows about one machine."""

    record: MachineRecord
    count: int = 0  # records stored: highest + 1
    status: MachineStatus = MachineStatus.RECORDED
    errors: int = 0  # records with an error among [first, scanned)
    scanned: int = 0  # errors are counted up to here (a background scan catches up)
    first: int = 0  # lowest stored seq: older records were deleted (max_records)
    # A node of an HSM tree counts its own transitions; every record it sends carries the
    # count (args["transition_count"]), so the latest record's is the node's.
    transitions: int | None = None

    @property
    def id(self) -> str:
        return self.record.id


@dataclass(frozen=True, slots=True)
class MachinesUpdate:
    """What one I/O refresh found: machine records and record counts."""

    records: tuple[MachineRecord, ...]
    counts: dict[str, int]
    firsts: dict[str, int] = field(default_factory=dict)
    transitions: dict[str, int] = field(default_factory=dict)  # HSM nodes' counts


@dataclass(frozen=True, slots=True)
class TreeRow:
    """One line of the machine tree."""

    machine_id: str
    parent_id: str | None
    depth: int
    status: MachineStatus
    count: int
    errors: int
    has_children: bool
    match: bool  # matches the search (False for ancestors kept for context)
    transitions: int | None = None  # an HSM node's own transition count


@dataclass(frozen=True, slots=True)
class CursorView:
    """Everything shown for one machine at one seq, computed in a worker."""

    machine_id: str
    seq: int  # -1 when the machine has no records
    count: int
    record: TransitionRecord | None
    states: tuple[StateRow, ...]
    details: tuple[DetailLine, ...]
    row: LogRow | None


@dataclass
class Session:
    """The inspector's state: machines, selection, cursors, follow and play flags.

    Pure methods change what is selected and where the cursor is; "I/O" methods read
    the backend and are meant for worker threads.

    Args:
        backend: where the history is.
        live: records are arriving (an ingest server feeds the backend).
        state_at: ``f(backend, machine_id, seq) -> clocks``; the shared evaluator's by default.
    """

    backend: Backend
    live: bool = False
    state_at_fn: StateAt | None = None
    page_size: int = 256
    machines: dict[str, MachineEntry] = field(default_factory=dict)
    selected: str | None = None
    follow: bool = True
    playing: bool = False
    search: str = ""
    cursors: dict[str, int] = field(default_factory=dict)
    filter: LogFilter = field(default_factory=LogFilter)
    pages: PageCache = field(init=False)
    clocks: ClockCache = field(init=False)

    def __post_init__(self) -> None:
        self.pages = PageCache(self.page_size)
        self.clocks = ClockCache()
        if self.state_at_fn is None:
            self.state_at_fn = default_state_at
        self._live_ids: set[str] = set()
        self._filtered: FilteredView | None = None
        self._rows: OrderedDict[tuple[str, int], LogRow] = OrderedDict()
        self._shown: OrderedDict[tuple[str, int], TransitionRecord] = OrderedDict()
        self._shown_lock = threading.Lock()
        self._summaries: dict[str, RecordSummary] = {}
        self._summary_lock = threading.Lock()

    # -- machines ------------------------------------------------------------------------

    def fetch_machines(self, ids: Iterable[str] | None = None) -> MachinesUpdate:
        """I/O: machine records and record counts (of all machines, or of ``ids`` and
        machines not seen before). Cheap: no record is read (errors are counted by
        ``count_errors`` in the background)."""
        records = tuple(self.backend.machines())
        wanted = None if ids is None else set(ids)
        counts: dict[str, int] = {}
        firsts: dict[str, int] = {}
        transitions: dict[str, int] = {}
        for rec in records:
            if wanted is not None and rec.id in self.machines and rec.id not in wanted:
                continue
            count = counts[rec.id] = self.backend.highest(rec.id) + 1
            firsts[rec.id] = self.backend.first(rec.id)
            known = self.machines.get(rec.id)
            if rec.kind == HSM_KIND and count and (known is None or known.count != count):
                last = self.backend.read(rec.id, count - 1, count)
                args = last[0].args if last else None
                if isinstance(args, dict) and isinstance(args.get("transition_count"), int):
                    transitions[rec.id] = args["transition_count"]
        return MachinesUpdate(records, counts, firsts, transitions)

    def error_scan_plan(self) -> list[tuple[str, int, int]]:
        """Ranges ``(machine_id, start, end)`` whose errors are not counted yet (no I/O)."""
        return [
            (mid, max(e.scanned, e.first), e.count)
            for mid, e in self.machines.items()
            if max(e.scanned, e.first) < e.count
        ]

    def count_errors(self, machine_id: str, start: int, end: int) -> int:
        """I/O: records with an error among ``[start, end)`` (refusals are not errors).

        Answered from the record summary where it covers the range; records read are
        added to it, so this background count also prepares the filters.
        """
        summary = self.summary(machine_id)
        if summary is not None and summary.covers(start, end):
            return summary.errors(start, end)
        total = 0
        pos = start
        while pos < end:
            chunk = self.backend.read(machine_id, pos, min(end, pos + 4096))
            if not chunk:
                break
            if summary is not None:
                summary.offer(chunk)
            total += sum(1 for r in chunk if outcome_of(r) is Outcome.ERROR)
            pos += len(chunk)
        return total

    def apply_errors(self, machine_id: str, start: int, end: int, errors: int) -> bool:
        """Add the errors counted in ``[start, end)``; ignored unless it continues what
        was counted before. Returns whether it was applied."""
        entry = self.machines.get(machine_id)
        if entry is None or max(entry.scanned, entry.first) != start:
            return False
        entry.errors += errors
        entry.scanned = end
        return True

    def apply_machines(self, update: MachinesUpdate) -> bool:
        """Apply a refresh; select the first machine when none is selected.

        Returns:
            Whether anything visible changed (a new machine, a count, a status).
        """
        changed = False
        for rec in update.records:
            entry = self.machines.get(rec.id)
            if entry is None:
                status = MachineStatus.LIVE if rec.id in self._live_ids else MachineStatus.RECORDED
                entry = MachineEntry(rec, status=status)
                self.machines[rec.id] = entry
                changed = True
            else:
                entry.record = rec
            if rec.id in update.firsts and update.firsts[rec.id] != entry.first:
                entry.first = update.firsts[rec.id]
                changed = True
            if rec.id in update.transitions and update.transitions[rec.id] != entry.transitions:
                entry.transitions = update.transitions[rec.id]
                changed = True
            if rec.id in update.counts:
                count = update.counts[rec.id]
                if count > entry.count:
                    entry.count = count
                    changed = True
                    if self.follow and self.selected == rec.id:
                        self.cursors[rec.id] = count - 1
        if self.selected is None and self.machines:
            roots = [r for r in self.tree_rows() if r.depth == 0]
            self.select(roots[0].machine_id if roots else next(iter(self.machines)))
            changed = True
        return changed

    def set_live(self, machine_ids: Iterable[str]) -> bool:
        """Mark which machines a tracer is streaming now; the others that were live become
        disconnected. Returns whether a status changed."""
        live = set(machine_ids)
        changed = False
        for mid, entry in self.machines.items():
            if mid in live:
                status = MachineStatus.LIVE
            elif entry.status is MachineStatus.LIVE:
                status = MachineStatus.DISCONNECTED
            else:
                status = entry.status
            if status is not entry.status:
                entry.status = status
                changed = True
        self._live_ids = live
        return changed

    def tree_rows(self, search: str | None = None) -> list[TreeRow]:
        """The machine tree in display order, filtered by a case-insensitive substring.

        Children are nested under their parent (``parent_id``); a machine whose parent is
        unknown is a root. With a search, matching machines are kept with their
        ancestors (shown for context, ``match=False``).
        """
        query = (self.search if search is None else search).strip().lower()
        terms = [t for t in (query, self.filter.machine.strip().lower()) if t]

        def hit(mid: str) -> bool:
            low = mid.lower()
            return all(t in low for t in terms)

        children: dict[str | None, list[str]] = {}
        for mid in sorted(self.machines, key=natural_key):
            parent = self.machines[mid].record.parent_id
            if parent not in self.machines or parent == mid:
                parent = None
            children.setdefault(parent, []).append(mid)
        keep: set[str] | None = None
        if terms:
            keep = set()
            for mid in self.machines:
                if hit(mid):
                    cur: str | None = mid
                    seen: set[str] = set()
                    while cur is not None and cur in self.machines and cur not in seen:
                        seen.add(cur)
                        keep.add(cur)
                        cur = self.machines[cur].record.parent_id
        rows: list[TreeRow] = []
        visited: set[str] = set()

        def add(mid: str, parent: str | None, depth: int) -> None:
            visited.add(mid)
            entry = self.machines[mid]
            rows.append(
                TreeRow(
                    machine_id=mid,
                    parent_id=parent,
                    depth=depth,
                    status=entry.status,
                    count=entry.count,
                    errors=entry.errors,
                    transitions=entry.transitions,
                    has_children=bool(children.get(mid)),
                    match=hit(mid),
                )
            )
            walk(mid, depth + 1)

        def walk(parent: str | None, depth: int) -> None:
            for mid in children.get(parent, ()):
                if mid not in visited and (keep is None or mid in keep):
                    add(mid, parent, depth)

        walk(None, 0)
        # machines whose parents form a cycle reach no root: show the first of each
        # cycle as a root rather than hide them
        for mid in sorted(self.machines, key=natural_key):
            if mid not in visited and (keep is None or mid in keep):
                add(mid, None, 0)
        return rows

    # -- selection and cursor (pure) -----------------------------------------------------

    @property
    def entry(self) -> MachineEntry | None:
        """The selected machine's entry."""
        return None if self.selected is None else self.machines.get(self.selected)

    def select(self, machine_id: str) -> None:
        """Select a machine; its cursor is where the user left it, else its last record.

        Raises:
            KeyError: for a machine the session has not seen.
        """
        if machine_id not in self.machines:
            raise KeyError(f"unknown machine {machine_id!r}")
        self.selected = machine_id
        entry = self.machines[machine_id]
        if self.follow or machine_id not in self.cursors:
            self.cursors[machine_id] = entry.count - 1

    @property
    def count(self) -> int:
        entry = self.entry
        return 0 if entry is None else entry.count

    @property
    def cursor(self) -> int:
        """The selected machine's current seq, -1 when it has no records (or none selected)."""
        if self.selected is None:
            return -1
        return min(self.cursors.get(self.selected, -1), self.count - 1)

    # -- filters ---------------------------------------------------------------------------

    @property
    def filtered(self) -> FilteredView | None:
        """The filtered view of the selected machine; None when no record is hidden.

        Made on first use and grown as records arrive; its blocks are scanned by
        ``scan_filter`` (I/O, in a worker).
        """
        entry = self.entry
        if entry is None or not self.filter.hides_records:
            self._filtered = None
            return None
        fv = self._filtered
        flt = self.filter.record_part()
        if fv is None or fv.machine_id != entry.id or fv.filter != flt:
            fv = self._filtered = FilteredView(
                entry.id, entry.record.schema, flt, entry.first, entry.count
            )
        else:
            fv.grow(entry.first, entry.count)
        return fv

    def set_filter(self, flt: LogFilter) -> None:
        """Filter the log; the cursor moves to the nearest shown record once it is known."""
        self.filter = flt
        self.snap_cursor()

    def scan_filter(self, blocks: int = 4) -> bool:
        """I/O: scan up to ``blocks`` more blocks of the filtered view.

        Returns:
            Whether there is more to scan.
        """
        fv = self.filtered
        if fv is None:
            return False
        self.scan_view(fv, blocks)
        return not fv.complete

    def scan_view(self, fv: FilteredView, blocks: int = 1) -> int:
        """I/O: scan up to ``blocks`` more blocks of ``fv``, caching the shown records.

        Returns:
            The records read.
        """
        return fv.scan_next(self._read_block, blocks, self._keep_shown, self.summary(fv.machine_id))

    def summary(self, machine_id: str) -> RecordSummary | None:
        """I/O: the record summary of a machine, filled from the backend's query index
        when it is made (``Backend.index_columns``: ~0.3 s for a million journal records
        instead of ~12 s reading them), else by the error count and filter scans.

        Called by those scans in their workers; a second caller waits for the fill.
        """
        entry = self.machines.get(machine_id)
        if entry is None:
            return None
        with self._summary_lock:
            summary = self._summaries.get(machine_id)
            if summary is None or summary.first < entry.first:
                # records before ``first`` were deleted: start again from there
                summary = self._summaries[machine_id] = RecordSummary(
                    entry.first, len(entry.record.schema)
                )
                self._fill_summary(summary, machine_id, entry.count)
        return summary

    def _fill_summary(self, summary: RecordSummary, machine_id: str, count: int) -> None:
        """I/O: fill a new summary from the backend's index; left empty (the scans fill
        it) when the backend has none or the machine outgrows the summary."""
        if summary.full or count <= summary.first:
            return
        try:
            columns = self.backend.index_columns(machine_id, summary.first, count)
            if columns is not None:
                summary.fill(columns, lambda a, b: self.backend.read(machine_id, a, b))
        except BackendError:
            return  # the scans read the records and report the error

    def _read_block(self, machine_id: str, start: int, end: int) -> list[TransitionRecord]:
        return self.backend.read(machine_id, start, end)

    SHOWN_CACHE = 8192  # shown records kept from filter scans (~2 MB)

    def _keep_shown(self, records: list[TransitionRecord]) -> None:
        shown = self._shown
        with self._shown_lock:
            for r in records:
                shown[(r.machine_id, r.seq)] = r
            while len(shown) > self.SHOWN_CACHE:
                shown.popitem(last=False)

    def _record(self, machine_id: str, seq: int) -> TransitionRecord | None:
        """A cached record: from the pages, else from the filter scans (no I/O)."""
        rec = self.pages.get(machine_id, seq)
        if rec is None and self._shown:
            with self._shown_lock:
                rec = self._shown.get((machine_id, seq))
        return rec

    def find_change(
        self, machine_id: str, state: str, seq: int, *, backwards: bool = False
    ) -> int | None:
        """I/O: the nearest record before (or after) ``seq`` that entered or exited
        ``state`` and that the filter shows.

        Reads blocks outward from ``seq``: a change a few records away costs one read.

        Args:
            machine_id: the machine.
            state: the state's full name.
            seq: where to start (excluded).
            backwards: search towards older records.

        Returns:
            The seq, or None when no such record is stored.

        Raises:
            BackendError: an unknown state, or the backend cannot be read.
        """
        entry = self.machines.get(machine_id)
        if entry is None:
            return None
        schema = entry.record.schema
        index = schema.get_index(state)
        if index is None:
            raise BackendError(f"unknown state {state!r} in machine {machine_id!r}")
        states = frozenset({index})
        fv = self._filtered
        shown = fv.matches if fv is not None and fv.machine_id == machine_id else None
        size = 256
        pos = seq
        while True:
            if backwards:
                start, end = max(entry.first, pos - size), pos
            else:
                start, end = pos + 1, min(entry.count, pos + 1 + size)
            if start >= end:
                return None
            chunk = self.backend.read(machine_id, start, end)
            if shown is not None:
                chunk = [r for r in chunk if shown(r)]
            rec = next_change(chunk, states, backwards=backwards)
            if rec is not None:
                return rec.seq
            pos = start if backwards else end - 1
            size = min(size * 4, 16384)  # grows: a rare state costs few reads

    def snap_cursor(self) -> bool:
        """Put the cursor on a shown record: the last one when following, else the nearest
        (call after a filter change or a scan step).

        Returns:
            Whether the cursor moved.
        """
        fv = self.filtered
        if fv is None and self.follow and self.selected is not None:
            before = self.cursor
            self.cursors[self.selected] = self.count - 1  # a filter cleared: the tail again
            return self.cursor != before
        if fv is None or self.selected is None or fv.total == 0:
            return False
        before = self.cursor
        if self.follow:
            # the tail is scanned last: stay on it until then (moving to each newest
            # shown record as the scan found it flew through a million records)
            if not fv.complete:
                return False
            seq = fv.seq_at(fv.total - 1)
        elif before < fv.scanned and not fv.is_shown(before):
            found = fv.nearest(before)
            seq = before if found is None else found
        else:
            return False
        self.cursors[self.selected] = seq
        return seq != before

    def filter_status(self) -> str:
        """One line for the header: the filter, rows shown and hidden, scan progress;
        empty without a filter."""
        flt = self.filter
        fv = self.filtered
        parts = []
        if fv is not None:
            # counts first: a narrow header cuts the end of the line
            parts.append(f"{fv.total:,} shown, {fv.hidden:,} hidden")
            if not fv.complete:
                parts.append(f"filtering {fv.progress:.0%}")
        if flt.describe():
            parts.append("filter: " + flt.describe())
        return " · ".join(parts)

    def log_rows(self) -> tuple[int, int, Callable[[int], int] | None]:
        """What the log shows: ``(rows, cursor_row, seq_of)``.

        Unfiltered, row ``i`` is seq ``i`` and ``seq_of`` is None. Filtered, rows are the
        shown records found so far and the cursor row is the last shown one at or before
        the cursor.
        """
        fv = self.filtered
        if fv is None:
            return self.count, self.cursor, None
        return fv.total, fv.index_at_or_before(self.cursor), fv.seq_at

    def _shown_last(self) -> int:
        fv = self.filtered
        if fv is None:
            return self.count - 1
        return fv.seq_at(fv.total - 1) if fv.total else self.cursor

    # -- navigation (pure) -------------------------------------------------------------------

    def goto(self, seq: int) -> int:
        """Move the cursor to ``seq`` (clamped), or with a filter to the nearest shown
        record. Moving before the last record stops following the tail; moving to the
        last one does not start it (``last`` does).

        Returns:
            The new cursor.
        """
        if self.selected is None:
            return -1
        last = self.count - 1
        first = min(self.machines[self.selected].first, last)
        seq = max(first, min(seq, last)) if last >= 0 else -1
        fv = self.filtered
        if fv is not None and seq >= 0 and (seq < fv.scanned or fv.complete):
            found = fv.nearest(seq)
            seq = seq if found is None else found
            last = self._shown_last()
        self.cursors[self.selected] = seq
        if seq < last:
            self.follow = False
        return seq

    def step(self, delta: int) -> int:
        """Move the cursor by ``delta`` records (negative is back in time); with a filter,
        by ``delta`` shown records."""
        fv = self.filtered
        if fv is None or self.selected is None:
            return self.goto(self.cursor + delta)
        seq = fv.step(self.cursor, delta)
        if seq is None:
            return self.cursor
        self.cursors[self.selected] = seq
        if seq < self._shown_last():
            self.follow = False
        return seq

    def first(self) -> int:
        """Jump to the oldest stored (shown) record."""
        return self.goto(0)

    def last(self) -> int:
        """Jump to the last (shown) record and follow the live tail again."""
        self.follow = True
        fv = self.filtered
        if fv is not None and self.selected is not None:
            if fv.total:
                self.cursors[self.selected] = fv.seq_at(fv.total - 1)
            return self.cursor
        return self.goto(self.count - 1)

    def set_follow(self, on: bool) -> None:
        self.follow = on
        if on:
            self.playing = False
            self.last()

    def toggle_play(self) -> bool:
        """Start or stop playing; playing from the end restarts from the first record.

        Returns:
            Whether it is playing now.
        """
        if self.playing:
            self.playing = False
        elif self.count > 0:
            if self.cursor >= self._shown_last():
                self.first()
            self.follow = False
            self.playing = True
        return self.playing

    def play_tick(self) -> bool:
        """Advance one (shown) record while playing; stop at the last one.

        Returns:
            Whether the cursor moved.
        """
        if not self.playing:
            return False
        before = self.cursor
        self.step(1)
        if self.cursor >= self._shown_last():
            self.playing = False
        return self.cursor != before

    # -- views (I/O) ---------------------------------------------------------------------

    def clocks_at(self, machine_id: str, seq: int) -> tuple[int, ...]:
        """I/O: the clock vector after record ``seq`` (zeros for ``seq < 0``).

        Uses a nearby cached vector plus a short replay when it can (a step costs one
        record), else the backend's ``state_at`` (one snapshot read plus a replay).
        """
        clocks = self._clocks(machine_id, seq, io=True)
        assert clocks is not None
        return clocks

    def _clocks(self, machine_id: str, seq: int, *, io: bool) -> tuple[int, ...] | None:
        schema = self.machines[machine_id].record.schema
        if seq < 0:
            return (0,) * len(schema)
        hit = self.clocks.get(machine_id, seq)
        if hit is not None:
            return hit
        near = self.clocks.nearest_below(machine_id, seq)
        limit = ClockCache.REPLAY_LIMIT if io else ClockCache.REPLAY_LIMIT_CACHED
        if near is not None and seq - near[0] <= limit:
            mt = MachineTime(len(schema), near[1])
            # Replay from cached pages only: reading pages to replay them cost more
            # than the backend's state_at (a snapshot at most 127 records back, or its
            # index), measured 5-15 ms against ~1 ms on a 1M-record journal.
            ok = True
            for s in range(near[0] + 1, seq + 1):
                rec = self.pages.get(machine_id, s)
                if rec is None:
                    ok = False
                    break
                mt.apply(rec, strict=False)
            if ok:
                clocks = tuple(mt.clocks)
                self.clocks.put(machine_id, seq, clocks)
                return clocks
        if not io:
            return None
        assert self.state_at_fn is not None
        clocks = tuple(self.state_at_fn(self.backend, machine_id, seq))
        self.clocks.put(machine_id, seq, clocks)
        return clocks

    def _ranges(
        self, machine_id: str, start: int, end: int, seqs: Sequence[int] | None
    ) -> list[tuple[int, int]]:
        """The seq ranges a window shows: ``[start, end)``, or one page per listed seq."""
        entry = self.machines.get(machine_id)
        if entry is None:
            return []
        if seqs is None:
            start, end = max(entry.first, start), min(end, entry.count)
            return [(start, end)] if start < end else []
        # a filtered screen: runs of the seqs themselves, not their pages (one record
        # of a sparse filter per 256-record page decoded 256 times what it showed)
        out: list[tuple[int, int]] = []
        for seq in seqs:
            if entry.first <= seq < entry.count and self._record(machine_id, seq) is None:
                if out and out[-1][1] == seq:
                    out[-1] = (out[-1][0], seq + 1)
                else:
                    out.append((seq, seq + 1))
        return out

    def rows_missing(
        self, machine_id: str, start: int, end: int, seqs: Sequence[int] | None = None
    ) -> bool:
        """Whether a window of the log (see ``load_rows``) shows records not cached."""
        ranges = self._ranges(machine_id, start, end, seqs)
        if seqs is not None:
            return bool(ranges)
        return any(self.pages.missing(machine_id, a, b) for a, b in ranges)

    def load_rows(
        self, machine_id: str, start: int, end: int, seqs: Sequence[int] | None = None
    ) -> int:
        """I/O: cache the records ``[start, end)`` (clamped), or with a filter the records
        ``seqs`` only (a sparse filter's screen spans far more records than it shows).

        Returns:
            The backend reads made.
        """
        ranges = self._ranges(machine_id, start, end, seqs)
        if seqs is None:
            return sum(self.pages.load(self.backend, machine_id, a, b) for a, b in ranges)
        for a, b in ranges:
            self._keep_shown(self.backend.read(machine_id, a, b))
        self.pages.reads += len(ranges)
        return len(ranges)

    def prefetch(
        self,
        machine_id: str,
        seq: int,
        rows: int,
        cancelled: Callable[[], bool] = bool,
        ahead: int = 0,
    ) -> int:
        """I/O: cache what the cursor keys reach from ``seq``: the views one step and one
        jump away either side (with the filter, in shown records) and the log rows around
        them, so those keys redraw from caches without a worker round trip.

        Args:
            machine_id: the machine.
            seq: the cursor.
            rows: log rows on screen (rows around each target are read).
            cancelled: stops early when it returns True (the cursor moved on).
            ahead: the last move (a delta): the same move again is cached first, as a
                key held down repeats it before the rest could be read.

        Returns:
            The views computed (0 when everything was cached).

        Raises:
            BackendError: when the backend cannot be read.
        """
        entry = self.machines.get(machine_id)
        if entry is None or entry.count == 0:
            return 0
        fv = self._filtered if self.filter.hides_records else None
        if fv is not None and fv.machine_id != machine_id:
            return 0
        done = 0
        # the last move again first, then the nearest: a step is the likeliest next key
        order = [d for d in (ahead, -1, 1, -JUMP, JUMP) if d]
        for delta in dict.fromkeys(order):
            if cancelled():
                break
            if fv is None:
                target = max(entry.first, min(entry.count - 1, seq + delta))
            else:
                found = fv.step(seq, delta)
                if found is None:
                    break
                target = found
            if self._view(machine_id, target, io=False) is not None and not self.rows_missing(
                *self._window(machine_id, target, rows, fv)
            ):
                continue
            self.view(machine_id, target)
            self.load_rows(*self._window(machine_id, target, rows, fv))
            done += 1
        return done

    def _window(
        self, machine_id: str, seq: int, rows: int, fv: FilteredView | None
    ) -> tuple[str, int, int, tuple[int, ...] | None]:
        """The log rows a move to ``seq`` shows (a jump centres the cursor, a step keeps
        it near the screen's edge), as ``load_rows`` takes them. With a sparse filter each
        row is a read of its own (~1.6 ms on a 1M journal): only what the screen shows."""
        if fv is None:
            return machine_id, seq - rows, seq + rows + 1, None
        i = fv.index_at_or_before(seq)
        half = rows // 2 + 1
        lo, hi = max(0, i - half), min(fv.total, i + half + 1)
        seqs = tuple(fv.seq_at(r) for r in range(lo, hi))
        if not seqs:
            return machine_id, seq, seq + 1, ()
        return machine_id, seqs[0], seqs[-1] + 1, seqs

    def view(self, machine_id: str, seq: int) -> CursorView:
        """I/O: the state tree, record and details of ``machine_id`` at ``seq``.

        Raises:
            BackendError: when the backend cannot be read.
        """
        view = self._view(machine_id, seq, io=True)
        assert view is not None
        return view

    def cached_view(self, machine_id: str, seq: int) -> CursorView | None:
        """The view at ``seq`` from caches alone, or None when it needs a backend read.

        A step next to the previous cursor is answered here: its record is in a cached
        page and its clocks are one record away from cached ones, so the UI shows it
        without a round trip through a worker.
        """
        return self._view(machine_id, seq, io=False)

    def _view(self, machine_id: str, seq: int, *, io: bool) -> CursorView | None:
        entry = self.machines[machine_id]
        schema = entry.record.schema
        count = entry.count
        seq = min(seq, count - 1)
        if seq < 0:
            rows = state_rows(schema, (0,) * len(schema))
            return CursorView(machine_id, -1, count, None, tuple(rows), (), None)
        record = self._record(machine_id, seq)
        if record is None and io:
            if self._filtered is not None and self._filtered.machine_id == machine_id:
                self._keep_shown(self.backend.read(machine_id, seq, seq + 1))  # see _ranges
                self.pages.reads += 1
            else:
                self.pages.load(self.backend, machine_id, seq, seq + 1)
            record = self._record(machine_id, seq)
        if record is None:
            if not io:
                return None
            raise BackendError(f"{machine_id}: record {seq} cannot be read")
        clocks = self._clocks(machine_id, seq, io=io)
        if clocks is None:
            return None
        if record.kind in RESET_KINDS:
            before = self._clocks(machine_id, seq - 1, io=io)
            if before is None:
                return None
            changes = MachineTime(len(schema), before).changes(record)
        else:
            # undo the record's own changes: cheaper than a seek, and it leaves the
            # clocks before it cached, so stepping back costs no backend read either
            changes = (tuple(record.exited), tuple(record.entered))
            undo = list(clocks)
            for i in (*record.exited, *record.entered):
                if 0 <= i < len(undo):
                    undo[i] -= 1
            if seq > 0:
                self.clocks.put(machine_id, seq - 1, undo)
        rows = state_rows(schema, clocks, record, changes)
        return CursorView(
            machine_id,
            seq,
            count,
            record,
            tuple(rows),
            tuple(details(schema, record)),
            log_row(schema, record),
        )

    def row(self, machine_id: str, seq: int) -> LogRow | None:
        """The log line of a cached record, None when its page is not loaded (no I/O).

        Lines are kept for the last few screens: formatting one (a datetime, state names)
        cost more than drawing it.
        """
        key = (machine_id, seq)
        hit = self._rows.get(key)
        if hit is not None:
            return hit
        rec = self._record(machine_id, seq)
        entry = self.machines.get(machine_id)
        if rec is None or entry is None:
            return None
        out = self._rows[key] = log_row(entry.record.schema, rec)
        if len(self._rows) > 2048:
            self._rows.popitem(last=False)
        return out

    def describe(self) -> str:
        """One line for the log's title: position, follow and play state."""
        if self.selected is None:
            return "no machine"
        flags = []
        if self.follow:
            flags.append("following")
        if self.playing:
            flags.append("playing")
        pos = f"seq {self.cursor}/{self.count - 1}" if self.count else "no records"
        return " · ".join([self.selected, pos, *flags])
