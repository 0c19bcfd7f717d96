defmodule Snakepit.ToolRegistryTest do
  use ExUnit.Case, async: false

  alias Snakepit.Bridge.{InternalToolSpec, ToolRegistry}

  setup do
    session = "registry-#{System.unique_integer([:positive])}"
    on_exit(fn -> ToolRegistry.cleanup_session(session) end)
    %{session: session}
  end

  test "the tool server listens from the library's load; a start names its taker and answers the path" do
    registry = Process.whereis(ToolRegistry)
    listening = Snakepit.Python.elixir_tools_socket()
    assert File.exists?(listening)
    # The registry's own pid again: its monitor is renewed, nothing else changes.
    assert {:ok, ^listening} = Snakepit.Native.elixir_tools_start(registry)
  end

  test "registration: defaults, duplicates, listing", %{session: s} do
    assert :ok = ToolRegistry.register_elixir_tool(s, "double", fn %{"x" => x} -> 2 * x end)

    assert {:ok, %InternalToolSpec{name: "double", type: :local, exposed_to_python: false}} =
             ToolRegistry.get_tool(s, "double")

    assert {:error, {:duplicate_tool, "double"}} =
             ToolRegistry.register_elixir_tool(s, "double", fn _ -> 0 end)

    assert :ok =
             ToolRegistry.register_elixir_tool(s, "shown", fn _ -> :ok end,
               description: "visible",
               exposed_to_python: true,
               parameters: [%{name: "x"}]
             )

    assert :ok = ToolRegistry.register_python_tool(s, "py.tool", "worker_1", %{description: "p"})

    assert ["double", "py.tool", "shown"] =
             s |> ToolRegistry.list_tools() |> Enum.map(& &1.name) |> Enum.sort()

    assert [%InternalToolSpec{name: "shown", description: "visible", parameters: [%{name: "x"}]}] =
             ToolRegistry.list_exposed_elixir_tools(s)

    assert {:ok, %InternalToolSpec{type: :remote, worker_id: "worker_1"}} =
             ToolRegistry.get_tool(s, "py.tool")

    assert {:error, {:tool_not_found, ^s, "nope"}} = ToolRegistry.get_tool(s, "nope")
    assert ToolRegistry.list_tools("other-#{s}") == []
  end

  test "names and metadata are validated", %{session: s} do
    fun = fn _ -> 1 end
    assert {:error, {:invalid_tool_name, :empty}} = ToolRegistry.register_elixir_tool(s, " ", fun)

    assert {:error, {:invalid_tool_name, :too_long}} =
             ToolRegistry.register_elixir_tool(s, String.duplicate("a", 65), fun)

    assert {:error, {:invalid_tool_name, :invalid_format}} =
             ToolRegistry.register_elixir_tool(s, "has space", fun)

    assert {:error, {:invalid_tool_name, :invalid_format}} =
             ToolRegistry.register_elixir_tool(s, "_leading", fun)

    assert {:error, {:invalid_tool_name, :invalid_type}} =
             ToolRegistry.register_elixir_tool(s, 42, fun)

    too_many = Map.new(1..33, &{:"k#{&1}", &1})

    assert {:error, {:invalid_metadata, :too_many_entries}} =
             ToolRegistry.register_elixir_tool(s, "t", fun, too_many)

    assert {:error, {:invalid_metadata, :too_large}} =
             ToolRegistry.register_elixir_tool(s, "t", fun, %{blob: String.duplicate("x", 5_000)})

    assert {:error, {:invalid_metadata, :unsupported_type}} =
             ToolRegistry.register_elixir_tool(s, "t", fun, "meta")

    assert :ok = ToolRegistry.register_elixir_tool(s, "ok.name-1", fun)
  end

  test "execute_local_tool runs in the caller", %{session: s} do
    ToolRegistry.register_elixir_tool(s, "whoami", fn _ -> self() end)
    ToolRegistry.register_elixir_tool(s, "boom", fn _ -> raise ArgumentError, "bad" end)
    ToolRegistry.register_python_tool(s, "remote", "w")

    me = self()
    assert {:ok, ^me} = ToolRegistry.execute_local_tool(s, "whoami", %{})

    assert {:error, {:tool_execution_failed, %ArgumentError{message: "bad"}}} =
             ToolRegistry.execute_local_tool(s, "boom", %{})

    assert {:error, {:tool_not_local, "remote"}} =
             ToolRegistry.execute_local_tool(s, "remote", %{})

    assert {:error, {:tool_not_found, ^s, "x"}} = ToolRegistry.execute_local_tool(s, "x", %{})
  end

  test "register_tools is all or none; cleanup_session removes everything", %{session: s} do
    assert {:ok, ["a", "b"]} =
             ToolRegistry.register_tools(s, [
               %{name: "a", worker_id: "w", description: "A", parameters: [1]},
               %{name: "b", metadata: %{k: 1}}
             ])

    assert {:ok, %InternalToolSpec{description: "A", parameters: [1], worker_id: "w"}} =
             ToolRegistry.get_tool(s, "a")

    assert {:error, {:duplicate_tool, "a"}} =
             ToolRegistry.register_tools(s, [%{name: "c"}, %{name: "a"}])

    assert {:error, {:duplicate_tool, "d"}} =
             ToolRegistry.register_tools(s, [%{name: "d"}, %{name: "d"}])

    assert {:error, {:invalid_tool_name, :empty}} = ToolRegistry.register_tools(s, [%{name: ""}])
    assert match?({:error, {:tool_not_found, _, "c"}}, ToolRegistry.get_tool(s, "c"))

    assert :ok = ToolRegistry.cleanup_session(s)
    assert ToolRegistry.list_tools(s) == []
  end
end
