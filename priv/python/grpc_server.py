#!/usr/bin/env python3
"""Snakepit native worker: one adapter instance served over gRPC on a unix socket.

Run as ``python3 -u grpc_server.py --adapter MODULE.CLASS --socket PATH ...``.

Startup contract with the parent:
  * exactly one JSON line is written to ``--ready-fd`` (then the fd is closed):
      {"status":"ready","pid":PID,"tools":[NAME,...]}
    or, when the adapter cannot be imported/built or the server cannot start,
      {"status":"error","type":EXC_CLASS,"message":STR,"traceback":TEXT}
    followed by exit code 1;
  * ``--lifeline-fd`` is the read end of a pipe whose write end only the parent
    holds: EOF means the parent is gone and the worker SIGKILLs its own process
    group (children included);
  * SIGTERM stops the server, letting in-flight calls finish for
    ``--shutdown-grace-ms``, and exits 0.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if not sys.path or sys.path[0] != _HERE:
    sys.path.insert(0, _HERE)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent import futures  # noqa: E402
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence, Set  # noqa: E402

from snakepit_bridge import json_codec  # noqa: E402

log = logging.getLogger("snakepit.worker")

JSON_TYPE_URL = "type.googleapis.com/snakepit.json"
BINARY_TYPE_URL = "type.googleapis.com/snakepit.binary"
# One tool runs at a time; the other threads answer pings and refuse calls
# whose caller gave up while they waited for the gate.
PROCESS_PROFILE_EXECUTOR_THREADS = 8

# Result types that are JSON-encoded as they are (no generator/coroutine checks).
_PLAIN_TYPES = frozenset({dict, list, str, int, float, bool, type(None), tuple})


# --------------------------------------------------------------------------
# Errors

# gRPC status details travel as trailing metadata, which clients cap (8 KiB
# by default): a stream's error keeps the start of its message and the end
# of its traceback within these.
MAX_STATUS_MESSAGE_CHARS = 1500
MAX_STATUS_TRACEBACK_CHARS = 3000


def error_json(exc: BaseException, max_message: Optional[int] = None, max_traceback: Optional[int] = None) -> str:
    """The error contract: JSON {"type","message","traceback"}. Call inside ``except``."""
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not hide the error
        message = repr(exc)
    tb = traceback.format_exc()
    if max_message is not None and len(message) > max_message:
        message = message[:max_message] + "..."
    if max_traceback is not None and len(tb) > max_traceback:
        tb = "..." + tb[-max_traceback:]
    return json.dumps({"type": type(exc).__name__, "message": message, "traceback": tb})


def _status_error_json(exc: BaseException) -> str:
    return error_json(exc, MAX_STATUS_MESSAGE_CHARS, MAX_STATUS_TRACEBACK_CHARS)


# --------------------------------------------------------------------------
# Result shaping


class _AsyncRunner:
    """One event loop, on its own thread, for every async tool of the worker:
    an adapter's loop-bound objects (clients, locks, queues) work from any
    call, whichever executor thread serves it."""

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


_async_runner = _AsyncRunner()
_run = _async_runner.run


def _collect_async_gen(agen: Any) -> List[Any]:
    async def collect() -> List[Any]:
        return [item async for item in agen]

    return _run(collect())


def _materialize(result: Any) -> Any:
    """Turn lazy tool results into values for a unary reply."""
    if inspect.isgenerator(result):
        return list(result)
    if inspect.isasyncgen(result):
        return _collect_async_gen(result)
    if inspect.iscoroutine(result):
        return _materialize(_run(result))
    if isinstance(result, memoryview):
        return bytes(result)
    if isinstance(result, Iterator) and not isinstance(result, (str, bytes, bytearray)):
        return list(result)
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


def _as_iterator(result: Any) -> Iterator[Any]:
    """Iterator over the chunks of a streaming tool's result."""
    if inspect.isgenerator(result):
        return result
    if inspect.isasyncgen(result):
        return _iter_async_gen(result)
    if inspect.iscoroutine(result):
        result = _run(result)
        if inspect.isasyncgen(result) or inspect.isgenerator(result):
            return _as_iterator(result)
    if isinstance(result, Iterator) and not isinstance(result, (str, bytes, bytearray)):
        return result
    return iter((result,))


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

    def __init__(self, thread_safe: Dict[str, bool]) -> None:
        self._thread_safe = thread_safe
        self._lock = threading.Lock()
        self._stats: Dict[str, _ToolStats] = {}

    def enter(self, name: str) -> None:
        with self._lock:
            st = self._stats.get(name)
            if st is None:
                st = self._stats[name] = _ToolStats(self._thread_safe.get(name, False))
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


