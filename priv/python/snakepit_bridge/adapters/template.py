"""A starting point for your own adapter (copy it, rename the class).

It shows the whole lifecycle without doing anything: ``initialize()`` runs
once per worker before it reports ready (load models there), the
``set_session_context(ctx)`` hook runs before each call, ``execute_tool``
receives every call, ``cleanup()`` runs when the worker stops. Most
adapters instead subclass ``BaseAdapter`` and mark methods with ``@tool``
(see ``showcase``); an adapter need not subclass anything, as this one
shows. Calling it answers with ``NotImplementedError`` naming the tool.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from snakepit_bridge.logging_config import get_logger
from snakepit_bridge.session_context import SessionContext

__all__ = ["TemplateAdapter"]

logger = get_logger(__name__)


class TemplateAdapter:
    """A template: implement ``execute_tool`` (or use ``BaseAdapter`` and ``@tool``)."""

    def __init__(self) -> None:
        self.session_context: Optional[SessionContext] = None
        self.initialized = False

    def set_session_context(self, session_context: SessionContext) -> None:
        self.session_context = session_context

    async def initialize(self) -> None:
        """Once per worker, before it is ready: load models, open clients."""
        self.initialized = True
        logger.info("TemplateAdapter initialized")

    async def cleanup(self) -> None:
        """Once, when the worker stops: close what initialize opened."""
        self.initialized = False
        logger.info("TemplateAdapter cleaned up")

    def get_info(self) -> Dict[str, Any]:
        return {
            "adapter": "TemplateAdapter",
            "version": "0.1.0",
            "template": True,
            "initialized": self.initialized,
            "session_id": self.session_context.session_id if self.session_context else None,
            "warning": "This is a template - implement execute_tool() for functionality",
            "reference": "See ShowcaseAdapter for complete implementation",
        }

    def execute_tool(self, tool_name: str, arguments: Dict[str, Any], context: SessionContext) -> Any:
        """Receives every call. Replace the body with your tools, e.g.
        ``if tool_name == "predict": return self.model(arguments["x"])``."""
        raise NotImplementedError(
            f"TemplateAdapter does not implement tools (called: {tool_name!r}). "
            "This is a template - you must implement execute_tool(). "
            "See ShowcaseAdapter for a complete example."
        )
