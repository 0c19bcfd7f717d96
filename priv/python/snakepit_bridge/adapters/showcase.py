"""Default adapter: small, stateless tools used by examples and tests.

Module path: ``snakepit_bridge.adapters.showcase.ShowcaseAdapter``.
Every tool is stateless, so all are marked ``@thread_safe_method``.
"""

from __future__ import annotations

import builtins
import os
import platform
import sys
import time
from typing import Any, Dict, Iterator, Optional

from ..base_adapter_threaded import ThreadSafeAdapter, thread_safe_method, tool

__all__ = ["ShowcaseAdapter"]


class ShowcaseAdapter(ThreadSafeAdapter):
    __thread_safe__ = True

    @tool(description="Answer with a message, a timestamp and the worker pid")
    @thread_safe_method
    def ping(self, message: str = "pong") -> Dict[str, Any]:
        return {"message": message, "timestamp": time.time(), "pid": os.getpid()}

    @tool(description="Return the arguments as given")
    @thread_safe_method
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        return kwargs

    @tool(description="Return a bytes argument as-is (binary round trip)")
    @thread_safe_method
    def echo_bytes(self, data: bytes) -> bytes:
        return data

    @tool(description="a + b")
    @thread_safe_method
    def add(self, a: Any, b: Any) -> Any:
        return a + b

    @tool(description="Adapter name, pid, Python version and tool names")
    @thread_safe_method
    def adapter_info(self) -> Dict[str, Any]:
        return {
            "adapter": type(self).__name__,
            "pid": os.getpid(),
            "python_version": platform.python_version(),
            "tools": self.get_tools(),
        }

    @tool(description="Transform text: upper, lower, reverse or length")
    @thread_safe_method
    def process_text(self, text: str, operation: str = "upper") -> Dict[str, Any]:
        if operation == "upper":
            result: Any = text.upper()
        elif operation == "lower":
            result = text.lower()
        elif operation == "reverse":
            result = text[::-1]
        elif operation == "length":
            result = len(text)
        else:
            raise ValueError(
                f"Unknown operation {operation!r}; expected upper, lower, reverse or length"
            )
        return {"result": result, "operation": operation}

    @tool(description="Yield count items", supports_streaming=True)
    @thread_safe_method
    def stream_data(self, count: int = 5, delay: float = 0.0) -> Iterator[Dict[str, Any]]:
        for i in range(count):
            if delay and i:
                time.sleep(delay)
            yield {"index": i, "data": f"item_{i}"}

    @tool(description="Raise a builtin exception type with a message")
    @thread_safe_method
    def raise_error(self, message: str = "boom", error_type: str = "ValueError") -> None:
        exc_type = getattr(builtins, error_type, None)
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise ValueError(f"{error_type!r} is not a builtin exception type: {message}")
        if not issubclass(exc_type, Exception):
            # SystemExit/KeyboardInterrupt would take the worker down.
            raise ValueError(f"refusing to raise {error_type}: {message}")
        raise exc_type(message)

    @tool(description="Sleep ms milliseconds; return pid and start/end times")
    @thread_safe_method
    def sleep(self, ms: float) -> Dict[str, Any]:
        t0 = time.time()
        time.sleep(ms / 1000.0)
        return {"pid": os.getpid(), "start": t0, "end": time.time()}

    @tool(description="The worker's OS pid")
    @thread_safe_method
    def get_pid(self) -> int:
        return os.getpid()

    @tool(description="Value of an environment variable, or null")
    @thread_safe_method
    def env(self, name: str) -> Optional[str]:
        return os.environ.get(name)

    @tool(description="Write a line to stdout or stderr")
    @thread_safe_method
    def log(self, message: str, stream: str = "stderr") -> bool:
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(f"{message}\n")
        out.flush()
        return True
