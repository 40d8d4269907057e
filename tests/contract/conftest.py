"""Contract fixtures: every registered backend scheme, opened on a fresh location per test.

A new backend needs no test code here beyond a URL factory line in ``URL_FACTORIES`` (and
none at all when its URL is ``SCHEME:///<path>``). ``postgresql`` gets an empty PostgreSQL
schema per test in the suite's throwaway server (``tests/pg_server.py``), emptied after it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import backends
from backends import registry
from backends.base import MissingDependency
from tests import pg_server

# scheme -> f(tmp_path) -> URL of an empty store
URL_FACTORIES: dict[str, Callable[[Path], str]] = {
    "memory": lambda p: "memory://",
    "sqlite": lambda p: f"sqlite:///{p / 'history.db'}",
    "lmdb": lambda p: f"lmdb:///{p / 'history.lmdb'}",
    "journal": lambda p: f"journal:///{p / 'history.amj'}",
    # An empty schema in the test server: skips only when no PostgreSQL binary exists.
    "postgresql": lambda p: pg_server.store_url(),
}


def _default_factory(scheme: str) -> Callable[[Path], str]:
    return lambda p: f"{scheme}:///{p / ('history.' + scheme)}"


SCHEMES = backends.known_schemes()


def _module_exists(scheme: str) -> bool:
    target = registry._SCHEMES.get(scheme)  # the registry keeps no public lookup
    if target is None:
        return False
    module = target[0].partition(":")[0]
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


class Store:
    """Opens (and reopens) one backend location; closes everything it opened."""

    def __init__(self, scheme: str, url: str) -> None:
        self.scheme = scheme
        self.url = url
        self.opened: list[Any] = []

    def open(self, **options: Any) -> Any:
        backend = backends.open(self.url, **options)
        self.opened.append(backend)
        return backend

    def close_all(self) -> None:
        for b in self.opened:
            b.close()


@pytest.fixture(params=SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(scheme: str, tmp_path: Path) -> Iterator[Store]:
    url = URL_FACTORIES.get(scheme, _default_factory(scheme))(tmp_path)
    s = Store(scheme, url)
    try:
        s.open().close()
    except MissingDependency as exc:
        if _module_exists(scheme):
            raise  # the module is there but does not import: a real failure, not a skip
        pytest.skip(f"{scheme}:// backend module not written yet: {exc}")
    s.opened.clear()
    yield s
    s.close_all()
    if scheme == "postgresql":
        pg_server.recycle(url)  # emptied for the next test (a new schema costs ~0.1 s)


@pytest.fixture
def backend(store: Store) -> Any:
    return store.open()
