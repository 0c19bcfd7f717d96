"""Shared helpers: stub generation and a real grpc_server.py worker harness."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parents[2]
PRIV = REPO / "priv" / "python"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SERVER = PRIV / "grpc_server.py"
SHOWCASE = "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
TEST_ADAPTERS = "snakepit_test_adapters"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# The worker's server for this run: `make test` runs the suite twice, once
# with SNAKEPIT_WORKER_SERVER=fallback (grpc.server), once without (the core layer).
SERVER_PATH = "fallback" if os.environ.get("SNAKEPIT_WORKER_SERVER") == "fallback" else "core"

def _ensure_stubs() -> None:
    """The Makefile's stub rule (regenerates them when the proto is newer)."""
    stubs = ["priv/python/snakepit_bridge_pb2.py", "priv/python/snakepit_bridge_pb2_grpc.py"]
    subprocess.run(["make", "--no-print-directory", "-s", *stubs], cwd=REPO, check=True)


_ensure_stubs()
for _p in (str(FIXTURES), str(PRIV)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import grpc  # noqa: E402

import snakepit_bridge_pb2 as pb2  # noqa: E402
import snakepit_bridge_pb2_grpc as pb2_grpc  # noqa: E402
from snakepit_bridge.wire import BINARY_TYPE_URL, JSON_TYPE_URL  # noqa: E402,F401


def make_request(
    tool: str,
    params: Optional[Dict[str, Any]] = None,
    binary: Optional[Dict[str, bytes]] = None,
    session_id: str = "",
    request_id: int = 0,
) -> Any:
    return pb2.ExecuteToolRequest(
        tool_name=tool,
        session_id=session_id,
        request_id=request_id,
        parameters_json=json.dumps(params).encode() if params else b"",
        binary_parameters=binary or {},
    )


def max_overlap(intervals: List[Any]) -> int:
    """How many of the tools' {start, end} intervals ran at once, at most."""
    edges = sorted([(r["start"], 1) for r in intervals] + [(r["end"], -1) for r in intervals])
    current = best = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def decode_result(resp: Any) -> Any:
    assert resp.success, resp.error_message
    if resp.result.type_url == BINARY_TYPE_URL:
        return resp.result.value
    assert resp.result.type_url == JSON_TYPE_URL
    return json.loads(resp.result.value)


def pid_alive(pid: int) -> bool:
    """True unless the pid is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(pred: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def read_line(fd: int, timeout: float = 30.0) -> bytes:
    """Read up to the first newline (or EOF) from fd."""
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no line on fd {fd} within {timeout}s (got {buf!r})")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
    return buf


class Worker:
    """A grpc_server.py subprocess wired like the native runtime wires it."""

    def __init__(
        self,
        adapter: str,
        args: Sequence[str] = (),
        pythonpath: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.dir = tempfile.mkdtemp(prefix="spw", dir="/tmp")  # short: unix path limit
        self.socket = os.path.join(self.dir, "w.sock")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath, str(FIXTURES)])
        full_env.update(env or {})
        self._stderr = open(self.stderr_path, "wb")
        self._stdout = open(self.stdout_path, "wb")
        # No --snakepit-run-id: a BEAM booting Snakepit on this machine sweeps
        # workers carrying one whose owner BEAM is not running.
        cmd = [
            PYTHON,
            "-u",
            str(SERVER),
            "--adapter",
            adapter,
            "--socket",
            self.socket,
            "--worker-id",
            "pytest_worker",
            "--ready-fd",
            str(ready_w),
            "--lifeline-fd",
            str(life_r),
            *args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            pass_fds=(ready_w, life_r),
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            env=full_env,
            cwd=str(REPO),
            start_new_session=True,
        )
        os.close(ready_w)
        os.close(life_r)
        self.lifeline_w: Optional[int] = life_w
        try:
            raw = read_line(ready_r)
        finally:
            os.close(ready_r)
        self.ready_raw = raw
        self.ready: Dict[str, Any] = json.loads(raw) if raw.strip() else {}
        self.channel: Optional[grpc.Channel] = None
        self._stub: Optional[Any] = None

    @property
    def stub(self) -> Any:
        if self._stub is None:
            self.channel = grpc.insecure_channel("unix:" + self.socket)
            grpc.channel_ready_future(self.channel).result(timeout=10)
            self._stub = pb2_grpc.BridgeServiceStub(self.channel)
        return self._stub

    def call(self, tool: str, timeout: float = 30.0, **kw: Any) -> Any:
        return self.stub.ExecuteTool(make_request(tool, **kw), timeout=timeout)

    def result(self, tool: str, **params: Any) -> Any:
        return decode_result(self.call(tool, params=params))

    def close_lifeline(self) -> None:
        if self.lifeline_w is not None:
            os.close(self.lifeline_w)
            self.lifeline_w = None

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stderr_text(self) -> str:
        self._stderr.flush()
        with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stdout_text(self) -> str:
        with open(self.stdout_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def cleanup(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self.close_lifeline()
        self._stderr.close()
        self._stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def spawn_worker() -> Iterator[Any]:
    workers: List[Worker] = []

    def spawn(adapter: str = SHOWCASE, *args: str, **kw: Any) -> Worker:
        w = Worker(adapter, args, **kw)
        workers.append(w)
        return w

    yield spawn
    for w in workers:
        w.cleanup()


@pytest.fixture
def showcase(spawn_worker: Any) -> Worker:
    w = spawn_worker(SHOWCASE)
    assert w.ready.get("status") == "ready", w.ready_raw + w.stderr_text().encode()
    return w


@pytest.fixture
def test_worker(spawn_worker: Any) -> Worker:
    w = spawn_worker(f"{TEST_ADAPTERS}.ConcurrencyAdapter")
    assert w.ready.get("status") == "ready", w.ready_raw + w.stderr_text().encode()
    return w
