"""Start the TUI: live (with an ingest server) or on a recorded source (read-only)."""

from __future__ import annotations

from collections.abc import Callable

from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from backends.base import Backend

__all__ = ["run_live", "run_open"]


def run_live(
    backend: Backend,
    host: str,
    port: int,
    token: str | None = None,
    on_listening: Callable[[str], object] | None = None,
) -> InspectorApp:
    """Run the inspector with an ingest server on ``host:port`` storing into ``backend``.

    Args:
        backend: where received records are stored (the caller closes it).
        host: address to listen on.
        port: port to listen on (0 picks a free one).
        token: shared secret tracers must send; required off loopback.
        on_listening: called with the server URL once it listens (``aminspect demo``
            starts its child process there).

    Returns:
        The app, after it exited.

    Raises:
        InsecureBind: ``host`` is not loopback and there is no token.
    """
    from aminspect.server import IngestServer

    server = IngestServer(backend, host, port, token=token)
    app = InspectorApp(Session(backend, live=True), server=server, on_listening=on_listening)
    app.run()
    return app


def run_open(backend: Backend, source: str) -> InspectorApp:
    """Run the inspector on a recorded source, read-only.

    Args:
        backend: the opened source (the caller closes it).
        source: what the header shows (the path or URL as the user gave it).

    Returns:
        The app, after it exited.
    """
    app = InspectorApp(Session(backend), source=source)
    app.run()
    return app
