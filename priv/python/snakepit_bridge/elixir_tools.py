"""Calls from Python tools to Elixir functions registered with
``Snakepit.Bridge.ToolRegistry``.

The worker reaches the native runtime's tool server over the Unix socket
named by ``SNAKEPIT_ELIXIR_SOCKET``; one channel per process is shared by
all threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional

from . import json_codec

JSON_TYPE_URL = "type.googleapis.com/snakepit.json"
DEFAULT_TIMEOUT_S = 60.0

_lock = threading.Lock()
_stub: Optional[Any] = None


class ElixirToolError(RuntimeError):
    """An Elixir tool raised, timed out, or does not exist."""


def _get_stub() -> Any:
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


def call(session_id: str, name: str, arguments: Dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """Runs Elixir tool ``name`` of ``session_id`` and returns its result."""
    import grpc
    import snakepit_bridge_pb2 as pb2

    request = pb2.ExecuteElixirToolRequest(session_id=session_id or "", tool_name=name)
    for key, value in arguments.items():
        request.parameters[key].type_url = JSON_TYPE_URL
        request.parameters[key].value = json_codec.encode(value, key).encode()
    try:
        response = _get_stub().ExecuteElixirTool(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise ElixirToolError(f"Elixir tool {name!r} could not be called: {exc.details()}") from None
    if not response.success:
        raise ElixirToolError(response.error_message)
    raw = response.result.value
    return json_codec.decode(raw.decode()) if raw else None


def list_tools(session_id: str, timeout: float = DEFAULT_TIMEOUT_S) -> List[Dict[str, str]]:
    """The Elixir tools of ``session_id`` that are exposed to Python."""
    import grpc
    import snakepit_bridge_pb2 as pb2

    try:
        response = _get_stub().GetExposedElixirTools(
            pb2.GetExposedElixirToolsRequest(session_id=session_id or ""), timeout=timeout
        )
    except grpc.RpcError as exc:
        raise ElixirToolError(f"Elixir tools could not be listed: {exc.details()}") from None
    return [{"name": tool.name, "description": tool.description} for tool in response.tools]
