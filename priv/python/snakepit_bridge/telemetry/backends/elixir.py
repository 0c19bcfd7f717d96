"""Sends events to Elixir, where they become ``[:snakepit, :python, ...]``.

``emit`` only appends to a bounded buffer (a tool emitting in a tight loop
pays well under a microsecond more per event); one sender thread, started
on the first event, sends the buffer in batches (``EmitTelemetry`` on the
worker's connection to the native runtime), one batch in flight at a time.
Elixir answers a batch once it has emitted its events, so a slow consumer
fills this buffer: events past ``max_buffer`` are dropped and counted, and
the count travels with the next batch (Elixir logs it as a warning).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .base import TelemetryBackend

__all__ = ["ElixirBackend"]

log = logging.getLogger("snakepit.bridge.telemetry")

# (name, measurements, metadata, correlation_id, timestamp_ns)
_Event = Tuple[str, Dict[str, Any], Optional[Dict[str, Any]], Optional[str], int]

DEFAULT_MAX_BUFFER = 10_000
DEFAULT_BATCH_SIZE = 1_000
DEFAULT_FLUSH_INTERVAL_S = 0.05
SEND_TIMEOUT_S = 10.0
_INT64 = (-(2**63), 2**63 - 1)


def _set_value(field: Any, value: Any) -> None:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        field.int_value = value
    elif isinstance(value, float) and math.isfinite(value):
        field.float_value = value
    else:
        item = getattr(value, "item", None)  # NumPy scalars
        if item is not None and callable(item) and not isinstance(value, (int, float)):
            try:
                _set_value(field, item())
                return
            except (TypeError, ValueError):
                pass
        field.string_value = str(value)


def _to_proto(pb2: Any, event: _Event) -> Any:
    name, measurements, metadata, correlation_id, timestamp_ns = event
    message = pb2.TelemetryEvent(
        event_parts=name.split("."), timestamp_ns=timestamp_ns, correlation_id=correlation_id or ""
    )
    for key, value in measurements.items():
        _set_value(message.measurements[str(key)], value)
    if metadata:
        for key, value in metadata.items():
            message.metadata[str(key)] = str(value)
    return message


class ElixirBackend(TelemetryBackend):
    """Batches events to Elixir; see the module docstring."""

    def __init__(
        self,
        worker_id: str = "",
        pool_name: str = "",
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        send: Optional[Callable[[Any], None]] = None,
    ) -> None:
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be >= 1")
        self.worker_id = worker_id
        self.pool_name = pool_name
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._send = send or self._send_grpc
        self._cond = threading.Condition(threading.Lock())
        self._events: Deque[_Event] = deque()
        self._dropped = 0  # since the last batch
        self._dropped_total = 0
        self._in_flight = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    # --- the caller's side ------------------------------------------------

    def emit(
        self,
        event_name: str,
        measurements: Dict[str, Any],
        metadata: Optional[Dict[str, Any]] = None,
        correlation_id: Optional[str] = None,
    ) -> None:
        event = (
            event_name,
            dict(measurements) if measurements else {},
            dict(metadata) if metadata else None,
            correlation_id,
            time.time_ns(),
        )
        with self._cond:
            if self._closed:
                return
            if len(self._events) >= self.max_buffer:
                self._dropped += 1
                self._dropped_total += 1
                return
            self._events.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="snakepit-telemetry", daemon=True)
                self._thread.start()
            elif len(self._events) in (1, self.batch_size):
                # The first event wakes the sender (which then waits out the
                # batching window); a full batch ends the window early.
                self._cond.notify()

    @property
    def dropped_count(self) -> int:
        """Events dropped in this process because the buffer was full or a send failed."""
        with self._cond:
            return self._dropped_total

    @property
    def pending(self) -> int:
        """Events buffered, not yet sent."""
        with self._cond:
            return len(self._events)

    # --- the sender thread ------------------------------------------------

    def _take(self) -> Tuple[List[_Event], int]:
        """Waits for work, gives a batching window, then takes one batch."""
        with self._cond:
            while not self._events and not self._dropped and not self._closed:
                self._cond.wait()
            if not self._closed and len(self._events) < self.batch_size:
                self._cond.wait_for(
                    lambda: self._closed or len(self._events) >= self.batch_size, self.flush_interval
                )
            count = min(len(self._events), self.batch_size)
            batch = [self._events.popleft() for _ in range(count)]
            dropped, self._dropped = self._dropped, 0
            self._in_flight = bool(batch or dropped)
            return batch, dropped

    def _run(self) -> None:
        import snakepit_bridge_pb2 as pb2

        while True:
            batch, dropped = self._take()
            if batch or dropped:
                self._deliver(pb2, batch, dropped)
            with self._cond:
                self._in_flight = False
                self._cond.notify_all()
                if self._closed and not self._events and not self._dropped:
                    return

    def _deliver(self, pb2: Any, batch: List[_Event], dropped: int) -> None:
        try:
            message = pb2.TelemetryBatch(
                worker_id=self.worker_id,
                pool_name=self.pool_name,
                python_pid=os.getpid(),
                dropped=dropped,
                events=[_to_proto(pb2, event) for event in batch],
            )
            self._send(message)
        except Exception as exc:  # telemetry must never take a worker down
            with self._cond:
                self._dropped += len(batch)
                self._dropped_total += len(batch)
            log.warning("could not send %d telemetry events to Elixir: %s", len(batch), exc)
            time.sleep(min(self.flush_interval * 10, 1.0))  # do not spin on a dead peer

    @staticmethod
    def _send_grpc(message: Any) -> None:
        from ...elixir_tools import get_stub

        get_stub().EmitTelemetry(message, timeout=SEND_TIMEOUT_S)

    # --- shutdown ---------------------------------------------------------

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until everything buffered so far was sent; False on timeout."""
        with self._cond:
            if self._thread is None:
                return not self._events
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: not self._events and not self._dropped and not self._in_flight, timeout
            )

    def close(self, timeout: float = 2.0) -> None:
        """Sends what is buffered (within ``timeout``) and stops the sender."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
