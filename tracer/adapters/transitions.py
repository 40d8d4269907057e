"""Adapter for pytransitions (placeholder until implemented)."""

from __future__ import annotations

import sys
from typing import Any


def accepts(obj: Any) -> bool:
    mod = sys.modules.get("transitions")
    return mod is not None and isinstance(obj, mod.Machine)
