defmodule Snakepit.ElixirToolsTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  alias Snakepit.Bridge.ToolRegistry

  setup do
    pool =
      start_pool!(
        name: :elixir_tools,
        worker_profile: :thread,
        threads_per_worker: 4,
        pool_size: 1,
        fixture_adapter: "ElixirCallerAdapter"
      )

    session = "tools-#{System.unique_integer([:positive])}"
    %{pool: pool, session: session}
  end

  defp call_elixir(ctx, name, arguments) do
    Snakepit.execute_in_session(ctx.session, "call_elixir", %{name: name, arguments: arguments},
      pool_name: ctx.pool
    )
  end

  test "Python calls an Elixir tool with a string, an integer and a map; types round-trip", ctx do
    parent = self()

    :ok =
      ToolRegistry.register_elixir_tool(ctx.session, "describe", fn args ->
        send(parent, {:ran_in, self()})

        %{
          "name" => String.upcase(args["name"]),
          "count" => args["count"] * 2,
          "meta" => args["meta"]
        }
      end)

    assert {:ok, %{"result" => result, "type" => "dict"}} =
             call_elixir(ctx, "describe", %{
               name: "snake",
               count: 21,
               meta: %{"k" => [1, 2.5, nil]}
             })

    assert result == %{"name" => "SNAKE", "count" => 42, "meta" => %{"k" => [1, 2.5, nil]}}
    assert_receive {:ran_in, pid}
    assert is_pid(pid) and pid != self()
  end

  # Built on the registry's scheduler, not the gRPC thread (erlang/otp#8208).
  test "an Elixir tool gets 200 arguments, one of them a 300-key map", ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "sizes", fn args ->
      %{"args" => map_size(args), "wide" => map_size(args["wide"]), "k7" => args["wide"]["k7"]}
    end)

    wide = Map.new(1..300, &{"k#{&1}", &1})
    arguments = 1..199 |> Map.new(&{"a#{&1}", &1}) |> Map.put("wide", wide)

    assert {:ok, %{"result" => %{"args" => 200, "wide" => 300, "k7" => 7}}} =
             call_elixir(ctx, "sizes", arguments)
  end

  test "strings, numbers, lists come back with their Python types", ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "identity", fn %{"v" => v} -> v end)

    assert {:ok, %{"result" => "text", "type" => "str"}} =
             call_elixir(ctx, "identity", %{v: "text"})

    assert {:ok, %{"result" => 7, "type" => "int"}} = call_elixir(ctx, "identity", %{v: 7})
    assert {:ok, %{"result" => 1.5, "type" => "float"}} = call_elixir(ctx, "identity", %{v: 1.5})

    assert {:ok, %{"result" => [1, "a"], "type" => "list"}} =
             call_elixir(ctx, "identity", %{v: [1, "a"]})
  end

  test "an Elixir raise becomes a Python exception with the message", ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "explode", fn _ ->
      raise ArgumentError, "no such sku"
    end)

    assert {:ok, %{"raised" => "ElixirToolError", "message" => message}} =
             call_elixir(ctx, "explode", %{})

    assert message =~ "ArgumentError"
    assert message =~ "no such sku"
  end

  test "an unknown tool and a timeout are clear errors", ctx do
    # As upstream: an unknown tool is a ValueError (ElixirToolNotFoundError).
    assert {:ok, %{"raised" => "ElixirToolNotFoundError", "message" => unknown}} =
             call_elixir(ctx, "nope", %{})

    assert unknown =~ "Elixir tool 'nope' not found"

    ToolRegistry.register_elixir_tool(ctx.session, "slow", fn _ -> Process.sleep(5_000) end, %{
      timeout: 200
    })

    assert {:ok, %{"raised" => "ElixirToolError", "message" => slow}} =
             call_elixir(ctx, "slow", %{})

    assert slow =~ "timed out after 200 ms"
  end

  test "calls parked with a registry that dies fail at once; its restart serves again", ctx do
    :ok = ToolRegistry.register_elixir_tool(ctx.session, "echo", fn args -> args end)
    registry = Process.whereis(ToolRegistry)
    # Suspended, the registry leaves the call in its mailbox: it dies holding it.
    :ok = :sys.suspend(registry)

    task = Task.async(fn -> call_elixir(ctx, "echo", %{"x" => 1}) end)
    Process.sleep(300)
    started = System.monotonic_time(:millisecond)
    Process.exit(registry, :kill)

    assert {:ok, %{"raised" => "ElixirToolError", "message" => message}} =
             Task.await(task, 10_000)

    assert message =~ "the Elixir tool registry stopped before answering"
    # Well before Python's own deadline for the call (60 s).
    assert System.monotonic_time(:millisecond) - started < 5_000

    assert eventually(fn ->
             restarted = Process.whereis(ToolRegistry)
             is_pid(restarted) and restarted != registry
           end)

    :ok = ToolRegistry.register_elixir_tool(ctx.session, "echo", fn args -> args end)
    assert {:ok, %{"result" => %{"x" => 1}}} = call_elixir(ctx, "echo", %{"x" => 1})
  end

  test "a result Python cannot take is a clear error", ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "leaky", fn _ -> %{"owner" => self()} end)

    assert {:ok, %{"raised" => "ElixirToolError", "message" => message}} =
             call_elixir(ctx, "leaky", %{})

    assert message =~ "result.owner is a pid"
  end

  test "a result with structs: calendar types arrive as ISO 8601, others are a clear error",
       ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "when", fn _ ->
      %{"day" => ~D[2026-11-26], "at" => [~U[2026-11-26 10:20:30Z]], "n" => 1}
    end)

    ToolRegistry.register_elixir_tool(ctx.session, "ranged", fn _ -> %{"r" => [1..3]} end)

    assert {:ok, %{"result" => result}} = call_elixir(ctx, "when", %{})
    assert result == %{"day" => "2026-11-26", "at" => ["2026-11-26T10:20:30Z"], "n" => 1}

    assert {:ok, %{"raised" => "ElixirToolError", "message" => message}} =
             call_elixir(ctx, "ranged", %{})

    assert message =~ "result.r[0] is a Range struct"
  end

  test "elixir_tools lists the session's exposed tools", ctx do
    ToolRegistry.register_elixir_tool(ctx.session, "visible", fn _ -> 1 end, %{
      description: "shown",
      exposed_to_python: true
    })

    # Not exposed unless asked: listed to Python only with exposed_to_python: true.
    ToolRegistry.register_elixir_tool(ctx.session, "default_hidden", fn _ -> 1 end)

    ToolRegistry.register_elixir_tool(ctx.session, "hidden", fn _ -> 1 end, %{
      exposed_to_python: false
    })

    assert {:ok,
            %{"visible" => %{"name" => "visible", "description" => "shown", "parameters" => %{}}} =
              tools} =
             Snakepit.execute_in_session(ctx.session, "list_elixir_tools", %{},
               pool_name: ctx.pool
             )

    refute Map.has_key?(tools, "hidden")
    refute Map.has_key?(tools, "default_hidden")
  end
end
