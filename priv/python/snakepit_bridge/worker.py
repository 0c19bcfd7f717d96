"""The worker process: one adapter instance served over gRPC on a unix socket.

``grpc_server.py`` (next to this package) runs ``main()``. Startup contract
with the native runtime:

* exactly one JSON line is written to ``--ready-fd`` (then the fd is closed):
  ``{"status":"ready","pid":PID,"tools":[NAME,...]}`` once the adapter is
  built, its ``initialize()`` has returned and the socket listens; or,
  when any of that fails, ``{"status":"error","type":EXC_CLASS,
  "message":STR,"traceback":TEXT}`` followed by exit code 1;
* ``--lifeline-fd`` is the read end of a pipe whose write end only the
  parent holds: EOF means the parent is gone and a small watchdog SIGKILLs
  the worker's process group (children included);
* it serves from grpc's core layer (``core_server.CoreServer``), or from
  ``grpc.server`` when the installed grpcio lacks what that needs or
  ``--server fallback`` / ``SNAKEPIT_WORKER_SERVER=fallback`` asks for it;
  the ready log line names the path (``server=core`` / ``server=fallback``);
* SIGTERM stops the server, letting in-flight calls finish for
  ``--shutdown-grace-ms``, runs the adapter's ``cleanup()``, sends the
  telemetry still buffered, and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent import futures
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

import grpc
import snakepit_bridge_pb2 as pb2
import snakepit_bridge_pb2_grpc as pb2_grpc
from google.protobuf import any_pb2, timestamp_pb2

from . import json_codec, telemetry
from .base_adapter import BaseAdapter, ToolResolver, is_tool
from .core_server import CoreServer, StreamFailure, caller_gone_message, unavailable_reason
from .main_thread import MainThreadRunner, ThreadSensitivity
from .otel_tracing import reset_correlation_id, set_correlation_id, setup_tracing
from .telemetry.backends.elixir import ElixirBackend
from .wire import (
    BINARY_TYPE_URL,
    CHUNK_TYPE_KEY,
    CORRELATION_ID_KEY,
    JSON_TYPE_URL,
    error_json,
    error_object,
    stream_error_json,
)

__all__ = ["WorkerServicer", "main"]

log = logging.getLogger("snakepit.worker")

# grpc.server's executor threads beyond the tool capacity: they answer pings
# and refuse calls whose caller gave up while they waited for the gate.
FALLBACK_SPARE_THREADS = 7
DEFAULT_ADAPTER = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"

# Result types that are JSON-encoded as they are (no generator/coroutine checks).
_PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None), tuple})


# --------------------------------------------------------------------------
# Errors


class StartupError(Exception):
    """Raised for a failed startup step; ``type_name`` overrides the class name."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


# --------------------------------------------------------------------------
# Async code and lazy results


