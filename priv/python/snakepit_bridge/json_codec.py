"""JSON as the wire carries it: results and arguments of tools, both ways.

Encoding is graceful, as upstream Snakepit's: an object JSON cannot hold is
converted by its ``model_dump()``, ``to_dict()`` or ``_asdict()``, NumPy
arrays and scalars by ``tolist()``, sets become lists, dates and times
ISO 8601 strings (``isoformat()``); anything else becomes the marker
``{"__ffi_unserializable__": true, "__type__": "module.Class"}``
(see ``serialization``) instead of failing the call. Two things stay
errors: a NaN or infinity, which JSON cannot carry, names where it is; and
bytes nested inside a result (only a result that is bytes as a whole
travels as a binary), whose error says how to send them.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Optional

__all__ = ["encode", "decode", "to_plain"]

_NESTED_BYTES = (
    "tool result contains bytes nested inside a dict/list, which JSON cannot "
    "hold; only a tool whose whole result is bytes is returned as binary "
    "(return the bytes alone, or decode/base64-encode them)"
)
_CONVERTERS = ("model_dump", "to_dict", "_asdict")


def to_plain(obj: Any) -> Any:
    """A JSON-able stand-in for ``obj``, an object json cannot encode itself."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raise TypeError(_NESTED_BYTES)
    for name in _CONVERTERS:
        method = getattr(obj, name, None)
        if method is not None and callable(method):
            try:
                return method()
            except Exception:  # a broken converter falls through to the next rule
                pass
    if callable(getattr(obj, "tolist", None)):  # NumPy arrays and scalars
        from .serialization import convert_with_tolist

        converted, value = convert_with_tolist(obj)
        if converted:
            return value
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    isoformat = getattr(obj, "isoformat", None)
    if isoformat is not None and callable(isoformat):
        try:
            return isoformat()
        except Exception:
            pass
    from .serialization import unserializable_marker

    return unserializable_marker(obj)


_encode = json.JSONEncoder(allow_nan=False, separators=(",", ":"), default=to_plain).encode
decode = json.JSONDecoder().decode

_JSON_SCALARS = (str, int, bool, type(None))


def _non_finite_path(value: Any, path: str, depth: int = 0) -> Optional[str]:
    """Where the first NaN or infinity in ``value`` is, as ``path[1].key``."""
    if depth > 200:  # json itself fails on deeper structures first
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    try:
        return _non_finite_path(to_plain(value), path, depth + 1)
    except TypeError:
        return None


def encode(value: Any, what: str = "result") -> str:
    """Compact JSON text of ``value``; ``what`` names it in errors."""
    try:
        return _encode(value)
    except ValueError as exc:
        path = _non_finite_path(value, what)
        if path is None:
            raise
        raise ValueError(
            f"{path} is NaN or infinite, which JSON cannot carry (send None or a string instead)"
        ) from exc
