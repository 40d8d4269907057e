"""Run the demo shop as a child process of the inspector, and stop it with the inspector."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile

__all__ = ["DemoProcess"]


class DemoProcess:
    """The demo app in its own process, traced over WebSocket into the running TUI."""

    def __init__(self, seed: int = 7, pace: float = 0.4) -> None:
        self.seed = seed
        self.pace = pace
        self.process: subprocess.Popen[bytes] | None = None
        # The TUI owns the terminal: the child's output goes to an anonymous file (gone
        # with the process however it ends, even when the terminal is closed) and is
        # kept in ``output`` when the child stops.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.output = ""

    @staticmethod
    def missing_dependency() -> str | None:
        """The first library the demo needs that is not installed, if any."""
        for module, package in (
            ("transitions", "transitions"),
            ("statemachine", "python-statemachine"),
        ):
            if importlib.util.find_spec(module) is None:
                return package
        return None

    def start(self, url: str) -> None:
        """Start the shop, shipping to ``url`` (called once the TUI's server listens)."""
        if self.process is not None:
            return
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aminspect.demo",
                "--url",
                url,
                "--seed",
                str(self.seed),
                "--pace",
                str(self.pace),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def stop(self, timeout: float = 5.0) -> int | None:
        """Ask the shop to close (SIGTERM: it flushes and exits), kill it if it hangs.

        Safe to call more than once.

        Args:
            timeout: seconds to wait for a clean exit before killing it.

        Returns:
            The child's exit code (0 for a clean exit), None if it never started.
        """
        proc = self.process
        try:
            if proc is None:
                return None
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
            return proc.returncode
        finally:
            if not self.log.closed:
                self.log.seek(0)
                self.output = self.log.read(64 * 1024).decode("utf-8", "replace")
                self.log.close()

    @property
    def returncode(self) -> int | None:
        """The child's exit code; None while it runs or if it never started."""
        return None if self.process is None else self.process.returncode

    @property
    def failed(self) -> bool:
        """The child exited with an error (a stop by ``stop`` is not one)."""
        return self.returncode not in (None, 0, -signal.SIGTERM, -signal.SIGKILL)
