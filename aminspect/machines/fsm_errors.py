"""The validated FSM's errors: one FSMError family, each carrying the transition it refused."""

from __future__ import annotations

__all__ = [
    "DuplicateID",
    "EdgeIntoInitial",
    "FSMBuildError",
    "FSMError",
    "FSMStoreError",
    "IDRuleError",
    "IDTypeMismatch",
    "InvalidStateTransition",
    "InvalidType",
    "MisconfiguredOption",
    "NoInitialState",
    "RowCount",
    "StateAlreadyAdded",
    "TimestampRequired",
    "UndeclaredState",
    "UnknownStatus",
    "UnreachableState",
]


class FSMError(Exception):
    """Base of every FSM error.

    Attributes:
        from_state: the state the caller said the instance is in (None for an insert or a
            build-time error).
        to_state: the destination state (None when it does not apply).
        reason: the message without the from/to suffix.
    """

    def __init__(
        self, reason: str, *, from_state: str | None = None, to_state: str | None = None
    ) -> None:
        self.reason = reason
        self.from_state = from_state
        self.to_state = to_state
        where = []
        if from_state is not None:
            where.append(f"from={from_state!r}")
        if to_state is not None:
            where.append(f"to={to_state!r}")
        super().__init__(f"{reason} ({', '.join(where)})" if where else reason)


# -- runtime errors, in the order an update checks them (FSM-03) --------------------------
class UnknownStatus(FSMError):
    """The ``to`` or ``from`` state was never declared on this machine."""


class InvalidType(FSMError):
    """The payload's type is not the exact type declared for the destination state."""


class InvalidStateTransition(FSMError):
    """The destination is not an allowed next state of ``from`` (or, for an ArcFSM, no
    declared arc matches)."""


class RowCount(FSMError):
    """The compare-and-set changed ``count`` rows instead of 1: the instance is missing or
    no longer in ``from`` (another writer moved it first). Nothing was written.

    Attributes:
        count: the number of rows the update changed.
    """

    def __init__(
        self,
        reason: str,
        count: int,
        *,
        from_state: str | None = None,
        to_state: str | None = None,
    ) -> None:
        self.count = count
        super().__init__(reason, from_state=from_state, to_state=to_state)


class IDTypeMismatch(FSMError):
    """An id of the wrong type: payload types declare different id types (build time), or a
    payload carries an id of another type than the machine's (runtime)."""


class TimestampRequired(FSMError):
    """A payload declares ``created_at``/``updated_at`` but leaves it zero or None."""


class DuplicateID(FSMError):
    """An insert with an explicit id that an instance of this machine already has."""


class FSMStoreError(FSMError):
    """The database failed or refused a statement (one line, naming the file or URL)."""


# -- build-time errors ------------------------------------------------------------------
class FSMBuildError(FSMError):
    """The declared machine is invalid; raised by ``build()`` or the builder methods."""


class StateAlreadyAdded(FSMBuildError):
    """A state (the initial one included) was declared twice (FSM-01)."""


class NoInitialState(FSMBuildError):
    """``build()`` on a machine without an initial state (FSM-07)."""


class EdgeIntoInitial(FSMBuildError):
    """A ``next`` edge leads back into the initial state (FSM-04: refused at build time)."""


class UnreachableState(FSMBuildError):
    """A declared state cannot be reached from the initial state (FSM-07)."""


class UndeclaredState(FSMBuildError):
    """A ``next`` edge names a state that is never declared."""


class MisconfiguredOption(FSMBuildError, InvalidType):
    """Metadata or validation is switched on without a provider (FSM-10: at build time).

    Also an InvalidType, the error shift raises for the same mistake at runtime."""


class IDRuleError(FSMBuildError):
    """A payload type breaks the id rules: an update payload without an ``id`` field, or an
    id annotated with another type than int or str (FSM-12)."""
