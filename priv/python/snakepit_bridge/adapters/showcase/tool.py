"""Helpers of the showcase adapter (upstream's module path)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

__all__ = ["StreamChunk", "Tool"]


class Tool:
    """A named function (upstream's handler-table entry)."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.name = func.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


class StreamChunk:
    """One chunk of a stream: ``data``, ``is_final`` (the last one) and
    optional ``metadata``. The worker unpacks any object with these
    attributes, so adapters may use their own class."""

    __slots__ = ("data", "is_final", "metadata")

    def __init__(self, data: Any, is_final: bool = False, metadata: Optional[Dict[str, Any]] = None) -> None:
        self.data = data
        self.is_final = is_final
        self.metadata = metadata

    def __repr__(self) -> str:
        return f"StreamChunk(data={self.data!r}, is_final={self.is_final})"
