"""Checks for thread-safety mistakes while developing a thread-profile adapter.

    from snakepit_bridge.thread_safety_checker import ThreadSafetyChecker, check_thread_safe

    with ThreadSafetyChecker(enabled=True) as checker:
        run_concurrent_calls()
        report = checker.get_report()

The pool's own check is ``thread_safety_checks: true`` (per-tool
concurrency, ``Snakepit.Pool.thread_safety_report/1``); this module is
upstream's in-process API for tests and scripts.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, TypeVar

__all__ = [
    "ThreadSafetyChecker",
    "check_common_pitfalls",
    "check_thread_safe",
    "disable_checking",
    "enable_checking",
    "get_global_checker",
    "print_thread_safety_report",
    "require_thread_safe_adapter",
    "validate_adapter_thread_safety",
]

log = logging.getLogger("snakepit.thread_safety_checker")

F = TypeVar("F", bound=Callable[..., Any])


class ThreadSafetyChecker:
    """Records which threads call which methods; warns (or, strict, raises)
    the first time a method runs on a second thread or a known thread-unsafe
    library is loaded."""

    UNSAFE_LIBRARIES: Dict[str, Dict[str, str]] = {
        "matplotlib": {
            "reason": "Not thread-safe. Use thread-local figures or explicit locking.",
            "safe_pattern": "Use threading.local() for figure storage",
            "docs": "https://matplotlib.org/stable/users/explain/interactive.html",
        },
        "sqlite3": {
            "reason": "Not thread-safe by default (check_same_thread=True)",
            "safe_pattern": "Use check_same_thread=False with caution, or connection per thread",
            "docs": "https://docs.python.org/3/library/sqlite3.html#sqlite3.connect",
        },
        "pandas": {
            "reason": "DataFrame operations are not thread-safe (as of v2.0)",
            "safe_pattern": "Use explicit locking or process-based parallelism",
            "docs": "https://pandas.pydata.org/docs/",
        },
    }

    def __init__(self, enabled: bool = True, strict_mode: bool = False) -> None:
        self.enabled = enabled
        self.strict_mode = strict_mode
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forgets everything recorded."""
        with self._lock:
            self.access_map: Dict[str, Set[int]] = defaultdict(set)
            self.access_times: Dict[str, List[float]] = defaultdict(list)
            self.warnings_issued: Set[str] = set()
            self.thread_stats: Dict[int, Dict[str, Any]] = defaultdict(
                lambda: {"calls": 0, "total_time": 0.0, "methods": set()}
            )
            self.start_time = time.time()

    def _warn(self, key: str, message: str) -> None:
        """Called with the lock held; the first time per key only."""
        if key in self.warnings_issued:
            return
        self.warnings_issued.add(key)
        if self.strict_mode:
            raise RuntimeError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        log.warning(message)

    def check_method_access(self, method_name: str, caller_frame: Optional[Any] = None) -> None:
        """Records a call of ``method_name`` on this thread."""
        if not self.enabled:
            return
        thread_id = threading.get_ident()
        with self._lock:
            self.access_map[method_name].add(thread_id)
            self.access_times[method_name].append(time.time())
            stats = self.thread_stats[thread_id]
            stats["calls"] += 1
            stats["methods"].add(method_name)
            threads = len(self.access_map[method_name])
            if threads > 1:
                message = (
                    f"THREAD SAFETY: Method '{method_name}' accessed by {threads} different threads "
                    f"concurrently. Current thread: {threading.current_thread().name} (ID: {thread_id})"
                )
                if caller_frame is not None:
                    message += f"\n  Called from: {caller_frame.f_code.co_filename}:{caller_frame.f_lineno}"
                self._warn(f"{method_name}_concurrent", message)

    def check_library_safety(self, imported_modules: Optional[Set[str]] = None) -> List[str]:
        """Warnings for the known thread-unsafe libraries that are loaded."""
        if not self.enabled:
            return []
        modules = set(sys.modules) if imported_modules is None else imported_modules
        found = []
        with self._lock:
            for name, info in self.UNSAFE_LIBRARIES.items():
                if name in modules and f"unsafe_lib_{name}" not in self.warnings_issued:
                    message = (
                        f"THREAD SAFETY: Unsafe library '{name}' detected\n  Reason: {info['reason']}\n"
                        f"  Safe Pattern: {info['safe_pattern']}\n  Docs: {info['docs']}"
                    )
                    found.append(message)
                    self._warn(f"unsafe_lib_{name}", message)
        return found

    @contextmanager
    def track_execution(self, method_name: str) -> Iterator[None]:
        """Adds the block's duration to this thread's total."""
        if not self.enabled:
            yield
            return
        started = time.time()
        try:
            yield
        finally:
            with self._lock:
                self.thread_stats[threading.get_ident()]["total_time"] += time.time() - started

    def get_report(self) -> Dict[str, Any]:
        with self._lock:
            concurrent = {m: len(t) for m, t in self.access_map.items() if len(t) > 1}
            utilization = {
                thread_id: {
                    "calls": s["calls"],
                    "total_time": s["total_time"],
                    "methods": sorted(s["methods"]),
                    "avg_time_per_call": s["total_time"] / s["calls"] if s["calls"] else 0,
                }
                for thread_id, s in self.thread_stats.items()
            }
            return {
                "enabled": self.enabled,
                "strict_mode": self.strict_mode,
                "total_runtime": time.time() - self.start_time,
                "warnings_issued": len(self.warnings_issued),
                "warnings": sorted(self.warnings_issued),
                "concurrent_accesses": concurrent,
                "total_methods_tracked": len(self.access_map),
                "total_threads_seen": len(self.thread_stats),
                "thread_utilization": utilization,
                "recommendations": self._recommendations(concurrent),
            }

    def _recommendations(self, concurrent: Dict[str, int]) -> List[str]:
        out = []
        if concurrent:
            out.append(
                f"{len(concurrent)} methods accessed concurrently. Ensure proper locking or use thread-local storage."
            )
        if len(self.thread_stats) == 1:
            out.append("Only one thread detected. Consider testing with threads_per_worker > 1.")
        if not self.warnings_issued:
            out.append("No thread safety issues detected.")
        return out

    def __enter__(self) -> "ThreadSafetyChecker":
        self.reset()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self.enabled:
            report = self.get_report()
            log.info(
                "Thread safety report: %d methods tracked, %d concurrent, %d warnings",
                report["total_methods_tracked"],
                len(report["concurrent_accesses"]),
                report["warnings_issued"],
            )
        return False