class _AsyncRunner:
    """One event loop, on its own thread, for every coroutine of the worker
    (``initialize``, async tools, ``cleanup``): an adapter's loop-bound
    objects (clients, locks, queues) work from any call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def _started(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="snakepit-asyncio", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, awaitable: Any) -> Any:
        if not asyncio.iscoroutine(awaitable):  # e.g. an async generator's __anext__()
            awaitable = _await(awaitable)
        return asyncio.run_coroutine_threadsafe(awaitable, self._started()).result()


async def _await(awaitable: Any) -> Any:
    return await awaitable


_run = _AsyncRunner().run


def _collect_async_gen(agen: Any) -> List[Any]:
    async def collect() -> List[Any]:
        return [item async for item in agen]

    return _run(collect())


def _settled(result: Any) -> Any:
    """The result with any awaitable awaited (on the worker's loop)."""
    while inspect.isawaitable(result):
        result = _run(result)
    return result


def _iter_async_gen(agen: Any) -> Iterator[Any]:
    """Drive an async generator from a sync thread, on the shared loop."""
    try:
        while True:
            try:
                item = _run(agen.__anext__())
            except StopAsyncIteration:
                return
            yield item
    finally:
        _run(agen.aclose())


def _items(result: Any) -> Optional[Iterator[Any]]:
    """The items of a lazy (settled) result: a generator, an async generator
    or another iterator; None for a plain value."""
    if inspect.isgenerator(result):
        return result
    if inspect.isasyncgen(result):
        return _iter_async_gen(result)
    if isinstance(result, Iterator) and not isinstance(result, (str, bytes, bytearray)):
        return result
    return None


def _materialize(result: Any) -> Any:
    """Turn lazy tool results into values for a unary reply."""
    result = _settled(result)
    if inspect.isasyncgen(result):
        return _collect_async_gen(result)  # one trip to the loop, not one per item
    items = _items(result)
    if items is not None:
        return list(items)
    return bytes(result) if isinstance(result, memoryview) else result


def _as_iterator(result: Any) -> Iterator[Any]:
    """Iterator over the chunks of a streaming tool's result."""
    result = _settled(result)
    items = _items(result)
    return items if items is not None else iter((result,))


def run_maybe_async(func: Callable[[], Any]) -> Any:
    """Calls ``func``; an awaitable result is awaited on the worker's loop."""
    result = func()
    return _run(result) if inspect.isawaitable(result) else result


# --------------------------------------------------------------------------
# Stream chunks


def _chunk_parts(item: Any) -> Tuple[Any, bool, Optional[Dict[str, Any]]]:
    """(payload, is_final, metadata) of a yielded item: a chunk object
    (``.data``, ``.is_final``, optional ``.metadata``, like upstream's
    ``StreamChunk``) or a plain value (a dict is a value, whatever its keys,
    as upstream sends it)."""
    itype = type(item)
    if itype in _PLAIN_TYPES or itype is bytes or itype is bytearray:
        return item, False, None
    if hasattr(item, "is_final") and hasattr(item, "data"):
        metadata = getattr(item, "metadata", None)
        return item.data, bool(item.is_final), metadata if isinstance(metadata, dict) else None
    return item, False, None


def _chunk(index: int, payload: Any, is_final: bool, metadata: Optional[Dict[str, Any]]) -> Any:
    """The ToolChunk for one item. Metadata travels as ``"_metadata"`` (text
    values) in the chunk's JSON object, as upstream's Elixir side shows it."""
    ptype = type(payload)
    if ptype is bytes or ptype is bytearray:
        return pb2.ToolChunk(
            chunk_id=str(index), data=bytes(payload), is_final=is_final, metadata={CHUNK_TYPE_KEY: BINARY_TYPE_URL}
        )
    if metadata:
        text = {str(k): str(v) for k, v in metadata.items()}
        payload = {**payload, "_metadata": text} if ptype is dict else {"data": payload, "_metadata": text}
    data = b"" if payload is None else json_codec.encode(payload, f"chunk {index}").encode()
    return pb2.ToolChunk(chunk_id=str(index), data=data, is_final=is_final)


# --------------------------------------------------------------------------
# Concurrency tracking (--thread-safety-checks)


class _ToolStats:
    __slots__ = ("thread_safe", "current", "max", "calls", "warned")

    def __init__(self, thread_safe: bool) -> None:
        self.thread_safe = thread_safe
        self.current = 0
        self.max = 0
        self.calls = 0
        self.warned = False


class ConcurrencyTracker:
    """Per-tool current/max concurrent executions and call counts."""

    def __init__(self, thread_safe: Callable[[str], bool]) -> None:
        self._thread_safe = thread_safe
        self._lock = threading.Lock()
        self._stats: Dict[str, _ToolStats] = {}

    def enter(self, name: str) -> None:
        with self._lock:
            st = self._stats.get(name)
            if st is None:
                st = self._stats[name] = _ToolStats(self._thread_safe(name))
            st.current += 1
            st.calls += 1
            if st.current > st.max:
                st.max = st.current
            warn = st.current >= 2 and not st.thread_safe and not st.warned
            if warn:
                st.warned = True
            current = st.current
        if warn:
            log.warning(
                "thread_safety_warning tool=%s concurrent=%d: tool is not marked "
                "@thread_safe_method but ran on %d threads at once",
                name,
                current,
                current,
            )

    def exit(self, name: str) -> None:
        with self._lock:
            self._stats[name].current -= 1

    def snapshot(self) -> Dict[str, _ToolStats]:
        with self._lock:
            out = {}
            for name, st in self._stats.items():
                copy = _ToolStats(st.thread_safe)
                copy.max, copy.calls = st.max, st.calls
                out[name] = copy
            return out


# --------------------------------------------------------------------------
# Servicer


def _now() -> Any:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _on(main_thread: Optional[MainThreadRunner], func: Callable[[], Any]) -> Any:
    """``func()`` here, or on the main thread for a thread-sensitive call."""
    return func() if main_thread is None else main_thread.run(func)


def _decode_args(request: Any) -> Dict[str, Any]:
    # One JSON object for every parameter (decoding str is cheaper than
    # json.loads(bytes)); the binary ones come next to it, raw.
    raw = request.parameters_json
    args: Dict[str, Any] = json_codec.decode(raw.decode()) if raw else {}
    if not isinstance(args, dict):
        raise TypeError(f"parameters_json must hold a JSON object, got {type(args).__name__}")
    binary = request.binary_parameters
    if binary:
        for key in binary:
            args[key] = binary[key]
    return args


class WorkerServicer(pb2_grpc.BridgeServiceServicer):
    """Serves one adapter instance's tools (``ToolResolver`` dispatch)."""

    def __init__(
        self,
        adapter: Any,
        thread_safety_checks: bool = False,
        capacity: Optional[int] = None,
        main_thread: Optional[MainThreadRunner] = None,
    ) -> None:
        self.adapter = adapter
        # Thread-sensitive calls run there; without a runner (a servicer
        # not started by main()) they run where the others do.
        self._main_thread = main_thread
        self._thread_sensitive = ThreadSensitivity()
        resolver = adapter._resolver() if isinstance(adapter, BaseAdapter) else ToolResolver(adapter)
        self._resolver = resolver
        self.tool_names: List[str] = resolver.names
        # grpc.server's gate: at most ``capacity`` tools at a time (1 in the
        # process profile), even when a call the parent gave up on
        # (deadline, cancelled) is still running here. The core-layer server
        # needs none: its tool threads are the capacity.
        self._tool_gate: Optional[threading.Semaphore] = threading.Semaphore(capacity) if capacity else None
        # Request ids of the calls past the gate, reported by Ping: a call
        # whose caller gave up keeps its slot in the pool until it leaves.
        self._running: Set[int] = set()
        self._tracker: Optional[ConcurrencyTracker] = (
            ConcurrencyTracker(resolver.is_thread_safe) if thread_safety_checks else None
        )

    # --- helpers -------------------------------------------------------

    def _enter_gate(self, context: Any, request_id: int) -> bool:
        """Waits for the gate at most until the call's deadline; False
        when the caller is gone by then (the tool must not run)."""
        if not self._pass_gate(context):
            return False
        self._running.add(request_id)
        return True

    def _pass_gate(self, context: Any) -> bool:
        gate = self._tool_gate
        if gate is None:
            return True
        remaining = context.time_remaining()  # None or huge without a deadline
        if remaining is None or remaining >= threading.TIMEOUT_MAX:
            acquired = gate.acquire()
        else:
            acquired = gate.acquire(timeout=max(remaining, 0.0))
        if not acquired:
            return False
        if not context.is_active():
            gate.release()
            return False
        return True

    def track_running(self, request_id: int) -> None:
        """The core-layer server's gate: its tool threads are the capacity."""
        self._running.add(request_id)

    def untrack_running(self, request_id: int) -> None:
        self._running.discard(request_id)

    def _leave_gate(self, request_id: int) -> None:
        self._running.discard(request_id)
        if self._tool_gate is not None:
            self._tool_gate.release()

    def _prepare(self, request: Any) -> Callable[[Dict[str, Any]], Any]:
        metadata = request.metadata
        return self._resolver.prepare(request.tool_name, request.session_id or None, dict(metadata) if metadata else None)

    def _on_main_thread(self, request: Any, args: Dict[str, Any]) -> Optional[MainThreadRunner]:
        """The runner to hand this call to, when it is thread-sensitive."""
        if self._main_thread is not None and self._thread_sensitive(request.metadata, args):
            return self._main_thread
        return None

    def _call(
        self,
        invoke: Callable[[Dict[str, Any]], Any],
        args: Dict[str, Any],
        name: str,
        main_thread: Optional[MainThreadRunner],
    ) -> Any:
        tracker = self._tracker
        if tracker is not None:
            tracker.enter(name)
        try:
            # No closure on the common path: it runs for every call.
            result = invoke(args) if main_thread is None else main_thread.run(lambda: invoke(args))
            return result if type(result) in _PLAIN_TYPES else _materialize(result)
        finally:
            if tracker is not None:
                tracker.exit(name)

    def run_tool(self, request: Any) -> Any:
        """Runs a unary call's tool (its turn has come) and returns the
        ExecuteToolResponse; a failing tool is an error reply, not a raise."""
        start = time.perf_counter()
        name = request.tool_name
        token = None
        try:
            if request.metadata:
                token = set_correlation_id(request.metadata.get(CORRELATION_ID_KEY))
            invoke = self._prepare(request)
            args = _decode_args(request)
            result = self._call(invoke, args, name, self._on_main_thread(request, args))
            rtype = type(result)
            if rtype is bytes or rtype is bytearray:
                any_result = any_pb2.Any(type_url=BINARY_TYPE_URL, value=bytes(result))
            else:
                any_result = any_pb2.Any(type_url=JSON_TYPE_URL, value=json_codec.encode(result).encode())
            return pb2.ExecuteToolResponse(
                success=True, result=any_result, execution_time_ms=int((time.perf_counter() - start) * 1000)
            )
        except BaseException as exc:  # SystemExit from a tool is an error reply too
            return pb2.ExecuteToolResponse(
                success=False, error_message=error_json(exc), execution_time_ms=int((time.perf_counter() - start) * 1000)
            )
        finally:
            if token is not None:
                reset_correlation_id(token)

    def stream_chunks(self, request: Any) -> Iterator[Any]:
        """The ToolChunks of a streaming call (its turn has come), ending
        with a final chunk. A failure before or between chunks raises
        ``StreamFailure``; closing this generator closes the tool's."""
        name = request.tool_name
        tracker = self._tracker
        tracked = False
        chunks: Optional[Iterator[Any]] = None
        token = set_correlation_id(request.metadata.get(CORRELATION_ID_KEY)) if request.metadata else None
        main_thread: Optional[MainThreadRunner] = None
        try:
            failure: Optional[str] = None
            try:
                invoke = self._prepare(request)
                args = _decode_args(request)
                main_thread = self._on_main_thread(request, args)
                if tracker is not None:
                    tracker.enter(name)
                    tracked = True
                chunks = _on(main_thread, lambda: _as_iterator(invoke(args)))
            except BaseException as exc:
                failure = stream_error_json(exc)
            if failure is not None:
                raise StreamFailure(failure)
            index = 0
            final_sent = False
            while True:
                try:
                    payload, is_final, metadata = _chunk_parts(_on(main_thread, lambda: next(chunks)))
                    chunk = _chunk(index, payload, is_final, metadata)
                except StopIteration:
                    break
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    failure = stream_error_json(exc)
                if failure is not None:
                    raise StreamFailure(failure)
                yield chunk
                final_sent = final_sent or is_final
                index += 1
            if not final_sent:
                yield pb2.ToolChunk(chunk_id=str(index), data=b"", is_final=True)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                try:
                    _on(main_thread, close)
                except Exception:
                    log.exception("closing the stream of tool %s failed", name)
            if tracked:
                tracker.exit(name)
            if token is not None:
                reset_correlation_id(token)

    def ping_response(self, request: Any) -> Any:
        # set.copy() is atomic under the GIL; iterating the live set is not.
        running = self._running.copy()
        return pb2.PingResponse(message=request.message or "pong", server_time=_now(), running_requests=running)

    def heartbeat(self) -> Any:
        return pb2.HeartbeatResponse(server_time=_now(), session_valid=True)

    def worker_report(self) -> Any:
        resp = pb2.WorkerReportResponse()
        stats = self._tracker.snapshot() if self._tracker is not None else {}
        for name in sorted(set(self.tool_names) | set(stats)):
            st = stats.get(name)
            resp.tools.add(
                tool_name=name,
                max_concurrency=st.max if st else 0,
                calls=st.calls if st else 0,
                thread_safe=self._resolver.is_thread_safe(name),
            )
        return resp

    # --- RPCs (grpc.server) ----------------------------------------------

    def Ping(self, request: Any, context: Any) -> Any:
        return self.ping_response(request)

    def Heartbeat(self, request: Any, context: Any) -> Any:
        return self.heartbeat()

    def ExecuteTool(self, request: Any, context: Any) -> Any:
        if not self._enter_gate(context, request.request_id):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, caller_gone_message(request.tool_name))
        try:
            return self.run_tool(request)
        finally:
            self._leave_gate(request.request_id)

    def ExecuteToolCalls(self, request_iterator: Any, context: Any) -> Iterator[Any]:
        """The runtime's call stream is served on the core layer only
        (call_stream.py); UNIMPLEMENTED tells the runtime to send this
        worker one RPC per call."""
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details("the grpc.server fallback takes one RPC per call")
        return iter(())

    def ExecuteStreamingTool(self, request: Any, context: Any) -> Any:
        # The whole stream holds the gate: its generator runs tool code on
        # every next().
        if not self._enter_gate(context, request.request_id):
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, caller_gone_message(request.tool_name))
        chunks = self.stream_chunks(request)
        try:
            index = 0
            while True:
                if not context.is_active():
                    log.info("stream %s cancelled by the client after %d chunks", request.tool_name, index)
                    return
                failure: Optional[str] = None
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except StreamFailure as exc:
                    failure = exc.details
                if failure is not None:
                    context.abort(grpc.StatusCode.UNKNOWN, failure)
                yield chunk
                index += 1
        finally:
            chunks.close()
            self._leave_gate(request.request_id)

    def GetWorkerReport(self, request: Any, context: Any) -> Any:
        return self.worker_report()

    # --- served by the native runtime, not by workers --------------------

    def _unimplemented(self, context: Any, what: str) -> None:
        context.set_code(grpc.StatusCode.UNIMPLEMENTED)
        context.set_details(f"{what} is not implemented by the Snakepit native worker")

    def InitializeSession(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "InitializeSession")
        return pb2.InitializeSessionResponse()

    def CleanupSession(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "CleanupSession")
        return pb2.CleanupSessionResponse()

    def GetSession(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "GetSession")
        return pb2.GetSessionResponse()

    def RegisterTools(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "RegisterTools")
        return pb2.RegisterToolsResponse()

    def GetExposedElixirTools(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "GetExposedElixirTools")
        return pb2.GetExposedElixirToolsResponse()

    def ExecuteElixirTool(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "ExecuteElixirTool")
        return pb2.ExecuteElixirToolResponse()

    def EmitTelemetry(self, request: Any, context: Any) -> Any:
        self._unimplemented(context, "EmitTelemetry")
        return pb2.TelemetryBatchResponse()


