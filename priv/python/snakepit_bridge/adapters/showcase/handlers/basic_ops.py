"""Basic tools: ping, echo, add, errors, adapter info, text, telemetry and
serialization demos (upstream's result shapes), plus small tools the
examples and tests use (echo_bytes, raise_error, sleep, get_pid, env, log)."""

from __future__ import annotations

import builtins
import os
import resource
import sys
import time
import uuid
from datetime import date, datetime
from typing import Any, Dict, Optional

from .... import telemetry
from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method

ADAPTER_VERSION = "2.0.0"
HANDLERS = [
    "BasicOpsHandler",
    "SessionOpsHandler",
    "BinaryOpsHandler",
    "StreamingOpsHandler",
    "ConcurrentOpsHandler",
    "MLWorkflowHandler",
]

_TEXT_OPERATIONS = {
    "upper": str.upper,
    "lower": str.lower,
    "reverse": lambda text: text[::-1],
    "length": len,
}


def process_memory_mb() -> float:
    """Resident memory of this process in MB (/proc, else the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024, 2)
    except (OSError, ValueError, IndexError):
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 2)


def cpu_percent(interval: float = 0.1) -> float:
    """This process's CPU use over ``interval`` seconds, in percent of one core."""
    start_cpu, start = time.process_time(), time.perf_counter()
    time.sleep(interval)
    return round((time.process_time() - start_cpu) / (time.perf_counter() - start) * 100, 1)


class _CustomResponse:
    """No conversion method: becomes the unserializable marker."""

    def __init__(self, status: int, data: str) -> None:
        self.status = status
        self.data = data

    def __repr__(self) -> str:
        return f"CustomResponse(status={self.status})"


class _ApiResponse:
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message

    def to_dict(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message}


class _PydanticLike:
    def __init__(self, field1: str, field2: str) -> None:
        self.field1 = field1
        self.field2 = field2

    def model_dump(self) -> Dict[str, Any]:
        return {"field1": self.field1, "field2": self.field2}


class _InternalClient:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._api_key = "sk-secret-key-12345"

    def __repr__(self) -> str:  # what a careless repr would leak
        return f"InternalClient(endpoint={self.endpoint}, api_key={self._api_key})"


class _ServiceResponse:
    def __init__(self, data: Dict[str, Any], metadata: Dict[str, Any]) -> None:
        self.id = f"resp-{uuid.uuid4().hex[:8]}"
        self.data = data
        self.metadata = metadata
        self.created = datetime.now()

    def model_dump(self) -> Dict[str, Any]:
        return {"id": self.id, "data": self.data, "metadata": self.metadata, "created": self.created.isoformat()}


class _QueryResult:
    def __init__(self, value: str, score: Optional[float] = None) -> None:
        self.value = value
        self.score = score

    def to_dict(self) -> Dict[str, Any]:
        return {"value": self.value, "score": self.score}


class _RequestLog:
    """No conversion method: becomes the unserializable marker."""

    def __init__(self, request_id: str, payload: Dict[str, Any], response: _ServiceResponse) -> None:
        self.request_id = request_id
        self.payload = payload
        self.response = response
        self.timestamp = datetime.now()

# Upstream's names for the demo classes, as the marker's __type__ shows them.
_CustomResponse.__name__ = "CustomResponse"
_ApiResponse.__name__ = "ApiResponse"
_PydanticLike.__name__ = "PydanticLike"
_InternalClient.__name__ = "InternalClient"
_ServiceResponse.__name__ = "ServiceResponse"
_QueryResult.__name__ = "QueryResult"
_RequestLog.__name__ = "RequestLog"


