"""Thread-safe adapters for the ``thread`` worker profile.

There, several calls run at once on real threads of one process, sharing
one adapter instance. An adapter declares it is built for that with
``__thread_safe__ = True`` (inherited from ``ThreadSafeAdapter``); the pool
refuses to start other adapters in that profile. The three patterns:
shared read-only state (loaded once in ``__init__`` / ``initialize``),
per-thread state (``get_thread_local`` / ``set_thread_local``), and shared
mutable state written under ``with self.acquire_lock():``.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

from .base_adapter import THREAD_SAFE_ATTR, BaseAdapter, ToolMetadata, tool

__all__ = [
    "RequestTracker",
    "ThreadLocalStorage",
    "ThreadSafeAdapter",
    "ToolMetadata",
    "require_thread_safe",
    "thread_safe_method",
    "tool",
    "validate_thread_safety",
]

log = logging.getLogger("snakepit.bridge.base_adapter_threaded")

F = TypeVar("F", bound=Callable[..., Any])


class ThreadLocalStorage:
    """Values stored per thread."""

    def __init__(self) -> None:
        self._storage = threading.local()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self._storage, key, default)

    def set(self, key: str, value: Any) -> None:
        setattr(self._storage, key, value)

    def delete(self, key: str) -> None:
        try:
            delattr(self._storage, key)
        except AttributeError:
            pass

    def clear(self) -> None:
        self._storage.__dict__.clear()


class RequestTracker:
    """Counts requests per thread and those running now."""

    def __init__(self) -> None:
        self.requests_by_thread: Dict[int, int] = defaultdict(int)
        self.active_requests: Dict[int, int] = defaultdict(int)
        self.total_requests = 0
        self.lock = threading.Lock()

    def start_request(self, thread_id: Optional[int] = None) -> int:
        """Marks a request started on ``thread_id`` (default: this thread); returns its number."""
        if thread_id is None:
            thread_id = threading.get_ident()
        with self.lock:
            self.total_requests += 1
            self.requests_by_thread[thread_id] += 1
            self.active_requests[thread_id] += 1
            return self.total_requests

    def end_request(self, thread_id: Optional[int] = None) -> None:
        if thread_id is None:
            thread_id = threading.get_ident()
        with self.lock:
            if self.active_requests[thread_id] > 0:
                self.active_requests[thread_id] -= 1

    def get_stats(self) -> Dict[str, int]:
        with self.lock:
            return {
                "total_requests": self.total_requests,
                "active_threads": sum(1 for count in self.active_requests.values() if count > 0),
                "total_active_requests": sum(self.active_requests.values()),
                "threads_seen": len(self.requests_by_thread),
            }


def thread_safe_method(func: F) -> F:
    """Marks a method safe to run on several threads at once and, on a
    ``ThreadSafeAdapter``, counts its calls in the adapter's ``_tracker``.

    Stacks with ``@tool`` in either order.
    """

    @functools.wraps(func)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        tracker = getattr(self, "_tracker", None)
        if tracker is None:
            return func(self, *args, **kwargs)
        thread_id = threading.get_ident()
        number = tracker.start_request(thread_id)
        started = time.perf_counter()
        try:
            return func(self, *args, **kwargs)
        except Exception:
            log.debug("request #%d (%s) failed after %.3fs", number, func.__name__, time.perf_counter() - started)
            raise
        finally:
            tracker.end_request(thread_id)

    setattr(wrapper, THREAD_SAFE_ATTR, True)
    return wrapper  # type: ignore[return-value]


class ThreadSafeAdapter(BaseAdapter):
    """Base class of adapters for the thread profile: ``_lock`` (an RLock),
    ``_thread_local`` (``ThreadLocalStorage``), ``_tracker``
    (``RequestTracker``) and helpers over them."""

    __thread_safe__ = True

    def __new__(cls, *args: Any, **kwargs: Any) -> "ThreadSafeAdapter":
        self = super().__new__(cls, *args, **kwargs)
        self._lock = threading.RLock()
        self._thread_local = ThreadLocalStorage()
        self._tracker = RequestTracker()
        return self

    @contextmanager
    def acquire_lock(self) -> Iterator[None]:
        """``with self.acquire_lock():`` holds the adapter-wide (reentrant) lock."""
        with self._lock:
            yield

    def get_thread_local(self, key: str, default: Any = None) -> Any:
        """This thread's value for ``key``; ``default`` (stored) when it has none."""
        value = self._thread_local.get(key, _MISSING)
        if value is _MISSING:
            self._thread_local.set(key, default)
            return default
        return value

    def set_thread_local(self, key: str, value: Any) -> None:
        self._thread_local.set(key, value)

    def clear_thread_local(self, key: Optional[str] = None) -> None:
        """Clears ``key``, or every value of this thread."""
        if key is None:
            self._thread_local.clear()
        else:
            self._thread_local.delete(key)

    def get_stats(self) -> Dict[str, Any]:
        return {
            "adapter_class": type(self).__name__,
            "thread_safe": self.__thread_safe__,
            "tracker": self._tracker.get_stats(),
        }

    @contextmanager
    def track_request(self, request_id: Optional[str] = None) -> Iterator[int]:
        """``with self.track_request():`` counts the block as a request."""
        number = self._tracker.start_request()
        try:
            yield number
        finally:
            self._tracker.end_request()


_MISSING = object()


def require_thread_safe(func: F) -> F:
    """For ``func(adapter, ...)``: raises ValueError unless the adapter declares thread safety."""

    @functools.wraps(func)
    def wrapper(adapter: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(adapter, "__thread_safe__", False) is not True:
            raise ValueError(
                f"Adapter {type(adapter).__name__} is not thread-safe. "
                "Set __thread_safe__ = True if adapter supports concurrent access."
            )
        return func(adapter, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def validate_thread_safety(adapter_class: type) -> bool:
    """Whether ``adapter_class`` declares ``__thread_safe__ = True``."""
    return getattr(adapter_class, "__thread_safe__", False) is True
