"""The upstream-facing Python API (issue 13): names, lifecycle, telemetry, results, chunks."""

from __future__ import annotations

import asyncio
import datetime
import json
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import grpc
import pytest

from conftest import TEST_ADAPTERS, decode_result, make_request, pb2, pb2_grpc

# --- names ------------------------------------------------------------------------


def test_upstream_modules_and_names_exist() -> None:
    import snakepit_bridge
    from snakepit_bridge import (  # noqa: F401
        HeartbeatClient,
        HeartbeatConfig,
        SessionContext,
        ToolMetadata,
        ZeroCopyRef,
        configure_logging,
        get_logger,
        heartbeat,
        logging_config,
        otel_tracing,
        serialization,
        session_context,
        telemetry,
        thread_safety_checker,
        zero_copy,
    )
    from snakepit_bridge.base_adapter_threaded import (  # noqa: F401
        RequestTracker,
        ThreadLocalStorage,
        require_thread_safe,
        validate_thread_safety,
    )
    from snakepit_bridge.serialization import GracefulJSONEncoder, TypeSerializer  # noqa: F401

    assert snakepit_bridge.__version__ == "0.13.0"
    modules = (heartbeat, logging_config, otel_tracing, serialization, session_context, thread_safety_checker, zero_copy)
    assert all(m.__name__.startswith("snakepit_bridge.") for m in modules)
    assert HeartbeatClient and HeartbeatConfig().interval_ms == 2000 and SessionContext is session_context.SessionContext
    assert ToolMetadata().parameters == [] and ZeroCopyRef({}).kind is None and callable(configure_logging)
    assert ThreadLocalStorage().get("x", 1) == 1 and RequestTracker().get_stats()["total_requests"] == 0
    assert callable(require_thread_safe) and validate_thread_safety(snakepit_bridge.ThreadSafeAdapter)
    assert GracefulJSONEncoder and TypeSerializer
    assert get_logger("snakepit_bridge.x").name == "snakepit.bridge.x"
    assert get_logger("mine").name == "snakepit.mine"
    for name in ("emit", "span", "set_backend", "get_backend", "is_enabled", "get_correlation_id", "otel_span"):
        assert callable(getattr(telemetry, name))


def test_tool_keyword_arguments_and_metadata() -> None:
    from snakepit_bridge.base_adapter import BaseAdapter, ToolMetadata, tool

    class A(BaseAdapter):
        @tool(description="Search", supports_streaming=True, required_variables=["api_key"])
        def search(self, query: str, limit: int = 10) -> Dict[str, Any]:
            return {"query": query, "limit": limit}

        @tool("positional description")
        def one(self) -> int:
            return 1

        @tool
        def bare(self) -> int:
            """Bare tool."""
            return 2

    meta = A.search._tool_metadata
    assert isinstance(meta, ToolMetadata)
    assert (meta.description, meta.supports_streaming, meta.required_variables) == ("Search", True, ["api_key"])
    assert A.one._tool_metadata.description == "positional description"
    assert A.bare._tool_metadata.description == "Bare tool."
    regs = {t.name: t for t in A().get_tools()}
    assert regs["search"].metadata["required_variables"] == "api_key"
    assert regs["search"].supports_streaming
    assert [(p.name, p.type, p.required) for p in regs["search"].parameters] == [
        ("query", "str", True),
        ("limit", "int", False),
    ]


def test_thread_safe_adapter_helpers_and_tracking() -> None:
    from snakepit_bridge import ThreadSafeAdapter, thread_safe_method, tool

    class T(ThreadSafeAdapter):
        @thread_safe_method
        @tool(description="x")
        def work(self) -> str:
            return threading.current_thread().name

    t = T()
    assert T.work.__thread_safe__ is True and T.work._tool_metadata.description == "x"
    t.set_thread_local("k", 1)
    t.clear_thread_local("k")
    assert t.get_thread_local("k", "default") == "default"
    t.clear_thread_local()
    t.work()
    with t.track_request():
        pass
    stats = t.get_stats()
    assert stats["adapter_class"] == "T" and stats["thread_safe"] is True
    assert stats["tracker"]["total_requests"] == 2 and stats["tracker"]["total_active_requests"] == 0


