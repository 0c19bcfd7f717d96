"""The worker's gRPC server on grpc's core layer (``grpc._cython.cygrpc``).

``grpc.server`` is written on the same layer, but hands each call between
its threads about ten times (poll thread, executor, condition waits), and on
a small host the sleeps and wakeups cost more than the call. Here:

* one poll thread drains the completion queue, answers ``Ping``,
  ``Heartbeat`` and ``GetWorkerReport`` itself, and puts tool calls on one
  FIFO queue once their request message has arrived;
* ``threads`` tool threads (1 in the process profile) take calls from that
  queue in order, run the tool and send their own reply. The number of tool
  threads is the worker's capacity, so the process profile runs one tool
  at a time with no lock, and a call's turn is its place in the queue;
* a call whose caller gave up (cancelled, or its deadline passed) before its
  turn is answered without running its tool;
* a stream sends one chunk at a time and waits for that send to complete
  before it asks the generator for the next, so HTTP/2 flow control (the
  client's credit window) paces the tool; a failed send means the client
  cancelled, and the generator is closed.

This is grpcio's internal API: ``unavailable_reason()`` says when the
installed grpcio lacks a piece of it, and the worker then serves with
``grpc.server`` (see ``worker.start_server``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import snakepit_bridge_pb2 as pb2

from .call_stream import CallStream, StreamedCall, status_reply

log = logging.getLogger("snakepit.worker")

try:
    from grpc._cython import cygrpc
except ImportError as exc:  # pragma: no cover - depends on the installed grpcio
    cygrpc = None
    _IMPORT_ERROR: Optional[str] = f"grpc._cython.cygrpc does not import ({exc})"
else:
    _IMPORT_ERROR = None

# What this module uses from cygrpc; a grpcio without one of them cannot run it.
_REQUIRED = (
    "CompletionQueue",
    "Server",
    "SendInitialMetadataOperation",
    "SendMessageOperation",
    "SendStatusFromServerOperation",
    "ReceiveMessageOperation",
    "ReceiveCloseOnServerOperation",
    "StatusCode",
    "CompletionType",
)
_REQUIRED_METHODS = {
    "Server": ("register_completion_queue", "add_http2_port", "start", "request_call", "shutdown", "cancel_all_calls"),
    "CompletionQueue": ("poll",),
}

_SERVICE = "/snakepit.bridge.BridgeService/"
_NO_FLAGS = 0


def unavailable_reason() -> Optional[str]:
    """None when the installed grpcio has every piece this server uses,
    else what is missing."""
    if cygrpc is None:
        return _IMPORT_ERROR
    missing = [name for name in _REQUIRED if not hasattr(cygrpc, name)]
    for cls, methods in _REQUIRED_METHODS.items():
        if hasattr(cygrpc, cls):
            missing += [f"{cls}.{m}" for m in methods if not hasattr(getattr(cygrpc, cls), m)]
    if missing:
        return "grpc._cython.cygrpc lacks " + ", ".join(missing)
    return None


def caller_gone_message(tool: str) -> str:
    """Status details for a call whose deadline passed (or that was
    cancelled) before its turn came: its tool is not run."""
    return f"tool {tool} was not started: its caller gave up waiting"


class StreamFailure(Exception):
    """A streaming tool failed; ``details`` is the error JSON for the status."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self.details = details


class _Tag:
    """Completion-queue tags that are not per-call callbacks."""

    REQUEST_CALL = object()
    SHUTDOWN = object()


def _ignore(_event: Any) -> None:
    """Tag of batches whose completion needs nothing (a reply sent, a
    pinged call closed)."""


def _send_status(call: Any, code: Any, details: str, *, with_metadata: bool = True) -> None:
    ops: Tuple[Any, ...] = (
        cygrpc.SendStatusFromServerOperation(None, code, details.encode("utf-8", "replace"), _NO_FLAGS),
    )
    if with_metadata:
        ops = (cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS), *ops)
    call.start_server_batch(ops, _ignore)


def _send_reply(call: Any, message: bytes) -> None:
    """Unary reply: metadata, the message and OK status in one batch."""
    call.start_server_batch(
        (
            cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
            cygrpc.SendMessageOperation(message, _NO_FLAGS),
            cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", _NO_FLAGS),
        ),
        _ignore,
    )


class _InlineCall:
    """A call answered on the poll thread (Ping, Heartbeat, GetWorkerReport):
    ``answer`` maps the request bytes to the reply message."""

    __slots__ = ("call", "method", "answer")

    def __init__(self, call: Any, method: bytes, answer: Callable[[bytes], Any]) -> None:
        self.call = call
        self.method = method
        self.answer = answer
        call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), self.on_message)

    def on_message(self, event: Any) -> None:
        payload = event.batch_operations[0].message() if event.success else None
        if payload is None:  # cancelled before its request arrived
            return
        try:
            reply = self.answer(payload).SerializeToString()
        except Exception as exc:
            log.exception("answering %s failed", self.method.decode())
            _send_status(self.call, cygrpc.StatusCode.internal, f"{type(exc).__name__}: {exc}")
            return
        # The close op in the same batch: a unary call's client has already
        # half-closed, so it completes with the reply.
        self.call.start_server_batch(
            (
                cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
                cygrpc.SendMessageOperation(reply, _NO_FLAGS),
                cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.ok, b"", _NO_FLAGS),
                cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),
            ),
            _ignore,
        )


