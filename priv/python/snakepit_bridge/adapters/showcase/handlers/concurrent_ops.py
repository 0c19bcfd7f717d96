"""CPU-bound, sleeping and lightweight tasks for concurrency demos."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method
from .basic_ops import process_memory_mb


def _spin(duration_ms: int) -> int:
    result = 0
    for i in range(duration_ms * 1000):
        result += i**2
    return result


class ConcurrentOpsHandler:
    @tool(description="Simulate CPU-bound work")
    @thread_safe_method
    def cpu_bound_task(self, task_id: Any, duration_ms: int) -> Dict[str, Any]:
        started = time.time()
        result = _spin(int(duration_ms))
        return {
            "task_id": task_id,
            "result": result % 1_000_000,
            "actual_duration_ms": round((time.time() - started) * 1000, 2),
        }

    @tool(description="Sleep duration_ms")
    @thread_safe_method
    def sleep_task(self, duration_ms: int, task_number: int = 0) -> Dict[str, Any]:
        time.sleep(duration_ms / 1000.0)
        return {"task_number": task_number, "slept_ms": duration_ms}

    @tool(description="Very lightweight task for benchmarking")
    @thread_safe_method
    def lightweight_task(self, iteration: int) -> Dict[str, Any]:
        return {"iteration": iteration, "result": iteration * 2}

    @tool(description="This worker's pid, memory and CPU use")
    @thread_safe_method
    def get_pool_stats(self) -> Dict[str, Any]:
        times = os.times()
        return {
            "worker_pid": os.getpid(),
            "memory_mb": process_memory_mb(),
            "cpu_seconds": round(times.user + times.system, 3),
        }

    @tool(description="Run task_count small tasks on threads of this worker")
    @thread_safe_method
    def concurrent_demo(self, task_count: int = 3) -> Dict[str, Any]:
        def task(number: int) -> Dict[str, Any]:
            started = time.perf_counter()
            time.sleep(0.01 * (number + 1))
            return {
                "task": number,
                "thread": threading.current_thread().name,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, task_count), thread_name_prefix="showcase-task") as pool:
            results = list(pool.map(task, range(task_count)))
        return {
            "task_count": task_count,
            "results": results,
            "total_duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "worker_pid": os.getpid(),
        }