def test_session_context_upstream_constructor_and_cleanup() -> None:
    from snakepit_bridge import SessionContext

    class Tools:
        def __init__(self) -> None:
            self.calls: List[Any] = []
            self.registered = {"lookup"}

        def GetExposedElixirTools(self, request: Any, timeout: float = 0) -> Any:
            spec = pb2.ToolSpec(name="lookup", description="finds")
            return pb2.GetExposedElixirToolsResponse(tools=[spec])

        def ExecuteElixirTool(self, request: Any, timeout: float = 0) -> Any:
            self.calls.append(request.tool_name)
            if request.tool_name == "lookup":
                value = json.loads(request.parameters["sku"].value)
                result = pb2.ExecuteElixirToolResponse(success=True)
                result.result.value = json.dumps({"sku": value}).encode()
                return result
            if request.tool_name not in self.registered:
                # As the registry answers for a tool the session does not have.
                return pb2.ExecuteElixirToolResponse(
                    success=False, error_message="unknown", metadata={"error_kind": "not_found"}
                )
            return pb2.ExecuteElixirToolResponse(success=False, error_message="boom")

    stub = Tools()
    with SessionContext(stub, "s-1", request_metadata={"correlation_id": "c"}) as ctx:
        assert ctx.session_id == "s-1" and ctx.request_metadata == {"correlation_id": "c"}
        assert ctx.elixir_tools["lookup"] == {"name": "lookup", "description": "finds", "parameters": {}}
        assert ctx.call_elixir_tool("lookup", sku="A-1") == {"sku": "A-1"}
        assert ctx.elixir_tools["lookup"](sku="B") == {"sku": "B"}  # the entry is callable too
        with pytest.raises(ValueError, match="'nope' not found"):
            ctx.call_elixir_tool("nope")
    assert ctx._elixir_tools is None  # cleanup() on exit
    stub.registered.add("nope")
    with pytest.raises(RuntimeError, match="boom"):
        ctx.call_elixir_tool("nope")


def test_elixir_tools_is_empty_when_listing_fails_other_than_by_rpc_error(caplog: Any) -> None:
    from snakepit_bridge import SessionContext

    channel = grpc.insecure_channel("unix:/nonexistent/snakepit.sock")
    channel.close()  # calls on it raise ValueError, not grpc.RpcError
    ctx = SessionContext(pb2_grpc.BridgeServiceStub(channel), "s-1")
    with caplog.at_level("WARNING", logger="snakepit.bridge.session_context"):
        assert ctx.elixir_tools == {}
    assert "Failed to load Elixir tools (ValueError)" in caplog.text


def test_register_with_session_against_the_native_runtime() -> None:
    from snakepit_bridge import BaseAdapter, tool

    class A(BaseAdapter):
        @tool
        def one(self) -> int:
            return 1

    class Unimplemented(grpc.RpcError):
        def code(self) -> Any:
            return grpc.StatusCode.UNIMPLEMENTED

    class Stub:
        def RegisterTools(self, request: Any) -> Any:
            raise Unimplemented()

    class Registering:
        def RegisterTools(self, request: Any) -> Any:
            return pb2.RegisterToolsResponse(success=True, tool_ids={t.name: "id" for t in request.tools})

    assert A().register_with_session("s", Stub()) == ["one"]
    assert A().register_with_session("s", Registering()) == ["one"]
    assert asyncio.run(A().register_with_session_async("s", Registering())) == ["one"]


def test_heartbeat_is_native_and_keeps_upstreams_api() -> None:
    from snakepit_bridge.heartbeat import HeartbeatClient, HeartbeatConfig

    config = HeartbeatConfig.from_mapping({"intervalMs": "500", "dependent": "false", "max_missed_heartbeats": -1})
    assert (config.interval_ms, config.dependent, config.max_missed_heartbeats) == (500, False, 3)
    client = HeartbeatClient(None, "s", config)
    assert client.start() is False
    assert client.status()["running"] is False and client.status()["native"] is True
    assert asyncio.run(client.ping_once()) is None


