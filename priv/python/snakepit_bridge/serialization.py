"""Graceful serialization: what happens to values JSON cannot hold.

Tool results are encoded by ``json_codec`` with these rules (upstream
Snakepit's): ``model_dump()``, ``to_dict()``, ``_asdict()``, ``tolist()``
(NumPy; refused past ``SNAKEPIT_TOLIST_MAX_ELEMENTS``, default 1 000 000
elements, before allocating when the object knows its size, else by
counting the result) and ``isoformat()`` convert an object; anything else becomes
the marker ``{"__ffi_unserializable__": True, "__type__": "module.Class"}``.
In Elixir, ``Snakepit.Serialization.unserializable?/1`` recognises it.

``SNAKEPIT_UNSERIALIZABLE_DETAIL`` adds ``"__repr__"`` to the marker:
``none`` (default, safe), ``type`` (a placeholder naming the type),
``repr_truncated`` or ``repr_redacted_truncated`` (common secrets masked,
best effort), truncated to ``SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN`` (500,
at most 2000) characters. The first marker of each type in a process emits
the telemetry event ``snakepit.serialization.unserializable_marker``.

``GracefulJSONEncoder`` and ``TypeSerializer`` keep upstream's API for
adapters that encode values themselves.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
from typing import Any, Dict, List, Optional, Set, Tuple

from google.protobuf import any_pb2

from .json_codec import to_plain
from .zero_copy import ZeroCopyRef

__all__ = [
    "BINARY_THRESHOLD",
    "GracefulJSONEncoder",
    "REPR_KEY",
    "TYPE_KEY",
    "TypeSerializer",
    "UNSERIALIZABLE_KEY",
    "is_unserializable_marker",
    "convert_with_tolist",
    "unserializable_marker",
]

BINARY_THRESHOLD = 10_240
UNSERIALIZABLE_KEY = "__ffi_unserializable__"
TYPE_KEY = "__type__"
REPR_KEY = "__repr__"


def _env_int(name: str, default: int, low: int, high: Optional[int] = None) -> int:
    try:
        value = int(os.environ.get(name, str(default)).strip())
    except ValueError:  # a bad value must not stop a worker
        return default
    value = max(low, value)
    return min(value, high) if high is not None else value


_DETAIL_MODE = os.environ.get("SNAKEPIT_UNSERIALIZABLE_DETAIL", "none").strip().lower()
_REPR_MAXLEN = _env_int("SNAKEPIT_UNSERIALIZABLE_REPR_MAXLEN", 500, 0, 2000)
_TOLIST_MAX_ELEMENTS = _env_int("SNAKEPIT_TOLIST_MAX_ELEMENTS", 1_000_000, 0)

_SECRET_PATTERNS = [
    (re.compile(r"(Authorization:\s*Bearer\s+)[^\s'\"\\]+", re.IGNORECASE), r"\1<REDACTED>"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9\-\._~\+/]+=*", re.IGNORECASE), r"\1<REDACTED>"),
    (re.compile(r"\bsk-[A-Za-z0-9]{10,}\b"), "sk-<REDACTED>"),
    (
        re.compile(r'("?(api[_-]?key|token|secret|password)"?\s*[:=]\s*["\'])([^"\']+)(["\'])', re.IGNORECASE),
        r"\1<REDACTED>\4",
    ),
]


def _redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__name__}"


def _detail(obj: Any) -> Optional[str]:
    if _DETAIL_MODE == "type":
        return f"<unserializable {_type_name(obj)}>"
    if _DETAIL_MODE not in ("repr_truncated", "repr_redacted_truncated"):
        return None
    try:
        text = repr(obj)
    except Exception:
        text = f"<repr failed for {_type_name(obj)}>"
    if _DETAIL_MODE == "repr_redacted_truncated":
        text = _redact(text)
    return text[:_REPR_MAXLEN]


_seen_types: Set[str] = set()
_seen_lock = threading.Lock()
_SEEN_TYPES_MAX = 10_000


def unserializable_marker(obj: Any) -> Dict[str, Any]:
    """The marker standing for ``obj`` in a result."""
    type_name = _type_name(obj)
    marker: Dict[str, Any] = {UNSERIALIZABLE_KEY: True, TYPE_KEY: type_name}
    detail = _detail(obj)
    if detail is not None:
        marker[REPR_KEY] = detail
    with _seen_lock:
        first = type_name not in _seen_types and len(_seen_types) < _SEEN_TYPES_MAX
        if first:
            _seen_types.add(type_name)
    if first:
        from . import telemetry

        try:
            telemetry.emit("snakepit.serialization.unserializable_marker", {"first_seen": 1}, {"type": type_name})
        except Exception:  # telemetry never breaks a result
            pass
    return marker


def is_unserializable_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get(UNSERIALIZABLE_KEY) is True


def _known_tolist_size(obj: Any) -> Optional[int]:
    """How many elements ``obj.tolist()`` would build, when ``obj`` says so
    before allocating (NumPy/pandas ``size``; a sparse matrix's dense
    ``shape``); None when it cannot be known beforehand."""
    try:
        shape = getattr(obj, "shape", None)
        if getattr(obj, "nnz", None) is not None and shape is not None:  # sparse: the dense size counts
            total = 1
            for dim in shape:
                total *= int(dim)
            return total
        size = getattr(obj, "size", None)
        if size is not None and not callable(size):
            return int(size)
    except (TypeError, ValueError):
        pass
    return None


def _within_tolist_limit(value: List[Any]) -> bool:
    """Whether the nested lists of a ``tolist()`` result hold at most the
    configured number of elements (leaves; stops counting once past it)."""
    budget = _TOLIST_MAX_ELEMENTS
    pending = [value]
    while pending:
        for item in pending.pop():
            if isinstance(item, list):
                pending.append(item)
            else:
                budget -= 1
                if budget < 0:
                    return False
    return True


def convert_with_tolist(obj: Any) -> Tuple[bool, Any]:
    """``(True, obj.tolist())`` when that stays within
    ``SNAKEPIT_TOLIST_MAX_ELEMENTS``, else ``(False, None)``: refused before
    allocating when ``obj`` knows its size, otherwise counted afterwards;
    a failing ``tolist()`` is refused too."""
    size = _known_tolist_size(obj)
    if size is not None and size > _TOLIST_MAX_ELEMENTS:
        return False, None
    try:
        result = obj.tolist()
    except Exception:  # a broken converter falls through to the next rule
        return False, None
    if size is None and isinstance(result, list) and not _within_tolist_limit(result):
        return False, None
    return True, result


class GracefulJSONEncoder(json.JSONEncoder):
    """A ``json.JSONEncoder`` applying the rules above (``json.dumps(x, cls=GracefulJSONEncoder)``)."""

    def default(self, o: Any) -> Any:
        return to_plain(o)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, cls=GracefulJSONEncoder).encode("utf-8")


class TypeSerializer:
    """Upstream's typed ``google.protobuf.Any`` encoding (``type.googleapis.com/snakepit.<type>``).

    Tensors and embeddings larger than ``BINARY_THRESHOLD`` bytes go as
    binary data (pickled) next to a JSON metadata ``Any`` whose type URL
    ends in ``.binary``; everything else as JSON.
    """

    @staticmethod
    def encode_any(value: Any, var_type: str) -> Tuple[any_pb2.Any, Optional[bytes]]:
        normalized = TypeSerializer._normalize_value(value, var_type)
        if TypeSerializer._should_use_binary(normalized, var_type):
            return TypeSerializer._encode_with_binary(normalized, var_type)
        message = any_pb2.Any(type_url=f"type.googleapis.com/snakepit.{var_type}")
        message.value = TypeSerializer._serialize_value(normalized, var_type)
        return message, None

    @staticmethod
    def decode_any(any_msg: any_pb2.Any, binary_data: Optional[bytes] = None) -> Any:
        if any_msg.type_url.endswith(".binary") and binary_data is not None:
            return TypeSerializer._decode_with_binary(any_msg, binary_data)
        var_type = any_msg.type_url.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
        value = json.loads(any_msg.value) if any_msg.value else None
        decoded = TypeSerializer._deserialize_value(value, var_type)
        if isinstance(decoded, dict) and decoded.get("__snakepit_zero_copy__"):
            return ZeroCopyRef.from_payload(decoded)
        return decoded

    @staticmethod
    def _normalize_value(value: Any, var_type: str) -> Any:
        if isinstance(value, ZeroCopyRef):
            return value.to_payload()
        if var_type == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise ValueError(f"Expected number, got {type(value)}")
        if var_type == "integer":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"Expected integer, got {value}")
        if var_type in ("string", "choice", "module"):
            return str(value)
        if var_type == "boolean":
            if isinstance(value, bool):
                return value
            raise ValueError(f"Expected boolean, got {type(value)}")
        if var_type == "embedding":
            if hasattr(value, "tolist") and hasattr(value, "shape"):
                return value.tolist()
            if isinstance(value, list):
                return [float(x) for x in value]
            raise ValueError(f"Expected array/list, got {type(value)}")
        if var_type == "tensor":
            if hasattr(value, "tolist") and hasattr(value, "shape"):
                return {"shape": list(value.shape), "data": value.tolist()}
            if isinstance(value, dict) and "shape" in value and "data" in value:
                return value
            raise ValueError(f"Expected tensor, got {type(value)}")
        return value

    @staticmethod
    def _serialize_value(value: Any, var_type: str) -> bytes:
        if var_type == "float" and isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            value = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return _json_bytes(value)

    @staticmethod
    def _deserialize_value(value: Any, var_type: str) -> Any:
        if var_type == "float":
            special = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
            return special[value] if isinstance(value, str) and value in special else float(value)
        if var_type == "integer":
            return int(value)
        if var_type == "tensor" and isinstance(value, dict) and "data" in value and "shape" in value:
            import numpy as np

            return np.array(value["data"]).reshape(value["shape"])
        return value

    @staticmethod
    def validate_constraints(value: Any, var_type: str, constraints: Dict[str, Any]) -> None:
        """Raises ValueError when ``value`` breaks ``constraints`` (min/max, lengths, choices, ...)."""
        if var_type in ("float", "integer"):
            low, high = constraints.get("min"), constraints.get("max")
            if low is not None and value < low:
                raise ValueError(f"Value {value} is below minimum {low}")
            if high is not None and value > high:
                raise ValueError(f"Value {value} is above maximum {high}")
        elif var_type == "string":
            length = len(value)
            if length < constraints.get("min_length", 0):
                raise ValueError(f"String too short: {length} < {constraints['min_length']}")
            if constraints.get("max_length") and length > constraints["max_length"]:
                raise ValueError(f"String too long: {length} > {constraints['max_length']}")
        elif var_type == "choice":
            choices = constraints.get("choices", [])
            if choices and value not in choices:
                raise ValueError(f"Value {value} not in allowed choices: {choices}")
        elif var_type == "module":
            allowed = constraints.get("allowed_modules", [])
            if allowed and value not in allowed:
                raise ValueError(f"Module {value} not in allowed modules: {allowed}")
        elif var_type == "embedding":
            dimensions = constraints.get("dimensions")
            if dimensions and len(value) != dimensions:
                raise ValueError(f"Wrong dimensions: {len(value)} != {dimensions}")
        elif var_type == "tensor" and constraints.get("shape"):
            actual = value.get("shape") if isinstance(value, dict) else list(value.shape)
            if actual != constraints["shape"]:
                raise ValueError(f"Wrong shape: {actual} != {constraints['shape']}")

    @staticmethod
    def _should_use_binary(value: Any, var_type: str) -> bool:
        if var_type == "tensor" and isinstance(value, dict) and isinstance(value.get("data"), list):
            return len(value["data"]) * 8 > BINARY_THRESHOLD
        if var_type == "embedding" and isinstance(value, list):
            return len(value) * 8 > BINARY_THRESHOLD
        return False

    @staticmethod
    def _encode_with_binary(value: Any, var_type: str) -> Tuple[any_pb2.Any, bytes]:
        if var_type == "tensor":
            shape, data = value.get("shape", []), value.get("data", [])
        elif var_type == "embedding":
            shape, data = [len(value)], value
        else:
            raise ValueError(f"Binary encoding not supported for type: {var_type}")
        metadata = {"shape": shape, "dtype": "float32", "binary_format": "pickle", "type": var_type}
        message = any_pb2.Any(type_url=f"type.googleapis.com/snakepit.{var_type}.binary", value=_json_bytes(metadata))
        return message, pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def _decode_with_binary(any_msg: any_pb2.Any, binary_data: bytes) -> Any:
        var_type = any_msg.type_url.split(".")[-2]
        metadata = json.loads(any_msg.value)
        data = pickle.loads(binary_data)  # only ever produced by this class, on this side
        if var_type == "tensor":
            return {"shape": metadata.get("shape", []), "data": data}
        if var_type == "embedding":
            return data
        raise ValueError(f"Binary decoding not supported for type: {var_type}")
