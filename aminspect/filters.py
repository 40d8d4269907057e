"""Filters of the transition log and the filtered view of one machine the cursor moves over.

Plain Python with no UI. A :class:`LogFilter` says what to hide; :func:`compile_filter`
turns it into a predicate over records; a :class:`FilteredView` finds the seqs that pass,
block by block, and answers "the i-th shown record" and "the shown record nearest seq s"
from what it scanned so far, so a million-record history is filtered in the background
while the cursor already moves over the part that is done.

Blocks are answered from a :class:`RecordSummary` where it covers them; it is filled
from the backend's query index when there is one (``Backend.index_columns``), so a fresh
million-record journal filters in under a second instead of reading every record.
Without an index, blocks read through ``Backend.read`` and not ``Backend.find``/``count``:
the shared evaluator would build the whole per-state index first (about 10 s for a
million journal records); a block scan costs the same reads, reports progress and can be
interrupted.
"""

from __future__ import annotations

import sys
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import compress, repeat
from operator import sub

from backends.base import IndexColumns
from tracer.records import RESET_KINDS, Schema, TransitionRecord, is_refusal

__all__ = [
    "BLOCK",
    "FilteredView",
    "LogFilter",
    "Reader",
    "RecordSummary",
    "compile_filter",
    "next_change",
    "parse_names",
    "state_indexes",
    "touched",
]

BLOCK = 4096  # records per scanned block: ~10 ms of reading and matching on a journal

Reader = Callable[[str, int, int], Sequence[TransitionRecord]]


