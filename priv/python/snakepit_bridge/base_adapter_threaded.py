"""Thread-safe adapter base for the ``thread`` worker profile.

In that profile several tool calls run at once on real threads of one
process, sharing one adapter instance. Adapters declare that they are built
for it with ``__thread_safe__ = True`` (inherited from ``ThreadSafeAdapter``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, TypeVar

from .base_adapter import THREAD_SAFE_ATTR, BaseAdapter, tool

__all__ = ["ThreadSafeAdapter", "thread_safe_method", "tool"]

F = TypeVar("F", bound=Callable[..., Any])


def thread_safe_method(func: F) -> F:
    """Mark a method as safe to run on several threads at once.

    Only sets an attribute on ``func`` and returns it, so it stacks with
    ``@tool`` in either order.
    """
    setattr(func, THREAD_SAFE_ATTR, True)
    return func


class _ThreadStore(threading.local):
    def __init__(self) -> None:
        self.values: Dict[str, Any] = {}


class ThreadSafeAdapter(BaseAdapter):
    __thread_safe__ = True

    def __new__(cls, *args: Any, **kwargs: Any) -> "ThreadSafeAdapter":
        self = super().__new__(cls, *args, **kwargs)
        self._snakepit_lock = threading.RLock()
        self._snakepit_thread_store = _ThreadStore()
        return self

    def get_thread_local(self, key: str, default: Any = None) -> Any:
        """Value stored for ``key`` on this thread; stores ``default`` if absent."""
        values = self._snakepit_thread_store.values
        try:
            return values[key]
        except KeyError:
            values[key] = default
            return default

    def set_thread_local(self, key: str, value: Any) -> None:
        self._snakepit_thread_store.values[key] = value

    @contextlib.contextmanager
    def acquire_lock(self) -> Iterator[None]:
        """``with self.acquire_lock():`` holds the adapter-wide RLock."""
        with self._snakepit_lock:
            yield
