"""Python side of Snakepit native: adapters and tools run by the worker.

The public names of upstream Snakepit's ``snakepit_bridge`` (v0.13): the
adapter base classes and decorators, ``SessionContext``, and the modules
``session_context``, ``logging_config``, ``telemetry``, ``serialization``,
``heartbeat``, ``otel_tracing``, ``zero_copy``, ``thread_safety_checker``.
"""

__version__ = "0.13.0"

from .base_adapter import BaseAdapter, ToolMetadata, ToolNotFoundError, discover_tools, tool
from .base_adapter_threaded import ThreadSafeAdapter, thread_safe_method
from .elixir_tools import ElixirToolError, ElixirToolNotFoundError
from .heartbeat import HeartbeatClient, HeartbeatConfig
from .logging_config import configure_logging, get_logger
from .session_context import SessionContext
from .zero_copy import ZeroCopyRef
from . import telemetry  # noqa: E402  (upstream: ``from snakepit_bridge import telemetry``)

__all__ = [
    "BaseAdapter",
    "ElixirToolError",
    "ElixirToolNotFoundError",
    "HeartbeatClient",
    "HeartbeatConfig",
    "SessionContext",
    "ThreadSafeAdapter",
    "ToolMetadata",
    "ToolNotFoundError",
    "ZeroCopyRef",
    "__version__",
    "configure_logging",
    "discover_tools",
    "get_logger",
    "telemetry",
    "thread_safe_method",
    "tool",
]