# --------------------------------------------------------------------------
# Startup steps


def write_ready_line(fd: int, payload: Dict[str, Any]) -> None:
    """Write one JSON line to the ready fd and close it (stdout if fd < 0)."""
    data = (json.dumps(payload, separators=(",", ":")) + "\n").encode()
    if fd < 0:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        log.error("cannot write the ready line to fd %d (%s); writing it to stdout", fd, exc)
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def fail_startup(fd: int, exc: BaseException) -> NoReturn:
    """Report a startup failure on the ready fd and exit 1."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(tb)
    sys.stderr.flush()
    error = error_object(exc, tb, type_name=getattr(exc, "type_name", None))
    log.error("worker startup failed: %s: %s", error["type"], error["message"])
    write_ready_line(fd, {"status": "error", **error})
    logging.shutdown()
    sys.stdout.flush()
    # os._exit: a thread the adapter started must not keep a failed worker alive.
    os._exit(1)


def load_adapter_class(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    if not module_name or not class_name:
        raise ValueError(f"--adapter must be MODULE.CLASS, got {path!r}")
    module = importlib.import_module(module_name)
    try:
        cls = getattr(module, class_name)
    except AttributeError:
        raise AttributeError(f"module {module_name!r} has no adapter class {class_name!r}") from None
    if not isinstance(cls, type):
        raise TypeError(f"{path!r} is not a class")
    return cls


def start_lifeline(fd: int) -> None:
    """Starts the watchdog that kills this worker's process group when the
    parent goes away (EOF on the lifeline). It is a separate small process,
    not a Python thread, so it acts even while a tool holds the GIL."""
    if fd < 0:
        return
    try:
        os.fstat(fd)
    except OSError as exc:
        log.warning("lifeline fd %d is not open (%s); running without a lifeline", fd, exc)
        return
    if os.getpgrp() != os.getpid():
        # Become a group leader so the lifeline can take children down with us.
        try:
            os.setpgid(0, 0)
        except OSError as exc:
            log.warning("cannot become a process group leader: %s", exc)
    group = os.getpgrp()
    # The shell stays in our group: whatever ends the group (the pool's
    # SIGTERM or SIGKILL) ends it too. Its stdin is the lifeline (dash only
    # redirects fds 0-9), its stderr ours; SIGPIPE is ignored because the
    # reader of that stderr is usually the parent that just died.
    script = (
        "trap '' PIPE; cat >/dev/null; "
        f"echo 'snakepit worker {os.getpid()}: lifeline closed, the parent is gone; "
        f"killing process group {group}' >&2; "
        f"kill -KILL -{group}"
    )
    subprocess.Popen(["/bin/sh", "-c", script], stdin=fd, stdout=subprocess.DEVNULL, close_fds=True)
    os.close(fd)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The worker's options, plus every option upstream's pools pass to its
    ``grpc_server.py`` / ``grpc_server_threaded.py`` (accepted; the ones
    with no meaning here are ignored, see ``_note_upstream_options``)."""
    parser = argparse.ArgumentParser(description="Snakepit native Python worker")
    parser.add_argument("--adapter", default=None, help="MODULE.CLASS of the adapter")
    parser.add_argument("--socket", default=None, help="unix socket path to listen on")
    parser.add_argument("--worker-id", default="worker", help="worker id (for logs and telemetry)")
    parser.add_argument("--pool-name", default="", help="the pool's name (telemetry metadata)")
    parser.add_argument("--snakepit-run-id", default="", help="run id (recorded only)")
    parser.add_argument("--snakepit-owner-pid", default="", help="OS pid of the owning BEAM (orphan sweep)")
    # The spawner (c_src/core/child_fds.hpp) names both fds; there are no defaults to drift.
    parser.add_argument("--ready-fd", type=int, default=None, help="fd for the ready line (required)")
    parser.add_argument("--lifeline-fd", type=int, default=-1, help="lifeline pipe fd (default -1: none)")
    parser.add_argument("--profile", choices=("process", "thread"), default="process")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker")
    parser.add_argument(
        "--thread-safety-checks", "--thread-safety-check", dest="thread_safety_checks", action="store_true"
    )
    parser.add_argument(
        "--shutdown-grace-ms",
        type=int,
        default=2000,
        help="how long in-flight calls may finish after SIGTERM (the parent's own grace, less a margin)",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or "auto",
        help=f"auto (the default: grpc's core layer when grpcio allows it), core or fallback (grpc.server); env {SERVER_ENV}",
    )
    parser.add_argument("--health-check", action="store_true", help="import the adapter and exit 0 (or 1)")
    upstream = parser.add_argument_group("upstream options (accepted, see the README)")
    upstream.add_argument("--max-workers", type=int, default=None, help="thread pool size (threads_per_worker decides)")
    upstream.add_argument("--port", type=int, default=None, help="TCP port (workers listen on a unix socket)")
    upstream.add_argument("--elixir-address", default=None, help="Elixir gRPC address (the runtime's socket is used)")
    upstream.add_argument("--mode", default=None, help="upstream's worker mode (the pool's profile decides)")
    upstream.add_argument("--snakepit-instance-name", default="")
    upstream.add_argument("--snakepit-instance-token", default="")
    upstream.add_argument("--heartbeat-enabled", action="store_true", help="(the heartbeat is native)")
    for flag in ("--heartbeat-interval-ms", "--heartbeat-timeout-ms", "--heartbeat-max-missed", "--heartbeat-initial-delay-ms"):
        upstream.add_argument(flag, type=int, default=None, help="(the heartbeat is native)")
    upstream.add_argument("--heartbeat-dependent", dest="heartbeat_dependent", action="store_true", default=None)
    upstream.add_argument("--heartbeat-independent", dest="heartbeat_dependent", action="store_false")
    args = parser.parse_args(argv)
    if args.health_check:
        args.adapter = args.adapter or DEFAULT_ADAPTER
    elif args.adapter is None or args.socket is None or args.ready_fd is None:
        parser.error("--adapter, --socket and --ready-fd are required")
    if args.threads is None:
        if args.profile == "process":
            args.threads = 1
        else:
            args.threads = args.max_workers if args.max_workers else 4
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def _note_upstream_options(args: argparse.Namespace) -> None:
    ignored = [
        f"--{name.replace('_', '-')}"
        for name in ("max_workers", "port", "elixir_address", "mode")
        if getattr(args, name) is not None
    ]
    if args.heartbeat_enabled or args.heartbeat_dependent is not None or args.heartbeat_interval_ms is not None:
        ignored.append("--heartbeat-*")
    if ignored:
        log.info(
            "ignoring upstream options %s: this worker serves %d thread(s) on a unix socket "
            "(pool profile and threads_per_worker decide), reaches Elixir on the runtime's socket, "
            "and is pinged natively",
            " ".join(ignored),
            args.threads,
        )


