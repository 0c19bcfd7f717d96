"""Correlation ids and OpenTelemetry spans for the Python side.

Every call carries a correlation id in a context variable: the
``correlation_id`` the Elixir caller passed (request metadata), else none.
``span(name)`` binds one for its duration and, when the OpenTelemetry SDK
is installed, opens a real span; without OpenTelemetry it only manages the
correlation id (a no-op tracer), so adapters can use it unconditionally.
"""

from __future__ import annotations

import logging
import os
import uuid
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

try:  # optional dependency
    from opentelemetry import trace as _otel_trace
    from opentelemetry.sdk.resources import Resource as _Resource
    from opentelemetry.sdk.trace import TracerProvider as _TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor as _BatchSpanProcessor
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter as _ConsoleSpanExporter
except ImportError:
    _otel_trace = None

__all__ = [
    "CORRELATION_HEADER",
    "correlation_filter",
    "get_correlation_id",
    "get_tracer",
    "new_correlation_id",
    "outgoing_metadata",
    "reset_correlation_id",
    "set_correlation_id",
    "setup_tracing",
    "span",
]

CORRELATION_HEADER = "x-snakepit-correlation-id"

_correlation_id: ContextVar[Optional[str]] = ContextVar("snakepit_correlation_id", default=None)
_tracer: Any = None
_ready = False


def setup_tracing() -> None:
    """Once per process: every log record gets a ``correlation_id``
    attribute (the current one, or ``-``), so any handler may format
    ``%(correlation_id)s``; and, when the OpenTelemetry SDK is installed, a
    tracer is set up. The worker calls it at startup."""
    global _tracer, _ready
    if _ready:
        return
    _ready = True
    _install_log_record_factory()
    if _otel_trace is None:
        return
    resource = _Resource.create(
        {
            "service.name": os.environ.get("SNAKEPIT_SERVICE_NAME", "snakepit.python.bridge"),
            "service.namespace": "snakepit",
            "service.instance.id": os.environ.get("SNAKEPIT_INSTANCE_ID", uuid.uuid4().hex),
        }
    )
    provider = _TracerProvider(resource=resource)
    exporter = _select_exporter()
    if exporter is not None:
        provider.add_span_processor(_BatchSpanProcessor(exporter))
    _otel_trace.set_tracer_provider(provider)
    _tracer = _otel_trace.get_tracer("snakepit.bridge")


def _install_log_record_factory() -> None:
    # A factory rather than a handler filter: it also reaches handlers an
    # adapter attaches to its own (non-propagating) loggers. It wraps the
    # factory in place now, so one installed earlier keeps working. A
    # record attribute set by the factory cannot also come from
    # ``extra=``; bind the id with ``set_correlation_id`` instead.
    previous = logging.getLogRecordFactory()

    def record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not getattr(record, "correlation_id", None):
            record.correlation_id = get_correlation_id("-")
        return record

    logging.setLogRecordFactory(record_factory)


def _select_exporter() -> Any:
    endpoint = os.environ.get("SNAKEPIT_OTEL_ENDPOINT")
    if endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            logging.getLogger("snakepit.bridge.otel").warning(
                "SNAKEPIT_OTEL_ENDPOINT is set but the OTLP exporter is not installed"
            )
        else:
            return OTLPSpanExporter(endpoint=endpoint)
    if os.environ.get("SNAKEPIT_OTEL_CONSOLE", "false").lower() in {"1", "true", "yes"}:
        return _ConsoleSpanExporter()
    return None


def get_tracer() -> Any:
    """The OpenTelemetry tracer, or None without OpenTelemetry."""
    return _tracer


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def set_correlation_id(value: Optional[str]) -> Token:
    """Binds ``value`` for the current context; pass the token to ``reset_correlation_id``."""
    return _correlation_id.set(value)


def reset_correlation_id(token: Optional[Token]) -> None:
    if token is not None:
        _correlation_id.reset(token)


def get_correlation_id(default: Optional[str] = None) -> Optional[str]:
    value = _correlation_id.get()
    return value if value is not None else default


def _from_metadata(metadata: Optional[Sequence[Tuple[str, str]]]) -> Optional[str]:
    for key, value in metadata or ():
        if key.lower() == CORRELATION_HEADER:
            return value
    return None


@contextmanager
def span(
    name: str,
    *,
    context_metadata: Optional[Sequence[Tuple[str, str]]] = None,
    attributes: Optional[dict] = None,
) -> Iterator[Any]:
    """Binds a correlation id (from ``context_metadata``, the current one, or a
    new one) and, with OpenTelemetry, opens span ``name``; yields the span or None."""
    correlation = _from_metadata(context_metadata) or get_correlation_id() or new_correlation_id()
    token = set_correlation_id(correlation)
    try:
        if _tracer is None:
            yield None
            return
        with _tracer.start_as_current_span(name) as span_object:
            for key, value in (attributes or {}).items():
                span_object.set_attribute(key, value)
            span_object.set_attribute("snakepit.correlation_id", correlation)
            yield span_object
    finally:
        reset_correlation_id(token)


def outgoing_metadata(initial: Optional[Iterable[Tuple[str, str]]] = None) -> List[Tuple[str, str]]:
    """gRPC metadata with the current correlation id added."""
    metadata = list(initial or ())
    correlation = get_correlation_id()
    if correlation:
        metadata.append((CORRELATION_HEADER, correlation))
    return metadata


class _CorrelationFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = get_correlation_id("-")
        return True


def correlation_filter() -> logging.Filter:
    """A logging filter that sets ``record.correlation_id``."""
    return _CorrelationFilter()
