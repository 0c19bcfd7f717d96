"""The per-call context an adapter sees (``self.session_context``).

Built for each call by the worker: ``session_id`` (the Elixir call's
session, or None), ``request_metadata`` (the call's metadata, e.g. its
``correlation_id``), ``elixir_tools`` and ``call_elixir_tool`` for the
Elixir functions registered for the session. Sessions themselves live in
Elixir (their TTL ends them), so ``cleanup()`` only drops what this context
cached.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from . import elixir_tools as _transport

__all__ = ["ElixirToolProxy", "SessionContext"]

log = logging.getLogger("snakepit.bridge.session_context")


class ElixirToolProxy(dict):
    """One entry of ``elixir_tools``: ``{"name", "description", "parameters"}``,
    also callable: ``ctx.elixir_tools["lookup"](sku="A-1")``."""

    def __init__(self, context: "SessionContext", spec: Dict[str, Any]) -> None:
        super().__init__(spec)
        self._context = context
        self.__doc__ = spec.get("description") or None

    def __call__(self, **kwargs: Any) -> Any:
        return self._context.call_elixir_tool(self["name"], **kwargs)


class SessionContext:
    """``SessionContext(stub, session_id, request_metadata=None)``; ``stub``
    None means this worker's own connection to Elixir."""

    __slots__ = ("_stub", "session_id", "request_metadata", "_elixir_tools")

    def __init__(
        self, stub: Any, session_id: Optional[str], request_metadata: Optional[Dict[str, Any]] = None
    ) -> None:
        self._stub = stub
        self.session_id = session_id
        self.request_metadata: Dict[str, Any] = dict(request_metadata or {})
        self._elixir_tools: Optional[Dict[str, ElixirToolProxy]] = None

    @property
    def stub(self) -> Any:
        """The gRPC stub calls to Elixir go through."""
        if self._stub is None:
            self._stub = _transport.get_stub()
        return self._stub

    @property
    def elixir_tools(self) -> Dict[str, ElixirToolProxy]:
        """The session's Elixir tools exposed to Python, by name (loaded once
        per context; ``{}`` with a warning when they cannot be loaded, e.g.
        Elixir is unreachable or the channel is closed: listing is best
        effort, as upstream's)."""
        if self._elixir_tools is None:
            try:
                tools = _transport.list_tools(self._stub, self.session_id or "")
            except Exception as exc:
                log.warning("Failed to load Elixir tools (%s): %s", type(exc).__name__, exc)
                return {}
            self._elixir_tools = {tool["name"]: ElixirToolProxy(self, tool) for tool in tools}
        return self._elixir_tools

    def call_elixir_tool(self, tool_name: str, /, **kwargs: Any) -> Any:
        """Runs Elixir tool ``tool_name`` with ``kwargs``: ``ValueError``
        (``ElixirToolNotFoundError``) when it is not registered for the
        session, ``RuntimeError`` (``ElixirToolError``) when it fails."""
        return _transport.call(self._stub, self.session_id or "", tool_name, kwargs)

    def cleanup(self) -> None:
        """Drops what this context cached; the session itself ends in Elixir (TTL)."""
        self._elixir_tools = None

    def __enter__(self) -> "SessionContext":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.cleanup()
        return False

    def __repr__(self) -> str:
        return f"SessionContext(session_id={self.session_id!r})"
