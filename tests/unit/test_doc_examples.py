"""The Python examples for persistent machines in the README and docs/machines.md run as
written, each in a fresh directory (they create their own database files)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


EXAMPLES = [
    (f"README#{i}", block)
    for i, block in enumerate(
        python_blocks(section((ROOT / "README.md").read_text(), "## Persistent machines"))
    )
] + [
    (f"machines.md#{i}", block)
    for i, block in enumerate(python_blocks((ROOT / "docs" / "machines.md").read_text()))
]


def test_every_kind_has_examples():
    assert len([n for n, _ in EXAMPLES if n.startswith("README")]) == 3
    assert len([n for n, _ in EXAMPLES if n.startswith("machines.md")]) == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("block", [b for _, b in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_example_runs(block: str, tmp_path: Path):
    # A traced example names a ws:// inspector that is not running here: tracing must not
    # hold the example up for longer than the tracer's bounded exit flush.
    done = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr[-2000:]