def setup_logging() -> None:
    # One compact "LEVEL logger: message" line per record: Elixir logs it at
    # that level with the worker id as metadata, adding its own timestamp.
    level = os.environ.get("SNAKEPIT_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        level = "INFO"  # an unknown name must not stop the worker before its handshake
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(levelname)s %(name)s: %(message)s",
    )


def run_health_check(adapter: str) -> NoReturn:
    """``--health-check``: exit 0 when the adapter class imports, else 1."""
    try:
        load_adapter_class(adapter)
    except Exception as exc:
        log.error("health check failed to import adapter %r: %s", adapter, exc)
        sys.exit(1)
    log.info("health check passed: adapter %s imports", adapter)
    sys.exit(0)


def install_telemetry(args: argparse.Namespace) -> Optional[ElixirBackend]:
    """Sends ``telemetry.emit`` events to Elixir when there is a runtime to reach."""
    if not os.environ.get("SNAKEPIT_ELIXIR_SOCKET"):
        return None
    backend = ElixirBackend(args.worker_id, args.pool_name)
    telemetry.set_backend(backend)
    return backend


def lifecycle_hook(adapter: Any, name: str) -> Optional[Callable[[], Any]]:
    """The adapter's ``initialize`` / ``cleanup``, unless it has none or the
    name is one of its ``@tool`` methods (then it is a tool, not a hook)."""
    hook = getattr(adapter, name, None)
    return hook if callable(hook) and not is_tool(hook) else None


