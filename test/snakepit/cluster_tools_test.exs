defmodule Snakepit.ClusterToolsTest do
  # Elixir tools of a session stay on the node that registered them: a call
  # of that session served by another node's worker reaches them there.
  use Snakepit.ClusterCase, async: false

  alias Snakepit.Bridge.ToolRegistry
  alias Snakepit.Cluster

  @pool :tools_cluster
  @origins Module.concat(ToolRegistry, Origins)

  setup do
    # This node only routes: every call runs on the peer's worker.
    start_local_pool!(pool(@pool, 0))

    [peer] =
      start_peers!([
        {:tools,
         [
           pool(@pool, 2,
             adapter_args: ["--adapter", "snakepit_exunit_adapters.ElixirCallerAdapter"]
           )
         ]}
      ])

    assert :ok = Cluster.await_nodes(@pool, 1, 10_000)
    session = "cluster-tools-#{System.unique_integer([:positive])}"
    on_exit(fn -> ToolRegistry.cleanup_session(session) end)
    %{peer: peer, session: session}
  end

  defp call(session, tool, args),
    do: Snakepit.execute_in_session(session, tool, args, pool_name: @pool)

  test "Python on another node's worker calls the caller's Elixir tools; they run here", ctx do
    parent = self()

    :ok =
      ToolRegistry.register_elixir_tool(
        ctx.session,
        "double",
        fn %{"x" => x} ->
          send(parent, {:ran_on, node()})
          %{"doubled" => 2 * x}
        end,
        %{description: "twice x", exposed_to_python: true}
      )

    assert {:ok, %{"result" => %{"doubled" => 42}, "type" => "dict"}} =
             call(ctx.session, "call_elixir", %{name: "double", arguments: %{x: 21}})

    assert_receive {:ran_on, here}
    assert here == node()

    assert {:ok, %{"double" => %{"name" => "double", "description" => "twice x"}}} =
             call(ctx.session, "list_elixir_tools", %{})

    # A name neither node has: not found, listing the caller's node's tools.
    assert {:ok, %{"raised" => "ElixirToolNotFoundError", "message" => message}} =
             call(ctx.session, "call_elixir", %{name: "nope", arguments: %{}})

    assert message =~ "Elixir tool 'nope' not found"
    assert message =~ "['double']"

    # Nothing is left on the serving node once its calls of the session ended.
    assert on(ctx.peer, :ets, :tab2list, [@origins]) == []
  end

  test "the serving node's own tools of the session still answer first", ctx do
    # Registered only there (a fun the peer has code for): only it can answer.
    :ok =
      on(ctx.peer, ToolRegistry, :register_elixir_tool, [
        ctx.session,
        "peer_tool",
        &Function.identity/1,
        %{exposed_to_python: true}
      ])

    assert {:ok, %{"result" => %{"mark" => "peer"}}} =
             call(ctx.session, "call_elixir", %{name: "peer_tool", arguments: %{mark: "peer"}})

    assert {:ok, %{"peer_tool" => _}} = call(ctx.session, "list_elixir_tools", %{})
    on(ctx.peer, ToolRegistry, :cleanup_session, [ctx.session])
  end
end
