# Types of the optional C hot path (tracer/_speedups.c); see tracer/_accel.py.
from typing import Any

LINKS: int

class Event:
    """One trigger of a flat synchronous transitions machine (as ``_PyEvent``)."""

    channel: Any
    mt: ModelTrace
    parent: Any
    source: tuple[Any, Any] | None
    before: frozenset[int]
    after: frozenset[int]
    reenter: frozenset[int]
    position: int
    seq: int
    started_ns: int
    @property
    def capture(self) -> Event: ...
    def first_write(self, mt: ModelTrace) -> None: ...

class ModelTrace:
    """One traced (machine, model) pair (as ``_PyModelTrace``)."""

    model: Any
    channel: Any
    current: frozenset[int]
    open: list[Any]
    pending_to: Any
    tick: int
    def __init__(self, model: Any, channel: Any, current: frozenset[int]) -> None: ...

class ThreadStacks:
    """Open events of synchronous code, per thread (as ``tracer.core._Stacks``)."""

    @property
    def stack(self) -> list[Any]: ...

class ProcessHook:
    """``machine._process`` of a traced flat machine (as ``_Process.call``)."""

    original: Any
    def __init__(self, *links: Any) -> None: ...
    def __call__(self, trigger: Any) -> Any: ...

class SetStateHook:
    """``machine.set_state`` of a traced flat machine (as ``_FastSetState.call``)."""

    original: Any
    def __init__(self, *links: Any) -> None: ...
    def __call__(self, state: Any, model: Any = None) -> Any: ...

def bulk_rows(
    items: list[tuple[Any, ...]], key: int, first_position: int, first_seq: int, offset: int
) -> list[tuple[Any, ...]] | None: ...