def build_servicer(pb2: Any, pb2_grpc: Any, grpc: Any) -> type:
    """Define the servicer class against the generated modules (imported late)."""
    from google.protobuf import any_pb2, timestamp_pb2

    from snakepit_bridge.base_adapter import (
        SessionContext,
        ToolNotFoundError,
        discover_tools,
        is_thread_safe_method,
    )

    Any_ = any_pb2.Any
    Timestamp = timestamp_pb2.Timestamp
    ExecuteToolResponse = pb2.ExecuteToolResponse
    ToolChunk = pb2.ToolChunk
    perf_counter = time.perf_counter
    status_unknown = grpc.StatusCode.UNKNOWN
    status_deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    status_unimplemented = grpc.StatusCode.UNIMPLEMENTED

    def _now() -> Any:
        ts = Timestamp()
        ts.GetCurrentTime()
        return ts

    class WorkerServicer(pb2_grpc.BridgeServiceServicer):
        def __init__(
            self, adapter: Any, thread_safety_checks: bool = False, one_at_a_time: bool = False
        ) -> None:
            self._adapter = adapter
            # Process profile: one tool at a time, even when a call the parent
            # gave up on (deadline, cancelled) is still running here.
            self._tool_gate: Optional[threading.Lock] = threading.Lock() if one_at_a_time else None
            # Request ids of the calls past the gate, reported by Ping: a call
            # whose caller gave up keeps its slot in the pool until it leaves.
            self._running: Set[int] = set()
            funcs = discover_tools(type(adapter))
            self._tools: Dict[str, Callable[..., Any]] = {
                name: getattr(adapter, name) for name in funcs
            }
            self.tool_names: List[str] = sorted(funcs)
            self._thread_safe = {name: is_thread_safe_method(f) for name, f in funcs.items()}
            fallback = getattr(adapter, "execute_tool", None)
            self._fallback = fallback if callable(fallback) else None
            self._set_session = getattr(adapter, "_snakepit_set_session", None)
            self._tracker: Optional[ConcurrencyTracker] = (
                ConcurrencyTracker(self._thread_safe) if thread_safety_checks else None
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

        def _leave_gate(self, request_id: int) -> None:
            self._running.discard(request_id)
            if self._tool_gate is not None:
                self._tool_gate.release()

        def _resolve(self, name: str, session_id: str) -> Callable[..., Any]:
            set_session = self._set_session
            ctx = set_session(session_id) if set_session is not None else None
            fn = self._tools.get(name)
            if fn is not None:
                return fn
            fallback = self._fallback
            if fallback is None:
                raise ToolNotFoundError(name, self.tool_names)
            if ctx is None:
                ctx = SessionContext(session_id)
            return lambda **kwargs: fallback(name, kwargs, ctx)

        @staticmethod
        def _decode_args(request: Any) -> Dict[str, Any]:
            # Indexing the map is much cheaper than .items() with the C++/upb
            # protobuf backends; decoding str is cheaper than json.loads(bytes).
            args: Dict[str, Any] = {}
            params = request.parameters
            if params:
                for key in params:
                    raw = params[key].value
                    args[key] = json_codec.decode(raw.decode()) if raw else None
            binary = request.binary_parameters
            if binary:
                for key in binary:
                    args[key] = binary[key]
            return args

        @staticmethod
        def _call_tool(
            fn: Callable[..., Any], args: Dict[str, Any], name: str, tracker: Optional[ConcurrencyTracker]
        ) -> Any:
            if tracker is not None:
                tracker.enter(name)
            try:
                result = fn(**args)
                return result if type(result) in _PLAIN_TYPES else _materialize(result)
            finally:
                if tracker is not None:
                    tracker.exit(name)

        # --- RPCs ----------------------------------------------------------

        def Ping(self, request: Any, context: Any) -> Any:
            # set.copy() is atomic under the GIL; iterating the live set is not.
            running = self._running.copy()
            return pb2.PingResponse(
                message=request.message or "pong", server_time=_now(), running_requests=running
            )

        def Heartbeat(self, request: Any, context: Any) -> Any:
            return pb2.HeartbeatResponse(server_time=_now(), session_valid=True)

        def ExecuteTool(self, request: Any, context: Any) -> Any:
            start = perf_counter()
            name = request.tool_name
            gated = False
            try:
                fn = self._resolve(name, request.session_id)
                args = self._decode_args(request)
                gated = self._enter_gate(context, request.request_id)
                if not gated:
                    raise _CallerGone(name)
                result = self._call_tool(fn, args, name, self._tracker)
                rtype = type(result)
                if rtype is bytes or rtype is bytearray:
                    any_result = Any_(type_url=BINARY_TYPE_URL, value=bytes(result))
                else:
                    any_result = Any_(type_url=JSON_TYPE_URL, value=json_codec.encode(result).encode())
                return ExecuteToolResponse(
                    success=True,
                    result=any_result,
                    execution_time_ms=int((perf_counter() - start) * 1000),
                )
            except _CallerGone as gone:
                context.abort(status_deadline, str(gone))
            except BaseException as exc:  # SystemExit from a tool is an error reply too
                return ExecuteToolResponse(
                    success=False,
                    error_message=error_json(exc),
                    execution_time_ms=int((perf_counter() - start) * 1000),
                )
            finally:
                if gated:
                    self._leave_gate(request.request_id)

        def ExecuteStreamingTool(self, request: Any, context: Any) -> Any:
            name = request.tool_name
            tracker = self._tracker
            tracked = False
            gated = False
            chunks: Optional[Iterator[Any]] = None
            try:
                failure: Optional[str] = None
                try:
                    fn = self._resolve(name, request.session_id)
                    args = self._decode_args(request)
                    # The whole stream holds the gate: its generator runs
                    # tool code on every next().
                    gated = self._enter_gate(context, request.request_id)
                    if not gated:
                        raise _CallerGone(name)
                    if tracker is not None:
                        tracker.enter(name)
                        tracked = True
                    chunks = _as_iterator(fn(**args))
                except _CallerGone as gone:
                    context.abort(status_deadline, str(gone))
                except BaseException as exc:
                    failure = _status_error_json(exc)
                if failure is not None:
                    context.abort(status_unknown, failure)
                index = 0
                while True:
                    if not context.is_active():
                        log.info("stream %s cancelled by the client after %d chunks", name, index)
                        return
                    try:
                        item = next(chunks)
                        itype = type(item)
                        if itype is bytes or itype is bytearray:
                            chunk = ToolChunk(
                                chunk_id=str(index),
                                data=bytes(item),
                                metadata={"type_url": BINARY_TYPE_URL},
                            )
                        else:
                            chunk = ToolChunk(
                                chunk_id=str(index), data=json_codec.encode(item, f"chunk {index}").encode()
                            )
                    except StopIteration:
                        break
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        failure = _status_error_json(exc)
                    if failure is not None:
                        context.abort(status_unknown, failure)
                    yield chunk
                    index += 1
                yield ToolChunk(chunk_id=str(index), data=b"", is_final=True)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:
                        log.exception("closing the stream of tool %s failed", name)
                if tracked:
                    tracker.exit(name)
                if gated:
                    self._leave_gate(request.request_id)

        def GetWorkerReport(self, request: Any, context: Any) -> Any:
            resp = pb2.WorkerReportResponse()
            stats = self._tracker.snapshot() if self._tracker is not None else {}
            names = sorted(set(self.tool_names) | set(stats))
            for name in names:
                st = stats.get(name)
                resp.tools.add(
                    tool_name=name,
                    max_concurrency=st.max if st else 0,
                    calls=st.calls if st else 0,
                    thread_safe=self._thread_safe.get(name, False),
                )
            return resp

        # --- not (yet) implemented ----------------------------------------

        def _unimplemented(self, context: Any, what: str) -> None:
            context.set_code(status_unimplemented)
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

    return WorkerServicer


# --------------------------------------------------------------------------
# Process plumbing


class _CallerGone(Exception):
    """The call's deadline passed (or it was cancelled) before its turn came."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"tool {tool} was not started: its caller gave up waiting")


class StartupError(Exception):
    """Raised for a failed startup step; ``type_name`` overrides the class name."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


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
    type_name = getattr(exc, "type_name", None) or type(exc).__name__
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    sys.stderr.write(tb)
    sys.stderr.flush()
    log.error("worker startup failed: %s: %s", type_name, exc)
    write_ready_line(
        fd,
        {
            "status": "error",
            "type": type_name,
            "message": str(exc),
            "traceback": tb,
        },
    )
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
    parser = argparse.ArgumentParser(description="Snakepit native Python worker")
    parser.add_argument("--adapter", required=True, help="MODULE.CLASS of the adapter")
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--worker-id", default="worker", help="worker id (for logs)")
    parser.add_argument("--snakepit-run-id", default="", help="run id (recorded only)")
    parser.add_argument("--snakepit-owner-pid", default="", help="OS pid of the owning BEAM (orphan sweep)")
    parser.add_argument("--ready-fd", type=int, default=3, help="fd for the ready line")
    parser.add_argument("--lifeline-fd", type=int, default=4, help="lifeline pipe fd; -1 disables")
    parser.add_argument("--profile", choices=("process", "thread"), default="process")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker")
    parser.add_argument("--thread-safety-checks", action="store_true")
    parser.add_argument(
        "--shutdown-grace-ms",
        type=int,
        default=2000,
        help="how long in-flight calls may finish after SIGTERM (the parent's own grace, less a margin)",
    )
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.profile == "process" else 4
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


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


# Results nested as deep as the BEAM side reads them (1,024 levels) must
# encode; Python's default limit (1,000 frames) stops short of that.
RESULT_RECURSION_LIMIT = 3000


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RESULT_RECURSION_LIMIT))
    setup_logging()
    ready_fd = args.ready_fd

    # Lifeline first: a worker that hangs during adapter __init__ must still
    # die with its parent.
    start_lifeline(args.lifeline_fd)

    try:
        import grpc

        import snakepit_bridge_pb2 as pb2
        import snakepit_bridge_pb2_grpc as pb2_grpc

        adapter_cls = load_adapter_class(args.adapter)
        if args.profile == "thread" and getattr(adapter_cls, "__thread_safe__", False) is not True:
            raise StartupError(
                "ThreadSafetyError",
                f"adapter {args.adapter} must declare __thread_safe__ = True "
                "(subclass ThreadSafeAdapter) to run in the thread profile",
            )
        adapter = adapter_cls()
        servicer_cls = build_servicer(pb2, pb2_grpc, grpc)
        servicer = servicer_cls(
            adapter,
            thread_safety_checks=args.thread_safety_checks,
            one_at_a_time=args.profile == "process",
        )
    except Exception as exc:
        fail_startup(ready_fd, exc)

    try:
        if args.profile == "thread":
            max_workers = args.threads + 2
        else:
            max_workers = PROCESS_PROFILE_EXECUTOR_THREADS
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="snakepit"),
            options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb2_grpc.add_BridgeServiceServicer_to_server(servicer, server)
        if os.path.exists(args.socket):
            os.unlink(args.socket)
        try:
            port = server.add_insecure_port("unix:" + args.socket)
        except RuntimeError as exc:
            raise StartupError("BindError", f"cannot bind unix:{args.socket}: {exc}") from exc
        if port == 0:
            raise StartupError("BindError", f"cannot bind unix:{args.socket}")
        server.start()
    except Exception as exc:
        fail_startup(ready_fd, exc)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log.info(
        "ready: adapter=%s profile=%s threads=%d executor=%d socket=%s run_id=%s tools=%d",
        args.adapter,
        args.profile,
        args.threads,
        max_workers,
        args.socket,
        args.snakepit_run_id,
        len(servicer.tool_names),
    )
    write_ready_line(ready_fd, {"status": "ready", "pid": os.getpid(), "tools": servicer.tool_names})

    while not stop.wait(1.0):
        pass
    grace_s = max(args.shutdown_grace_ms, 0) / 1000
    server.stop(grace_s).wait(grace_s + 1.0)
    log.info("stopped")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: a tool still running on an executor thread must not keep us alive.
    os._exit(0)


if __name__ == "__main__":
    main()
