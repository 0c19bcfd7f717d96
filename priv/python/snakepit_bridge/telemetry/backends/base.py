"""The interface a telemetry backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional

__all__ = ["TelemetryBackend"]


class TelemetryBackend(ABC):
    """Receives every ``telemetry.emit``; must not block the caller for long."""

    @abstractmethod
    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        """Takes one event: dotted name, measurements, metadata, correlation id."""

    def close(self) -> None:
        """Flushes what it holds and releases its resources (worker shutdown)."""
