"""Adapters used only by the benchmarks (bench/run.exs).

``bench_adapters.MatmulAdapter``: one NumPy tool, ``matmul``, that multiplies
two fixed 256x256 float64 matrices and returns the trace of the product. The
matrices are built once per worker process, in ``__init__``, so a call costs
the multiplication and nothing else. The tool is marked thread safe, so the
same adapter runs in the process profile (one call at a time per process)
and in the thread profile (several calls at once in one process; NumPy
releases the GIL inside the BLAS call).
"""

from __future__ import annotations

import numpy as np

from snakepit_bridge import ThreadSafeAdapter, thread_safe_method, tool

__all__ = ["MatmulAdapter"]

SIZE = 256


class MatmulAdapter(ThreadSafeAdapter):
    __thread_safe__ = True

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(2024)
        self._a = rng.random((SIZE, SIZE))
        self._b = rng.random((SIZE, SIZE))

    @tool(description="Trace of the product of two fixed 256x256 float64 matrices")
    @thread_safe_method
    def matmul(self) -> float:
        return float(np.trace(self._a @ self._b))
