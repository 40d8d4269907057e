"""History storage behind one interface, opened by URL.

``backends.open("memory://")``, ``sqlite:///path.db``, ``lmdb:///path``,
``journal:///path.amj`` (or any path ending ``.amj``).
"""

from backends.base import (
    Backend,
    BackendError,
    ConflictError,
    CorruptError,
    GapError,
    MissingDependency,
    Query,
    ReadOnlyError,
    Snapshot,
    UnknownMachine,
    UnknownScheme,
    Unreachable,
)
from backends.registry import known_schemes, mask_url, open_backend, register_scheme

open = open_backend  # ``backends.open(url)`` is the public spelling

__all__ = [
    "Backend",
    "BackendError",
    "ConflictError",
    "CorruptError",
    "GapError",
    "MissingDependency",
    "Query",
    "ReadOnlyError",
    "Snapshot",
    "UnknownMachine",
    "UnknownScheme",
    "Unreachable",
    "known_schemes",
    "mask_url",
    "open",
    "open_backend",
    "register_scheme",
]
