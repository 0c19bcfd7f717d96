"""Adapter base class, the ``@tool`` decorator and the tool resolver.

An adapter is a class whose ``@tool`` methods Elixir calls by name. The
worker builds one instance per process, then:

1. ``initialize()`` (sync or async), once, before the worker reports ready:
   a model loads there once, and its exception is the pool's start error;
2. for each call, ``set_session_context(ctx)`` when the adapter defines its
   own, then ``execute_tool(tool_name, arguments, ctx)`` when the adapter
   overrides it (it then receives every call), else the ``@tool`` method
   named ``tool_name`` with ``arguments`` as keywords (what the base
   class's ``execute_tool`` does too);
3. ``cleanup()`` (sync or async), once, when the worker stops (pool stop,
   recycling).

``ToolResolver`` is that dispatch, shared by the worker and
``BaseAdapter.call_tool``. Adapters need not subclass ``BaseAdapter``: a
plain class with ``execute_tool`` works (upstream's ``TemplateAdapter``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TypeVar, Union, overload

from .session_context import SessionContext

__all__ = [
    "BaseAdapter",
    "SessionContext",
    "ToolMetadata",
    "ToolNotFoundError",
    "ToolResolver",
    "discover_tools",
    "is_thread_safe_method",
    "is_tool",
    "tool",
]

log = logging.getLogger("snakepit.bridge.base_adapter")

F = TypeVar("F", bound=Callable[..., Any])

# Upstream's attribute names: ``@tool`` sets ``func._tool_metadata``,
# ``@thread_safe_method`` sets ``__thread_safe__`` on its wrapper. Both keep
# the other's attribute, so they stack in either order.
TOOL_METADATA_ATTR = "_tool_metadata"
THREAD_SAFE_ATTR = "__thread_safe__"


@dataclass
class ToolMetadata:
    """What ``@tool`` records about a tool."""

    description: str = ""
    supports_streaming: bool = False
    parameters: List[Dict[str, Any]] = field(default_factory=list)
    required_variables: List[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.parameters is None:
            self.parameters = []
        if self.required_variables is None:
            self.required_variables = []


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


@overload
def tool(func: F) -> F: ...


@overload
def tool(
    func: Optional[str] = None,
    *,
    description: Optional[str] = None,
    supports_streaming: bool = False,
    required_variables: Optional[List[str]] = None,
    parameters: Optional[List[Dict[str, Any]]] = None,
) -> Callable[[F], F]: ...


def tool(
    func: Union[F, str, None] = None,
    *,
    description: Optional[str] = None,
    supports_streaming: bool = False,
    required_variables: Optional[List[str]] = None,
    parameters: Optional[List[Dict[str, Any]]] = None,
) -> Union[F, Callable[[F], F]]:
    """Mark an adapter method as a tool: bare ``@tool``, ``@tool("description")``
    or ``@tool(description=..., supports_streaming=..., required_variables=[...])``.
    The description defaults to the docstring's first line."""
    if isinstance(func, str):
        description = func if description is None else description
        func = None

    def mark(f: F) -> F:
        desc = description
        if not desc:
            doc = (getattr(f, "__doc__", None) or "").strip()
            desc = doc.splitlines()[0] if doc else ""
        metadata = ToolMetadata(
            description=desc,
            supports_streaming=bool(supports_streaming),
            parameters=list(parameters or []),
            required_variables=list(required_variables or []),
        )
        setattr(f, TOOL_METADATA_ATTR, metadata)
        return f

    if func is not None and callable(func):
        return mark(func)
    return mark


def is_tool(func: Any) -> bool:
    return isinstance(getattr(func, TOOL_METADATA_ATTR, None), ToolMetadata)


def is_thread_safe_method(func: Any) -> bool:
    return getattr(func, THREAD_SAFE_ATTR, False) is True


def discover_tools(cls: type) -> Dict[str, Any]:
    """``{name: function}`` for every ``@tool`` method of ``cls``.

    The function is the one the class resolves the name to, so a subclass
    that overrides a tool without re-decorating it removes that tool.
    """
    tools: Dict[str, Any] = {}
    for name in dir(cls):
        if name.startswith("__"):
            continue
        try:
            attr = inspect.getattr_static(cls, name)
        except AttributeError:
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if callable(attr) and is_tool(attr):
            tools[name] = attr
    return tools


def tool_spec(name: str, func: Any) -> Dict[str, Any]:
    metadata: ToolMetadata = getattr(func, TOOL_METADATA_ATTR)
    return {
        "name": name,
        "description": metadata.description,
        "supports_streaming": metadata.supports_streaming,
        "thread_safe": is_thread_safe_method(func),
    }


# --- per-call session context -------------------------------------------------

_UNSET = object()  # nothing bound on this thread
_LAZY = object()  # a call is bound; its SessionContext is built on first use


class _CallLocal(threading.local):
    ctx: Any = _UNSET
    session_id: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None


