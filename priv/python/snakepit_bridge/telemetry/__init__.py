"""Telemetry from Python tools, received in Elixir as ``[:snakepit, :python, ...]``.

    from snakepit_bridge import telemetry

    telemetry.emit("tool.result_size", {"bytes": 42}, {"tool": "predict"})
    with telemetry.span("inference", {"model": "m"}):
        ...   # emits inference.start, then inference.stop (duration in ns)
              # or inference.exception (error_type, error_message) and re-raises

Inside a worker, events go to Elixir in batches over the worker's
connection (``backends.ElixirBackend``); elsewhere no backend is set and
``emit`` does nothing unless you ``set_backend(...)`` one (e.g.
``StderrBackend()``). An event without a correlation id gets the current
call's (the ``correlation_id:`` option of the Elixir call).

The correlation-id and OpenTelemetry helpers of ``otel_tracing`` are
re-exported here; its ``span`` is ``otel_span``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

from ..otel_tracing import (
    CORRELATION_HEADER,
    correlation_filter,
    get_correlation_id,
    get_tracer,
    new_correlation_id,
    outgoing_metadata,
    reset_correlation_id,
    set_correlation_id,
    setup_tracing,
)
from ..otel_tracing import span as otel_span
from .manager import get_backend, is_enabled, set_backend

__all__ = [
    "CORRELATION_HEADER",
    "correlation_filter",
    "emit",
    "get_backend",
    "get_correlation_id",
    "get_tracer",
    "is_enabled",
    "new_correlation_id",
    "otel_span",
    "outgoing_metadata",
    "reset_correlation_id",
    "set_backend",
    "set_correlation_id",
    "setup_tracing",
    "span",
]


def emit(
    event: str,
    measurements: Dict[str, Any],
    metadata: Optional[Dict[str, Any]] = None,
    correlation_id: Optional[str] = None,
) -> None:
    """Emits ``event`` (dotted name) with numeric ``measurements`` and ``metadata``."""
    backend = get_backend()
    if backend is not None:
        backend.emit(event, measurements, metadata, correlation_id or get_correlation_id())


@contextmanager
def span(
    operation: str,
    metadata: Optional[Dict[str, Any]] = None,
    correlation_id: Optional[str] = None,
) -> Iterator[None]:
    """Emits ``operation.start``, then ``operation.stop`` or ``operation.exception``."""
    start = time.time_ns()
    emit(f"{operation}.start", {"system_time": start}, metadata, correlation_id)
    try:
        yield
    except Exception as exc:
        failure = dict(metadata or {})
        failure["error_type"] = type(exc).__name__
        failure["error_message"] = str(exc)
        emit(f"{operation}.exception", {"duration": time.time_ns() - start}, failure, correlation_id)
        raise
    emit(f"{operation}.stop", {"duration": time.time_ns() - start}, metadata, correlation_id)
