"""Direct (in-process) tests of decorators, dispatch and the showcase adapter."""

from __future__ import annotations

import inspect
import os
import threading
from typing import Any, Dict

import pytest

from snakepit_bridge import (
    ElixirToolError,
    BaseAdapter,
    SessionContext,
    ThreadSafeAdapter,
    ToolNotFoundError,
    thread_safe_method,
    tool,
)
from snakepit_bridge.adapters.showcase import ShowcaseAdapter
from snakepit_bridge.base_adapter import BaseAdapter as BA2
from snakepit_bridge.base_adapter import is_thread_safe_method, is_tool
from snakepit_bridge.base_adapter import tool as tool2
from snakepit_bridge.base_adapter_threaded import ThreadSafeAdapter as TSA2
from snakepit_bridge.base_adapter_threaded import thread_safe_method as tsm2
from snakepit_bridge.base_adapter_threaded import tool as tool3


class Calc(BaseAdapter):
    @tool
    def add(self, a: int, b: int) -> int:
        """Add two numbers.

        More text.
        """
        return a + b

    @tool(description="multiply", supports_streaming=False)
    def mul(self, a: int, b: int) -> int:
        return a * b

    @tool("count up", supports_streaming=True)
    def count(self, n: int):
        yield from range(n)

    def helper(self) -> int:
        return 1

    @tool
    def whoami(self) -> Any:
        return self.session_context.session_id


class WithFallback(Calc):
    def execute_tool(self, tool_name: str, arguments: Dict[str, Any], context: Any) -> Any:
        return (tool_name, arguments, context.session_id)


def test_module_layout() -> None:
    assert BA2 is BaseAdapter and TSA2 is ThreadSafeAdapter
    assert tool2 is tool and tool3 is tool and tsm2 is thread_safe_method


def test_tool_decorator_forms() -> None:
    assert is_tool(Calc.add) and is_tool(Calc.mul) and is_tool(Calc.count)
    assert not is_tool(Calc.helper)
    specs = {s["name"]: s for s in Calc().describe_tools()}
    assert specs["add"]["description"] == "Add two numbers."
    assert specs["mul"]["description"] == "multiply"
    assert specs["count"] == {
        "name": "count",
        "description": "count up",
        "supports_streaming": True,
        "thread_safe": False,
    }


def test_thread_safe_method_stacks_in_either_order() -> None:
    class A(ThreadSafeAdapter):
        @tool(description="x")
        @thread_safe_method
        def one(self) -> int:
            return 1

        @thread_safe_method
        @tool(description="y", supports_streaming=True)
        def two(self) -> int:
            return 2

        @thread_safe_method
        def not_a_tool(self) -> int:
            return 3

    for name in ("one", "two"):
        fn = getattr(A, name)
        assert is_tool(fn) and is_thread_safe_method(fn)
    assert is_thread_safe_method(A.not_a_tool) and not is_tool(A.not_a_tool)
    specs = {s["name"]: s for s in A().describe_tools()}
    assert set(specs) == {"one", "two"}
    assert specs["two"]["supports_streaming"] and specs["two"]["description"] == "y"
    assert A().call_tool("two") == 2


def test_dispatch_and_discovery() -> None:
    c = Calc()
    assert [t.name for t in c.get_tools()] == ["add", "count", "mul", "whoami"]
    add = c.get_tools()[0]
    assert add.description == "Add two numbers." and [p.name for p in add.parameters] == ["a", "b"]
    assert c.call_tool("add", {"a": 2, "b": 3}) == 5
    assert c.call_tool("mul", a=2, b=3) == 6
    assert inspect.isgenerator(c.call_tool("count", {"n": 2}))
    c.set_session_context(SessionContext(None, "s-1"))
    assert c.call_tool("whoami") == "s-1"
    assert c.session_context.session_id == "s-1" and c.session_id == "s-1"


def test_unknown_tool_error_lists_tools() -> None:
    with pytest.raises(ToolNotFoundError) as info:
        Calc().call_tool("nope", {})
    err = info.value
    assert isinstance(err, KeyError)
    assert type(err).__name__ == "ToolNotFoundError"
    assert str(err) == "Unknown tool 'nope'. Available tools: add, count, mul, whoami"


def test_execute_tool_override_receives_every_call() -> None:
    from snakepit_bridge.base_adapter import ToolResolver

    a = WithFallback()
    resolver = ToolResolver(a)
    # The worker's dispatch: an override gets every call, tools included.
    assert resolver.prepare("add", "s")({"a": 1, "b": 1}) == ("add", {"a": 1, "b": 1}, "s")
    assert resolver.prepare("dyn", "s")({"x": 1}) == ("dyn", {"x": 1}, "s")
    # call_tool and the base execute_tool still reach @tool methods.
    assert a.call_tool("add", {"a": 1, "b": 1}) == 2
    assert BaseAdapter.execute_tool(a, "add", {"a": 1, "b": 2}, None) == 3
    with pytest.raises(ToolNotFoundError):
        a.call_tool("dyn", {"x": 1})