class BasicOpsHandler:
    @tool(description="Answer with a message and a timestamp")
    @thread_safe_method
    def ping(self, message: str = "pong") -> Dict[str, str]:
        return {"message": message, "timestamp": str(time.time())}

    @tool(description="Echo back provided arguments")
    @thread_safe_method
    def echo(self, **kwargs: Any) -> Dict[str, Any]:
        return {"echoed": kwargs}

    @tool(description="Execute basic operations like echo and add")
    @thread_safe_method
    def basic_echo(self, message: str) -> Dict[str, Any]:
        return {"echoed": {"message": message}}

    @tool(description="Add two numbers")
    @thread_safe_method
    def add(self, a: Any, b: Any) -> Any:
        return a + b

    @tool(description="Add two numbers")
    @thread_safe_method
    def basic_add(self, a: Any, b: Any) -> Any:
        return a + b

    @tool(description="Raise a demonstration error: value, runtime or generic")
    @thread_safe_method
    def error_demo(self, error_type: str = "generic") -> None:
        if error_type == "value":
            raise ValueError("This is a demonstration ValueError")
        if error_type == "runtime":
            raise RuntimeError("This is a demonstration RuntimeError")
        raise Exception("This is a generic exception")

    @tool(description="Get adapter information and capabilities")
    @thread_safe_method
    def adapter_info(self) -> Dict[str, Any]:
        return {
            "adapter_name": "ShowcaseAdapter",
            "version": ADAPTER_VERSION,
            "capabilities": ["binary_serialization", "streaming", "ml_workflows", "session_state_via_elixir"],
            "handlers": list(HANDLERS),
        }

    @tool(description="Process text with various operations")
    @thread_safe_method
    def process_text(self, text: str, operation: str = "upper") -> Dict[str, Any]:
        op = _TEXT_OPERATIONS.get(operation)
        if op is None:
            return {
                "original": text,
                "operation": operation,
                "error": f"Unknown operation: {operation}",
                "available_operations": list(_TEXT_OPERATIONS),
                "success": False,
            }
        return {"original": text, "operation": operation, "result": op(text), "success": True}

    @tool(description="Get basic statistics and system information")
    @thread_safe_method
    def get_stats(self) -> Dict[str, Any]:
        ctx = self.session_context
        return {
            "adapter": {
                "name": "ShowcaseAdapter",
                "version": ADAPTER_VERSION,
                "registered_tools": len(self._resolver().names),
                "session_id": ctx.session_id if ctx else None,
            },
            "system": {
                "timestamp": time.time(),
                "pid": os.getpid(),
                "memory_usage_mb": process_memory_mb(),
                "cpu_percent": cpu_percent(0.1),
            },
            "success": True,
        }

    @tool(description="Emit telemetry events from Python (they reach Elixir's :telemetry handlers)")
    @thread_safe_method
    def telemetry_demo(self, operation: str = "compute", delay_ms: int = 100) -> Dict[str, Any]:
        correlation_id = telemetry.get_correlation_id()
        telemetry.emit(
            "tool.execution.start",
            {"system_time": time.time_ns()},
            {"tool": "telemetry_demo", "operation": operation},
            correlation_id=correlation_id,
        )
        with telemetry.span("tool.execution", {"tool": "telemetry_demo", "operation": operation}, correlation_id):
            time.sleep(delay_ms / 1000.0)
            telemetry.emit("tool.result_size", {"bytes": 42}, {"tool": "telemetry_demo"}, correlation_id=correlation_id)
        return {
            "operation": operation,
            "delay_ms": delay_ms,
            "telemetry_enabled": telemetry.is_enabled(),
            "correlation_id": correlation_id,
            "message": "Telemetry events emitted successfully! Check Elixir :telemetry handlers.",
        }

    @tool(description="Return objects JSON cannot hold, to show graceful serialization")
    @thread_safe_method
    def serialization_demo(self, demo_type: str = "all") -> Dict[str, Any]:
        result: Dict[str, Any] = {"demo_type": demo_type, "description": "Graceful serialization demo"}
        if demo_type in ("datetime", "all"):
            result["datetime_demo"] = {
                "datetime_now": datetime.now(),
                "date_today": date.today(),
                "preserved_string": "This stays as-is",
                "preserved_number": 42,
            }
        if demo_type in ("custom", "all"):
            result["custom_class_demo"] = {
                "custom_object": _CustomResponse(200, "success"),
                "preserved_string": "This is preserved",
                "nested": {"another_custom": _CustomResponse(404, "not found"), "normal_value": 123},
            }
        if demo_type in ("convertible", "all"):
            result["convertible_demo"] = {
                "api_response": _ApiResponse(200, "OK"),
                "pydantic_like": _PydanticLike("value1", "value2"),
            }
        if demo_type in ("mixed_list", "all"):
            result["mixed_list_demo"] = [
                1,
                "two",
                datetime.now(),
                _CustomResponse(500, "error"),
                {"nested": "dict"},
                _ApiResponse(201, "Created"),
            ]
        if demo_type in ("complex", "all"):
            result["complex_demo"] = self._complex_demo()
        return result

    @staticmethod
    def _complex_demo() -> Dict[str, Any]:
        logs = [
            _RequestLog("req-001", {"query": "test"}, _ServiceResponse({"result": "success"}, {"latency_ms": 245})),
            _RequestLog("req-002", {"query": "another"}, _ServiceResponse({"result": "partial"}, {"latency_ms": 1820})),
        ]
        return {
            "description": "Complex nested structure with mixed serialization",
            "client": _InternalClient("https://api.example.com"),
            "result": _QueryResult("computed result", 0.95),
            "logs": logs,
            "summary": {"total_requests": len(logs), "request_ids": [entry.request_id for entry in logs]},
            "latest_response": _ServiceResponse({"final": "output"}, {"processed": True}),
        }

    # --- tools the tests and examples of this project use ---------------------

    @tool(description="Return a bytes argument as-is (binary round trip)")
    @thread_safe_method
    def echo_bytes(self, data: bytes) -> bytes:
        return data

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
