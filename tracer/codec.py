"""msgpack encoding of machine and transition records (layout in ``docs/records.md``).

Records travel as positional msgpack arrays, not maps: field names would triple the size
of a typical record, and the journal targets 40 bytes per transition on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from tracer.records import Kind, MachineRecord, Schema, TransitionRecord

__all__ = [
    "KIND_CODES",
    "DecodeError",
    "decode_machine",
    "decode_transition",
    "encode_machine",
    "encode_transition",
    "machine_from_list",
    "machine_to_list",
    "transition_from_list",
    "transition_to_list",
]

# Kinds travel as small integers. Codes are part of the format: append, never renumber.
KIND_CODES: dict[str, int] = {
    Kind.INIT: 0,
    Kind.EVENT: 1,
    Kind.FORCED: 2,
    Kind.RESTORE: 3,
    Kind.ADD: 4,
    Kind.REMOVE: 5,
    Kind.SET: 6,
    Kind.GAP: 7,
}
_KINDS_BY_CODE: dict[int, str] = {code: str(kind) for kind, code in KIND_CODES.items()}

TRANSITION_FIELDS = 13  # without machine_id


class DecodeError(ValueError):
    """Bytes or a decoded structure that is not a valid record."""


def transition_to_list(rec: TransitionRecord) -> list[Any]:
    """The positional form of a record, without its machine id (batches carry it once)."""
    return [
        rec.seq,
        rec.mach_tick,
        rec.time,
        rec.duration,
        KIND_CODES[rec.kind],
        rec.name,
        rec.args,
        rec.accepted,
        None if rec.error is None else [rec.error[0], rec.error[1]],
        list(rec.exited),
        list(rec.entered),
        rec.parent_seq,
        None if rec.source is None else [rec.source[0], rec.source[1]],
    ]


def _int(value: Any, what: str, *, nullable: bool = False) -> Any:
    if value is None and nullable:
        return None
    if type(value) is not int or value < 0:
        raise DecodeError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _index_list(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise DecodeError(f"{what} must be a list of state indexes, got {type(value).__name__}")
    for i in value:
        if type(i) is not int or i < 0:
            raise DecodeError(f"{what} holds {i!r}, not a state index")
    return tuple(value)


def transition_from_list(machine_id: str, fields: Sequence[Any]) -> TransitionRecord:
    """Rebuild a record from its positional form, checking every field's type.

    Raises:
        DecodeError: naming the first field that is missing or has the wrong type.
    """
    if not isinstance(fields, list | tuple) or len(fields) != TRANSITION_FIELDS:
        raise DecodeError(f"a transition record is an array of {TRANSITION_FIELDS} fields")
    seq, tick, t, duration, kind, name, args, accepted, error, exited, entered, parent, src = fields
    kind_name = _KINDS_BY_CODE.get(kind) if type(kind) is int else None
    if kind_name is None:
        raise DecodeError(f"unknown record kind {kind!r}")
    if not isinstance(name, str):
        raise DecodeError(f"name must be a string, got {type(name).__name__}")
    if type(accepted) is not bool:
        raise DecodeError("accepted must be a boolean")
    if error is not None:
        if not (
            isinstance(error, list | tuple)
            and len(error) == 2
            and all(isinstance(e, str) for e in error)
        ):
            raise DecodeError("error must be nil or [type, message]")
        error = (error[0], error[1])
    if src is not None:
        if not (
            isinstance(src, list | tuple)
            and len(src) == 2
            and isinstance(src[0], str)
            and type(src[1]) is int
        ):
            raise DecodeError("source must be nil or [machine_id, seq]")
        src = (src[0], src[1])
    return TransitionRecord(
        machine_id=machine_id,
        seq=_int(seq, "seq"),
        kind=kind_name,
        name=name,
        mach_tick=_int(tick, "mach_tick"),
        time=_int(t, "time"),
        duration=_int(duration, "duration"),
        args=args,
        accepted=accepted,
        error=error,
        exited=_index_list(exited, "exited"),
        entered=_index_list(entered, "entered"),
        parent_seq=_int(parent, "parent_seq", nullable=True),
        source=src,
    )


def encode_transition(rec: TransitionRecord) -> bytes:
    """One record as msgpack: ``[machine_id, *positional fields]``."""
    data: bytes = msgpack.packb([rec.machine_id, *transition_to_list(rec)], use_bin_type=True)
    return data


def decode_transition(data: bytes) -> TransitionRecord:
    fields = _unpack(data)
    if not isinstance(fields, list) or not fields or not isinstance(fields[0], str):
        raise DecodeError("a transition record starts with its machine id")
    return transition_from_list(fields[0], fields[1:])


def machine_to_list(m: MachineRecord) -> list[Any]:
    schema = m.schema.to_dict()
    return [
        m.id,
        m.kind,
        m.parent_id,
        m.mach_tick,
        m.created,
        m.updated,
        dict(m.tags),
        schema["states"],
        schema["transitions"],
    ]


def machine_from_list(fields: Sequence[Any]) -> MachineRecord:
    if not isinstance(fields, list | tuple) or len(fields) != 9:
        raise DecodeError("a machine record is an array of 9 fields")
    mid, kind, parent, tick, created, updated, tags, states, transitions = fields
    if not isinstance(mid, str) or not mid:
        raise DecodeError("machine id must be a non-empty string")
    if not isinstance(kind, str):
        raise DecodeError("machine kind must be a string")
    if parent is not None and not isinstance(parent, str):
        raise DecodeError("parent_id must be nil or a string")
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise DecodeError("tags must map strings to strings")
    try:
        schema = Schema.from_dict({"states": states, "transitions": transitions})
    except (TypeError, ValueError, KeyError) as exc:
        raise DecodeError(f"invalid schema: {exc}") from None
    return MachineRecord(
        id=mid,
        kind=kind,
        schema=schema,
        parent_id=parent,
        mach_tick=_int(tick, "mach_tick"),
        created=_int(created, "created"),
        updated=_int(updated, "updated"),
        tags=dict(tags),
    )


def encode_machine(m: MachineRecord) -> bytes:
    data: bytes = msgpack.packb(machine_to_list(m), use_bin_type=True)
    return data


def decode_machine(data: bytes) -> MachineRecord:
    return machine_from_list(_unpack(data))


def _unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise DecodeError(f"not valid msgpack: {exc}") from None