def test_otel_tracing_without_opentelemetry_binds_correlation_ids() -> None:
    from snakepit_bridge import otel_tracing as ot

    assert ot.get_correlation_id() is None
    with ot.span("op", context_metadata=[(ot.CORRELATION_HEADER, "abc")]) as span:
        assert span is None
        assert ot.get_correlation_id() == "abc"
        assert ot.outgoing_metadata() == [(ot.CORRELATION_HEADER, "abc")]
    assert ot.get_correlation_id() is None


def test_setup_tracing_gives_every_log_record_a_correlation_id() -> None:
    import io
    import logging

    from snakepit_bridge import telemetry

    telemetry.setup_tracing()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(correlation_id)s %(message)s"))
    logger = logging.getLogger("test_bridge_api.own_handler")
    logger.propagate, logger.handlers = False, [handler]
    logger.setLevel(logging.INFO)
    logger.info("none")
    token = telemetry.set_correlation_id("cid-9")
    try:
        logger.info("bound")
    finally:
        telemetry.reset_correlation_id(token)
    assert out.getvalue().splitlines() == ["- none", "cid-9 bound"]


def test_worker_log_records_carry_the_calls_correlation_id(test_worker: Any) -> None:
    request = pb2.ExecuteToolRequest(
        tool_name="log_with_correlation",
        parameters_json=json.dumps({"message": "hi"}).encode(),
        metadata={"correlation_id": "cid-42"},
    )
    assert decode_result(test_worker.stub.ExecuteTool(request, timeout=30)) == "cid-42|hi"
    assert test_worker.result("log_with_correlation", message="plain") == "-|plain"


def test_thread_safety_checker_reports_concurrent_access() -> None:
    from snakepit_bridge.thread_safety_checker import ThreadSafetyChecker

    with ThreadSafetyChecker(enabled=True) as checker:
        checker.check_method_access("m")
        with pytest.warns(RuntimeWarning, match="accessed by 2 different threads"):
            other = threading.Thread(target=checker.check_method_access, args=("m",))
            other.start()
            other.join()
        report = checker.get_report()
    assert report["concurrent_accesses"] == {"m": 2}


def test_zero_copy_and_type_serializer() -> None:
    from snakepit_bridge.serialization import TypeSerializer
    from snakepit_bridge.zero_copy import ZeroCopyRef

    ref = ZeroCopyRef({"kind": "dlpack", "device": "cpu", "shape": [2]})
    assert ref.to_payload()["kind"] == "dlpack" and ref.shape == [2]
    message, binary = TypeSerializer.encode_any(3, "integer")
    assert binary is None and TypeSerializer.decode_any(message) == 3
    message, binary = TypeSerializer.encode_any(list(range(2000)), "embedding")
    assert binary is not None and TypeSerializer.decode_any(message, binary)[-1] == 1999.0


# --- graceful serialization --------------------------------------------------------


class _Dumps:
    def model_dump(self) -> Dict[str, Any]:
        return {"n": 1}


class _ToDict:
    def to_dict(self) -> Dict[str, Any]:
        return {"d": 2.5}


class _AsDict:
    def _asdict(self) -> Dict[str, Any]:
        return {"a": 3}


class _Opaque:
    pass


class _BadNumber:
    def to_dict(self) -> Dict[str, Any]:
        return {"score": float("inf")}


def test_graceful_serialization_rules() -> None:
    from snakepit_bridge import json_codec
    from snakepit_bridge.serialization import GracefulJSONEncoder

    value = {
        "m": _Dumps(),
        "t": _ToDict(),
        "a": _AsDict(),
        "o": _Opaque(),
        "when": datetime.date(2026, 1, 2),
        "set": {1},
        "big": 2**63 - 1,
    }
    decoded = json.loads(json_codec.encode(value))
    assert decoded == {
        "m": {"n": 1},
        "t": {"d": 2.5},
        "a": {"a": 3},
        "o": {"__ffi_unserializable__": True, "__type__": "test_bridge_api._Opaque"},
        "when": "2026-01-02",
        "set": [1],
        "big": 2**63 - 1,
    }
    assert json.loads(json.dumps({"o": _Opaque()}, cls=GracefulJSONEncoder))["o"]["__type__"].endswith("_Opaque")
    with pytest.raises(ValueError, match=r"result.x.score is NaN or infinite"):
        json_codec.encode({"x": _BadNumber()})
    with pytest.raises(TypeError, match="bytes nested"):
        json_codec.encode({"b": b"\x00"})


