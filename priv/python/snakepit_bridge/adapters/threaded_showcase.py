"""The thread profile's patterns: ``worker_profile: :thread`` with
``adapter_args: ["--adapter",
"snakepit_bridge.adapters.threaded_showcase.ThreadedShowcaseAdapter"]``.

1. shared read-only state (model weights, loaded once per process);
2. per-thread state (a cache per thread: ``get_thread_local``);
3. shared mutable state (statistics, history) written under the lock.

NumPy releases the GIL in its kernels, so ``matrix_multiply`` and
``compute_intensive`` calls overlap on the worker's threads.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List

import numpy as np

from snakepit_bridge.base_adapter_threaded import ThreadSafeAdapter, thread_safe_method, tool
from snakepit_bridge.logging_config import get_logger

__all__ = ["ModelConfig", "ThreadedShowcaseAdapter"]

logger = get_logger(__name__)


@dataclass
class ModelConfig:
    name: str
    version: str
    complexity: int
    thread_safe: bool = True


class ThreadedShowcaseAdapter(ThreadSafeAdapter):
    __thread_safe__ = True

    def __init__(self) -> None:
        super().__init__()
        # Pattern 1: loaded once, only read afterwards.
        self.model_config = ModelConfig(name="ThreadedShowcaseModel", version="2.0", complexity=5)
        rng = np.random.default_rng(7)
        self.model_weights = {
            "layer1": rng.standard_normal((100, 100)),
            "layer2": rng.standard_normal((100, 50)),
            "layer3": rng.standard_normal((50, 10)),
        }
        self.processing_config = {"timeout": 30, "batch_size": 10, "cache_enabled": True}
        # Pattern 3: written under self.acquire_lock().
        self.global_stats: Dict[str, Any] = {
            "total_requests": 0,
            "total_compute_time": 0.0,
            "max_concurrent": 0,
            "thread_usage": {},
        }
        self.request_history: List[Dict[str, Any]] = []

    def initialize(self) -> None:
        logger.info("%s initialized (thread-safe mode)", type(self).__name__)

    @thread_safe_method
    @tool(description="Simple ping operation for connectivity testing")
    def ping(self, message: str = "pong") -> Dict[str, Any]:
        return {"message": message, "timestamp": time.time(), "thread": threading.current_thread().name}

    @thread_safe_method
    @tool(description="CPU-intensive computation demonstrating concurrent execution")
    def compute_intensive(self, data: List[float], iterations: int = 1000) -> Dict[str, Any]:
        thread_name = threading.current_thread().name
        started = time.time()
        cache = self.get_thread_local("compute_cache", {})  # pattern 2
        key = hashlib.md5(f"{data}:{iterations}".encode()).hexdigest()
        if key in cache:
            return {**cache[key], "cached": True, "thread": thread_name}
        arr = np.asarray(data, dtype=np.float64)
        for _ in range(iterations):
            arr = np.sin(arr) * np.cos(arr) + arr * 0.1
        result = {"result": float(np.mean(arr)) if arr.size else 0.0, "iterations": iterations, "input_size": len(data)}
        cache[key] = result
        elapsed = time.time() - started
        self._update_global_stats(thread_name, elapsed)
        return {**result, "execution_time_ms": int(elapsed * 1000), "thread": thread_name, "cached": False}

    @thread_safe_method
    @tool(description="Matrix multiplication using shared model weights")
    def matrix_multiply(self, input_vector: List[float]) -> Dict[str, Any]:
        thread_name = threading.current_thread().name
        started = time.time()
        weights = self.model_weights  # pattern 1: shared, read-only
        activation = np.maximum(0, np.asarray(input_vector, dtype=np.float64) @ weights["layer1"])
        activation = np.maximum(0, activation @ weights["layer2"])
        output = (activation @ weights["layer3"]).tolist()
        elapsed = time.time() - started
        self._update_global_stats(thread_name, elapsed)
        return {
            "output": output,
            "input_size": len(input_vector),
            "output_size": len(output),
            "execution_time_ms": int(elapsed * 1000),
            "thread": thread_name,
            "model": self.model_config.name,
        }

    @thread_safe_method
    @tool(description="Simulate batch processing with concurrent workers")
    def batch_process(self, items: List[Any], delay_ms: int = 10) -> Dict[str, Any]:
        thread_name = threading.current_thread().name
        started = time.time()
        batch_id = f"batch_{int(started * 1000)}_{thread_name}"
        self.set_thread_local("current_batch_id", batch_id)
        results = []
        for index, item in enumerate(items):
            time.sleep(delay_ms / 1000.0)
            digest = hashlib.md5(str(item).encode()).hexdigest()[:16]
            results.append({"item_id": index, "input": item, "output": digest, "thread": thread_name})
        elapsed = time.time() - started
        with self.acquire_lock():
            self.global_stats["total_requests"] += 1
            self.request_history.append(
                {
                    "batch_id": batch_id,
                    "items_processed": len(items),
                    "execution_time": elapsed,
                    "thread": thread_name,
                    "timestamp": time.time(),
                }
            )
        return {
            "batch_id": batch_id,
            "items_processed": len(items),
            "results": results,
            "execution_time_ms": int(elapsed * 1000),
            "thread": thread_name,
        }

    @thread_safe_method
    @tool(description="Get adapter statistics and thread usage")
    def get_adapter_stats(self) -> Dict[str, Any]:
        with self.acquire_lock():
            stats = {**self.global_stats, "thread_usage": dict(self.global_stats["thread_usage"])}
            history = len(self.request_history)
        return {
            **self.get_stats(),
            "global_stats": stats,
            "history_entries": history,
            "model": {
                "name": self.model_config.name,
                "version": self.model_config.version,
                "complexity": self.model_config.complexity,
            },
            "numpy_available": True,
        }

    @thread_safe_method
    @tool(description="Stress test for concurrent request handling")
    def stress_test(self, duration_ms: int = 100, complexity: int = 1000) -> Dict[str, Any]:
        thread_name = threading.current_thread().name
        started = time.time()
        iterations = 0
        rng = np.random.default_rng()
        while time.time() - started < duration_ms / 1000.0:
            np.fft.fft(rng.standard_normal(complexity))
            iterations += 1
        elapsed = time.time() - started
        self._update_global_stats(thread_name, elapsed)
        return {
            "iterations": iterations,
            "target_duration_ms": duration_ms,
            "actual_duration_ms": int(elapsed * 1000),
            "complexity": complexity,
            "thread": thread_name,
            "ops_per_second": iterations / elapsed if elapsed > 0 else 0.0,
        }

    @thread_safe_method
    @tool(description="Clear thread-local caches")
    def clear_caches(self) -> Dict[str, Any]:
        thread_name = threading.current_thread().name
        self.clear_thread_local()
        return {"status": "success", "message": f"Caches cleared for thread {thread_name}", "thread": thread_name}

    @thread_safe_method
    @tool(description="Get recent request history")
    def get_history(self, limit: int = 10) -> Dict[str, Any]:
        with self.acquire_lock():
            recent = [dict(entry) for entry in self.request_history[-limit:]] if limit > 0 else []
            total = len(self.request_history)
        return {"entries": recent, "total_entries": total, "returned": len(recent)}

    def _update_global_stats(self, thread_name: str, elapsed: float) -> None:
        with self.acquire_lock():
            stats = self.global_stats
            stats["total_requests"] += 1
            stats["total_compute_time"] += elapsed
            stats["thread_usage"][thread_name] = stats["thread_usage"].get(thread_name, 0) + 1
            active = self._tracker.get_stats()["total_active_requests"]
            stats["max_concurrent"] = max(stats["max_concurrent"], active)
