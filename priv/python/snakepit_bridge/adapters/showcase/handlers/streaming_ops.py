"""Streaming tools (upstream's chunks and pacing)."""

# NumPy is imported inside the tools that use it: a worker that never
# calls them does not load it.

from __future__ import annotations

import time
from datetime import datetime
from typing import Iterator

from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method
from ..tool import StreamChunk


class StreamingOpsHandler:
    @tool(description="Stream data in chunks", supports_streaming=True)
    @thread_safe_method
    def stream_data(self, count: int = 5, delay: float = 1.0) -> Iterator[StreamChunk]:
        for i in range(count):
            yield StreamChunk(
                {"index": i + 1, "total": count, "message": f"Chunk {i + 1}/{count}"}, is_final=(i == count - 1)
            )
            if i < count - 1 and delay > 0:
                time.sleep(delay)

    @tool(description="Stream progress updates", supports_streaming=True)
    @thread_safe_method
    def stream_progress(self, steps: int = 10, delay_ms: int = 500) -> Iterator[StreamChunk]:
        delay = max(delay_ms, 0) / 1000.0
        started = time.perf_counter()
        for i in range(steps):
            yield StreamChunk(
                {
                    "step": i + 1,
                    "total": steps,
                    "progress": round((i + 1) / steps * 100, 1),
                    "message": f"Processing step {i + 1}/{steps}",
                    "elapsed_ms": round((time.perf_counter() - started) * 1000.0, 1),
                },
                is_final=(i == steps - 1),
            )
            if i < steps - 1 and delay > 0:
                time.sleep(delay)

    @tool(description="Stream the Fibonacci sequence", supports_streaming=True)
    @thread_safe_method
    def stream_fibonacci(self, count: int = 20, delay_ms: int = 50) -> Iterator[StreamChunk]:
        a, b = 0, 1
        for i in range(count):
            yield StreamChunk({"index": i + 1, "value": a}, is_final=(i == count - 1))
            a, b = b, a + b
            if delay_ms > 0 and i < count - 1:
                time.sleep(delay_ms / 1000.0)

    @tool(description="Generate and stream a dataset", supports_streaming=True)
    @thread_safe_method
    def generate_dataset(self, rows: int = 1000, chunk_size: int = 100, delay_ms: int = 100) -> Iterator[StreamChunk]:
        import numpy as np

        sent = 0
        while sent < rows:
            in_chunk = min(chunk_size, rows - sent)
            sent += in_chunk
            data = np.random.randn(in_chunk, 10)
            yield StreamChunk(
                {"rows_in_chunk": in_chunk, "total_rows": sent, "data_sample": data[0].tolist()}, is_final=sent >= rows
            )
            if delay_ms > 0 and sent < rows:
                time.sleep(delay_ms / 1000.0)

    @tool(description="Stream until cancelled", supports_streaming=True)
    @thread_safe_method
    def infinite_stream(self, delay_ms: int = 500) -> Iterator[StreamChunk]:
        counter = 0
        while True:
            counter += 1
            yield StreamChunk({"message": f"Message #{counter}", "timestamp": datetime.now().isoformat()})
            time.sleep(delay_ms / 1000.0)
