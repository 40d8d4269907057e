"""tune_gc: the recorder's garbage-collector settings (checked in subprocesses: process-wide)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import gc, sys
from aminspect.server import tune_gc
if sys.argv[1] == "off":
    gc.set_threshold(0)
tune_gc()
print(gc.get_threshold()[0], gc.get_freeze_count() > 0)
"""


def _run(mode: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def test_tune_gc_raises_the_young_threshold_and_freezes() -> None:
    assert _run("default") == "1000000 True"


def test_tune_gc_leaves_a_disabled_collector_disabled() -> None:
    assert _run("off") == "0 True"
