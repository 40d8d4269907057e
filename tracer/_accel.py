"""The tracer's optional C hot path (``tracer/_speedups.c``), or None.

It is built at install time when a C compiler is there (``setup.py``: an optional
extension) and is used unless ``AMINSPECT_PURE_PYTHON`` is set to a non-empty value.
Without it the pure-Python hooks run: the same records, only slower. The Python code
stays the reference; the C code is the hot path of the flat ``transitions`` adapter and
the sender's usual batch, and falls back to Python for everything else.
"""

from __future__ import annotations

import os
from typing import Any

speedups: Any = None
if not os.environ.get("AMINSPECT_PURE_PYTHON"):
    try:
        from tracer import _speedups as speedups
    except ImportError:  # built without a C compiler: the pure-Python hooks run
        speedups = None

__all__ = ["speedups"]
