"""Start the TUI: live (with an ingest server) or on a recorded source (read-only)."""

from __future__ import annotations

from collections.abc import Callable

from aminspect.demo.launch import DemoProcess
from aminspect.session import Session
from aminspect.tui.app import InspectorApp
from backends.base import Backend

__all__ = ["demo_app", "run_demo", "run_live", "run_open"]


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


def demo_app(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    seed: int = 7,
    pace: float = 0.4,
) -> tuple[InspectorApp, DemoProcess]:
    """Build the inspector of ``aminspect demo``: live, with the demo shop as a child.

    The child starts once the server listens and stops when the app exits (before the
    server closes, so its last records arrive). Tests run the app with ``run_test``.

    Args:
        backend: where received records are stored (the caller closes it).
        host: address to listen on (loopback: the demo has no token).
        port: port to listen on (0 picks a free one).
        seed: the demo shop's random seed.
        pace: seconds per tick of the demo shop.

    Returns:
        The app (not running yet) and the child process handle.
    """
    from aminspect.server import IngestServer

    server = IngestServer(backend, host, port)  # raises InsecureBind before a child exists
    child = DemoProcess(seed=seed, pace=pace)
    app = InspectorApp(
        Session(backend, live=True),
        server=server,
        on_listening=child.start,
        on_exit=child.stop,
    )
    return app, child


def run_demo(
    backend: Backend, host: str, port: int, *, seed: int = 7, pace: float = 0.4
) -> DemoProcess:
    """Run ``aminspect demo`` until the user quits.

    Args:
        backend: where received records are stored (the caller closes it).
        host: address to listen on.
        port: port to listen on (0 picks a free one).
        seed: the demo shop's random seed.
        pace: seconds per tick of the demo shop.

    Returns:
        The child, stopped: ``returncode`` 0 when it stopped cleanly, ``output`` what it
        printed (a traceback when ``failed``).

    Raises:
        InsecureBind: ``host`` is not loopback (the demo runs without a token).
    """
    app, child = demo_app(backend, host, port, seed=seed, pace=pace)
    try:
        app.run()
    finally:
        child.stop()  # the app stopped it already, unless it failed to start
    return child


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