def build_adapter(args: argparse.Namespace) -> Any:
    """Imports and instantiates the adapter, then runs its ``initialize()``."""
    adapter_cls = load_adapter_class(args.adapter)
    if args.profile == "thread" and getattr(adapter_cls, "__thread_safe__", False) is not True:
        raise StartupError(
            "ThreadSafetyError",
            f"adapter {args.adapter} must declare __thread_safe__ = True "
            "(subclass ThreadSafeAdapter) to run in the thread profile",
        )
    adapter = adapter_cls()
    initialize = lifecycle_hook(adapter, "initialize")
    if initialize is not None:
        started = time.monotonic()
        run_maybe_async(initialize)
        log.info("adapter initialize() took %.2fs", time.monotonic() - started)
    return adapter


SERVER_ENV = "SNAKEPIT_WORKER_SERVER"
SERVER_CHOICES = ("auto", "core", "fallback")
_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    ("grpc.so_reuseport", 0),
)


def choose_server(requested: str) -> Tuple[str, str]:
    """Which server a worker uses, ``("core" | "fallback", why)``, for
    ``--server`` / ``SNAKEPIT_WORKER_SERVER`` (auto, core or fallback)."""
    if requested not in SERVER_CHOICES:
        raise StartupError("ServerError", f"{SERVER_ENV} / --server must be one of {', '.join(SERVER_CHOICES)}, got {requested!r}")
    if requested == "fallback":
        return "fallback", f"forced by --server fallback or {SERVER_ENV}=fallback"
    reason = unavailable_reason()
    if reason is None:
        return "core", f"grpcio {grpc.__version__} has the core layer it needs"
    if requested == "core":
        raise StartupError("ServerError", f"--server core: {reason}")
    return "fallback", f"grpcio {grpc.__version__}: {reason}"


