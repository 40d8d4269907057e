"""Turn event arguments into small, msgpack-safe values (user sanitizers can redact)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Sanitizer", "cap_value", "sanitize_args"]

Sanitizer = Callable[[tuple[Any, ...], dict[str, Any]], Any]

MAX_STR = 200
MAX_ITEMS = 16
MAX_DEPTH = 3
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _short(text: str) -> str:
    return text if len(text) <= MAX_STR else text[: MAX_STR - 1] + "…"


def _safe_repr(value: Any) -> str:
    try:
        return _short(repr(value))
    except Exception as exc:  # a user __repr__ may raise; tracing must not
        return f"<{type(value).__qualname__}: repr failed: {type(exc).__name__}>"


def cap_value(value: Any, depth: int = 0) -> Any:
    """A msgpack-encodable, size-capped copy of ``value``; anything else becomes its repr."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return int(value) if _INT_MIN <= value <= _INT_MAX else _safe_repr(value)
    if isinstance(value, str):
        return _short(str(value))
    if isinstance(value, bytes):
        return bytes(value[:MAX_STR])
    if depth >= MAX_DEPTH:
        return _safe_repr(value)
    if isinstance(value, list | tuple):
        items = [cap_value(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"… {len(value) - MAX_ITEMS} more")
        return items
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for n, (k, v) in enumerate(value.items()):
            if n >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more"
                break
            out[k if isinstance(k, str) else _safe_repr(k)] = cap_value(v, depth + 1)
        return out
    return _safe_repr(value)


def sanitize_args(
    args: tuple[Any, ...], kwargs: dict[str, Any], user: Sanitizer | None = None
) -> Any:
    """The ``args`` field of a record: None without arguments, else ``{"args", "kwargs"}``."""
    if user is not None:
        try:
            return cap_value(user(args, kwargs))
        except Exception as exc:
            return f"<sanitizer failed: {type(exc).__name__}>"
    if not args and not kwargs:
        return None
    out: dict[str, Any] = {}
    if args:
        out["args"] = cap_value(list(args))
    if kwargs:
        out["kwargs"] = cap_value(kwargs)
    return out
