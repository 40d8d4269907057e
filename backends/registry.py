"""Open a backend by URL: scheme -> lazily imported class."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from backends.base import Backend, BackendError, MissingDependency, UnknownScheme

__all__ = ["ENTRY_POINT_GROUP", "known_schemes", "mask_url", "open_backend", "register_scheme"]

ENTRY_POINT_GROUP = "aminspect.backends"

# scheme -> ("module:Class", pip package that provides its optional dependency or None)
_SCHEMES: dict[str, tuple[str, str | None]] = {
    "memory": ("backends.memory:MemoryBackend", None),
    "sqlite": ("backends.sqlite:SQLiteBackend", None),
    "lmdb": ("backends.lmdb_store:LMDBBackend", "lmdb"),
    "journal": ("backends.journal:JournalBackend", None),
    "postgresql": ("backends.postgres:PostgresBackend", "aminspect[postgres]"),
}


def register_scheme(scheme: str, target: str, package: str | None = None) -> None:
    """Register ``scheme`` -> ``"module:Class"`` (third parties may use entry points)."""
    _SCHEMES[scheme] = (target, package)


def _load_entry_points() -> None:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # broken metadata of an unrelated distribution
        return
    for ep in eps:
        _SCHEMES.setdefault(ep.name, (ep.value, None))


def known_schemes() -> list[str]:
    _load_entry_points()
    return sorted(_SCHEMES)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for every printed message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _scheme_of(url: str) -> str:
    if "://" not in url:
        if url.endswith(".amj"):
            return "journal"
        raise UnknownScheme(
            f"not a backend URL: {mask_url(url)!r} "
            f"(expected SCHEME://..., known schemes: {', '.join(known_schemes())})"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme.endswith("+psycopg"):
        scheme = scheme.split("+", 1)[0]
    return "postgresql" if scheme == "postgres" else scheme


def open_backend(url: str, **options: Any) -> Backend:
    """Open the backend a URL names: ``memory://``, ``sqlite:///path.db``, ``lmdb:///path``,
    ``journal:///path.amj`` or any path ending in ``.amj``, or
    ``postgresql://user:password@host:port/database`` (also ``postgres://``).

    Raises:
        UnknownScheme: naming the known schemes.
        MissingDependency: naming the package to install.
        BackendError: any subclass, with a one-line message.
    """
    scheme = _scheme_of(url)
    if scheme not in _SCHEMES:
        _load_entry_points()
    if scheme not in _SCHEMES:
        raise UnknownScheme(
            f"unknown backend scheme {scheme!r} in {mask_url(url)!r}; "
            f"known schemes: {', '.join(known_schemes())}"
        )
    target, package = _SCHEMES[scheme]
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = package or exc.name or module_name
        raise MissingDependency(
            f"the {scheme}:// backend needs the {missing!r} package: pip install {missing}"
        ) from None
    cls = getattr(module, class_name)
    try:
        backend: Backend = cls.from_url(url, **options)
    except BackendError:
        raise
    except TypeError as exc:
        raise BackendError(f"bad options for {scheme}://: {exc}") from None
    except OSError as exc:
        raise BackendError(f"cannot open {mask_url(url)}: {exc.strerror or exc}") from None
    return backend