class ToolResolver:
    """Dispatch of calls to one adapter instance (see the module docstring).

    ``prepare(name, session_id, metadata)`` binds the call's session context
    and returns a function of the arguments dict; it raises
    ``ToolNotFoundError`` for an unknown name unless ``execute_tool`` is
    overridden.
    """

    def __init__(self, adapter: Any) -> None:
        cls = type(adapter)
        self.adapter = adapter
        self.functions = discover_tools(cls)
        self.names: List[str] = sorted(self.functions)
        self._invokers: Dict[str, Callable[[Dict[str, Any]], Any]] = {
            name: self._invoker(getattr(adapter, name)) for name in self.functions
        }
        override = getattr(cls, "execute_tool", None)
        self.override: Optional[Callable[..., Any]] = (
            getattr(adapter, "execute_tool") if override is not None and override is not BaseAdapter.execute_tool else None
        )
        set_context = getattr(cls, "set_session_context", None)
        self._lazy = isinstance(adapter, BaseAdapter) and set_context is BaseAdapter.set_session_context
        if self._lazy:
            self._bind = self._bind_lazily
        elif set_context is not None:
            self._bind = self._bind_by_adapter
        else:
            self._bind = self._bind_nothing

    @staticmethod
    def _invoker(method: Callable[..., Any]) -> Callable[[Dict[str, Any]], Any]:
        return lambda arguments: method(**arguments)

    # Binding: the base class's set_session_context needs no object per call.
    def _bind_lazily(self, session_id: Optional[str], metadata: Optional[Dict[str, Any]]) -> Optional[SessionContext]:
        local = self.adapter._snakepit_local
        local.session_id = session_id
        local.metadata = metadata
        local.ctx = _LAZY
        return None

    def _bind_by_adapter(self, session_id: Optional[str], metadata: Optional[Dict[str, Any]]) -> SessionContext:
        ctx = SessionContext(None, session_id, metadata)
        self.adapter.set_session_context(ctx)
        return ctx

    def _bind_nothing(self, session_id: Optional[str], metadata: Optional[Dict[str, Any]]) -> None:
        return None

    def prepare(
        self, name: str, session_id: Optional[str] = None, metadata: Optional[Dict[str, Any]] = None
    ) -> Callable[[Dict[str, Any]], Any]:
        ctx = self._bind(session_id, metadata)
        override = self.override
        if override is None:
            invoker = self._invokers.get(name)
            if invoker is None:
                raise ToolNotFoundError(name, self.names)
            return invoker
        if ctx is None:
            ctx = self.adapter.session_context if self._lazy else SessionContext(None, session_id, metadata)
        return lambda arguments: override(name, arguments, ctx)

    def method(self, name: str) -> Callable[..., Any]:
        """The bound ``@tool`` method ``name``."""
        if name not in self.functions:
            raise ToolNotFoundError(name, self.names)
        return getattr(self.adapter, name)

    def is_thread_safe(self, name: str) -> bool:
        func = self.functions.get(name)
        if func is not None:
            return is_thread_safe_method(func)
        return self.override is not None and is_thread_safe_method(self.override)


# --- the base class -----------------------------------------------------------