def parse_names(text: str) -> frozenset[str]:
    """Comma- or space-separated names as a set (empty entries dropped)."""
    return frozenset(p for p in text.replace(",", " ").split() if p)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What the transition log hides. Every set part must match (AND).

    Attributes:
        hide_rejected: hide records that were not accepted.
        errors_only: show only records that failed with an error (refusals are not errors).
        kinds: show only these record kinds (None: every kind).
        events: show only these exact event names (empty: every name).
        states: show only records that entered or exited one of these states (full or
            short names; empty: no state filter).
        search: case-insensitive text that the event name, kind or a touched state's
            name must contain (the search-as-you-type box).
        machine: case-insensitive text machine ids must contain (filters the machine tree).
    """

    hide_rejected: bool = False
    errors_only: bool = False
    kinds: frozenset[str] | None = None
    events: frozenset[str] = field(default_factory=frozenset)
    states: frozenset[str] = field(default_factory=frozenset)
    search: str = ""
    machine: str = ""

    @property
    def hides_records(self) -> bool:
        """Whether the filter hides any record of the log (``machine`` does not)."""
        return bool(
            self.hide_rejected
            or self.errors_only
            or self.kinds is not None
            or self.events
            or self.states
            or self.search.strip()
        )

    def record_part(self) -> LogFilter:
        """The filter without its machine part (what a FilteredView depends on)."""
        return replace(self, machine="")

    def describe(self) -> str:
        """A short line for the header: ``errors · kind event · event pay · ~card``."""
        parts = []
        if self.errors_only:
            parts.append("errors")
        if self.hide_rejected:
            parts.append("accepted")
        if self.kinds is not None:
            parts.append("kind " + ",".join(sorted(self.kinds)))
        if self.events:
            parts.append("event " + ",".join(sorted(self.events)))
        if self.states:
            parts.append("state " + ",".join(sorted(self.states)))
        if self.search.strip():
            parts.append("~" + self.search.strip())
        if self.machine.strip():
            parts.append("machine ~" + self.machine.strip())
        return " · ".join(parts)


def state_indexes(schema: Schema, names: frozenset[str]) -> frozenset[int]:
    """Indexes of the states named (full name, or the last path segment), case-insensitive.

    Args:
        schema: the machine's schema.
        names: state names as the user typed them.

    Returns:
        Every state whose full or short name equals one of ``names`` (a short name may
        match several states: ``Paid`` in two regions).
    """
    wanted = {n.lower() for n in names}
    out = set()
    for i, spec in enumerate(schema.states):
        full = spec.name.lower()
        short = full.replace("_", ".").rsplit(".", 1)[-1]
        if full in wanted or short in wanted:
            out.add(i)
    return frozenset(out)


def touched(record: TransitionRecord) -> tuple[int, ...]:
    """States a record entered or exited, as stored.

    A reset record (init, restore, gap) stores the whole configuration after it in
    ``entered``; every state in it counts as touched, which is exact for ``init`` and
    may include states that stayed active for the others.
    """
    if record.kind in RESET_KINDS:
        return tuple(record.entered)
    return (*record.entered, *record.exited)


def compile_filter(flt: LogFilter, schema: Schema) -> Callable[[TransitionRecord], bool]:
    """The predicate of a filter over one machine's records.

    Args:
        flt: the filter.
        schema: the machine's schema (state names to indexes).

    Returns:
        ``f(record) -> bool``: True when the record is shown.
    """
    hide_rejected = flt.hide_rejected
    errors_only = flt.errors_only
    kinds = flt.kinds
    events = flt.events
    states = state_indexes(schema, flt.states) if flt.states else None
    text = flt.search.strip().lower()
    text_states = (
        frozenset(i for i, s in enumerate(schema.states) if text in s.name.lower())
        if text
        else frozenset()
    )

    def match(rec: TransitionRecord) -> bool:
        if hide_rejected and not rec.accepted:
            return False
        if errors_only:
            err = rec.error
            if err is None or is_refusal(err, rec.accepted):
                return False
        if kinds is not None and rec.kind not in kinds:
            return False
        if events and rec.name not in events:
            return False
        if states is not None and not any(i in states for i in touched(rec)):
            return False
        if text:
            if text in rec.name.lower() or text in rec.kind:
                return True
            return any(i in text_states for i in touched(rec))
        return True

    return match


class RecordSummary:
    """What the filters test of each record of one machine, 12 bytes a record: outcome,
    kind, event name and the states it touched, for ``[first, end)``.

    Filled from the backend's query index when it has one (``fill``: about 0.3 s for a
    million journal records, against about 12 s to read them), else in seq order by
    whoever reads records anyway (the background error count, a filter scan); a filter
    then scans a covered block in about 1 ms instead of decoding its records again
    (about 20 µs each on a journal). It stops growing at ``limit`` records, or when a
    machine has more than 254 kinds, 65,535 event names or 64 states (the filters then
    read those records), so its memory stays bounded.

    The outcome byte is one of ``ACCEPTED``, ``REJECTED``, ``ERROR`` (not accepted) or
    ``ACCEPTED_ERROR`` (an error although ``accepted`` is true).
    """

    LIMIT = 4_000_000  # records: ~48 MB

    ACCEPTED, REJECTED, ERROR, ACCEPTED_ERROR = 0, 1, 2, 3

    def __init__(self, first: int, n_states: int, limit: int = LIMIT) -> None:
        self.first = first
        self.limit = limit
        self.n_states = n_states
        self.outcome = bytearray()
        self.kind = array("B")
        self.name = array("H")
        self.mask: array[int] = array("Q")
        self.kinds: dict[str, int] = {}
        self.names: dict[str, int] = {}
        self.full = n_states > 64
        self._lock = threading.Lock()
        self.reads = 0  # backend reads made by ``fill``

    @property
    def end(self) -> int:
        """One past the last summarised seq."""
        return self.first + len(self.outcome)

    def covers(self, start: int, end: int) -> bool:
        """Whether every seq of ``[start, end)`` is summarised."""
        return self.first <= start and end <= self.end

    def offer(self, records: Sequence[TransitionRecord]) -> None:
        """Add records when they continue the summary (else ignore them)."""
        if self.full or not records:
            return
        with self._lock:
            end = self.end
            if records[0].seq > end or records[-1].seq < end:
                return
            for r in records[end - records[0].seq :]:
                if len(self.outcome) >= self.limit:
                    self.full = True
                    return
                k = self._kind_code(r.kind)
                if k is None:
                    return
                n = self.names.get(r.name)
                if n is None:
                    if len(self.names) >= 65535:
                        self.full = True
                        return
                    n = self.names[r.name] = len(self.names)
                self.outcome.append(_outcome_code(r))
                self.kind.append(k)
                self.name.append(n)
                self.mask.append(_mask(r))

    def _kind_code(self, kind: str) -> int | None:
        """The code of a kind, added when new; None (and ``full``) past 254 kinds."""
        k = self.kinds.get(kind)
        if k is None:
            if len(self.kinds) >= 254:
                self.full = True
                return None
            k = self.kinds[kind] = len(self.kinds)
        return k

    def fill(
        self, columns: IndexColumns, read: Callable[[int, int], Sequence[TransitionRecord]]
    ) -> bool:
        """I/O: summarise ``columns`` (a backend's query index, from ``first``) at once.

        The index answers most records alone. Reset records (init, restore, gap: their
        touched states are the stored configuration, which the index does not keep),
        records of a kind it does not name and records whose ``accepted`` is neither
        true nor false are read through ``read(start, end)`` (usually a handful). Records
        not accepted with an error are refusals (rejected) or errors as the index's
        ``refused`` says, without reads.

        Returns:
            Whether the summary now covers ``columns`` (False: it is left as it was;
            too many names, or columns that do not start at ``first``).
        """
        c = columns
        n = min(c.end - c.start, self.limit)
        if self.full or c.start != self.first or n <= 0 or len(c.names) > 65535:
            return False
        # outcome: one byte of (accepted bits | error << 2), mapped by a table; the
        # error column is 0/1, so shifting the whole int by 2 keeps it in its byte
        both = (_as_int(c.accepted[:n]) | (_as_int(c.error[:n]) << 2)).to_bytes(n, "little")
        outcome = bytearray(both.translate(_OUTCOME_OF))
        # not accepted with an error: an error unless the index lists it as a refusal.
        # Reading 9,900 such records of a million journal records instead took errors
        # only and the error count 3.7-3.9 s after open (now 0.3-0.6 and 0.7 s); the
        # loop below costs ~9 ms for 77,000 refusals.
        refused, lo, hi = c.refused, c.start, c.start + n
        for seq in refused[bisect_left(refused, lo) : bisect_left(refused, hi)]:
            if outcome[seq - lo] == self.ERROR:
                outcome[seq - lo] = self.REJECTED
        # kinds: the codes present, numbered in code order; unknown ones are read
        kinds: dict[str, int] = {}
        table = bytearray(256)
        reread = bytearray(256)
        kind_col = c.kind[:n]
        for code, kind_name in enumerate(c.kinds):
            if bytes((code,)) not in kind_col:
                continue
            if kind_name is None or kind_name in RESET_KINDS:
                reread[code] = 1
            if kind_name is not None:
                table[code] = kinds.setdefault(kind_name, len(kinds))
        kind = array("B", kind_col.translate(table))
        names = {nm: i for i, nm in enumerate(c.names)}
        name = array("H", c.name[:n])
        mask = _masks(c, n, min(self.n_states, 64))
        # records to read: a reset or unknown kind, an accepted neither true nor false
        special = _as_int(kind_col.translate(bytes(reread))) | _as_int(
            outcome.translate(_IS_SPECIAL)
        )
        seqs = list(compress(range(c.start, c.start + n), special.to_bytes(n, "little")))
        reads = 0
        for a, b in _runs(seqs):
            reads += 1
            for r in read(a, b):
                i = r.seq - c.start
                if not (0 <= i < n):
                    continue
                if r.kind not in kinds:
                    if len(kinds) >= 254:
                        return False
                    kinds[r.kind] = len(kinds)
                if r.name not in names:  # the index names every record; kept exact anyway
                    if len(names) >= 65535:
                        return False
                    names[r.name] = len(names)
                outcome[i] = _outcome_code(r)
                kind[i] = kinds[r.kind]
                name[i] = names[r.name]
                mask[i] = _mask(r)
        with self._lock:
            if self.full or self.end > c.start + n:
                return False  # a scan got further meanwhile
            self.outcome, self.kind, self.name, self.mask = outcome, kind, name, mask
            self.kinds, self.names = kinds, names
            self.reads += reads
            if n < c.end - c.start:
                self.full = True
        return True

    def errors(self, start: int, end: int) -> int:
        """Records with an error in ``[start, end)`` (a covered range)."""
        a, b = start - self.first, end - self.first
        return self.outcome.count(self.ERROR, a, b) + self.outcome.count(self.ACCEPTED_ERROR, a, b)

    def matches(self, flt: LogFilter, schema: Schema, start: int, end: int) -> list[int]:
        """The seqs of ``[start, end)`` (covered) that pass ``flt``; the same answer as
        ``compile_filter`` over the records."""
        base = self.first
        with self._lock:
            a, b = start - base, end - base
            kinds, names = dict(self.kinds), dict(self.names)
        # one 0/1 byte per record and criterion, combined as big ints: C loops, about
        # 0.2 ms per 4096-record block against 2-4 ms for a Python loop over records
        n = b - a
        if n <= 0:
            return []
        parts: list[bytes] = []
        if flt.errors_only:
            parts.append(_pick(self.outcome[a:b], {self.ERROR, self.ACCEPTED_ERROR}))
        if flt.hide_rejected:  # ``accepted`` is true
            parts.append(_pick(self.outcome[a:b], {self.ACCEPTED, self.ACCEPTED_ERROR}))
        if flt.kinds is not None:
            parts.append(
                _pick(self.kind[a:b].tobytes(), {kinds[k] for k in flt.kinds if k in kinds})
            )
        if flt.events:
            ok = {names[e] for e in flt.events if e in names}
            parts.append(bytes(c in ok for c in self.name[a:b]))
        if flt.states:
            bits = sum(1 << i for i in state_indexes(schema, flt.states) if i < 64)
            parts.append(bytes(m & bits != 0 for m in self.mask[a:b]))
        text = flt.search.strip().lower()
        if text:
            text_names = {c for nm, c in names.items() if text in nm.lower()}
            text_kinds = {c for k, c in kinds.items() if text in k}
            bits = 0
            for i, spec in enumerate(schema.states[:64]):
                if text in spec.name.lower():
                    bits |= 1 << i
            any_of = _as_int(bytes(c in text_names for c in self.name[a:b]))
            any_of |= _as_int(_pick(self.kind[a:b].tobytes(), text_kinds))
            if bits:
                any_of |= _as_int(bytes(m & bits != 0 for m in self.mask[a:b]))
            parts.append(any_of.to_bytes(n, "little"))
        if not parts:
            return list(range(start, end))
        sel = _as_int(parts[0])
        for part in parts[1:]:
            sel &= _as_int(part)
        return list(compress(range(start, end), sel.to_bytes(n, "little")))


# outcome byte of (accepted bits | has error << 2), the index's columns; 255: read it
_SPECIAL = 255
_OUTCOME_OF = bytes(
    (
        RecordSummary.ACCEPTED,  # 1: accepted == True, no error
        RecordSummary.REJECTED,  # 2: accepted == False, no error
        RecordSummary.ACCEPTED_ERROR,  # 5: accepted == True, an error
        RecordSummary.ERROR,  # 6: accepted == False, an error (fill marks refusals)
    )[(1, 2, 5, 6).index(i)]
    if i in (1, 2, 5, 6)
    else _SPECIAL
    for i in range(256)
)
_IS_SPECIAL = bytes(1 if i == _SPECIAL else 0 for i in range(256))
# Records to read are read in runs: neighbours fewer than _RUN_GAP apart share a read, up
# to _RUN_MAX records (a filter block). In the app a read in a worker costs far more than
# its decoding (each file read hands the GIL to the UI thread, and getting it back can
# take a 5 ms switch interval): for 9,900 records spread over a million journal records,
# runs of up to 500 records took 3.3 s alone but 11-13 s in the app, one read per block
# 4.3 s alone and 6.1 s in the app.
_RUN_GAP = 1024
_RUN_MAX = 4096


def _outcome_code(r: TransitionRecord) -> int:
    """A record's outcome byte in a RecordSummary."""
    # imported here: session imports this module
    from aminspect.session import Outcome, outcome_of

    outcome = outcome_of(r)
    if outcome is Outcome.ERROR:
        return RecordSummary.ACCEPTED_ERROR if r.accepted else RecordSummary.ERROR
    return RecordSummary.ACCEPTED if outcome is Outcome.ACCEPTED else RecordSummary.REJECTED


def _mask(r: TransitionRecord) -> int:
    """The 64-bit mask of the states a record touched."""
    m = 0
    for i in touched(r):
        if 0 <= i < 64:
            m |= 1 << i
    return m


def _masks(c: IndexColumns, n: int, states: int) -> array[int]:
    """The touched-state masks of the first ``n`` records of ``c`` from its per-state
    seqs: per state a 0/1 byte per record (set by a C loop over its seqs), shifted into
    its bit; eight states make one byte of the 8-byte masks. About 2 ms per state and
    million records, plus ~50 ns per state change."""
    start = c.start
    out = bytearray(8 * n)
    for byte in range(8):
        acc = 0
        for bit in range(8):
            s = byte * 8 + bit
            if s >= states:
                break
            seqs = [arr[: bisect_left(arr, start + n)] for arr in (c.entered[s], c.exited[s])]
            if not (seqs[0] or seqs[1]):
                continue
            plane = bytearray(n)
            for arr in seqs:
                any(map(plane.__setitem__, map(sub, arr, repeat(start)), repeat(1)))
            acc |= _as_int(plane) << bit
        if acc:
            out[byte::8] = acc.to_bytes(n, "little")
    mask: array[int] = array("Q")
    mask.frombytes(out)
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        mask.byteswap()
    return mask


def _runs(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Ascending seqs as ``[start, end)`` ranges to read, joining neighbours fewer than
    ``_RUN_GAP`` apart into runs of at most ``_RUN_MAX`` records."""
    out: list[tuple[int, int]] = []
    for s in seqs:
        if out and s - out[-1][1] < _RUN_GAP and s - out[-1][0] < _RUN_MAX:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def _pick(data: bytes | bytearray, codes: set[int]) -> bytes:
    """1 where a byte is one of ``codes``, else 0."""
    table = bytes(1 if i in codes else 0 for i in range(256))
    return bytes(data).translate(table)


def _as_int(data: bytes | bytearray) -> int:
    return int.from_bytes(data, "little")


class FilteredView:
    """The seqs of one machine's records that pass a filter, scanned block by block.

    Blocks are ``[k * block, (k + 1) * block)`` clipped to the stored records and are
    scanned in seq order from the first stored record, so what is known is always a
    prefix: row ``i`` of the filtered log never moves once known. A live machine grows:
    its last, short block is scanned again when more records arrive. Memory: 8 bytes per
    shown record and 8 per block. Thread-safe: a worker scans while the UI thread reads.

    Args:
        machine_id: the machine.
        schema: its schema.
        flt: the filter (its machine part is ignored).
        first: the lowest stored seq.
        count: one past the highest stored seq.
        block: records per block.
    """

    def __init__(
        self,
        machine_id: str,
        schema: Schema,
        flt: LogFilter,
        first: int,
        count: int,
        block: int = BLOCK,
    ) -> None:
        self.machine_id = machine_id
        self.filter = flt.record_part()
        self.block = block
        self.first = first
        self.count = count
        self.matches = compile_filter(self.filter, schema)
        self._schema = schema
        self._seqs: list[array[int]] = []  # matches per scanned block, in order
        self._cum: list[int] = [0]  # matches before each scanned block
        self._end = first  # every seq below this is scanned
        self._lock = threading.Lock()
        self.reads = 0

    # -- scanning (I/O) --------------------------------------------------------------

    @property
    def scanned(self) -> int:
        """One past the last scanned seq."""
        return self._end

    @property
    def complete(self) -> bool:
        """Whether every stored record is scanned."""
        return self._end >= self.count

    @property
    def progress(self) -> float:
        """The scanned share of the stored records, 0..1."""
        total = self.count - self.first
        return 1.0 if total <= 0 else (self._end - self.first) / total

    def grow(self, first: int, count: int) -> None:
        """The machine has ``count`` records now (live); a short last block is rescanned."""
        with self._lock:
            if first > self.first and not self._seqs:
                self.first = self._end = first
            if count <= self.count:
                return
            self.count = count
            if self._seqs and self._end % self.block:
                self._seqs.pop()
                self._cum.pop()
                self._end = max(self.first, (self._end // self.block) * self.block)

    def scan_next(
        self,
        read: Reader,
        blocks: int = 1,
        keep: Callable[[list[TransitionRecord]], object] | None = None,
        summary: RecordSummary | None = None,
    ) -> int:
        """I/O: scan up to ``blocks`` more blocks; returns how many records were read.

        A block the ``summary`` covers is answered from it without a read; a block read
        is offered to it. ``keep`` receives each read block's shown records: the session
        caches them, so the log draws a filtered screen without reading their pages.
        """
        done = 0
        for _ in range(blocks):
            with self._lock:
                start, count = self._end, self.count
            if start >= count:
                break
            end = min(count, (start // self.block + 1) * self.block)
            if summary is not None and summary.covers(start, end):
                seqs = array("q", summary.matches(self.filter, self._schema, start, end))
            else:
                records = read(self.machine_id, start, end)
                self.reads += 1
                if summary is not None:
                    summary.offer(records)
                match = self.matches
                shown = [r for r in records if match(r)]
                seqs = array("q", [r.seq for r in shown])
                if keep is not None:
                    keep(shown)
            with self._lock:
                if self._end != start:  # grow() reset meanwhile: drop this block
                    continue
                self._seqs.append(seqs)
                self._cum.append(self._cum[-1] + len(seqs))
                self._end = end
            done += end - start
        return done

    def scan_all(self, read: Reader) -> None:
        """I/O: scan every remaining block (tests, small histories)."""
        while not self.complete:
            if not self.scan_next(read, 16) and not self.complete:
                break

    # -- positions (no I/O) ----------------------------------------------------------

    @property
    def total(self) -> int:
        """Shown records found so far (all of them once complete)."""
        return self._cum[-1]

    @property
    def hidden(self) -> int:
        """Hidden records among the scanned ones."""
        return (self._end - self.first) - self._cum[-1]

    def seq_at(self, i: int) -> int:
        """The seq of shown row ``i`` (``0 <= i < total``).

        Raises:
            IndexError: ``i`` is out of range.
        """
        with self._lock:
            if not 0 <= i < self._cum[-1]:
                raise IndexError(i)
            k = bisect_right(self._cum, i) - 1
            return self._seqs[k][i - self._cum[k]]

    def _block_of(self, seq: int) -> int:
        """Index into ``_seqs`` of the block holding ``seq`` (scanned part only)."""
        first_block = self.first // self.block
        return seq // self.block - first_block

    def rank(self, seq: int) -> int:
        """Shown records with a seq below ``seq`` (counted over the scanned prefix)."""
        with self._lock:
            if seq >= self._end:
                return self._cum[-1]
            if seq < self.first:
                return 0
            k = self._block_of(seq)
            return self._cum[k] + bisect_left(self._seqs[k], seq)

    def index_at_or_before(self, seq: int) -> int:
        """The row of the last shown record with seq <= ``seq``; -1 when none."""
        return self.rank(seq + 1) - 1

    def is_shown(self, seq: int) -> bool | None:
        """Whether ``seq`` passes the filter; None when it is not scanned yet."""
        if not self.first <= seq < self._end:
            return None if seq >= self._end else False
        i = self.rank(seq)
        return i < self.total and self.seq_at(i) == seq

    def nearest(self, seq: int) -> int | None:
        """The shown seq at or before ``seq``, else the first after it; None when none
        is known yet."""
        i = self.index_at_or_before(seq)
        if i >= 0:
            return self.seq_at(i)
        return self.seq_at(0) if self.total else None

    def step(self, seq: int, delta: int) -> int | None:
        """The shown seq ``delta`` rows from ``seq`` (clamped to the known rows).

        ``seq`` need not be shown: one step forward from a hidden record lands on the
        next shown one, one step back on the previous.

        Returns:
            The seq, or None when nothing is shown (yet).
        """
        total = self.total
        if total == 0:
            return None
        i = self.index_at_or_before(seq)
        shown = i >= 0 and self.seq_at(i) == seq
        if not shown and delta < 0:
            i += 1  # the hidden cursor sits between rows i and i + 1
        target = max(0, min(total - 1, i + delta))
        return self.seq_at(target)


def next_change(
    records: Sequence[TransitionRecord], states: frozenset[int], backwards: bool = False
) -> TransitionRecord | None:
    """The first record of ``records`` (in order, or from the end) that touched one of
    ``states``; None when none did."""
    seq_iter = reversed(records) if backwards else records
    for rec in seq_iter:
        if any(i in states for i in touched(rec)):
            return rec
    return None
