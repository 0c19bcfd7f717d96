"""Python side of Snakepit native: adapters and tools run by grpc_server.py."""

from .base_adapter import (
    BaseAdapter,
    SessionContext,
    ToolNotFoundError,
    discover_tools,
    tool,
)
from .base_adapter_threaded import ThreadSafeAdapter, thread_safe_method
from .elixir_tools import ElixirToolError

__all__ = [
    "BaseAdapter",
    "ElixirToolError",
    "SessionContext",
    "ThreadSafeAdapter",
    "ToolNotFoundError",
    "discover_tools",
    "thread_safe_method",
    "tool",
]
