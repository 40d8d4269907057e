"""Layering: app code that only traces pulls in nothing of the inspector (STYLE 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import importlib, sys
for mod in {modules!r}:
    importlib.import_module(mod)
bad = [m for m in {banned!r} if m in sys.modules]
assert not bad, "imported " + ", ".join(bad)
"""


@pytest.mark.parametrize(
    ("modules", "banned"),
    [
        (
            ["tracer", "tracer.codec", "tracer.core", "tracer.machine_time"],
            ["textual", "rich", "typer", "backends", "aminspect"],
        ),
        (["backends", "backends.registry"], ["textual", "aminspect"]),
        (["aminspect", "aminspect.cli"], ["textual"]),
        (
            [
                "aminspect.commands",
                "aminspect.commands.data",
                "aminspect.commands.live",
                "aminspect.commands.machines",
                "aminspect.resurrect",
                "aminspect.divergence",
                "aminspect.export",
            ],
            ["textual", "aminspect.tui"],
        ),
    ],
)
def test_lower_layers_import_nothing_above_them(modules, banned):
    code = CHECK.format(modules=modules, banned=banned)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