_global_checker = ThreadSafetyChecker(enabled=False)


def enable_checking(strict_mode: bool = False) -> None:
    global _global_checker
    _global_checker = ThreadSafetyChecker(enabled=True, strict_mode=strict_mode)


def disable_checking() -> None:
    _global_checker.enabled = False


def get_global_checker() -> ThreadSafetyChecker:
    return _global_checker


def check_thread_safe(func: F) -> F:
    """Records each call of ``func`` with the global checker (``enable_checking()`` first)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        checker = _global_checker
        frame = sys._getframe(1) if checker.enabled else None
        checker.check_method_access(func.__name__, frame)
        with checker.track_execution(func.__name__):
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def require_thread_safe_adapter(func: F) -> F:
    """For ``func(adapter, ...)``: ValueError unless the adapter declares ``__thread_safe__ = True``."""

    @functools.wraps(func)
    def wrapper(adapter: Any, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(adapter, "__thread_safe__"):
            raise ValueError(
                f"Adapter {type(adapter).__name__} does not declare thread safety. "
                "Set __thread_safe__ = True if the adapter is thread-safe."
            )
        if not adapter.__thread_safe__:
            raise ValueError(
                f"Adapter {type(adapter).__name__} is explicitly marked as NOT thread-safe. "
                "Use process mode instead of threaded mode."
            )
        return func(adapter, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def validate_adapter_thread_safety(adapter_class: type) -> bool:
    """Whether the class declares ``__thread_safe__ = True`` (ValueError in strict mode if not)."""
    safe = getattr(adapter_class, "__thread_safe__", False) is True
    if not safe and _global_checker.strict_mode:
        raise ValueError(f"Adapter {adapter_class.__name__} is not thread-safe. Required: __thread_safe__ = True")
    return safe


def check_common_pitfalls(adapter_instance: Any) -> List[str]:
    """Warnings about an adapter instance: unlocked mutable state, unsafe libraries, no declaration."""
    found = []
    mutable = [
        name
        for name, value in getattr(adapter_instance, "__dict__", {}).items()
        if not name.startswith("_") and isinstance(value, (list, dict, set))
    ]
    if mutable and not hasattr(adapter_instance, "_lock"):
        found.append(
            f"Adapter has mutable shared state {mutable} but no lock. Consider adding self._lock = threading.Lock()"
        )
    _global_checker.check_library_safety()
    if not hasattr(type(adapter_instance), "__thread_safe__"):
        found.append("Adapter does not declare __thread_safe__. Add __thread_safe__ = True/False to your adapter class.")
    return found


def print_thread_safety_report() -> None:
    """Logs the global checker's report."""
    report = _global_checker.get_report()
    lines = [
        "Thread Safety Analysis Report",
        f"  Total Runtime: {report['total_runtime']:.2f}s",
        f"  Threads Detected: {report['total_threads_seen']}",
        f"  Methods Tracked: {report['total_methods_tracked']}",
        f"  Warnings Issued: {report['warnings_issued']}",
    ]
    lines += [f"  - {method}: {count} threads" for method, count in report["concurrent_accesses"].items()]
    lines += [f"  {rec}" for rec in report["recommendations"]]
    log.info("\n".join(lines))