class _ToolCall:
    """An ExecuteTool / ExecuteStreamingTool call from its arrival to its
    tool thread. Its close op is posted first, so a cancellation (the
    caller died, the deadline passed) is seen while the call waits."""

    __slots__ = ("call", "deadline", "streaming", "cancelled", "payload", "sends", "_queue")

    def __init__(self, call: Any, deadline: float, streaming: bool, calls: "queue.SimpleQueue[Any]") -> None:
        self.call = call
        self.deadline = deadline
        self.streaming = streaming
        self.cancelled = False
        self.payload = b""
        # A stream's send completions, handed from the poll thread to its tool thread.
        self.sends: Optional["queue.SimpleQueue[bool]"] = queue.SimpleQueue() if streaming else None
        self._queue = calls
        call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),), self.on_close)
        call.start_server_batch((cygrpc.ReceiveMessageOperation(_NO_FLAGS),), self.on_message)

    def on_close(self, event: Any) -> None:
        if event.batch_operations[0].cancelled():
            self.cancelled = True

    def on_message(self, event: Any) -> None:
        payload = event.batch_operations[0].message() if event.success else None
        if payload is None:
            return  # cancelled before its request arrived; nothing to run
        self.payload = payload
        self._queue.put(self)

    def on_sent(self, event: Any) -> None:
        self.sends.put(bool(event.success))

    def gave_up(self) -> bool:
        """True when the caller is gone: cancelled, or past its deadline."""
        return self.cancelled or self.deadline <= time.time()


