"""The ``aminspect`` command line (typer). Headless commands never import the TUI."""

from __future__ import annotations

import typer

from aminspect import __version__

app = typer.Typer(
    name="aminspect",
    help="A terminal debugger and inspector for state machines.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from tracer import _accel

        typer.echo(f"aminspect {__version__}")
        # What tracing costs depends on it (README: How the tracer stays out of the way).
        if _accel.speedups is not None:
            typer.echo("tracer hot path: C (tracer/_speedups.c)")
        else:
            typer.echo(
                "tracer hot path: pure Python (the C extension was not built at install, "
                "or AMINSPECT_PURE_PYTHON is set)"
            )
        raise typer.Exit()


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the Exit to raise (never a traceback)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        help="Show the version and exit.",
        callback=_version,
        is_eager=True,
    ),
    listen: str = typer.Option(
        "127.0.0.1:6830",
        "--listen",
        "-l",
        metavar="HOST:PORT",
        help="Where the TUI's ingest server listens for tracers.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="AMINSPECT_TOKEN",
        help="Shared secret tracers must send (required off loopback).",
    ),
    backend: str = typer.Option(
        "memory://",
        "--backend",
        "-b",
        metavar="URL",
        help="Where received records are stored: memory://, sqlite:///x.db, x.amj, ...",
    ),
) -> None:
    """Inspect state machines traced with ``tracer.attach()``.

    With no command, start the inspector TUI with an ingest server on HOST:PORT.
    """
    if ctx.invoked_subcommand is not None:
        return
    import backends
    from aminspect.server import InsecureBind, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    try:
        store = backends.open(backend)
    except backends.UnknownScheme as exc:
        raise _fail(str(exc), 2) from None
    except backends.BackendError as exc:
        raise _fail(str(exc)) from None
    try:
        from aminspect.tui.launch import run_live

        run_live(store, host, port, token)
    except InsecureBind as exc:
        raise _fail(str(exc), 2) from None
    finally:
        store.close()


@app.command("open")
def open_source(
    source: str = typer.Argument(..., help="A backend URL or a .amj journal file."),
) -> None:
    """Open a recording read-only in the inspector TUI."""
    import backends

    try:
        store = backends.open(source, read_only=True)
    except backends.UnknownScheme as exc:
        raise _fail(str(exc), 2) from None
    except backends.BackendError as exc:
        raise _fail(str(exc)) from None
    try:
        from aminspect.tui.launch import run_open

        run_open(store, source)
    finally:
        store.close()


@app.command()
def demo(
    listen: str = typer.Option(
        "127.0.0.1:0",
        "--listen",
        "-l",
        metavar="HOST:PORT",
        help="Where the TUI listens (port 0 picks a free one).",
    ),
    seed: int = typer.Option(7, help="Seed of the demo's random business."),
    pace: float = typer.Option(0.4, help="Seconds per tick of the demo shop."),
) -> None:
    """Start the inspector with a bundled demo shop streaming into it.

    The shop runs in a child process traced over WebSocket, like a real app:
    orders (transitions: parallel payment and shipping regions), job agents
    (python-statemachine) and the shop itself (manual API), with refused
    events and the odd failure. Tab and the arrows pick a machine, left and
    right step through time, ? lists every key, q quits (and stops the shop).
    """
    import backends
    from aminspect.demo.launch import DemoProcess
    from aminspect.server import InsecureBind, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    missing = DemoProcess.missing_dependency()
    if missing:
        raise _fail(f"the demo needs {missing!r}: pip install 'aminspect[demo]'")
    store = backends.open("memory://")
    try:
        from aminspect.tui.launch import run_demo

        child = run_demo(store, host, port, seed=seed, pace=pace)
    except InsecureBind as exc:
        raise _fail(str(exc), 2) from None
    finally:
        store.close()
    if child.failed:
        # the TUI owned the terminal while it ran: show why the shop stopped now
        typer.echo(child.output.rstrip(), err=True)
        raise _fail(f"the demo shop exited with code {child.returncode}")


@app.command()
def schemes() -> None:
    """List the history backends this installation can open, by URL scheme."""
    from backends import known_schemes

    for scheme in known_schemes():
        typer.echo(f"{scheme}://")


from aminspect.commands import register as _register_commands  # noqa: E402 - after app exists

_register_commands(app)


def main() -> None:
    app()
