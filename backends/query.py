"""The shared query evaluator: ``find``, ``count``, the four time predicates, ``to_time_record``.

Defined once for every backend. A backend answers them from a per-machine
:class:`MachineIndex` (built from its records on first use, then kept current by
``append``) and may push work down to its storage by overriding ``_index_for`` or these
entry points, never changing a result.

Time semantics (times are UTC ns, windows are half-open ``[start, end)`` like ``Query``):

* record ``i``'s configuration holds from ``time_i`` until the next record's time; before
  the first retained record the machine holds the base configuration (all inactive, or the
  snapshot at the first retained seq after deletes);
* ``activated_between``: a record with time in the window entered the state (a re-entry,
  exit and enter in one record, counts as both an activation and a deactivation);
* ``deactivated_between``: a record with time in the window exited the state;
* ``active_between``: the state was active during some non-empty part of the window, or a
  record in the window entered it (even momentarily). So a state already active at
  ``start`` is active between; a state that was deactivated by a record at exactly
  ``start`` is not (its active span ended at ``start``);
* ``inactive_between``: the same for inactive.

These follow asyncmachine-go's ``pkg/history`` predicates, with the window made half-open.
When a machine's record times are non-decreasing in seq order (the normal case) the
predicates are a few bisections (O(log n)); otherwise the same definition is evaluated by
a linear scan, so out-of-order clocks never give a wrong answer.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from backends.base import BackendError, IndexColumns, Query
from tracer.codec import KIND_CODES
from tracer.machine_time import MachineTime, TimeRecord, time_records
from tracer.records import RESET_KINDS, Schema, TransitionRecord, is_refusal

if TYPE_CHECKING:
    from backends._base import BaseBackend

__all__ = [
    "MachineIndex",
    "activated_between",
    "active_between",
    "count",
    "deactivated_between",
    "find",
    "inactive_between",
    "matches",
    "to_time_record",
]

_CHUNK = 1024  # records read per storage call while filtering
_KIND_NAMES = {code: str(kind) for kind, code in KIND_CODES.items()}
_RESET_CODES = frozenset(KIND_CODES[k] for k in RESET_KINDS)


def _raw(a: array[int]) -> bytes:
    if sys.byteorder != "little":  # pragma: no cover - big-endian hosts
        a = array("q", a)
        a.byteswap()
    return a.tobytes()


def _raw_any(a: array[int]) -> bytes:
    if sys.byteorder != "little":  # pragma: no cover
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _from_raw_any(typecode: str, data: bytes) -> array[int]:
    a = array(typecode)
    a.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover
        a.byteswap()
    return a


# A record's flags byte in the index: bit 0 accepted is True, bit 1 accepted is False,
# bit 2 has an error, bits 3-7 the kind's code (31: not a known kind). The byte is full,
# so whether an error is a library's refusal is kept apart (``MachineIndex.refusals``).
_ACC_TRUE, _ACC_FALSE, _HAS_ERROR = 1, 2, 4
_NO_KIND = 31


# Tables for ``MachineIndex.columns``: a flags byte to its kind code, accepted bits, error bit.
_KIND_OF_FLAGS = bytes(f >> 3 for f in range(256))
_ACC_OF_FLAGS = bytes(f & (_ACC_TRUE | _ACC_FALSE) for f in range(256))
_ERROR_OF_FLAGS = bytes(1 if f & _HAS_ERROR else 0 for f in range(256))
_KINDS_BY_CODE = tuple(_KIND_NAMES.get(code) for code in range(_NO_KIND + 1))


def _pack_times(times: list[int]) -> bytes:
    """Times as native int64s (struct is the fastest conversion); OverflowError when one is
    out of range, as ``array("q")`` raises for the same values."""
    try:
        return struct.pack(f"={len(times)}q", *times)
    except struct.error as exc:
        raise OverflowError(f"record time out of range: {exc}") from None


def _acc_bits(accepted: object) -> int:
    """The accepted bits of a value that is not a bool, compared as Query compares (1 ==
    True)."""
    return (accepted == True) | ((accepted == False) << 1)  # noqa: E712


def _flags(accepted: Any, error: Any, code: int) -> int:
    """A record's flags byte (see above) from its accepted, error and kind code (a code
    the index does not know becomes _NO_KIND)."""
    acc = _ACC_TRUE if accepted is True else _ACC_FALSE if accepted is False else None
    return (
        (_acc_bits(accepted) if acc is None else acc)
        | (0 if error is None else _HAS_ERROR)
        | ((code if code in _KIND_NAMES else _NO_KIND) << 3)
    )


def _refused(error: Any, accepted: Any) -> bool:
    """``tracer.records.is_refusal`` for any stored value: False for an error that has no
    type to test (the inspector's ``outcome_of`` cannot judge it either)."""
    try:
        return is_refusal(error, accepted)
    except (TypeError, IndexError, KeyError, ValueError):
        return False


def _refused_seqs(seqs: Iterable[int], accs: list[Any], errs: list[Any]) -> list[int]:
    """The seqs whose ``(error, accepted)`` is a refusal (``_refused``)."""
    return [s for s, a, e in zip(seqs, accs, errs, strict=True) if e is not None and _refused(e, a)]


def _from_raw(data: bytes) -> array[int]:
    a = array("q")
    a.frombytes(data)
    if sys.byteorder != "little":  # pragma: no cover
        a.byteswap()
    return a


class MachineIndex:
    """Per-state change seqs and the record times of one machine's retained history.

    ``enters[s]`` / ``exits[s]`` hold, ascending, the seqs of the records that entered /
    exited state ``s``; ``times[k]`` is the time of seq ``first + k``; ``refusals`` the
    seqs of the records whose error is a library's refusal. About 13 bytes per record
    plus 8 per state change and per refusal.
    """

    __slots__ = (
        "base",
        "clocks",
        "enters",
        "exits",
        "first",
        "flags",
        "monotonic",
        "name_ids",
        "name_of",
        "refusals",
        "saved_end",
        "times",
    )

    def __init__(self, size: int, first: int, base: Sequence[int]) -> None:
        self.first = first
        self.base: tuple[int, ...] = tuple(base)
        self.clocks = MachineTime(size, base)
        self.times: array[int] = array("q")
        self.enters: list[array[int]] = [array("q") for _ in range(size)]
        self.exits: list[array[int]] = [array("q") for _ in range(size)]
        self.monotonic = True
        self.saved_end = -1  # ``end`` when last saved by the backend (-1: never)
        # Per record, so find/count filter by name, kind, outcome without decoding records:
        # the record's name as an id into ``name_ids`` and a flags byte (see _flags).
        self.name_of: array[int] = array("I")
        self.flags: array[int] = array("B")
        self.name_ids: dict[str, int] = {}
        # The ascending seqs of the records whose error is a library's refusal (not
        # accepted, error type in ``tracer.records.REFUSALS``): rare, so 8 bytes each
        # instead of a second byte for every record; with the flags' error bit they tell
        # a refusal from an error without reading the record.
        self.refusals: array[int] = array("q")

    # 3: ``refusals`` added. An index saved in an older format lacks them and is rebuilt.
    _FORMAT = 3

    def to_bytes(self) -> bytes:
        """The index as msgpack (arrays as raw little-endian int64), for backends that
        persist it so a reopen need not decode every record (~40 ms per million records
        to load, against ~10 s to rebuild)."""
        data: bytes = msgpack.packb(
            [
                self._FORMAT,
                self.first,
                list(self.base),
                list(self.clocks.clocks),
                self.monotonic,
                _raw(self.times),
                [_raw(a) for a in self.enters],
                [_raw(a) for a in self.exits],
                list(self.name_ids),
                _raw_any(self.name_of),
                self.flags.tobytes(),
                _raw(self.refusals),
            ],
            use_bin_type=True,
        )
        return data

    @classmethod
    def from_bytes(cls, data: bytes, size: int) -> MachineIndex | None:
        """An index saved by ``to_bytes``; None when it is unreadable or of another size
        (the caller then rebuilds it)."""
        try:
            fields = msgpack.unpackb(data)
            if fields[0] != cls._FORMAT or len(fields) != 12:
                return None  # another format (an older one has no refusals): rebuilt
            (
                _,
                first,
                base,
                clocks,
                monotonic,
                times,
                enters,
                exits,
                names,
                name_of,
                flags,
                refusals,
            ) = fields
            if len(base) != size or len(enters) != size:
                return None
            index = cls(size, first, base)
            index.clocks = MachineTime(size, clocks)
            index.monotonic = bool(monotonic)
            index.times = _from_raw(times)
            index.enters = [_from_raw(a) for a in enters]
            index.exits = [_from_raw(a) for a in exits]
            index.name_ids = {n: i for i, n in enumerate(names)}
            index.name_of = _from_raw_any("I", name_of)
            index.flags = array("B", flags)
            index.refusals = _from_raw(refusals)
            n = len(index.times)
            if len(exits) != size or len(index.name_of) != n or len(index.flags) != n:
                return None
            if index.refusals and not (
                first <= index.refusals[0] <= index.refusals[-1] < first + n
            ):
                return None
        except (ValueError, TypeError):
            return None
        index.saved_end = index.end
        return index

    @classmethod
    def build(cls, backend: BaseBackend, machine_id: str) -> MachineIndex:
        """Index a machine's retained records (reads them all once, in chunks)."""
        schema = backend._machine(machine_id).record.schema
        first = backend._first(machine_id)
        end = backend._highest(machine_id) + 1
        try:
            base = backend._time_before(machine_id, first).clocks
        except BackendError:
            base = [0] * len(schema)  # deleted without a snapshot: the base is unknown
        index = cls(len(schema), first, base)
        pos = first
        while pos < end:
            upto = min(end, pos + 65536)
            index.extend(backend._checked_read(machine_id, pos, upto), schema)
            pos = upto
        return index

    @property
    def end(self) -> int:
        """One past the last indexed seq."""
        return self.first + len(self.times)

    def extend(
        self,
        records: Sequence[TransitionRecord],
        schema: Schema,
        changes: Sequence[tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        """Add records that continue the indexed history (seq ``end`` onwards).

        ``changes`` are the records' ``(exited, entered)`` when the caller computed them
        already (the base does while advancing its own clocks).
        """
        clocks = self.clocks
        if len(clocks.clocks) < len(schema):  # the schema grew: new states start inactive
            grow = len(schema) - len(clocks.clocks)
            clocks.clocks.extend([0] * grow)
            self.base = self.base + (0,) * grow
            self.enters.extend(array("q") for _ in range(grow))
            self.exits.extend(array("q") for _ in range(grow))
        times = self.times
        enters, exits = self.enters, self.exits
        last = times[-1] if times else None
        c = clocks.clocks
        reset = RESET_KINDS
        name_ids, name_of, flags = self.name_ids, self.name_of, self.flags
        refusals = self.refusals
        codes = KIND_CODES
        for k, rec in enumerate(records):
            nid = name_ids.get(rec.name)
            if nid is None:
                nid = name_ids[rec.name] = len(name_ids)
            name_of.append(nid)
            acc = rec.accepted
            err = rec.error
            flags.append(  # _flags(acc, err, code), inlined: once per appended record
                (_ACC_TRUE if acc is True else _ACC_FALSE if acc is False else _acc_bits(acc))
                | (0 if err is None else _HAS_ERROR)
                | (codes.get(rec.kind, _NO_KIND) << 3)
            )
            if err is not None and _refused(err, acc):
                refusals.append(rec.seq)
            if changes is not None:
                exited, entered = changes[k]
            elif rec.kind in reset:
                exited, entered = clocks.changes(rec)
            else:
                exited, entered = rec.exited, rec.entered
            seq = rec.seq
            for i in exited:
                exits[i].append(seq)
                c[i] += 1
            for i in entered:
                enters[i].append(seq)
                c[i] += 1
            t = rec.time
            if last is not None and t < last:
                self.monotonic = False
            times.append(t)
            last = t

    def extend_rows(self, machine_id: str, rows: Sequence[Sequence[Any]], schema: Schema) -> None:
        """``extend`` for records in their positional wire form (``codec``'s 13 fields:
        seq, mach_tick, time, duration, kind code, name, args, accepted, error, exited,
        entered, parent_seq, source), as ``BaseBackend.append_rows`` receives them.

        Like ``extend``, the rows must continue the indexed history with contiguous seqs.
        Rows are indexed column by column, mostly in C loops (~0.8 us a record instead of
        ~1.4 us), except init, restore and gap records, which go row by row since they
        depend on the clocks before them (a tracer's first batch starts with its init).
        """
        if not rows:
            return
        clocks = self.clocks
        if len(clocks.clocks) < len(schema):
            grow = len(schema) - len(clocks.clocks)
            clocks.clocks.extend([0] * grow)
            self.base = self.base + (0,) * grow
            self.enters.extend(array("q") for _ in range(grow))
            self.exits.extend(array("q") for _ in range(grow))
        kinds = [r[4] for r in rows]
        times = [r[2] for r in rows]
        packed_times = _pack_times(times)  # a time out of range raises before any change
        if _RESET_CODES.isdisjoint(kinds):
            self._extend_rows_columns(rows, kinds, times, packed_times)
            return
        start = 0
        for i, kind in enumerate(kinds):
            if kind in _RESET_CODES:
                if start < i:
                    self._extend_rows_columns(
                        rows[start:i],
                        kinds[start:i],
                        times[start:i],
                        packed_times[8 * start : 8 * i],
                    )
                self._extend_rows_each(machine_id, rows[i : i + 1])
                start = i + 1
        if start < len(rows):
            self._extend_rows_columns(
                rows[start:], kinds[start:], times[start:], packed_times[8 * start :]
            )

    def _extend_rows_columns(
        self, rows: Sequence[Sequence[Any]], kinds: list[int], times: list[int], packed_times: bytes
    ) -> None:
        """``extend_rows`` for rows without reset kinds: column by column."""
        clocks = self.clocks
        kind_set = set(kinds)
        n = len(rows)
        # Names: ids in order of first appearance (new names are rare after the first batch).
        names = [r[5] for r in rows]
        name_set = set(names)
        name_ids = self.name_ids
        if not name_ids.keys() >= name_set:
            for name in names:
                if name not in name_ids:
                    name_ids[name] = len(name_ids)
        if len(name_set) == 1:
            self.name_of.frombytes(array("I", [name_ids[names[0]]]).tobytes() * n)
        else:
            self.name_of.frombytes(array("I", [name_ids[x] for x in names]).tobytes())
        # Flags: the common batch (all accepted, no error) is one flags byte per kind.
        accs = [r[7] for r in rows]
        errs = [r[8] for r in rows]
        kind_bits = {k: (k if k in _KIND_NAMES else _NO_KIND) << 3 for k in kind_set}
        no_errors = errs.count(None) == n
        if accs.count(True) == n and no_errors:
            # ``x == True`` for all x: each gets _ACC_TRUE, as _acc_bits would give.
            if len(kind_bits) == 1:
                self.flags.frombytes(bytes((kind_bits[kinds[0]] | _ACC_TRUE,)) * n)
            else:
                self.flags.frombytes(bytes([kind_bits[k] | _ACC_TRUE for k in kinds]))
        else:
            self.flags.frombytes(bytes(map(_flags, accs, errs, kinds)))
        seqs = range(rows[0][0], rows[0][0] + n)
        if not no_errors:  # refusals: only batches holding an error pay for the test
            self.refusals.extend(_refused_seqs(seqs, accs, errs))
        # State changes: per state the ascending seqs; each clock advances by the number
        # of seqs its two arrays gained.
        exits, enters = self.exits, self.enters
        before = [len(a) + len(b) for a, b in zip(exits, enters, strict=True)]
        exs = [r[9] for r in rows]
        ens = [r[10] for r in rows]
        x_add = [a.append for a in exits]
        e_add = [a.append for a in enters]
        try:  # one state out and one in: a flat machine's usual record
            flat_x = [i for (i,) in exs]
            flat_e = [i for (i,) in ens]
        except ValueError:
            for seq, exited, entered in zip(seqs, exs, ens, strict=True):
                for i in exited:
                    x_add[i](seq)
                for i in entered:
                    e_add[i](seq)
        else:
            for seq, x, e in zip(seqs, flat_x, flat_e, strict=True):
                x_add[x](seq)
                e_add[e](seq)
        c = clocks.clocks
        for i, (a, b) in enumerate(zip(exits, enters, strict=True)):
            c[i] += len(a) + len(b) - before[i]
        if self.monotonic:
            last = self.times[-1] if self.times else None
            if (last is not None and times[0] < last) or times != sorted(times):
                self.monotonic = False
        self.times.frombytes(packed_times)

    def _extend_rows_each(self, machine_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """``extend_rows`` one row at a time (a batch holding reset kinds)."""
        clocks = self.clocks
        times = self.times
        enters, exits = self.enters, self.exits
        last = times[-1] if times else None
        c = clocks.clocks
        reset = _RESET_CODES
        name_ids, name_of, flags = self.name_ids, self.name_of, self.flags
        for row in rows:
            seq = row[0]
            kind = row[4]
            nid = name_ids.get(row[5])
            if nid is None:
                nid = name_ids[row[5]] = len(name_ids)
            name_of.append(nid)
            acc = row[7]
            err = row[8]
            flags.append(_flags(acc, err, kind))
            if err is not None and _refused(err, acc):
                self.refusals.append(seq)
            if kind in reset:
                exited, entered = clocks.changes(
                    TransitionRecord(machine_id, seq, _KIND_NAMES[kind], entered=tuple(row[10]))
                )
            else:
                exited = row[9]
                entered = row[10]
            for i in exited:
                exits[i].append(seq)
                c[i] += 1
            for i in entered:
                enters[i].append(seq)
                c[i] += 1
            t = row[2]
            if last is not None and t < last:
                self.monotonic = False
            times.append(t)
            last = t

    # -- columns ----------------------------------------------------------------------
    def columns(self, start: int, end: int) -> IndexColumns:
        """Copies of the per-record columns of seqs ``[start, end)``, clipped to the
        indexed ``[first, end)`` (see :class:`backends.base.IndexColumns`).

        Only C loops: three ``bytes.translate`` of the flags, array slices, and two
        bisections per state and for the refusals; about 30 ms for a million records of
        five states.
        """
        a = min(max(start, self.first), self.end)
        b = max(a, min(end, self.end))
        i, j = a - self.first, b - self.first
        flags = self.flags[i:j].tobytes()

        def part(arr: array[int]) -> array[int]:
            return arr[bisect_left(arr, a) : bisect_left(arr, b)]

        return IndexColumns(
            start=a,
            end=b,
            kinds=_KINDS_BY_CODE,
            kind=flags.translate(_KIND_OF_FLAGS),
            accepted=flags.translate(_ACC_OF_FLAGS),
            error=flags.translate(_ERROR_OF_FLAGS),
            names=tuple(self.name_ids),  # ids are given in insertion order
            name=self.name_of[i:j],
            entered=tuple(part(arr) for arr in self.enters),
            exited=tuple(part(arr) for arr in self.exits),
            refused=part(self.refusals),
        )

    # -- per record -----------------------------------------------------------------
    def time_of(self, seq: int) -> int:
        return self.times[seq - self.first]

    def entered(self, state: int, seq: int) -> bool:
        arr = self.enters[state]
        i = bisect_left(arr, seq)
        return i < len(arr) and arr[i] == seq

    def exited(self, state: int, seq: int) -> bool:
        arr = self.exits[state]
        i = bisect_left(arr, seq)
        return i < len(arr) and arr[i] == seq

    def clock_before(self, state: int, seq: int) -> int:
        """The state's clock after records ``[first, seq)``."""
        return (
            self.base[state]
            + bisect_left(self.enters[state], seq)
            + bisect_left(self.exits[state], seq)
        )

    def clocks_before(self, seq: int) -> list[int]:
        """Every state's clock after records ``[first, seq)`` (``first <= seq <= end``)."""
        return [self.clock_before(i, seq) for i in range(len(self.base))]

    def active_after(self, state: int, seq: int) -> bool:
        """Whether the state is active after record ``seq``."""
        return self.clock_before(state, seq + 1) & 1 == 1

    # -- windows --------------------------------------------------------------------
    def seq_range(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Seqs ``[a, b)`` of records with ``start <= time < end`` (monotonic times)."""
        times = self.times
        a = 0 if start is None else bisect_left(times, start)
        b = len(times) if end is None else bisect_left(times, end)
        return self.first + a, self.first + max(a, b)

    @staticmethod
    def _any_in(arr: array[int], a: int, b: int) -> bool:
        i = bisect_left(arr, a)
        return i < len(arr) and arr[i] < b

    def changed_between(self, state: int, start: int, end: int, entering: bool) -> bool:
        """A record with time in ``[start, end)`` entered (or exited) the state."""
        if start >= end:
            return False
        arr = self.enters[state] if entering else self.exits[state]
        if self.monotonic:
            a, b = self.seq_range(start, end)
            return self._any_in(arr, a, b)
        times, first = self.times, self.first
        return any(start <= times[s - first] < end for s in arr)

    def held_between(self, state: int, start: int, end: int, active: bool) -> bool:
        """The state was active (or inactive) during some part of ``[start, end)``."""
        if start >= end:
            return False
        if self.changed_between(state, start, end, entering=active):
            return True
        if self.monotonic:
            # The configuration at the instant ``start``: after every record at or before it.
            k = self.first + bisect_right(self.times, start)
            return (self.clock_before(state, k) & 1 == 1) == active
        return self._held_scan(state, start, end, active)

    def _held_scan(self, state: int, start: int, end: int, active: bool) -> bool:
        # Record i's configuration spans [t_i, t_{i+1}); the base spans (-inf, t_first).
        enters = set(self.enters[state])
        exits = set(self.exits[state])
        clock = self.base[state]
        prev: int | None = None  # None = -infinity
        seq = self.first
        for t in self.times:
            lo = start if prev is None else max(prev, start)
            if lo < min(t, end) and (clock & 1 == 1) == active:
                return True
            clock += (seq in exits) + (seq in enters)
            prev = t
            seq += 1
        lo = start if prev is None else max(prev, start)
        return lo < end and (clock & 1 == 1) == active


# ---------------------------------------------------------------------- predicates
def _state(backend: BaseBackend, machine_id: str, state: str) -> int:
    schema = backend._machine(machine_id).record.schema
    i = schema.get_index(state)
    if i is None:
        raise BackendError(f"unknown state {state!r} in machine {machine_id!r}")
    return i


def _times(start: int, end: int) -> None:
    if type(start) is not int or type(end) is not int:
        raise BackendError(f"times must be integers (UTC ns), got {start!r} and {end!r}")


def activated_between(
    backend: BaseBackend, machine_id: str, state: str, start: int, end: int
) -> bool:
    """Whether a record with time in ``[start, end)`` entered ``state``.

    Raises:
        UnknownMachine: the machine was never put.
        BackendError: an unknown state name or non-integer times.
    """
    _times(start, end)
    s = _state(backend, machine_id, state)
    return backend._index_for(machine_id).changed_between(s, start, end, entering=True)


def deactivated_between(
    backend: BaseBackend, machine_id: str, state: str, start: int, end: int
) -> bool:
    """Whether a record with time in ``[start, end)`` exited ``state`` (raises as
    ``activated_between``)."""
    _times(start, end)
    s = _state(backend, machine_id, state)
    return backend._index_for(machine_id).changed_between(s, start, end, entering=False)


def active_between(backend: BaseBackend, machine_id: str, state: str, start: int, end: int) -> bool:
    """Whether ``state`` was active at some time in ``[start, end)``, including when it
    was already active at ``start`` (raises as ``activated_between``)."""
    _times(start, end)
    s = _state(backend, machine_id, state)
    return backend._index_for(machine_id).held_between(s, start, end, active=True)


def inactive_between(
    backend: BaseBackend, machine_id: str, state: str, start: int, end: int
) -> bool:
    """Whether ``state`` was inactive at some time in ``[start, end)`` (raises as
    ``activated_between``)."""
    _times(start, end)
    s = _state(backend, machine_id, state)
    return backend._index_for(machine_id).held_between(s, start, end, active=False)


# ---------------------------------------------------------------------- find / count
def matches(
    record: TransitionRecord,
    query: Query,
    before: MachineTime,
    schema: Schema,
) -> bool:
    """The reference semantics of one record against a Query, given the clocks before it.

    This is the definition ``find`` implements faster; tests use it as the oracle.
    Unknown state names never match.
    """
    q = query
    if q.machine_id is not None and record.machine_id != q.machine_id:
        return False
    if q.seq_start is not None and record.seq < q.seq_start:
        return False
    if q.seq_end is not None and record.seq >= q.seq_end:
        return False
    if q.time_start is not None and record.time < q.time_start:
        return False
    if q.time_end is not None and record.time >= q.time_end:
        return False
    if not _record_level(record, q):
        return False
    exited, entered = before.changes(record)
    after = before.copy()
    after.apply(record, strict=False)
    for names, pred in (
        (q.entered, lambda i: i in entered),
        (q.exited, lambda i: i in exited),
        (q.active, after.is_active),
        (q.inactive, lambda i: not after.is_active(i)),
    ):
        for name in names:
            i = schema.get_index(name)
            if i is None or not pred(i):
                return False
    return True


def _record_level(record: TransitionRecord, q: Query) -> bool:
    if q.name is not None and record.name != q.name:
        return False
    if q.kinds is not None and record.kind not in q.kinds:
        return False
    if q.accepted is not None and record.accepted != q.accepted:
        return False
    return q.has_error is None or (record.error is not None) == q.has_error


_Counter = Callable[[int, int], int]


def _index_filter(
    index: MachineIndex, q: Query
) -> tuple[bool, Callable[[int], bool] | None, _Counter | None]:
    """The record-level filters (name, kinds, accepted, has_error) answered from the index's
    per-record name ids and flags: (exact, test of a position ``seq - first``); the test
    is None when there are no such filters. Not exact (a filter value of an unexpected
    type) means the test only narrows and the records must still be checked. The third
    item, when set, counts the matching positions in ``[a, b)`` in C (one filter kind)."""
    if not _needs_record(q):
        return True, None, None
    exact = True
    nid = -1
    if q.name is not None:
        found = index.name_ids.get(q.name) if isinstance(q.name, str) else None
        nid = -2 if found is None else found  # -2: no record has the name
        exact = isinstance(q.name, str)
    mask = want = 0
    if q.accepted is not None:
        if q.accepted is True or q.accepted is False:
            bit = _ACC_TRUE if q.accepted else _ACC_FALSE
            mask |= bit
            want |= bit
        else:
            exact = False
    if q.has_error is not None:
        mask |= _HAS_ERROR
        want |= _HAS_ERROR if q.has_error else 0
        exact = exact and isinstance(q.has_error, bool)
    codes: frozenset[int] | None = None
    if q.kinds is not None:
        try:
            codes = frozenset(KIND_CODES[k] for k in q.kinds if k in KIND_CODES)
        except TypeError:  # unhashable kinds: leave it to the records
            exact = False
    name_of, flags = index.name_of, index.flags
    if nid == -2 and exact:
        return True, lambda k: False, lambda a, b: 0

    def test(k: int) -> bool:
        if nid >= 0 and name_of[k] != nid:
            return False
        f = flags[k]
        if f & mask != want:
            return False
        return codes is None or f >> 3 in codes

    counter: _Counter | None = None
    if exact and nid >= 0 and not mask and codes is None:

        def counter(a: int, b: int) -> int:
            return name_of[a:b].count(nid)

    elif exact and nid == -1:
        table = bytes(
            1 if f & mask == want and (codes is None or f >> 3 in codes) else 0 for f in range(256)
        )

        def counter(a: int, b: int) -> int:
            return flags[a:b].tobytes().translate(table).count(1)

    return exact, test, counter


def _needs_record(q: Query) -> bool:
    return (
        q.name is not None
        or q.kinds is not None
        or q.accepted is not None
        or (q.has_error is not None)
    )


def _check_query(q: Query) -> None:
    if not isinstance(q, Query):
        raise BackendError(f"expected a Query, got {type(q).__name__}")
    for what in ("seq_start", "seq_end", "time_start", "time_end", "limit"):
        value = getattr(q, what)
        if value is not None and type(value) is not int:
            raise BackendError(f"query {what} must be an integer, got {value!r}")
    if q.limit is not None and q.limit < 0:
        raise BackendError(f"query limit must be >= 0, got {q.limit}")


def _candidates(
    backend: BaseBackend, machine_id: str, q: Query, strict_names: bool
) -> tuple[MachineIndex, Iterator[int], int | None] | None:
    """Seqs of a machine passing every filter answerable from the index, in the query's
    order, and their number when known without iterating; None when the machine cannot
    match at all."""
    schema = backend._machine(machine_id).record.schema
    groups: list[list[int]] = []
    for names in (q.entered, q.exited, q.active, q.inactive):
        idx: list[int] = []
        for name in sorted(names):
            i = schema.get_index(name)
            if i is None:
                if strict_names:
                    raise BackendError(f"unknown state {name!r} in machine {machine_id!r}")
                return None
            idx.append(i)
        groups.append(idx)
    entered, exited, active, inactive = groups
    index = backend._index_for(machine_id)
    lo, hi = index.first, index.end
    if q.seq_start is not None:
        lo = max(lo, q.seq_start)
    if q.seq_end is not None:
        hi = min(hi, q.seq_end)
    time_filter = q.time_start is not None or q.time_end is not None
    if time_filter and index.monotonic:
        a, b = index.seq_range(q.time_start, q.time_end)
        lo, hi = max(lo, a), min(hi, b)
        time_filter = False
    if lo >= hi:
        return index, iter(()), 0
    # The sparsest change list among entered/exited filters drives the scan.
    source: Sequence[int] = range(lo, hi)
    driver: tuple[int, bool] | None = None
    for group, entering in ((entered, True), (exited, False)):
        for i in group:
            arr = index.enters[i] if entering else index.exits[i]
            a, b = bisect_left(arr, lo), bisect_left(arr, hi)
            if b - a < len(source):
                source = arr[a:b]
                driver = (i, entering)
    seqs: Iterable[int] = reversed(source) if q.newest_first else source
    first, times = index.first, index.times
    t0, t1 = q.time_start, q.time_end
    _, record_test, counter = _index_filter(index, q)
    if not (
        time_filter
        or active
        or inactive
        or record_test is not None
        or len(entered) + len(exited) > (driver is not None)
    ):
        return index, iter(seqs), len(source)  # the source alone answers count()
    known: int | None = None
    if counter is not None and not (time_filter or active or inactive or entered or exited):
        known = counter(lo - first, hi - first)  # the index's arrays answer count()

    def gen() -> Iterator[int]:
        for seq in seqs:
            if record_test is not None and not record_test(seq - first):
                continue
            if time_filter:
                t = times[seq - first]
                if (t0 is not None and t < t0) or (t1 is not None and t >= t1):
                    continue
            if not all(index.entered(i, seq) for i in entered if (i, True) != driver):
                continue
            if not all(index.exited(i, seq) for i in exited if (i, False) != driver):
                continue
            if active or inactive:
                if not all(index.active_after(i, seq) for i in active):
                    continue
                if any(index.active_after(i, seq) for i in inactive):
                    continue
            yield seq

    return index, gen(), known


def _runs(seqs: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Ascending seqs grouped into contiguous ``[start, end)`` runs."""
    if not seqs:
        return
    start = prev = seqs[0]
    for s in seqs[1:]:
        if s != prev + 1:
            yield start, prev + 1
            start = s
        prev = s
    yield start, prev + 1


def _machine_find(
    backend: BaseBackend, machine_id: str, q: Query, limit: int | None, strict: bool
) -> list[TransitionRecord]:
    found = _candidates(backend, machine_id, q, strict)
    if found is None:
        return []
    _, seqs, _ = found
    out: list[TransitionRecord] = []
    record_filter = _needs_record(q)
    size = 16  # grows: a small limit reads little, a long scan reads in big chunks
    while limit is None or len(out) < limit:
        chunk: list[int] = []
        want = size if limit is None else min(size, max(16, 2 * (limit - len(out))))
        for seq in seqs:
            chunk.append(seq)
            if len(chunk) >= want:
                break
        size = min(_CHUNK, size * 4)
        if not chunk:
            break
        ordered = sorted(chunk) if q.newest_first else chunk
        by_seq: dict[int, TransitionRecord] = {}
        for a, b in _runs(ordered):
            for rec in backend._checked_read(machine_id, a, b):
                by_seq[rec.seq] = rec
        for seq in chunk:
            rec = by_seq[seq]
            if record_filter and not _record_level(rec, q):
                continue
            out.append(rec)
            if limit is not None and len(out) >= limit:
                break
    return out


def _machine_ids(backend: BaseBackend, q: Query) -> list[str]:
    if q.machine_id is not None:
        backend._machine(q.machine_id)  # UnknownMachine for a machine never put
        return [q.machine_id]
    return sorted(m.id for m in backend._machines())


def find(backend: BaseBackend, query: Query) -> list[TransitionRecord]:
    """Records matching every filter of ``query`` (see :class:`backends.base.Query`).

    One machine: seq order (newest-first reverses it). Several machines: ordered by
    ``(time, machine_id, seq)``, newest-first reverses it. ``limit`` applies last.

    Raises:
        UnknownMachine: ``query.machine_id`` names a machine never put.
        BackendError: a malformed query, or an unknown state name when the query names
            one machine (across all machines, a machine without the state just does
            not match).
    """
    _check_query(query)
    if query.limit == 0:
        return []
    ids = _machine_ids(backend, query)
    strict = query.machine_id is not None
    if len(ids) == 1 and strict:
        return _machine_find(backend, ids[0], query, query.limit, strict)
    merged: list[TransitionRecord] = []
    for mid in ids:
        # Each machine's first ``limit`` in seq order are its first ``limit`` in time order
        # only when its times never go backwards; otherwise take all its matches.
        ordered = backend._index_for(mid).monotonic
        merged.extend(_machine_find(backend, mid, query, query.limit if ordered else None, strict))
    merged.sort(key=lambda r: (r.time, r.machine_id, r.seq), reverse=query.newest_first)
    return merged if query.limit is None else merged[: query.limit]


def count(backend: BaseBackend, query: Query) -> int:
    """``len(find(query))``, without reading records when the index answers alone.

    Raises:
        As ``find``.
    """
    _check_query(query)
    if query.limit == 0:
        return 0
    total = 0
    strict = query.machine_id is not None
    for mid in _machine_ids(backend, query):
        if _needs_record(query) and not _index_filter(backend._index_for(mid), query)[0]:
            total += len(_machine_find(backend, mid, query, None, strict))
            continue
        found = _candidates(backend, mid, query, strict)
        if found is None:
            continue
        _, seqs, known = found
        total += known if known is not None else sum(1 for _ in seqs)
    return total if query.limit is None else min(total, query.limit)


def to_time_record(backend: BaseBackend, record: TransitionRecord) -> TimeRecord:
    """The TimeRecord of a record of a stored machine, continuing its stored history
    (the clocks before it are ``state_at(seq - 1)``), with the backend's tracked states.

    Raises:
        UnknownMachine: the record's machine was never put.
        BackendError: the record's seq is beyond ``highest + 1`` or was deleted.
    """
    backend._check_open()
    m = backend._machine(record.machine_id)
    highest = backend.highest(record.machine_id)
    if not 0 <= record.seq <= highest + 1:
        raise BackendError(
            f"{record.machine_id}: no history before seq {record.seq} (highest is {highest})"
        )
    schema = m.record.schema
    index = backend._indexes.get(record.machine_id)
    if index is not None and index.first <= record.seq <= index.end:
        before = MachineTime(len(schema), index.clocks_before(record.seq))
    else:
        before = backend._time_before(record.machine_id, record.seq)
    tracked = [n for n in backend.tracked_states if schema.get_index(n) is not None]
    before.tracked = tuple(schema.index(n) for n in tracked)
    return next(time_records(schema, [record], tracked_states=tracked, start=before))
