"""Thread-sensitive calls run on the worker's main thread: by the request
metadata (the runtime's ``thread_sensitive: true``) or by
``SNAKEPIT_THREAD_SENSITIVE``; every other call runs on a tool thread."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Optional

from conftest import TEST_ADAPTERS, decode_result, make_request
from snakepit_bridge.main_thread import ThreadSensitivity
from snakepit_bridge.wire import THREAD_SENSITIVE_KEY, THREAD_SENSITIVE_VALUE

ADAPTER = f"{TEST_ADAPTERS}.ConcurrencyAdapter"


def call(worker: Any, tool: str, params: Optional[Dict[str, Any]] = None, sensitive: str = "") -> Any:
    request = make_request(tool, params)
    if sensitive:
        request.metadata[THREAD_SENSITIVE_KEY] = sensitive
    return worker.stub.ExecuteTool(request, timeout=30)


def test_a_call_runs_on_a_tool_thread_unless_its_metadata_says_thread_sensitive(test_worker: Any) -> None:
    assert decode_result(call(test_worker, "on_main_thread")) is False
    assert decode_result(call(test_worker, "on_main_thread", sensitive=THREAD_SENSITIVE_VALUE)) is True
    assert decode_result(call(test_worker, "on_main_thread", sensitive="1")) is True
    assert decode_result(call(test_worker, "on_main_thread", sensitive="false")) is False


def test_a_tool_that_installs_a_signal_handler_needs_the_main_thread(test_worker: Any) -> None:
    refused = call(test_worker, "install_signal_handler")
    assert not refused.success
    error = json.loads(refused.error_message)
    assert error["type"] == "ValueError" and "main thread" in error["message"]
    assert decode_result(call(test_worker, "install_signal_handler", sensitive="true")) == "installed"


def test_snakepit_thread_sensitive_names_modules_and_functions(spawn_worker: Any) -> None:
    w = spawn_worker(ADAPTER, env={"SNAKEPIT_THREAD_SENSITIVE": " mylib.fit , plotlib"})
    assert w.ready["status"] == "ready"
    assert w.result("on_main_thread", module_path="mylib", function="fit") is True
    assert w.result("on_main_thread", module_path="mylib", function="predict") is False
    assert w.result("on_main_thread", python_module="plotlib", method="show") is True
    assert w.result("on_main_thread", library="otherlib") is False
    assert w.result("on_main_thread") is False


def test_a_thread_sensitive_stream_makes_every_chunk_on_the_main_thread(test_worker: Any) -> None:
    def chunks(sensitive: str) -> Any:
        request = make_request("main_thread_chunks", {"n": 3})
        if sensitive:
            request.metadata[THREAD_SENSITIVE_KEY] = sensitive
        return [json.loads(c.data) for c in test_worker.stub.ExecuteStreamingTool(request, timeout=30) if c.data]

    assert chunks("true") == [{"main": True}] * 3
    assert chunks("") == [{"main": False}] * 3


def test_thread_sensitive_calls_of_a_thread_worker_take_turns_on_the_main_thread(spawn_worker: Any) -> None:
    w = spawn_worker(ADAPTER, "--profile", "thread", "--threads", "4")
    assert w.ready["status"] == "ready"
    with ThreadPoolExecutor(8) as pool:
        sensitive = list(pool.map(lambda _: decode_result(call(w, "on_main_thread", sensitive="true")), range(8)))
        plain = list(pool.map(lambda _: decode_result(call(w, "on_main_thread")), range(8)))
    assert sensitive == [True] * 8 and plain == [False] * 8
    # The main thread still answers SIGTERM.
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=10) == 0


def test_thread_sensitivity_rules() -> None:
    rules = ThreadSensitivity("a.b, c")
    assert rules({THREAD_SENSITIVE_KEY: " TRUE "}, {})
    assert not rules({THREAD_SENSITIVE_KEY: "no"}, {})
    assert rules(None, {"module_path": "a", "function": "b"})
    assert not rules(None, {"module_path": "a", "function": "x"})
    assert rules(None, {"library": "c"})
    assert not rules(None, {"module_path": 3})
    assert not ThreadSensitivity("")(None, {"module_path": "a", "function": "b"})