def _bind(server: Any, socket_path: str) -> None:
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    try:
        port = server.add_insecure_port("unix:" + socket_path)
    except RuntimeError as exc:
        raise StartupError("BindError", f"cannot bind unix:{socket_path}: {exc}") from exc
    if port == 0:
        raise StartupError("BindError", f"cannot bind unix:{socket_path}")


def start_server(servicer: WorkerServicer, args: argparse.Namespace) -> Tuple[Any, str]:
    """Starts the gRPC server on ``--socket``: on grpc's core layer
    (``core_server``) when the installed grpcio allows it, else
    ``grpc.server``, which costs about twice the CPU per call. Returns the
    server and a description of the path for the log."""
    path, why = choose_server(args.server)
    if path == "core":
        try:
            core = CoreServer(servicer, args.threads, _SERVER_OPTIONS)
        except Exception as exc:  # an internal API that changed shape
            if args.server == "core":
                raise StartupError("ServerError", f"--server core: {type(exc).__name__}: {exc}") from exc
            path, why = "fallback", f"grpcio {grpc.__version__}: the core layer failed to start ({type(exc).__name__}: {exc})"
        else:
            _bind(core, args.socket)
            core.start()
            return core, f"core (1 poll thread, {args.threads} tool thread(s); {why})"
    if args.server == "auto":
        log.warning("serving with grpc.server, not grpc's core layer (about twice the CPU per call): %s", why)
    max_workers = args.threads + FALLBACK_SPARE_THREADS
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="snakepit"),
        options=list(_SERVER_OPTIONS),
    )
    pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)
    _bind(server, args.socket)
    server.start()
    return server, f"fallback (grpc.server, {max_workers} executor threads; {why})"


