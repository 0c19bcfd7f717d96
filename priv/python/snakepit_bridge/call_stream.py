"""``ExecuteToolCalls`` on the core-layer server: the runtime's unary calls
to one worker, many on one bidirectional stream (see the proto).

A unary call costs both ends a call object, headers, trailers and a
deadline timer; on the stream a call is one message each way. The calls
keep the unary semantics:

* each request goes to the same FIFO queue and tool threads as a unary
  call, and its turn is its place in that queue;
* a call whose caller gave up before its turn (a cancel frame, its
  ``timeout_ms`` passed, or the stream gone) is not run;
* a failure outside the tool, a refusal while stopping and a call that
  was not started for its deadline are replies carrying the gRPC status a
  unary call would have ended with.

gRPC allows one send in flight per call, so replies go out one at a time
from a queue. Once the server stops, the stream ends (OK) when none of its
calls is left, and likewise once the client closed its side.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Optional, Set, Tuple

import snakepit_bridge_pb2 as pb2

log = logging.getLogger("snakepit.worker")

try:
    from grpc._cython import cygrpc
except ImportError:  # pragma: no cover - core_server reports it
    cygrpc = None

_NO_FLAGS = 0


class StreamedCall:
    """One call of a stream, from its arrival to its tool thread."""

    __slots__ = ("stream", "request", "deadline")
    streaming = False

    def __init__(self, stream: "CallStream", request: Any, deadline: float) -> None:
        self.stream = stream
        self.request = request
        self.deadline = deadline

    def gave_up(self) -> bool:
        """True when the caller is gone: cancelled, past its deadline, or
        the stream itself is gone."""
        return self.stream.cancelled(self.request.request_id) or self.deadline <= time.time()


def status_reply(request_id: int, code: int, details: str) -> bytes:
    """The reply of a call that ended with a non-OK status."""
    return pb2.ExecuteToolResponse(request_id=request_id, status_code=code, status_details=details).SerializeToString()


class CallStream:
    """One ``ExecuteToolCalls`` stream. Its completions run on the poll
    thread; ``finished`` is called by tool threads."""

    def __init__(self, call: Any, enqueue: Callable[[StreamedCall], None], stopping: Callable[[], bool]) -> None:
        self.call = call
        self._enqueue = enqueue
        self._stopping = stopping
        self._lock = threading.Lock()
        self._open: Set[int] = set()  # queued or running
        self._cancelled: Set[int] = set()  # a subset of _open
        self._sends: Deque[bytes] = deque()
        self._sending = False
        self._metadata_sent = False
        self._gone = False  # the client cancelled or the call failed
        self._ending = False  # the server stops: end once nothing is open
        self._ended = False
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),), self._on_close)
        self._receive()
        log.debug("serving the runtime's calls on one stream")

    # --- poll thread ----------------------------------------------------

    def _receive(self) -> None:
        self.call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), self._on_message)

    def _on_close(self, event: Any) -> None:
        if event.batch_operations[0].cancelled():
            with self._lock:
                self._gone = True
                self._sends.clear()

    def _on_message(self, event: Any) -> None:
        payload = event.batch_operations[0].message() if event.success else None
        if payload is None:
            # The client closed its side (no more calls) or went away.
            self.end_when_idle()
            return
        try:
            request = pb2.ExecuteToolRequest.FromString(payload)
        except Exception:
            # No request_id to answer: the runtime's timer ends that call.
            log.exception("a malformed ExecuteToolCalls frame was dropped")
            self._receive()
            return
        self._receive()
        self._accept(request)

    def _accept(self, request: Any) -> None:
        request_id = request.request_id
        if request.cancel:
            with self._lock:
                if request_id in self._open:
                    self._cancelled.add(request_id)
            return
        deadline = time.time() + request.timeout_ms / 1000 if request.timeout_ms else math.inf
        with self._lock:
            # Checked with the add, under the lock: a stream that ends once
            # idle must not take a call after it decided it is idle.
            refused = self._ending or self._ended or self._stopping()
            if not refused:
                self._open.add(request_id)
        if refused:
            self._queue_reply(status_reply(request_id, cygrpc.StatusCode.unavailable, "the worker is stopping"))
            return
        self._enqueue(StreamedCall(self, request, deadline))

    def _on_sent(self, event: Any) -> None:
        with self._lock:
            self._sending = False
            if not event.success:
                self._gone = True
                self._sends.clear()
            ops = self._next_ops()
        if ops:
            self.call.start_server_batch(ops, self._on_sent)

    # --- any thread -----------------------------------------------------

    def cancelled(self, request_id: int) -> bool:
        return self._gone or request_id in self._cancelled

    def finished(self, request_id: int, reply: Optional[bytes]) -> None:
        """A call of this stream is done; ``reply`` is sent unless None (a
        cancelled call takes no reply)."""
        # One locked section: between forgetting the call and queuing its
        # reply, an idle stream would end and drop the reply.
        with self._lock:
            self._open.discard(request_id)
            self._cancelled.discard(request_id)
            if reply is not None and not self._gone:
                self._sends.append(reply)
            ops = self._next_ops()
        if ops:
            self.call.start_server_batch(ops, self._on_sent)

    def end_when_idle(self) -> None:
        """No more calls will be taken (the server stops, or the client
        closed its side): end the stream once none of its calls is left."""
        with self._lock:
            self._ending = True
        self._flush()

    def _queue_reply(self, reply: bytes) -> None:
        with self._lock:
            if not self._gone:
                self._sends.append(reply)
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            ops = self._next_ops()
        if ops:
            self.call.start_server_batch(ops, self._on_sent)

    def _next_ops(self) -> Optional[Tuple[Any, ...]]:
        """Under the lock: the next batch to start, if one may start now."""
        if self._sending or self._ended or self._gone:
            return None
        if self._sends:
            ops: Tuple[Any, ...] = (cygrpc.SendMessageOperation(self._sends.popleft(), _NO_FLAGS),)
        elif self._ending and not self._open:
            self._ended = True
            ops = (cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", _NO_FLAGS),)
        else:
            return None
        if not self._metadata_sent:
            self._metadata_sent = True
            ops = (cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS), *ops)
        self._sending = True
        return ops
