"""JSON as the wire carries it: results and arguments of tools, both ways.

NumPy arrays and scalars become lists and numbers, sets become lists,
dates and times become ISO 8601 strings. NaN and infinities, which JSON
cannot hold, are an error that names where they are.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Optional

__all__ = ["encode", "decode"]


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raise TypeError(
            "tool result contains bytes nested inside a dict/list, which JSON cannot "
            "hold; only a tool whose whole result is bytes is returned as binary "
            "(return the bytes alone, or decode/base64-encode them)"
        )
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if tolist is not None and callable(tolist):
        return tolist()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=_default).encode
decode = json.JSONDecoder().decode


def _non_finite_path(value: Any, path: str) -> Optional[str]:
    """Where the first NaN or infinity in `value` is, as `path[1].key`."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]")
            if found:
                return found
        return None
    tolist = getattr(value, "tolist", None)
    if tolist is not None and callable(tolist):
        return _non_finite_path(tolist(), path)
    return None


def encode(value: Any, what: str = "result") -> str:
    """Compact JSON text of `value`; `what` names it in errors."""
    try:
        return _encode(value)
    except ValueError as exc:
        path = _non_finite_path(value, what)
        if path is None:
            raise
        raise ValueError(
            f"{path} is NaN or infinite, which JSON cannot carry (send None or a string instead)"
        ) from exc