def install_stop_signals() -> threading.Event:
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def shut_down(
    server: Any, adapter: Any, backend: Optional[ElixirBackend], grace_ms: int, main_thread: MainThreadRunner
) -> NoReturn:
    """Lets running calls finish within the grace (serving thread-sensitive
    ones meanwhile), runs ``cleanup()``, flushes telemetry, exits 0."""
    grace_s = max(grace_ms, 0) / 1000
    main_thread.serve_until(server.stop(grace_s), grace_s + 1.0)
    cleanup = lifecycle_hook(adapter, "cleanup")
    if cleanup is not None:
        try:
            run_maybe_async(cleanup)
        except Exception:
            log.exception("adapter cleanup() failed")
    if backend is not None:
        backend.close(timeout=1.0)
    log.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a tool still running on an executor thread must not keep us alive.
    os._exit(0)


# Results nested as deep as the BEAM side reads them (1,024 levels) must
# encode; Python's default limit (1,000 frames) stops short of that.
RESULT_RECURSION_LIMIT = 3000


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RESULT_RECURSION_LIMIT))
    setup_logging()
    setup_tracing()
    if args.health_check:
        run_health_check(args.adapter)
    # Lifeline first: a worker that hangs while its adapter loads must still
    # die with its parent.
    start_lifeline(args.lifeline_fd)
    _note_upstream_options(args)
    try:
        backend = install_telemetry(args)
        adapter = build_adapter(args)
        main_thread = MainThreadRunner()
        servicer = WorkerServicer(
            adapter, thread_safety_checks=args.thread_safety_checks, capacity=args.threads, main_thread=main_thread
        )
        server, server_path = start_server(servicer, args)
    except Exception as exc:
        fail_startup(args.ready_fd, exc)
    stop = install_stop_signals()
    log.info(
        "ready: adapter=%s profile=%s threads=%d server=%s socket=%s run_id=%s tools=%d",
        args.adapter,
        args.profile,
        args.threads,
        server_path,
        args.socket,
        args.snakepit_run_id,
        len(servicer.tool_names),
    )
    write_ready_line(args.ready_fd, {"status": "ready", "pid": os.getpid(), "tools": servicer.tool_names})
    main_thread.serve_until(stop)
    shut_down(server, adapter, backend, args.shutdown_grace_ms, main_thread)
