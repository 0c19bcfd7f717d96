"""The active telemetry backend of this process (None: telemetry is off)."""

from __future__ import annotations

from typing import Optional

from .backends.base import TelemetryBackend

__all__ = ["get_backend", "is_enabled", "set_backend"]

_backend: Optional[TelemetryBackend] = None


def set_backend(backend: Optional[TelemetryBackend]) -> None:
    """Sets the backend events go to; None turns telemetry off."""
    global _backend
    _backend = backend


def get_backend() -> Optional[TelemetryBackend]:
    return _backend


def is_enabled() -> bool:
    return _backend is not None
