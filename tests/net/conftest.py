"""Fixtures for loopback network tests: an in-process ingest server, subprocess helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import backends
from aminspect.server import IngestServer
from backends.base import Backend

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


@pytest.fixture
def memory() -> Iterator[Backend]:
    b = backends.open("memory://")
    yield b
    b.close()


@pytest.fixture
async def server(memory: Backend) -> AsyncIterator[IngestServer]:
    srv = IngestServer(memory, port=0)
    await srv.start()
    yield srv
    await srv.stop()


def env(url: str, **extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["AMINSPECT_URL"] = url
    out["PYTHONPATH"] = str(ROOT)
    out.update(extra)
    return out


class Proc:
    """A subprocess with line-based stdout, killed at the end of the test."""

    def __init__(self, args: list[str], environ: dict[str, str]) -> None:
        self.p = subprocess.Popen(
            [PYTHON, *args],
            cwd=ROOT,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def python() -> str:
        return PYTHON

    @staticmethod
    def root() -> str:
        return str(ROOT)

    def line(self, timeout: float = 20.0) -> str:
        """The next stdout line (raises on EOF)."""
        import selectors

        assert self.p.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no output from {self.p.args} within {timeout} s")
        text = self.p.stdout.readline()
        if not text:
            err = self.p.stderr.read() if self.p.stderr else ""
            raise EOFError(f"{self.p.args} exited ({self.p.poll()}): {err[-2000:]}")
        return text.strip()

    def wait(self, timeout: float = 30.0) -> int:
        return self.p.wait(timeout)

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)

    def signal(self, sig: signal.Signals) -> None:
        self.p.send_signal(sig)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        if p.p.poll() is None:
            with_cont = getattr(signal, "SIGCONT", None)
            if with_cont is not None:
                p.p.send_signal(with_cont)
        p.kill()
        for stream in (p.p.stdout, p.p.stderr):
            if stream is not None:
                stream.close()


def start_server(procs: list[Proc], to: str, listen: str = "127.0.0.1:0", *extra: str) -> str:
    """Run ``python -m aminspect.server``; returns its ws:// URL."""
    p = Proc(["-m", "aminspect.server", "--listen", listen, "--to", to, *extra], env(""))
    procs.append(p)
    line = p.line()
    assert line.startswith("listening on "), line
    return line.split()[-1]


def start_app(procs: list[Proc], url: str, *args: str, **extra_env: str) -> Proc:
    p = Proc(["-m", "tests.net._app", *args], env(url, **extra_env))
    procs.append(p)
    return p
