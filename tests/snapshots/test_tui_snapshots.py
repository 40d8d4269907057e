"""Snapshot tests: the TUI's screen, as text, on the fixed journal ``tests/data/shop.amj``.

Each scene of ``aminspect.tui.screenshots.SCENES`` is compared with a committed golden
file ``golden/<scene>.txt`` (LF endings). After a deliberate UI change, regenerate them
with::

    AMINSPECT_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/snapshots

and read the diff before committing it (STYLE 12). Text, not SVG, is compared: it names
what is on screen and survives theme colour tweaks; the SVGs in ``screenshots/`` are made
from the same scenes by ``python -m aminspect.tui.screenshots``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aminspect.tui.screenshots import SCENES, capture

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("AMINSPECT_UPDATE_SNAPSHOTS") == "1"

pytestmark = pytest.mark.timeout(60)


# light-theme differs from log-error only in colours, which text does not show
TEXT_SCENES = sorted(set(SCENES) - {"light-theme"})


@pytest.mark.parametrize("scene", TEXT_SCENES)
async def test_scene_matches_golden(scene: str):
    text, _svg = await capture(scene)
    path = GOLDEN / f"{scene}.txt"
    if UPDATE or not path.exists():
        path.write_text(text, encoding="utf-8", newline="\n")
        if not UPDATE:
            pytest.fail(f"wrote a new golden file {path.name}: read it, then run again")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"screen differs from {path.name} (see the module docstring)"
