"""Tensor, embedding and binary tools (NumPy)."""

# NumPy is imported inside the tools that use it: a worker that never
# calls them does not load it.

from __future__ import annotations

import hashlib
import time
import zlib
from typing import Any, Dict, List, Optional

from ....base_adapter import tool
from ....base_adapter_threaded import thread_safe_method

BINARY_THRESHOLD = 10_240


def _encoding(size_bytes: int) -> str:
    return "binary" if size_bytes >= BINARY_THRESHOLD else "json"


class BinaryOpsHandler:
    @tool(description="Create a tensor and report the encoding its size would get")
    @thread_safe_method
    def create_tensor(self, name: str, shape: List[int], size_bytes: Optional[int] = None) -> Dict[str, Any]:
        import numpy as np

        shape = [int(s) for s in shape]
        if size_bytes and len(shape) == 2 and shape[1] > 0:
            shape[0] = int(size_bytes // 8 // shape[1])
        data = np.random.randn(*shape)
        return {
            "name": name,
            "shape": shape,
            "size_bytes": int(data.nbytes),
            "encoding": _encoding(data.nbytes),
            "elements": int(data.size),
        }

    @tool(description="Create a unit-norm pseudo-embedding of a text")
    @thread_safe_method
    def create_embedding(self, text: str, dimensions: int) -> Dict[str, Any]:
        import numpy as np

        rng = np.random.default_rng(sum(ord(c) for c in text) % 2**32)
        embedding = rng.standard_normal(dimensions)
        embedding /= np.linalg.norm(embedding)
        return {
            "text": text,
            "dimensions": dimensions,
            "encoding": _encoding(embedding.nbytes),
            "size_bytes": int(embedding.nbytes),
            "norm": float(np.linalg.norm(embedding)),
        }

    @tool(description="Time list (JSON) vs bytes (binary) encoding of float arrays")
    @thread_safe_method
    def benchmark_encoding(self, start_kb: int = 1, end_kb: int = 100, step_kb: int = 10) -> Dict[str, Any]:
        import numpy as np

        results = []
        for size_kb in range(start_kb, end_kb + 1, step_kb):
            data = np.random.randn(size_kb * 1024 // 8)
            started = time.perf_counter()
            data.tolist()
            json_time = time.perf_counter() - started
            started = time.perf_counter()
            data.tobytes()
            binary_time = max(time.perf_counter() - started, 1e-9)
            results.append(
                {
                    "size_kb": size_kb,
                    "encoding": _encoding(size_kb * 1024),
                    "json_time_ms": round(json_time * 1000, 2),
                    "binary_time_ms": round(binary_time * 1000, 2),
                    "speedup": round(json_time / binary_time, 1),
                }
            )
        return {"results": results}

    @tool(description="Process binary data: checksum, size, reverse or compress", supports_streaming=False)
    @thread_safe_method
    def process_binary(self, data: bytes, operation: str = "checksum") -> Any:
        if isinstance(data, str):
            data = data.encode()
        if operation == "checksum":
            return {"operation": operation, "size": len(data), "md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest()}
        if operation == "size":
            return {"operation": operation, "size": len(data)}
        if operation == "reverse":
            return bytes(data[::-1])
        if operation == "compress":
            return zlib.compress(data)
        raise ValueError(f"Unknown operation {operation!r}; expected checksum, size, reverse or compress")