class CoreServer:
    """Serves a ``WorkerServicer`` from the core layer (see the module doc).
    ``stop(grace)`` mirrors ``grpc.Server.stop``."""

    def __init__(self, servicer: Any, threads: int, options: Sequence[Tuple[str, Any]] = ()) -> None:
        self._servicer = servicer
        self._threads = threads
        self._calls: "queue.SimpleQueue[Optional[_ToolCall]]" = queue.SimpleQueue()
        self._cq = cygrpc.CompletionQueue()
        self._server = cygrpc.Server(tuple(options), False)
        self._server.register_completion_queue(self._cq)
        self._stopping = False
        self._stopped = threading.Event()
        self._inline: Dict[bytes, Callable[[bytes], Any]] = {
            f"{_SERVICE}Ping".encode(): lambda raw: servicer.ping_response(pb2.PingRequest.FromString(raw)),
            f"{_SERVICE}Heartbeat".encode(): lambda _raw: servicer.heartbeat(),
            f"{_SERVICE}GetWorkerReport".encode(): lambda _raw: servicer.worker_report(),
        }
        self._tools = {f"{_SERVICE}ExecuteTool".encode(): False, f"{_SERVICE}ExecuteStreamingTool".encode(): True}
        self._calls_method = f"{_SERVICE}ExecuteToolCalls".encode()
        self._streams: "weakref.WeakSet[CallStream]" = weakref.WeakSet()
        self._streams_lock = threading.Lock()

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_http2_port(address.encode())

    def start(self) -> None:
        self._server.start()
        self._server.request_call(self._cq, self._cq, _Tag.REQUEST_CALL)
        threading.Thread(target=self._poll, name="snakepit-poll", daemon=True).start()
        for i in range(self._threads):
            threading.Thread(target=self._serve_tools, name=f"snakepit-tool-{i}", daemon=True).start()

    def stop(self, grace: float) -> threading.Event:
        """Refuses new calls, lets running and queued ones finish within
        ``grace`` seconds, then cancels the rest. The event is set once
        every call is done."""
        self._stopping = True
        self._server.shutdown(self._cq, _Tag.SHUTDOWN)
        with self._streams_lock:
            streams = list(self._streams)
        for stream in streams:
            stream.end_when_idle()

        def cancel_after_grace() -> None:
            if not self._stopped.wait(grace):
                self._server.cancel_all_calls()

        threading.Thread(target=cancel_after_grace, name="snakepit-grace", daemon=True).start()
        return self._stopped

    # --- poll thread ----------------------------------------------------

    def _poll(self) -> None:
        cq = self._cq
        while True:
            event = cq.poll()
            tag = event.tag
            try:
                if tag is _Tag.REQUEST_CALL:
                    try:
                        if event.success:
                            self._accept(event)
                    finally:
                        if not self._stopping:
                            self._server.request_call(cq, cq, _Tag.REQUEST_CALL)
                elif tag is _Tag.SHUTDOWN:
                    self._stopped.set()
                elif tag is not None:
                    tag(event)
            except Exception:
                log.exception("handling a gRPC completion failed")
            # Drop the event (and the call it may hold) before blocking again.
            event = tag = None

    def _accept(self, event: Any) -> None:
        call = event.call
        method = event.call_details.method
        if method == self._calls_method:
            stream = CallStream(call, self._calls.put, lambda: self._stopping)
            with self._streams_lock:
                self._streams.add(stream)
            if self._stopping:  # accepted after stop() went through the streams
                stream.end_when_idle()
            return
        streaming = self._tools.get(method)
        if streaming is not None:
            _ToolCall(call, event.call_details.deadline, streaming, self._calls)
            return
        answer = self._inline.get(method)
        if answer is not None:
            _InlineCall(call, method, answer)
            return
        name = (method or b"").decode("utf-8", "replace")
        if name.startswith(_SERVICE):
            details = f"{name[len(_SERVICE):]} is not implemented by the Snakepit native worker"
        else:
            details = f"Method not found: {name}"
        call.start_server_batch(
            (
                cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS),
                cygrpc.ReceiveCloseOnServerOperation(_NO_FLAGS),
                cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.unimplemented, details.encode(), _NO_FLAGS),
            ),
            _ignore,
        )

    # --- tool threads ---------------------------------------------------

    def _serve_tools(self) -> None:
        calls = self._calls
        while True:
            item = calls.get()
            try:
                self._serve_one(item)
            except Exception:
                log.exception("serving a tool call failed")
                self._fail(item)
            item = None

    @staticmethod
    def _fail(item: Any) -> None:
        """Answers INTERNAL for a call whose serving raised outside its tool."""
        details = "the worker failed to serve the call"
        try:
            if type(item) is StreamedCall:
                request_id = item.request.request_id
                item.stream.finished(request_id, status_reply(request_id, cygrpc.StatusCode.internal, details))
            else:
                _send_status(item.call, cygrpc.StatusCode.internal, details)
        except Exception:  # the tool thread must live on
            log.exception("answering a failed call failed")

    def _serve_one(self, item: Any) -> None:
        if type(item) is StreamedCall:
            self._serve_streamed(item)
            return
        try:
            request = pb2.ExecuteToolRequest.FromString(item.payload)
        except Exception as exc:
            _send_status(item.call, cygrpc.StatusCode.invalid_argument, f"bad ExecuteToolRequest: {exc}")
            return
        if item.gave_up():
            if not item.cancelled:  # a cancelled call takes no status
                _send_status(item.call, cygrpc.StatusCode.deadline_exceeded, caller_gone_message(request.tool_name))
            return
        servicer = self._servicer
        request_id = request.request_id
        servicer.track_running(request_id)
        try:
            if item.streaming:
                self._stream(item, request)
            else:
                _send_reply(item.call, servicer.run_tool(request).SerializeToString())
        finally:
            servicer.untrack_running(request_id)

    def _serve_streamed(self, item: StreamedCall) -> None:
        request, stream = item.request, item.stream
        request_id = request.request_id
        if item.gave_up():
            reply = None
            if not stream.cancelled(request_id):
                reply = status_reply(
                    request_id, cygrpc.StatusCode.deadline_exceeded, caller_gone_message(request.tool_name)
                )
            stream.finished(request_id, reply)
            return
        servicer = self._servicer
        servicer.track_running(request_id)
        try:
            response = servicer.run_tool(request)
            response.request_id = request_id
            reply = response.SerializeToString()
        except Exception:
            log.exception("serving a tool call failed")
            reply = status_reply(request_id, cygrpc.StatusCode.internal, "the worker failed to serve the call")
        finally:
            servicer.untrack_running(request_id)
        stream.finished(request_id, reply)

    def _stream(self, item: _ToolCall, request: Any) -> None:
        chunks = self._servicer.stream_chunks(request)
        call, sends = item.call, item.sends
        first = True
        index = 0
        try:
            while True:
                failure: Optional[str] = None
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except StreamFailure as exc:
                    failure = exc.details
                if failure is not None:
                    _send_status(call, cygrpc.StatusCode.unknown, failure, with_metadata=first)
                    return
                message = cygrpc.SendMessageOperation(chunk.SerializeToString(), _NO_FLAGS)
                ops = (cygrpc.SendInitialMetadataOperation(None, _NO_FLAGS), message) if first else (message,)
                first = False
                call.start_server_batch(ops, item.on_sent)
                # Wait for the send: flow control paces the generator, and a
                # failed send is the client's cancel.
                if not sends.get():
                    log.info("stream %s cancelled by the client after %d chunks", request.tool_name, index)
                    return
                index += 1
            _send_status(call, cygrpc.StatusCode.ok, "", with_metadata=first)
        finally:
            chunks.close()
