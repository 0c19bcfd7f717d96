"""Handles to data shared without copying (DLPack / Arrow style payloads).

A value decoded from the wire as a dict with ``"__snakepit_zero_copy__":
true`` becomes a ``ZeroCopyRef`` (see ``serialization.TypeSerializer``);
``to_payload()`` gives the dict back.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["ZeroCopyRef"]


class ZeroCopyRef:
    """The fields of a zero-copy payload: kind, device, dtype, shape, owner, ref, copy, bytes, metadata."""

    def __init__(self, payload: Dict[str, Any]) -> None:
        self.payload = dict(payload)
        self.kind: Optional[str] = payload.get("kind")
        self.device: Optional[str] = payload.get("device")
        self.dtype: Optional[str] = payload.get("dtype")
        self.shape: Any = payload.get("shape")
        self.owner: Any = payload.get("owner")
        self.ref: Any = payload.get("ref")
        self.copy: Any = payload.get("copy")
        self.bytes: Any = payload.get("bytes")
        self.metadata: Dict[str, Any] = payload.get("metadata", {})

    @classmethod
    def from_payload(cls, payload: Dict[str, Any]) -> "ZeroCopyRef":
        return cls(payload)

    def to_payload(self) -> Dict[str, Any]:
        return dict(self.payload)

    def __repr__(self) -> str:
        return f"<ZeroCopyRef kind={self.kind} device={self.device} ref={self.ref}>"
