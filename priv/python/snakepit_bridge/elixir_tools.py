"""Calls from Python to Elixir functions registered with
``Snakepit.Bridge.ToolRegistry`` (``SessionContext.call_elixir_tool``).

A worker reaches the native runtime's private socket, named by
``SNAKEPIT_ELIXIR_SOCKET``; one channel per process is shared by all
threads (and carries the worker's telemetry too).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional

from . import json_codec
from .wire import JSON_TYPE_URL

__all__ = ["ElixirToolError", "ElixirToolNotFoundError", "call", "get_stub", "list_tools"]

DEFAULT_TIMEOUT_S = 60.0

_lock = threading.Lock()
_stub: Optional[Any] = None


class ElixirToolError(RuntimeError):
    """An Elixir tool raised, timed out, or could not be reached."""


class ElixirToolNotFoundError(ElixirToolError, ValueError):
    """No Elixir tool of that name is registered for the session (a ValueError, as upstream)."""


def get_stub() -> Any:
    """The process's ``BridgeServiceStub`` to the native runtime."""
    global _stub
    with _lock:
        if _stub is None:
            path = os.environ.get("SNAKEPIT_ELIXIR_SOCKET")
            if not path:
                raise ElixirToolError(
                    "Elixir tools are only reachable inside a Snakepit worker "
                    "(SNAKEPIT_ELIXIR_SOCKET is not set)"
                )
            import grpc
            import snakepit_bridge_pb2_grpc as pb2_grpc

            channel = grpc.insecure_channel(
                "unix:" + path,
                options=[
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.max_send_message_length", -1),
                ],
            )
            _stub = pb2_grpc.BridgeServiceStub(channel)
        return _stub


def call(
    stub: Optional[Any],
    session_id: str,
    name: str,
    arguments: Dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Any:
    """Runs Elixir tool ``name`` of ``session_id``; ``ElixirToolNotFoundError``
    when it is not registered, ``ElixirToolError`` when it fails."""
    import grpc
    import snakepit_bridge_pb2 as pb2

    stub = stub if stub is not None else get_stub()
    request = pb2.ExecuteElixirToolRequest(session_id=session_id or "", tool_name=name)
    for key, value in arguments.items():
        request.parameters[key].type_url = JSON_TYPE_URL
        request.parameters[key].value = json_codec.encode(value, key).encode()
    try:
        response = stub.ExecuteElixirTool(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise ElixirToolError(f"Elixir tool {name!r} could not be called: {exc.details()}") from None
    if not response.success:
        if response.metadata.get("error_kind") == "not_found":
            # Only a missing tool costs a second round trip, for the message.
            try:
                available: Optional[List[str]] = [tool["name"] for tool in list_tools(stub, session_id, timeout)]
            except ElixirToolError:
                available = None
            listed = f" Available tools: {sorted(available)}" if available is not None else ""
            raise ElixirToolNotFoundError(f"Elixir tool '{name}' not found.{listed}")
        raise ElixirToolError(response.error_message)
    raw = response.result.value
    return json_codec.decode(raw.decode()) if raw else None


def list_tools(stub: Optional[Any], session_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> List[Dict[str, Any]]:
    """The Elixir tools of ``session_id`` that are exposed to Python."""
    import grpc
    import snakepit_bridge_pb2 as pb2

    stub = stub if stub is not None else get_stub()
    try:
        response = stub.GetExposedElixirTools(
            pb2.GetExposedElixirToolsRequest(session_id=session_id or ""), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise ElixirToolError(f"Elixir tools could not be listed: {exc.details()}") from None
    return [
        {"name": tool.name, "description": tool.description, "parameters": {p.name: p.type for p in tool.parameters}}
        for tool in response.tools
    ]
