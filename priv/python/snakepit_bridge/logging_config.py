"""Logging for Snakepit's Python side.

``configure_logging()`` sets up the root logger from ``SNAKEPIT_LOG_LEVEL``
(``debug``, ``info``, ``warning``, ``error`` (the default), ``none``), for
scripts run outside a worker. Inside a worker the bridge has already
configured logging (stderr, one line per record, prefixed with the worker
id; the pool forwards stderr to Elixir's Logger), so a call there changes
nothing unless ``force=True``.

``get_logger(name)`` returns a logger under the ``snakepit.`` namespace.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Dict

__all__ = ["configure_logging", "get_logger"]

_LEVELS: Dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 1,
}

_NO_CORRELATION = "-"


class _CorrelationIdFilter(logging.Filter):
    """Gives every record a ``correlation_id`` attribute (the current call's, or ``-``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", None):
            from .otel_tracing import get_correlation_id

            record.correlation_id = get_correlation_id(_NO_CORRELATION)
        return True


def _ensure_correlation_filter() -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, _CorrelationIdFilter) for f in handler.filters):
            handler.addFilter(_CorrelationIdFilter())


def configure_logging(force: bool = False) -> None:
    """Configure the root logger from ``SNAKEPIT_LOG_LEVEL`` (default ``error``)."""
    name = os.environ.get("SNAKEPIT_LOG_LEVEL", "error").strip().lower()
    level = _LEVELS.get(name, logging.ERROR)
    logging.disable(logging.CRITICAL if name == "none" else logging.NOTSET)
    logging.basicConfig(
        level=level,
        format="%(asctime)s - [%(threadName)s] - %(name)s - %(levelname)s - [corr=%(correlation_id)s] %(message)s",
        stream=sys.stderr,
        force=force,
    )
    _ensure_correlation_filter()
    logging.getLogger("grpc").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    """A logger named ``snakepit.<name>`` (``snakepit_bridge.x`` becomes ``snakepit.bridge.x``)."""
    if name.startswith("snakepit."):
        return logging.getLogger(name)
    if name.startswith("snakepit_bridge."):
        return logging.getLogger("snakepit.bridge." + name[len("snakepit_bridge."):])
    return logging.getLogger("snakepit." + name)
