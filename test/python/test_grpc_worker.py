"""Integration tests: a real grpc_server.py subprocess over a unix socket."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import grpc
import pytest

from conftest import (
    BINARY_TYPE_URL,
    JSON_TYPE_URL,
    SHOWCASE,
    TEST_ADAPTERS,
    decode_result,
    make_request,
    pb2,
    pid_alive,
    wait_until,
)

SHOWCASE_TOOLS = {
    "ping", "echo", "add", "adapter_info", "process_text", "stream_data",
    "raise_error", "sleep", "get_pid", "env", "log",
}


def error_of(resp: Any) -> Any:
    assert not resp.success
    return json.loads(resp.error_message)


# --- startup contract ---------------------------------------------------------


def test_ready_line(showcase: Any) -> None:
    line = showcase.ready_raw
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    ready = showcase.ready
    assert ready["status"] == "ready"
    assert ready["pid"] == showcase.proc.pid
    assert SHOWCASE_TOOLS <= set(ready["tools"])
    assert ready["tools"] == sorted(ready["tools"])
    assert os.path.exists(showcase.socket)
    # One compact line per record; Elixir adds the time and the worker id.
    assert "INFO snakepit.worker: ready" in showcase.stderr_text()


def test_import_error_line_has_traceback(spawn_worker: Any, tmp_path: Path) -> None:
    (tmp_path / "bogus_adapter_mod.py").write_text(
        "import os\n\ndef _load():\n    import no_such_model_library_xyz\n\n_load()\n"
    )
    w = spawn_worker("bogus_adapter_mod.Adapter", pythonpath=[str(tmp_path)])
    assert w.proc.wait(timeout=20) == 1
    err = w.ready
    assert err["status"] == "error"
    assert err["type"] == "ModuleNotFoundError"
    assert "no_such_model_library_xyz" in err["message"]
    assert "bogus_adapter_mod.py" in err["traceback"]
    assert "_load" in err["traceback"] and "Traceback (most recent call last)" in err["traceback"]
    assert "no_such_model_library_xyz" in w.stderr_text()


def test_init_error_line(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.BrokenInitAdapter")
    assert w.proc.wait(timeout=20) == 1
    assert w.ready["status"] == "error"
    assert w.ready["type"] == "RuntimeError"
    assert w.ready["message"] == "model weights failed to load"
    assert "__init__" in w.ready["traceback"]


def test_missing_class_error_line(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.NoSuchAdapter")
    assert w.proc.wait(timeout=20) == 1
    assert w.ready["status"] == "error" and w.ready["type"] == "AttributeError"
    assert "NoSuchAdapter" in w.ready["message"]


def test_thread_profile_refuses_non_thread_safe_adapter(spawn_worker: Any) -> None:
    w = spawn_worker(
        f"{TEST_ADAPTERS}.NotThreadSafeAdapter", "--profile", "thread", "--threads", "4"
    )
    assert w.proc.wait(timeout=20) == 1
    assert w.ready["status"] == "error"
    assert w.ready["type"] == "ThreadSafetyError"
    assert "__thread_safe__ = True" in w.ready["message"]
    assert "thread profile" in w.ready["message"]


def test_process_profile_accepts_non_thread_safe_adapter(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.NotThreadSafeAdapter")
    assert w.ready["status"] == "ready" and w.ready["tools"] == ["hello"]
    assert w.result("hello") == "hi"


def test_adapter_built_once(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.CountingInitAdapter")
    for _ in range(5):
        assert w.result("instances_built") == 1
    assert w.result("getpid") == w.proc.pid


def test_sigterm_exits_zero(showcase: Any) -> None:
    assert showcase.result("add", a=1, b=1) == 2
    assert showcase.terminate() == 0


# --- unary calls ------------------------------------------------------------------


def test_ping_and_heartbeat(showcase: Any) -> None:
    resp = showcase.stub.Ping(pb2.PingRequest())
    assert resp.message == "pong" and resp.server_time.seconds > 0
    assert showcase.stub.Ping(pb2.PingRequest(message="hello")).message == "hello"
    hb = showcase.stub.Heartbeat(pb2.HeartbeatRequest(session_id="s"))
    assert hb.session_valid and hb.server_time.seconds > 0


def test_ping_tool(showcase: Any) -> None:
    out = showcase.result("ping", message="hey")
    assert set(out) == {"message", "timestamp"} and out["message"] == "hey"
    assert float(out["timestamp"]) > 0  # upstream's shape: a string


def test_echo_and_add_keep_types(showcase: Any) -> None:
    resp = showcase.call("echo", params={"a": 1})
    assert resp.success and resp.result.type_url == JSON_TYPE_URL
    assert resp.result.value == b'{"echoed":{"a":1}}'
    nested = {"list": [1, 2.5, "x", None, True], "map": {"k": [1]}}
    assert showcase.result("echo", **nested) == {"echoed": nested}
    resp = showcase.call("add", params={"a": 1, "b": 2})
    assert resp.result.value == b"3"
    assert decode_result(resp) == 3 and isinstance(decode_result(resp), int)
    assert showcase.result("add", a=0.5, b=1) == 1.5
    assert showcase.result("add", a=2**62, b=2**62) == 2**63
    assert resp.execution_time_ms >= 0


def test_process_text_and_info(showcase: Any) -> None:
    assert showcase.result("process_text", text="abc", operation="reverse") == {
        "original": "abc",
        "result": "cba",
        "operation": "reverse",
        "success": True,
    }
    info = showcase.result("adapter_info")
    assert info["adapter_name"] == "ShowcaseAdapter" and "MLWorkflowHandler" in info["handlers"]
    assert showcase.result("get_pid") == showcase.proc.pid


def test_env_and_log(spawn_worker: Any) -> None:
    w = spawn_worker(SHOWCASE, env={"SNAKEPIT_TEST_VAR": "value-1"})
    assert w.result("env", name="SNAKEPIT_TEST_VAR") == "value-1"
    assert w.result("env", name="SNAKEPIT_TEST_UNSET") is None
    assert w.result("log", message="line-to-stderr") is True
    assert w.result("log", message="line-to-stdout", stream="stdout") is True
    assert w.terminate() == 0
    assert "line-to-stderr\n" in w.stderr_text()
    assert "line-to-stdout\n" in w.stdout_text()


def test_python_exception_is_reported(showcase: Any) -> None:
    err = error_of(showcase.call("raise_error", params={"message": "bad input"}))
    assert err["type"] == "ValueError" and err["message"] == "bad input"
    assert "raise_error" in err["traceback"] and "Traceback" in err["traceback"]
    err = error_of(
        showcase.call("raise_error", params={"message": "m", "error_type": "RuntimeError"})
    )
    assert err["type"] == "RuntimeError"
    err = error_of(showcase.call("error_demo", params={"error_type": "runtime"}))
    assert err["type"] == "RuntimeError" and err["message"] == "This is a demonstration RuntimeError"
    err = error_of(showcase.call("add", params={"a": 1}))  # missing argument
    assert err["type"] == "TypeError"
    # the worker is still healthy afterwards
    assert showcase.result("add", a=1, b=2) == 3


def test_unknown_tool(showcase: Any) -> None:
    err = error_of(showcase.call("does_not_exist"))
    assert err["type"] == "ToolNotFoundError"
    assert "does_not_exist" in err["message"]
    assert "ping" in err["message"] and "add" in err["message"]


def test_unimplemented_rpcs(showcase: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        showcase.stub.InitializeSession(pb2.InitializeSessionRequest(session_id="s"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_bytes_param_and_result(test_worker: Any) -> None:
    blob = bytes(range(256))
    resp = test_worker.call("reverse_bytes", binary={"data": blob})
    assert resp.success and resp.result.type_url == BINARY_TYPE_URL
    assert resp.result.value == blob[::-1]
    resp = test_worker.call("describe_args", params={"n": 1, "s": "x"}, binary={"b": b"\xff"})
    assert decode_result(resp) == {"n": "int", "s": "str", "b": "bytes"}


def test_showcase_bytes_round_trip(showcase: Any) -> None:
    resp = showcase.call("echo_bytes", binary={"data": b"\x00\xff\x80"})
    assert resp.result.type_url == BINARY_TYPE_URL and resp.result.value == b"\x00\xff\x80"
    # echo returns its kwargs; bytes nested in a dict cannot be JSON
    err = error_of(showcase.call("echo", binary={"data": b"\x00"}))
    assert err["type"] == "TypeError" and "bytes" in err["message"]


def test_unencodable_results_are_errors(test_worker: Any) -> None:
    err = error_of(test_worker.call("nested_bytes"))
    assert err["type"] == "TypeError" and "nested" in err["message"]
    err = error_of(test_worker.call("not_a_number"))
    assert err["type"] == "ValueError"
    # Graceful: an object JSON cannot hold is a marker, not a failed call.
    assert test_worker.result("unencodable") == {"__ffi_unserializable__": True, "__type__": "builtins.object"}


def test_numpy_results_and_bad_json_argument(test_worker: Any) -> None:
    pytest.importorskip("numpy")
    assert test_worker.result("numpy_values") == {"array": [0, 1, 2], "scalar": 1.5, "int": 7}
    req = make_request("describe_args")
    req.parameters_json = b'{"x": {not json}'
    err = error_of(test_worker.stub.ExecuteTool(req))
    assert err["type"] == "JSONDecodeError"
    req.parameters_json = b"[1, 2]"
    err = error_of(test_worker.stub.ExecuteTool(req))
    assert err["type"] == "TypeError" and "JSON object" in err["message"]


def test_session_id_generators_async_and_fallback(test_worker: Any) -> None:
    resp = test_worker.call("session_id", session_id="sess-42")
    assert decode_result(resp) == "sess-42"
    assert test_worker.result("squares", n=4) == [0, 1, 4, 9]
    assert test_worker.result("async_add", a=2, b=3) == 5
    resp = test_worker.call("dyn_thing", params={"x": 1}, session_id="s9")
    assert decode_result(resp) == {
        "tool": "dyn_thing",
        "arguments": {"x": 1},
        "session_id": "s9",
    }
    err = error_of(test_worker.call("other_thing"))
    assert err["type"] == "KeyError"


# --- streaming --------------------------------------------------------------------


def test_streaming_chunks_in_order(showcase: Any) -> None:
    chunks = list(
        showcase.stub.ExecuteStreamingTool(make_request("stream_data", {"count": 5, "delay": 0}), timeout=30)
    )
    # The last StreamChunk says is_final: no empty closing chunk follows it.
    assert len(chunks) == 5
    assert [c.chunk_id for c in chunks] == ["0", "1", "2", "3", "4"]
    assert [json.loads(c.data) for c in chunks] == [
        {"index": i, "total": 5, "message": f"Chunk {i}/5"} for i in range(1, 6)
    ]
    assert [c.is_final for c in chunks] == [False] * 4 + [True]


def test_streaming_non_generator_and_async(test_worker: Any, showcase: Any) -> None:
    chunks = list(showcase.stub.ExecuteStreamingTool(make_request("add", {"a": 1, "b": 2})))
    assert [c.data for c in chunks] == [b"3", b""] and chunks[-1].is_final
    chunks = list(test_worker.stub.ExecuteStreamingTool(make_request("async_stream", {"n": 3})))
    assert [json.loads(c.data) for c in chunks[:-1]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert chunks[-1].is_final
    chunks = list(test_worker.stub.ExecuteStreamingTool(make_request("byte_stream")))
    assert chunks[0].data == b"\xff\x00" and chunks[0].metadata["type_url"] == BINARY_TYPE_URL
    assert json.loads(chunks[1].data) == {"ok": True} and chunks[2].is_final


def test_streaming_error_mid_stream(test_worker: Any) -> None:
    got: List[Any] = []
    with pytest.raises(grpc.RpcError) as info:
        for chunk in test_worker.stub.ExecuteStreamingTool(make_request("fail_after", {"n": 2})):
            got.append(chunk)
    assert [json.loads(c.data) for c in got] == [0, 1]
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    err = json.loads(info.value.details())
    assert err["type"] == "RuntimeError" and err["message"] == "stream failed after 2"
    assert "fail_after" in err["traceback"]


def test_streaming_unknown_tool(showcase: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(showcase.stub.ExecuteStreamingTool(make_request("nope")))
    assert json.loads(info.value.details())["type"] == "ToolNotFoundError"


def test_streaming_cancel_closes_generator(test_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    call = test_worker.stub.ExecuteStreamingTool(make_request("endless", {"marker": str(marker)}))
    for i, chunk in enumerate(call):
        if i == 2:
            break
    call.cancel()
    assert wait_until(marker.exists, timeout=10), "generator finally did not run"
    assert test_worker.result("squares", n=2) == [0, 1]


# --- thread profile -----------------------------------------------------------------


def test_thread_profile_runs_calls_concurrently(spawn_worker: Any) -> None:
    w = spawn_worker(SHOWCASE, "--profile", "thread", "--threads", "4")
    assert w.ready["status"] == "ready"
    w.stub  # connect before timing
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: w.result("sleep", ms=400), range(4)))
    assert {r["pid"] for r in results} == {w.proc.pid}
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_process_profile_answers_ping_during_long_call(showcase: Any) -> None:
    showcase.stub
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(showcase.result, "sleep", ms=1500)
        time.sleep(0.2)
        t0 = time.monotonic()
        assert showcase.stub.Ping(pb2.PingRequest(), timeout=5).message == "pong"
        assert time.monotonic() - t0 < 1.0
        assert not fut.done()
        assert fut.result()["pid"] == showcase.proc.pid


def _run_concurrently(w: Any, tool: str, n: int = 4, ms: int = 300) -> List[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: w.result(tool, ms=ms), range(n)))


def test_thread_safety_warning_once_for_unmarked_tool(spawn_worker: Any) -> None:
    w = spawn_worker(
        f"{TEST_ADAPTERS}.ConcurrencyAdapter",
        "--profile",
        "thread",
        "--threads",
        "4",
        "--thread-safety-checks",
    )
    assert w.ready["status"] == "ready"
    w.stub
    for _ in range(2):
        _run_concurrently(w, "unsafe_sleep")
    _run_concurrently(w, "safe_sleep")
    _run_concurrently(w, "safe_sleep_reversed")
    report = {t.tool_name: t for t in w.stub.GetWorkerReport(pb2.WorkerReportRequest()).tools}
    assert report["unsafe_sleep"].calls == 8
    assert report["unsafe_sleep"].max_concurrency >= 2
    assert not report["unsafe_sleep"].thread_safe
    assert report["safe_sleep"].calls == 4 and report["safe_sleep"].thread_safe
    assert report["safe_sleep"].max_concurrency >= 2
    assert report["safe_sleep_reversed"].thread_safe
    assert report["spawn_child"].calls == 0
    assert w.terminate() == 0, w.stderr_text()
    log = w.stderr_text()
    assert log.count("thread_safety_warning tool=unsafe_sleep") == 1, log
    assert "thread_safety_warning tool=safe_sleep" not in log


def test_no_tracking_without_flag(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.ConcurrencyAdapter", "--profile", "thread", "--threads", "4")
    w.stub
    _run_concurrently(w, "unsafe_sleep", ms=200)
    report = {t.tool_name: t for t in w.stub.GetWorkerReport(pb2.WorkerReportRequest()).tools}
    assert report["unsafe_sleep"].calls == 0 and not report["unsafe_sleep"].thread_safe
    assert report["safe_sleep"].thread_safe
    assert w.terminate() == 0
    assert "thread_safety_warning" not in w.stderr_text()


# --- lifeline -----------------------------------------------------------------------


def test_lifeline_eof_kills_worker_and_children(test_worker: Any) -> None:
    child = test_worker.result("spawn_child")
    assert pid_alive(child)
    assert os.getpgid(child) == test_worker.proc.pid
    test_worker.close_lifeline()
    assert test_worker.proc.wait(timeout=10) == -signal.SIGKILL
    assert wait_until(lambda: not pid_alive(child), timeout=10), "child survived the lifeline"
    assert "lifeline" in test_worker.stderr_text()


def test_lifeline_disabled(spawn_worker: Any) -> None:
    w = spawn_worker(SHOWCASE, "--lifeline-fd", "-1")
    assert w.ready["status"] == "ready"
    w.close_lifeline()
    time.sleep(0.5)
    assert w.proc.poll() is None
    assert w.result("add", a=1, b=1) == 2


# --- process profile gate, deadlines, odd results ------------------------------------


def test_lifeline_kills_a_worker_whose_tool_holds_the_gil(test_worker: Any) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    stuck = pool.submit(test_worker.call, "hold_gil", 120.0)
    time.sleep(0.5)  # the regex is running and holds the GIL
    assert test_worker.proc.poll() is None
    test_worker.close_lifeline()
    assert test_worker.proc.wait(timeout=5) == -signal.SIGKILL
    with pytest.raises(grpc.RpcError):
        stuck.result(timeout=10)
    pool.shutdown()


def test_process_profile_stream_holds_the_tool_gate(test_worker: Any, tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    stream = test_worker.stub.ExecuteStreamingTool(make_request("endless", {"marker": str(marker)}), timeout=30)
    assert json.loads(next(stream).data) == 0
    # While the stream's generator may still run, a unary call waits its turn.
    with pytest.raises(grpc.RpcError) as info:
        test_worker.call("record", timeout=0.5, params={"tag": "during-stream"})
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    stream.cancel()
    assert wait_until(marker.exists)
    assert test_worker.result("record", tag="after") == ["after"]


def test_a_call_whose_caller_gave_up_in_the_queue_never_runs(test_worker: Any) -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    first = pool.submit(test_worker.call, "record", 30.0, params={"tag": "first", "ms": 800})
    time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as info:
        test_worker.call("record", timeout=0.3, params={"tag": "abandoned"})
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert decode_result(first.result(timeout=10)) == ["first"]
    assert test_worker.result("record", tag="last") == ["first", "last"]
    pool.shutdown()


def test_sys_exit_in_a_tool_is_an_error_reply(test_worker: Any) -> None:
    error = error_of(test_worker.call("exit_now"))
    assert error["type"] == "SystemExit"
    assert test_worker.result("record", tag="still-serving") == ["still-serving"]


def test_dates_encode_as_iso8601_and_nan_names_its_place(test_worker: Any) -> None:
    assert test_worker.result("when") == {"at": "2026-11-27T04:50:01", "day": "2026-11-27"}
    error = error_of(test_worker.call("nested_nan"))
    assert error["type"] == "ValueError"
    assert "result.scores[1] is NaN or infinite" in error["message"]


def test_async_tools_share_one_event_loop_across_threads(spawn_worker: Any) -> None:
    w = spawn_worker(f"{TEST_ADAPTERS}.ConcurrencyAdapter", "--profile", "thread", "--threads", "4")
    with ThreadPoolExecutor(max_workers=4) as pool:
        loops = list(pool.map(lambda _: w.result("async_locked"), range(12)))
    assert len(set(loops)) == 1


def test_a_stream_error_with_a_huge_traceback_still_arrives_as_a_python_error(test_worker: Any) -> None:
    stream = test_worker.stub.ExecuteStreamingTool(make_request("fail_with_long_traceback", {"size": 200_000}), timeout=30)
    with pytest.raises(grpc.RpcError) as info:
        for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    error = json.loads(info.value.details())
    assert error["type"] == "ValueError"
    assert len(error["traceback"]) < 10_000


def test_lifeline_kills_the_worker_when_its_stderr_reader_died_too(tmp_path: Path) -> None:
    # As when the BEAM is SIGKILLed: the lifeline and the pipe the worker's
    # stderr goes to both lose their other end at once.
    import subprocess

    from conftest import PYTHON, SERVER

    ready_r, ready_w = os.pipe()
    life_r, life_w = os.pipe()
    proc = subprocess.Popen(
        [PYTHON, "-u", str(SERVER), "--adapter", SHOWCASE, "--socket", str(tmp_path / "w.sock"),
         "--ready-fd", str(ready_w), "--lifeline-fd", str(life_r)],
        pass_fds=(ready_w, life_r),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        os.close(ready_w)
        os.close(life_r)
        assert json.loads(os.read(ready_r, 65536))["status"] == "ready"
        proc.stderr.close()
        os.close(life_w)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert wait_until(lambda: subprocess.run(["pgrep", "-g", str(proc.pid)]).returncode != 0, timeout=5)
    finally:
        os.close(ready_r)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
