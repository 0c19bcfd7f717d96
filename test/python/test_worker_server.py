"""The worker's server semantics, on whichever path this run uses (the core
layer by default, grpc.server with SNAKEPIT_WORKER_SERVER=fallback): each
test here fails when its semantic is lost on that path."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, List

import grpc
import pytest

from conftest import SERVER_PATH, SHOWCASE, TEST_ADAPTERS, decode_result, make_request, max_overlap, pb2, wait_until

CONCURRENCY = f"{TEST_ADAPTERS}.ConcurrencyAdapter"


def _running(w: Any) -> List[int]:
    return sorted(w.stub.Ping(pb2.PingRequest(), timeout=5).running_requests)


def test_the_ready_log_names_the_server_path(spawn_worker: Any) -> None:
    w = spawn_worker(SHOWCASE)
    assert w.ready["status"] == "ready"
    assert w.terminate() == 0
    assert f"server={SERVER_PATH} " in w.stderr_text()


def test_the_fallback_can_be_forced_and_a_bad_choice_is_a_start_error(spawn_worker: Any) -> None:
    forced = spawn_worker(SHOWCASE, "--server", "fallback")
    assert forced.result("add", a=2, b=3) == 5
    assert forced.terminate() == 0
    assert "server=fallback " in forced.stderr_text()
    bad = spawn_worker(SHOWCASE, "--server", "fastest")
    assert bad.ready["status"] == "error"
    assert bad.ready["type"] == "ServerError"
    assert "auto, core, fallback" in bad.ready["message"]


def test_process_profile_runs_one_tool_at_a_time(spawn_worker: Any) -> None:
    w = spawn_worker(CONCURRENCY)
    w.stub
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: w.result("unsafe_sleep", ms=150), range(3)))
    assert max_overlap(results) == 1


def test_thread_profile_runs_n_tools_at_a_time_and_no_more(spawn_worker: Any) -> None:
    w = spawn_worker(CONCURRENCY, "--profile", "thread", "--threads", "2")
    w.stub
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: w.result("safe_sleep", ms=400), range(4)))
    assert max_overlap(results) == 2


def test_ping_lists_the_running_request_ids(test_worker: Any) -> None:
    test_worker.stub
    assert _running(test_worker) == []
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            test_worker.stub.ExecuteTool, make_request("record", {"tag": "a", "ms": 800}, request_id=42), timeout=30
        )
        assert wait_until(lambda: _running(test_worker) == [42], timeout=5)
        assert decode_result(call.result(timeout=10)) == ["a"]
    assert wait_until(lambda: _running(test_worker) == [], timeout=5)


def test_a_call_past_its_deadline_keeps_its_id_until_its_tool_ends(test_worker: Any) -> None:
    test_worker.stub
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        test_worker.stub.ExecuteTool(make_request("record", {"tag": "slow", "ms": 1200}, request_id=7), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The tool still runs: the pool keeps the slot while the id is listed.
    if time.monotonic() - started < 1.0:
        assert _running(test_worker) == [7]
    assert wait_until(lambda: _running(test_worker) == [], timeout=10)
    assert test_worker.result("record", tag="next") == ["slow", "next"]


def test_a_call_cancelled_in_the_queue_never_runs(test_worker: Any) -> None:
    test_worker.stub
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(test_worker.call, "record", 30.0, params={"tag": "first", "ms": 800})
        assert wait_until(lambda: test_worker.stub.Ping(pb2.PingRequest()).running_requests != [] or first.done())
        queued = test_worker.stub.ExecuteTool.future(make_request("record", {"tag": "cancelled"}), timeout=30)
        time.sleep(0.1)
        assert queued.cancel()
        assert decode_result(first.result(timeout=10)) == ["first"]
    assert test_worker.result("record", tag="last") == ["first", "last"]


def test_pings_are_answered_while_a_tool_holds_the_gil_between_switches(test_worker: Any) -> None:
    test_worker.stub
    with ThreadPoolExecutor(1) as pool:
        busy = pool.submit(test_worker.call, "record", 30.0, params={"tag": "busy", "ms": 1500})
        time.sleep(0.2)
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            test_worker.stub.Ping(pb2.PingRequest(), timeout=5)
            times.append(time.monotonic() - t0)
        assert max(times) < 1.0 and not busy.done()
        assert decode_result(busy.result(timeout=10)) == ["busy"]


def test_a_stream_is_paced_by_the_clients_flow_control(test_worker: Any, tmp_path: Path) -> None:
    counter = tmp_path / "produced"
    size = 256 * 1024
    stream = test_worker.stub.ExecuteStreamingTool(
        make_request("big_chunks", {"size": size, "counter": str(counter)}), timeout=30
    )
    assert len(next(stream).data) == size + 2  # a JSON string
    time.sleep(1.0)  # the client reads nothing for a second
    produced = int(counter.read_text())
    # Unpaced, the generator would make thousands of 256 KB chunks in a second.
    assert produced < 64, produced
    for _ in range(5):
        next(stream)
    stream.cancel()
    assert test_worker.result("record", tag="after") == ["after"]


def test_sigterm_lets_a_running_call_finish_and_refuses_new_ones(spawn_worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    w = spawn_worker(f"{TEST_ADAPTERS}.LifecycleAdapter", env={"LIFECYCLE_LOG": str(log)})
    w.stub
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(w.stub.ExecuteTool, make_request("state", {"ms": 700}), timeout=30)
        time.sleep(0.2)
        w.proc.send_signal(signal.SIGTERM)
        assert decode_result(running.result(timeout=10))["pid"] == w.proc.pid
    assert w.proc.wait(timeout=10) == 0
    assert log.read_text().splitlines()[-1] == f"cleanup {w.proc.pid}"


def test_sigterm_cancels_a_call_that_outlives_the_grace(spawn_worker: Any, tmp_path: Path) -> None:
    log = tmp_path / "lifecycle.log"
    w = spawn_worker(
        f"{TEST_ADAPTERS}.LifecycleAdapter", "--shutdown-grace-ms", "300", env={"LIFECYCLE_LOG": str(log)}
    )
    w.stub
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(w.stub.ExecuteTool, make_request("state", {"ms": 20_000}), timeout=30)
        time.sleep(0.2)
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5.0
        with pytest.raises(grpc.RpcError):
            stuck.result(timeout=10)
    assert log.read_text().splitlines()[-1] == f"cleanup {w.proc.pid}"


def test_a_malformed_request_is_an_error_status_and_the_worker_serves_on(test_worker: Any) -> None:
    channel = grpc.insecure_channel("unix:" + test_worker.socket)
    raw = channel.unary_unary("/snakepit.bridge.BridgeService/ExecuteTool")
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\xff\xff\xff", timeout=5)
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)
    channel.close()
    assert test_worker.result("record", tag="fine") == ["fine"]
    unknown = grpc.insecure_channel("unix:" + test_worker.socket)
    with pytest.raises(grpc.RpcError) as info:
        unknown.unary_unary("/other.Service/Call")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    unknown.close()
    assert json.loads(test_worker.call("nested_nan").error_message)["type"] == "ValueError"