def test_subclass_override_without_decorator_is_not_a_tool() -> None:
    class C(Calc):
        def add(self, a: int, b: int) -> int:  # type: ignore[override]
            return 0

    assert "add" not in C().get_tools()


def test_session_context_is_per_thread() -> None:
    a = Calc()
    barrier = threading.Barrier(4)
    seen: Dict[str, Any] = {}

    def run(sid: str) -> None:
        a.session_context = SessionContext(None, sid)
        barrier.wait()
        seen[sid] = a.session_context.session_id
        barrier.wait()
        a.set_session_context(SessionContext(None, sid + "x"))
        seen[sid + "/call"] = a.call_tool("whoami")

    threads = [threading.Thread(target=run, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert seen[f"s{i}"] == f"s{i}"
        assert seen[f"s{i}/call"] == f"s{i}x"
    assert a.session_context.session_id is None  # main thread never set one


def test_elixir_tools_outside_a_worker_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import snakepit_bridge.elixir_tools as elixir_tools

    monkeypatch.delenv("SNAKEPIT_ELIXIR_SOCKET", raising=False)
    monkeypatch.setattr(elixir_tools, "_stub", None)
    a = Calc()
    # A keyword called "name" does not clash with the tool name.
    with pytest.raises(ElixirToolError, match="SNAKEPIT_ELIXIR_SOCKET is not set"):
        a.call_elixir_tool("x", name="y")
    assert a.elixir_tools == {}  # as upstream: a warning, no tools
    with pytest.raises(ElixirToolError):
        a.session_context.call_elixir_tool("x")


def test_thread_safe_adapter_thread_locals_and_lock() -> None:
    class T(ThreadSafeAdapter):
        def __init__(self) -> None:  # no super().__init__() on purpose
            self.n = 0

    t = T()
    assert T.__thread_safe__ is True and BaseAdapter.__thread_safe__ is False
    assert t.get_thread_local("k", 5) == 5
    t.set_thread_local("k", 7)
    assert t.get_thread_local("k") == 7
    other: Dict[str, Any] = {}

    def run() -> None:
        other["before"] = t.get_thread_local("k")
        t.set_thread_local("k", 9)
        other["after"] = t.get_thread_local("k")

    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert other == {"before": None, "after": 9}
    assert t.get_thread_local("k") == 7

    def bump() -> None:
        for _ in range(1000):
            with t.acquire_lock():
                with t.acquire_lock():  # reentrant
                    t.n += 1

    workers = [threading.Thread(target=bump) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert t.n == 4000


def test_showcase_tools_direct(capsys: Any) -> None:
    s = ShowcaseAdapter()
    assert ShowcaseAdapter.__thread_safe__ is True
    assert s.add(1, 2) == 3 and isinstance(s.add(1, 2), int)
    assert s.echo(a=1, b=b"\x00") == {"echoed": {"a": 1, "b": b"\x00"}}
    ping = s.ping()
    assert set(ping) == {"message", "timestamp"} and ping["message"] == "pong"
    assert float(ping["timestamp"]) > 0
    assert s.ping("hi")["message"] == "hi"
    assert s.process_text("Abc") == {"original": "Abc", "operation": "upper", "result": "ABC", "success": True}
    assert s.process_text("Abc", "lower")["result"] == "abc"
    assert s.process_text("Abc", "reverse")["result"] == "cbA"
    assert s.process_text("Abc", "length")["result"] == 3
    bad = s.process_text("x", "explode")
    assert bad["success"] is False and bad["available_operations"] == ["upper", "lower", "reverse", "length"]
    chunks = list(s.stream_data(3, delay=0))
    assert [c.data for c in chunks] == [{"index": i, "total": 3, "message": f"Chunk {i}/3"} for i in (1, 2, 3)]
    assert [c.is_final for c in chunks] == [False, False, True]
    with pytest.raises(KeyError):
        s.raise_error("k", "KeyError")
    with pytest.raises(ValueError, match="boom"):
        s.raise_error()
    with pytest.raises(ValueError, match="demonstration ValueError"):
        s.error_demo("value")
    out = s.sleep(10)
    assert out["end"] - out["start"] >= 0.009 and out["pid"] == os.getpid()
    assert s.get_pid() == os.getpid()
    os.environ["SNAKEPIT_UNIT_ENV"] = "v"
    assert s.env("SNAKEPIT_UNIT_ENV") == "v" and s.env("SNAKEPIT_UNIT_MISSING") is None
    assert s.log("to-err") is True and s.log("to-out", stream="stdout") is True
    captured = capsys.readouterr()
    assert captured.err == "to-err\n" and captured.out == "to-out\n"
    info = s.adapter_info()
    assert info["adapter_name"] == "ShowcaseAdapter" and "streaming" in info["capabilities"]
    assert set(s._resolver().names) >= {
        "ping", "echo", "add", "adapter_info", "process_text", "stream_data",
        "raise_error", "sleep", "get_pid", "env", "log",
    }
    assert all(spec["thread_safe"] for spec in s.describe_tools())
