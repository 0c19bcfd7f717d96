"""Where telemetry events go: Elixir (inside a worker), stderr, or your own."""

from .base import TelemetryBackend
from .elixir import ElixirBackend
from .stderr import StderrBackend

__all__ = ["ElixirBackend", "StderrBackend", "TelemetryBackend"]
