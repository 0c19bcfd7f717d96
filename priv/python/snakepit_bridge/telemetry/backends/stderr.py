"""Writes each event to stderr as one ``TELEMETRY:{json}`` line (debugging)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict, Optional

from .base import TelemetryBackend

__all__ = ["StderrBackend"]


class StderrBackend(TelemetryBackend):
    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        payload = {
            "event": event_name,
            "measurements": measurements,
            "metadata": metadata or {},
            "timestamp_ns": time.time_ns(),
            "correlation_id": correlation_id or "",
        }
        try:
            line = "TELEMETRY:" + json.dumps(payload, default=str)
        except ValueError as exc:  # e.g. a circular structure
            line = f"TELEMETRY_ERROR: {exc}"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
