"""Thread-sensitive calls: tools that must run on the worker's main thread.

Upstream Snakepit runs a call on its event loop's (main) thread instead of
a tool thread when the Elixir side passes ``thread_sensitive: true`` (the
request metadata ``thread_sensitive``) or when ``SNAKEPIT_THREAD_SENSITIVE``
names the call's ``module_path``/``function`` arguments. Libraries that
install signal handlers need it: ``signal.signal`` works on the main
thread only.

The worker's main thread otherwise only waits for SIGTERM, so it serves
these calls: a tool thread hands a call over and waits for its result.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any, Callable, Dict, FrozenSet, Mapping, Optional

from .wire import THREAD_SENSITIVE_KEY

__all__ = ["MainThreadRunner", "ThreadSensitivity"]

ENV_VAR = "SNAKEPIT_THREAD_SENSITIVE"
_TRUTHY = frozenset({"1", "true", "t", "yes", "y", "on"})
_MODULE_ARGS = ("module_path", "python_module", "library")
_FUNCTION_ARGS = ("function", "method")


class ThreadSensitivity:
    """Decides whether a call runs on the main thread: its metadata says
    so, or its arguments name a module (or ``module.function``) listed in
    ``SNAKEPIT_THREAD_SENSITIVE`` (comma-separated), as upstream's do."""

    def __init__(self, listed: Optional[str] = None) -> None:
        raw = os.environ.get(ENV_VAR, "") if listed is None else listed
        self._listed: FrozenSet[str] = frozenset(item.strip() for item in raw.split(",") if item.strip())

    def __call__(self, metadata: Optional[Mapping[str, str]], args: Dict[str, Any]) -> bool:
        if metadata and str(metadata.get(THREAD_SENSITIVE_KEY, "")).strip().lower() in _TRUTHY:
            return True
        if not self._listed or not args:
            return False
        module = next((args[key] for key in _MODULE_ARGS if args.get(key)), None)
        if not isinstance(module, str):
            return False
        if module in self._listed:
            return True
        function = next((args[key] for key in _FUNCTION_ARGS if args.get(key)), None)
        return isinstance(function, str) and f"{module}.{function}" in self._listed


class _Handoff:
    """One call handed to the main thread, and its outcome."""

    __slots__ = ("func", "done", "value", "error")

    def __init__(self, func: Optional[Callable[[], Any]]) -> None:
        self.func = func
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            if self.func is not None:
                self.value = self.func()
        except BaseException as exc:  # the tool's own error goes back to its caller
            self.error = exc
        finally:
            self.func = None
            self.done.set()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.value


class MainThreadRunner:
    """Runs handed-over calls on the thread that calls ``serve_until``."""

    def __init__(self) -> None:
        self._calls: "queue.SimpleQueue[_Handoff]" = queue.SimpleQueue()

    def run(self, func: Callable[[], Any]) -> Any:
        """``func()`` run on the main thread; its exception is raised here."""
        if threading.current_thread() is threading.main_thread():
            return func()
        handoff = _Handoff(func)
        self._calls.put(handoff)
        return handoff.result()

    def serve_until(self, done: threading.Event, timeout: Optional[float] = None) -> bool:
        """Serves handed-over calls until ``done`` is set (True) or
        ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not done.is_set():
            # A helper thread turns the event (or the timeout) into a queue
            # item, so the loop blocks on one thing. An item left by an
            # earlier call's helper is a no-op.
            threading.Thread(target=self._wake_when, args=(done, timeout), name="snakepit-main-waker", daemon=True).start()
        while not done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._calls.get().run()
        return True

    def _wake_when(self, done: threading.Event, timeout: Optional[float]) -> None:
        done.wait(timeout)
        self._calls.put(_Handoff(None))
