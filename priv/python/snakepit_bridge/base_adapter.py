"""Adapter base class, the ``@tool`` decorator and tool discovery.

An adapter is a plain Python class whose methods marked with ``@tool`` are
callable from Elixir by name. One instance is built per worker process at
startup and reused for every call.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union, overload

__all__ = [
    "BaseAdapter",
    "SessionContext",
    "ToolNotFoundError",
    "tool",
    "discover_tools",
    "is_tool",
    "is_thread_safe_method",
]

F = TypeVar("F", bound=Callable[..., Any])

# Attribute names set on decorated functions. Decorators only set attributes on
# the function object they receive and return that same object, so ``@tool``
# and ``@thread_safe_method`` stack in either order.
TOOL_ATTR = "_snakepit_tool"
TOOL_DESCRIPTION_ATTR = "_snakepit_tool_description"
TOOL_STREAMING_ATTR = "_snakepit_tool_supports_streaming"
THREAD_SAFE_ATTR = "_snakepit_thread_safe"


class ToolNotFoundError(KeyError):
    """Raised when a tool name matches no tool of the adapter."""

    def __init__(self, tool_name: str, available: List[str]) -> None:
        self.tool_name = tool_name
        self.available = list(available)
        listed = ", ".join(self.available) if self.available else "(none)"
        self.message = f"Unknown tool '{tool_name}'. Available tools: {listed}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.message


class SessionContext:
    """Per-call context handed to tools (``self.session_context``)."""

    __slots__ = ("session_id",)

    def __init__(self, session_id: Optional[str] = None) -> None:
        self.session_id = session_id

    def call_elixir_tool(self, name: str, /, **kwargs: Any) -> Any:
        """Runs the Elixir tool ``name`` registered for this session.

        Raises ``ElixirToolError`` with the Elixir side's message when the
        tool raises, times out or is unknown.
        """
        from .elixir_tools import call

        return call(self.session_id or "", name, kwargs)

    @property
    def elixir_tools(self) -> Dict[str, Dict[str, str]]:
        """The Elixir tools exposed to this session, by name."""
        from .elixir_tools import list_tools

        return {tool["name"]: tool for tool in list_tools(self.session_id or "")}

    def __repr__(self) -> str:
        return f"SessionContext(session_id={self.session_id!r})"


@overload
def tool(func: F) -> F: ...


@overload
def tool(
    func: Optional[str] = None,
    *,
    description: Optional[str] = None,
    supports_streaming: bool = False,
) -> Callable[[F], F]: ...


def tool(
    func: Union[F, str, None] = None,
    *,
    description: Optional[str] = None,
    supports_streaming: bool = False,
) -> Union[F, Callable[[F], F]]:
    """Mark an adapter method as a tool.

    Usable bare (``@tool``), with keywords
    (``@tool(description="...", supports_streaming=True)``) or with the
    description as the only positional argument (``@tool("...")``).
    """
    if isinstance(func, str):
        if description is None:
            description = func
        func = None

    def mark(f: F) -> F:
        desc = description
        if desc is None:
            doc = (getattr(f, "__doc__", None) or "").strip()
            desc = doc.splitlines()[0] if doc else ""
        setattr(f, TOOL_ATTR, True)
        setattr(f, TOOL_DESCRIPTION_ATTR, desc)
        setattr(f, TOOL_STREAMING_ATTR, bool(supports_streaming))
        return f

    if func is not None and callable(func):
        return mark(func)
    return mark


def is_tool(func: Any) -> bool:
    return getattr(func, TOOL_ATTR, False) is True


def is_thread_safe_method(func: Any) -> bool:
    return getattr(func, THREAD_SAFE_ATTR, False) is True


def discover_tools(cls: type) -> Dict[str, Any]:
    """Return ``{name: function}`` for every ``@tool`` method of ``cls``.

    The function is the one the class resolves the name to, so a subclass that
    overrides a tool without re-decorating it removes that tool.
    """
    tools: Dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("__"):
            continue
        try:
            attr = getattr(cls, name)
        except Exception:  # a descriptor that fails on the class
            continue
        if callable(attr) and is_tool(attr):
            tools[name] = attr
    return tools


def tool_spec(name: str, func: Any) -> Dict[str, Any]:
    return {
        "name": name,
        "description": getattr(func, TOOL_DESCRIPTION_ATTR, ""),
        "supports_streaming": getattr(func, TOOL_STREAMING_ATTR, False),
        "thread_safe": is_thread_safe_method(func),
    }


class _SessionLocal(threading.local):
    context: Optional[SessionContext] = None


class BaseAdapter:
    """Base class for adapters.

    Subclasses mark tools with ``@tool``; ``call_tool`` dispatches
    ``tool_name -> method(**arguments)``. A subclass may define
    ``execute_tool(self, tool_name, arguments, context)`` as a fallback for
    names that are not ``@tool`` methods.
    """

    __thread_safe__: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> "BaseAdapter":
        # State lives here, not in __init__, so subclasses that forget
        # super().__init__() still work.
        self = super().__new__(cls)
        self._snakepit_session_local = _SessionLocal()
        self._snakepit_bound_tools = None
        return self

    # --- session context (per thread) ------------------------------------

    @property
    def session_context(self) -> SessionContext:
        local = self._snakepit_session_local
        ctx = local.context
        if ctx is None:
            ctx = SessionContext(None)
            local.context = ctx
        return ctx

    @session_context.setter
    def session_context(self, value: SessionContext) -> None:
        self._snakepit_session_local.context = value

    def _snakepit_set_session(self, session_id: Optional[str]) -> SessionContext:
        ctx = SessionContext(session_id)
        self._snakepit_session_local.context = ctx
        return ctx

    # --- tools -------------------------------------------------------------

    @classmethod
    def get_tool_functions(cls) -> Dict[str, Any]:
        return discover_tools(cls)

    def get_tools(self) -> List[str]:
        """Sorted names of this adapter's ``@tool`` methods."""
        return sorted(self._bound_tools())

    def describe_tools(self) -> List[Dict[str, Any]]:
        funcs = discover_tools(type(self))
        return [tool_spec(name, funcs[name]) for name in sorted(funcs)]

    def _bound_tools(self) -> Dict[str, Callable[..., Any]]:
        bound = self._snakepit_bound_tools
        if bound is None:
            bound = {name: getattr(self, name) for name in discover_tools(type(self))}
            self._snakepit_bound_tools = bound
        return bound

    def call_tool(
        self,
        tool_name: str,
        arguments: Optional[Dict[str, Any]] = None,
        session_id: Optional[str] = None,
    ) -> Any:
        """Run a tool by name; sets the session context for this thread."""
        ctx = self._snakepit_set_session(session_id)
        method = self._bound_tools().get(tool_name)
        if method is not None:
            return method(**(arguments or {}))
        fallback = getattr(self, "execute_tool", None)
        if fallback is not None:
            return fallback(tool_name, arguments or {}, ctx)
        raise ToolNotFoundError(tool_name, self.get_tools())

    # --- Elixir-side tools (later issue) -----------------------------------

    def call_elixir_tool(self, name: str, /, **kwargs: Any) -> Any:
        return self.session_context.call_elixir_tool(name, **kwargs)

    @property
    def elixir_tools(self) -> Dict[str, Any]:
        return self.session_context.elixir_tools
