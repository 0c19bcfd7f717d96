"""The default adapter: every tool upstream's examples call, with upstream's
result shapes, organised by domain (``handlers``).

Thread-safe (shared state is per session, under locks), so it serves the
thread profile too. A tool named ``cleanup`` (upstream's session cleanup)
is a tool, not the adapter's shutdown hook: the worker calls ``cleanup()``
at shutdown only when it is not a ``@tool``.
"""

from __future__ import annotations

from typing import Any, Dict

from ...base_adapter import tool
from ...base_adapter_threaded import ThreadSafeAdapter, thread_safe_method
from .handlers import (
    BasicOpsHandler,
    BinaryOpsHandler,
    ConcurrentOpsHandler,
    MLWorkflowHandler,
    SessionOpsHandler,
    StreamingOpsHandler,
)

__all__ = ["ShowcaseAdapter"]


class ShowcaseAdapter(
    BasicOpsHandler,
    SessionOpsHandler,
    BinaryOpsHandler,
    StreamingOpsHandler,
    ConcurrentOpsHandler,
    MLWorkflowHandler,
    ThreadSafeAdapter,
):
    __thread_safe__ = True

    @tool(description="Demonstrate integration with Elixir tools", required_variables=["elixir_tools_enabled"])
    @thread_safe_method
    def call_elixir_demo(self, tool_name: str, **kwargs: Any) -> Dict[str, Any]:
        ctx = self.session_context
        if ctx is None:
            raise RuntimeError("Session context not initialized")
        tools = ctx.elixir_tools
        if tool_name not in tools:
            return {
                "error": f"Elixir tool {tool_name} not found",
                "available_tools": list(tools),
                "hint": "Make sure the tool is registered in Elixir with exposed_to_python: true",
            }
        return {
            "tool": tool_name,
            "result": ctx.call_elixir_tool(tool_name, **kwargs),
            "source": "elixir",
            "message": f"Successfully called Elixir tool: {tool_name}",
        }