class _ListOnly:
    """Has ``tolist()`` but no ``size``/``shape``: the limit can only count the result."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols

    def tolist(self) -> List[List[int]]:
        return [list(range(self.cols)) for _ in range(self.rows)]


class _Sized:
    size = 10**9  # what the pre-check reads; tolist() must not run

    def tolist(self) -> List[int]:
        raise AssertionError("tolist() ran although size says it is over the limit")


def test_tolist_limit_applies_to_objects_that_do_not_know_their_size(monkeypatch: Any) -> None:
    from snakepit_bridge import json_codec, serialization

    monkeypatch.setattr(serialization, "_TOLIST_MAX_ELEMENTS", 100)
    assert json.loads(json_codec.encode(_ListOnly(10, 10))) == [list(range(10))] * 10  # at the limit
    over = json.loads(json_codec.encode({"arr": _ListOnly(10, 11)}))["arr"]
    assert over == {"__ffi_unserializable__": True, "__type__": "test_bridge_api._ListOnly"}
    flat = json.loads(json.dumps({"arr": _ListOnly(1, 150)}, cls=serialization.GracefulJSONEncoder))["arr"]
    assert flat["__ffi_unserializable__"] is True
    assert json.loads(json_codec.encode(_Sized()))["__type__"] == "test_bridge_api._Sized"


# --- chunks ------------------------------------------------------------------------


def test_chunk_objects_are_unpacked() -> None:
    from snakepit_bridge.adapters.showcase.tool import StreamChunk
    from snakepit_bridge.worker import _chunk, _chunk_parts

    assert _chunk_parts(StreamChunk({"a": 1}, is_final=True)) == ({"a": 1}, True, None)
    assert _chunk_parts({"data": 1, "is_final": True}) == ({"data": 1, "is_final": True}, False, None)

    class Own:  # any object with the attributes
        data = [1, 2]
        is_final = False
        metadata = {"unit": "rows"}

    payload, final, meta = _chunk_parts(Own())
    chunk = _chunk(3, payload, final, meta)
    assert json.loads(chunk.data) == {"data": [1, 2], "_metadata": {"unit": "rows"}}
    assert _chunk(0, None, True, None).data == b""
    assert _chunk(0, b"\x00", False, None).metadata["type_url"].endswith("snakepit.binary")


# --- telemetry ---------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.events: List[Tuple[str, Dict[str, Any], Optional[Dict[str, Any]], Optional[str]]] = []

    def emit(self, name: str, measurements: Dict[str, Any], metadata: Any = None, correlation_id: Any = None) -> None:
        self.events.append((name, measurements, metadata, correlation_id))

    def close(self) -> None:
        pass


def test_emit_and_span_go_to_the_backend() -> None:
    from snakepit_bridge import telemetry

    recorder = Recorder()
    telemetry.set_backend(recorder)  # type: ignore[arg-type]
    try:
        telemetry.emit("a.b", {"n": 1}, {"k": "v"}, correlation_id="c1")
        with pytest.raises(KeyError):
            with telemetry.span("op", {"tool": "t"}):
                raise KeyError("x")
        with telemetry.span("ok"):
            pass
    finally:
        telemetry.set_backend(None)
    names = [e[0] for e in recorder.events]
    assert names == ["a.b", "op.start", "op.exception", "ok.start", "ok.stop"]
    assert recorder.events[0][3] == "c1"
    assert recorder.events[2][2]["error_type"] == "KeyError"
    assert recorder.events[4][1]["duration"] >= 0
    assert not telemetry.is_enabled()


def test_elixir_backend_batches_bounds_and_counts() -> None:
    from snakepit_bridge.telemetry.backends.elixir import ElixirBackend

    release = threading.Event()
    batches: List[Any] = []

    def slow_send(batch: Any) -> None:
        release.wait(10)
        batches.append(batch)

    backend = ElixirBackend("w1", "pool", max_buffer=100, batch_size=10, flush_interval=0.01, send=slow_send)
    started = time.perf_counter()
    for i in range(10_000):
        backend.emit("x.y", {"i": i, "ok": True, "f": 0.5, "big": 2**70, "nan": float("nan")}, {"m": i})
    assert time.perf_counter() - started < 2.0
    assert backend.pending <= 100  # the bound holds while the consumer is stuck
    release.set()
    assert backend.flush(10)
    sent = sum(len(b.events) for b in batches)
    dropped = sum(b.dropped for b in batches)
    assert sent + dropped == 10_000 and dropped == backend.dropped_count > 0
    assert all(len(b.events) <= 10 for b in batches)
    event = batches[0].events[0]
    assert list(event.event_parts) == ["x", "y"] and event.metadata["m"] == "0"
    assert event.measurements["ok"].int_value == 1 and event.measurements["f"].float_value == 0.5
    assert event.measurements["big"].string_value == str(2**70)
    assert event.measurements["nan"].string_value == "nan"
    assert batches[0].worker_id == "w1" and batches[0].pool_name == "pool"
    # Idle, then one event: it is still sent.
    time.sleep(0.1)
    backend.emit("late.one", {"n": 1})
    assert backend.flush(5) and batches[-1].events[-1].event_parts == ["late", "one"]
    backend.close()


def test_elixir_backend_counts_a_failed_send_as_dropped() -> None:
    from snakepit_bridge.telemetry.backends.elixir import ElixirBackend

    def failing(batch: Any) -> None:
        raise RuntimeError("peer gone")

    backend = ElixirBackend(send=failing, flush_interval=0.01)
    backend.emit("x", {"n": 1})
    backend.emit("x", {"n": 2})
    assert backend.flush(5) is True
    assert backend.dropped_count == 2
    backend.close()


# --- the worker: lifecycle and command line ---------------------------------------


def _events(path: Path) -> List[Tuple[str, int]]:
    if not path.exists():
        return []
    return [(kind, int(pid)) for kind, pid in (line.split() for line in path.read_text().splitlines())]


def test_initialize_before_ready_and_cleanup_at_sigterm(spawn_worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    w = spawn_worker(f"{TEST_ADAPTERS}.LifecycleAdapter", env={"LIFECYCLE_LOG": str(log)})
    assert w.ready["status"] == "ready"
    assert _events(log) == [("initialize", w.proc.pid)]  # before the ready line
    for _ in range(3):
        assert w.result("state") == {"initialized": 1, "pid": w.proc.pid}
    assert w.terminate() == 0
    assert _events(log) == [("initialize", w.proc.pid), ("cleanup", w.proc.pid)]


def test_thread_profile_initializes_once_per_process(spawn_worker: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    log = tmp_path / "lifecycle.log"
    w = spawn_worker(
        f"{TEST_ADAPTERS}.LifecycleAdapter", "--profile", "thread", "--threads", "4", env={"LIFECYCLE_LOG": str(log)}
    )
    with ThreadPoolExecutor(4) as pool:
        states = list(pool.map(lambda _: w.result("state", ms=100), range(8)))
    assert {s["initialized"] for s in states} == {1}
    assert [kind for kind, _ in _events(log)] == ["initialize"]


def test_initialize_exception_is_the_start_error(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.InitializeRaisesAdapter")
    assert w.proc.wait(timeout=20) == 1
    assert w.ready["status"] == "error" and w.ready["type"] == "ValueError"
    assert w.ready["message"] == "tokenizer missing"
    assert "in initialize" in w.ready["traceback"]


def test_plain_adapter_with_execute_tool_gets_every_call_and_its_context(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.PlainExecuteToolAdapter")
    assert w.ready["tools"] == []
    resp = w.call("anything", params={"x": 1}, session_id="s-2")
    assert decode_result(resp) == {"tool": "anything", "arguments": {"x": 1}, "same_ctx": True, "session_id": "s-2"}


def test_upstream_command_line_arguments_are_accepted(spawn_worker: Any) -> None:
    w = spawn_worker(
        "snakepit_bridge.adapters.threaded_showcase.ThreadedShowcaseAdapter",
        "--max-workers", "16", "--port", "0", "--elixir-address", "localhost:50051",
        "--mode", "threaded", "--thread-safety-check", "--snakepit-instance-name", "x",
        "--heartbeat-enabled", "--heartbeat-interval-ms", "100", "--heartbeat-independent",
        "--profile", "thread", "--threads", "4",
    )
    assert w.ready["status"] == "ready", w.stderr_text()
    out = w.result("matrix_multiply", input_vector=[1.0] * 100)
    assert out["output_size"] == 10 and out["model"] == "ThreadedShowcaseModel"
    assert "ignoring upstream options --max-workers --port --elixir-address --mode" in w.stderr_text()


def test_template_adapter_loads_and_says_it_is_a_template(spawn_worker: Any) -> None:
    w = spawn_worker("snakepit_bridge.adapters.template.TemplateAdapter")
    assert w.ready["status"] == "ready"
    err = json.loads(w.call("anything").error_message)
    assert err["type"] == "NotImplementedError" and "template" in err["message"]


UPSTREAM_SHOWCASE_TOOLS = {
    "ping", "echo", "add", "adapter_info", "process_text", "stream_data", "stream_progress",
    "stream_fibonacci", "infinite_stream", "generate_dataset", "error_demo", "serialization_demo",
    "telemetry_demo", "init_session", "cleanup", "get_counter", "set_counter", "increment_counter",
    "get_worker_info", "get_stats", "create_tensor", "create_embedding", "benchmark_encoding",
    "cpu_bound_task", "sleep_task", "lightweight_task", "process_binary", "concurrent_demo",
    "call_elixir_demo", "load_sample_data", "preprocess_data", "generate_features", "select_features",
    "train_model", "cross_validate", "predict_single", "predict_batch_with_embeddings", "ml_analyze_text",
}


def test_showcase_offers_every_upstream_tool_and_its_shapes(showcase: Any) -> None:
    assert UPSTREAM_SHOWCASE_TOOLS <= set(showcase.ready["tools"])
    demo = showcase.result("serialization_demo")
    assert demo["custom_class_demo"]["custom_object"] == {
        "__ffi_unserializable__": True,
        "__type__": "snakepit_bridge.adapters.showcase.handlers.basic_ops.CustomResponse",
    }
    assert demo["convertible_demo"] == {
        "api_response": {"code": 200, "message": "OK"},
        "pydantic_like": {"field1": "value1", "field2": "value2"},
    }
    assert showcase.result("init_session")["session_id"] is None
    stats = showcase.result("get_stats")
    assert stats["success"] is True and stats["system"]["pid"] == showcase.proc.pid
    assert showcase.result("lightweight_task", iteration=21) == {"iteration": 21, "result": 42}
    assert showcase.result("process_binary", data="abc", operation="size") == {"operation": "size", "size": 3}
    assert showcase.result("load_sample_data", dataset="iris", split=0.8)["train_samples"] == 120
    assert len(showcase.result("select_features", method="variance", k_best=2)["selected_features"]) == 2
    assert showcase.result("ml_analyze_text", text="great fast tool")["sentiment"] == "positive"
    progress = [
        json.loads(c.data)
        for c in showcase.stub.ExecuteStreamingTool(make_request("stream_progress", {"steps": 3, "delay_ms": 0}))
    ]
    assert [p["step"] for p in progress] == [1, 2, 3] and progress[-1]["progress"] == 100.0
    fib = showcase.stub.ExecuteStreamingTool(make_request("stream_fibonacci", {"count": 6, "delay_ms": 0}))
    assert [json.loads(c.data)["value"] for c in fib] == [0, 1, 1, 2, 3, 5]


def test_health_check_imports_the_adapter_and_exits() -> None:
    import subprocess

    from conftest import PYTHON, SERVER

    ok = subprocess.run([PYTHON, str(SERVER), "--health-check"], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [PYTHON, str(SERVER), "--health-check", "--adapter", "no_such_module_xyz.Adapter"], capture_output=True, timeout=60
    )
    assert bad.returncode == 1 and b"no_such_module_xyz" in bad.stderr