class BaseAdapter:
    """Base class for adapters: ``@tool`` methods, a per-call
    ``session_context`` (per thread, so concurrent calls in the thread
    profile each see their own), and upstream's helpers."""

    __thread_safe__: bool = False

    def __new__(cls, *args: Any, **kwargs: Any) -> "BaseAdapter":
        # State lives here, not in __init__, so subclasses that forget
        # super().__init__() still work.
        self = super().__new__(cls)
        self._snakepit_local = _CallLocal()
        self._snakepit_resolver = None
        self._tools_cache = None
        self._session_context = None
        return self

    def __init__(self) -> None:
        pass

    # --- session context -------------------------------------------------

    @property
    def session_context(self) -> Optional[SessionContext]:
        """This call's ``SessionContext`` (on this thread)."""
        local = self._snakepit_local
        ctx = local.ctx
        if ctx is _LAZY:
            ctx = local.ctx = SessionContext(None, local.session_id, local.metadata)
        elif ctx is _UNSET:
            ctx = local.ctx = SessionContext(None, None)
        return ctx

    @session_context.setter
    def session_context(self, value: Optional[SessionContext]) -> None:
        self._snakepit_local.ctx = value

    @property
    def session_id(self) -> Optional[str]:
        """This call's session id, or None."""
        ctx = self.session_context
        return ctx.session_id if ctx is not None else None

    def set_session_context(self, session_context: Optional[SessionContext]) -> None:
        """Called before each call with its context; overrides should call
        ``super().set_session_context(ctx)`` or set ``self.session_context``."""
        self._session_context = session_context
        self._snakepit_local.ctx = session_context

    # --- tools -------------------------------------------------------------

    def _resolver(self) -> ToolResolver:
        resolver = self._snakepit_resolver
        if resolver is None:
            resolver = self._snakepit_resolver = ToolResolver(self)
        return resolver

    @classmethod
    def get_tool_functions(cls) -> Dict[str, Any]:
        return discover_tools(cls)

    def get_tools(self) -> List[Any]:
        """``ToolRegistration`` messages for this adapter's tools (upstream's
        shape: ``.name``, ``.description``, ``.parameters``, ``.metadata``,
        ``.supports_streaming``), sorted by name."""
        if self._tools_cache is None:
            self._tools_cache = [self._registration(name, func) for name, func in sorted(discover_tools(type(self)).items())]
        return self._tools_cache

    def _registration(self, name: str, func: Any) -> Any:
        import snakepit_bridge_pb2 as pb2

        metadata: ToolMetadata = getattr(func, TOOL_METADATA_ATTR)
        extra = {"adapter_class": type(self).__name__, "module": type(self).__module__}
        if metadata.required_variables:
            extra["required_variables"] = ",".join(metadata.required_variables)
        parameters = []
        for param_name, param in inspect.signature(func).parameters.items():
            if param_name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = param.annotation
            type_name = "any" if annotation is param.empty else str(getattr(annotation, "__name__", annotation)).lower()
            spec = pb2.ParameterSpec(name=param_name, type=type_name, required=param.default is param.empty)
            if param.default is not param.empty:
                try:
                    spec.validation_json = json.dumps({"default": param.default})
                except (TypeError, ValueError):
                    spec.validation_json = json.dumps({"default": repr(param.default)})
            parameters.append(spec)
        return pb2.ToolRegistration(
            name=name,
            description=metadata.description,
            parameters=parameters,
            supports_streaming=metadata.supports_streaming,
            metadata=extra,
        )

    def describe_tools(self) -> List[Dict[str, Any]]:
        funcs = discover_tools(type(self))
        return [tool_spec(name, funcs[name]) for name in sorted(funcs)]

    def call_tool(self, tool_name: str, arguments: Optional[Dict[str, Any]] = None, /, **kwargs: Any) -> Any:
        """Runs the ``@tool`` method ``tool_name`` with ``arguments`` and/or keywords."""
        if arguments:
            kwargs = {**arguments, **kwargs}
        return self._resolver().method(tool_name)(**kwargs)

    def execute_tool(self, tool_name: str, arguments: Dict[str, Any], context: Optional[SessionContext] = None) -> Any:
        """Runs the ``@tool`` method ``tool_name``. Override it to receive
        every call (then ``super().execute_tool(...)`` still dispatches)."""
        if context is not None:
            self._snakepit_local.ctx = context
        return self.call_tool(tool_name, **(arguments or {}))

    # --- registration with Elixir --------------------------------------------

    def register_with_session(self, session_id: str, stub: Any) -> List[str]:
        """Registers this adapter's tools for ``session_id`` through ``stub``.

        A worker reports its tools to Elixir when it starts, so against the
        native runtime (which answers ``RegisterTools`` with UNIMPLEMENTED)
        this returns the tool names without registering anything more.
        """
        request = self._register_request(session_id)
        if request is None:
            return []
        try:
            response = _resolve_response(stub.RegisterTools(request))
        except Exception as exc:
            return self._registration_failed(exc)
        return self._registered(session_id, response)

    async def register_with_session_async(self, session_id: str, stub: Any) -> List[str]:
        """``register_with_session`` for asyncio stubs; never blocks the loop."""
        request = self._register_request(session_id)
        if request is None:
            return []
        try:
            response = stub.RegisterTools(request)
            if inspect.isawaitable(response):
                response = await response
            elif callable(getattr(response, "result", None)):
                response = await asyncio.get_running_loop().run_in_executor(None, response.result)
        except Exception as exc:
            return self._registration_failed(exc)
        return self._registered(session_id, response)

    def _register_request(self, session_id: str) -> Any:
        import snakepit_bridge_pb2 as pb2

        tools = self.get_tools()
        if not tools:
            log.warning("No tools found in adapter %s", type(self).__name__)
            return None
        return pb2.RegisterToolsRequest(session_id=session_id, tools=tools, worker_id=f"python-{id(self)}")

    def _registration_failed(self, exc: Exception) -> List[str]:
        code = getattr(exc, "code", None)
        if callable(code) and getattr(code(), "name", "") == "UNIMPLEMENTED":
            return [t.name for t in self.get_tools()]
        log.error("Error registering tools: %s", exc)
        return []

    def _registered(self, session_id: str, response: Any) -> List[str]:
        if response.success:
            log.info("Registered %d tools for session %s", len(response.tool_ids), session_id)
            return list(response.tool_ids.keys())
        if "duplicate_tool" in (response.error_message or ""):
            return [t.name for t in self.get_tools()]
        log.error("Failed to register tools: %s", response.error_message)
        return []

    # --- Elixir-side tools ---------------------------------------------------

    def call_elixir_tool(self, name: str, /, **kwargs: Any) -> Any:
        return self.session_context.call_elixir_tool(name, **kwargs)

    @property
    def elixir_tools(self) -> Dict[str, Any]:
        return self.session_context.elixir_tools


def _resolve_response(response: Any) -> Any:
    """A gRPC stub's answer, whatever shape it comes in (message, future, callable)."""
    if inspect.isawaitable(response):
        raise RuntimeError("use register_with_session_async with an asyncio stub")
    result = getattr(response, "result", None)
    if callable(result):
        return result()
    if callable(response):
        return response()
    return response
