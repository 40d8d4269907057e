"""Instance attributes, read without asking for an object's ``__dict__``.

On CPython 3.11+ an object keeps its attributes in a compact array until someone asks for
its ``__dict__``; from then on it has a real dict, and every attribute lookup on it is
slower. transitions looks up its machine's attributes dozens of times per trigger: a
machine whose ``__dict__`` was asked for ran 4-5% slower untraced. Adapters install and
remove their hooks with ``object.__setattr__``/``__delattr__`` and read them with this.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

MISSING = object()


def instance_attr(obj: Any, name: str) -> Any:
    """``vars(obj).get(name, MISSING)`` without asking for ``vars(obj)``."""
    try:
        value = object.__getattribute__(obj, name)  # not LockedMachine's wrapping lookup
    except AttributeError:
        return MISSING
    found = inspect.getattr_static(type(obj), name, MISSING)
    get = getattr(type(found), "__get__", None)
    if get is not None:  # a method, static or class method: what the class hands out
        if hasattr(type(found), "__set__"):
            return MISSING  # a data descriptor (a property): no instance attribute hides it
        found = get(found, obj, type(obj))
    if value is found:
        return MISSING
    if (
        isinstance(value, types.MethodType)
        and isinstance(found, types.MethodType)
        and value.__self__ is found.__self__
        and value.__func__ is found.__func__
    ):
        return MISSING  # the class's method, bound afresh
    return value
