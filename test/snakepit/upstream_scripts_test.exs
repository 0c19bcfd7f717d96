defmodule Snakepit.UpstreamScriptsTest do
  # What upstream's example scripts rely on beyond the documented API:
  # a correlation id given in the args and runtime control of a worker's
  # Python telemetry (examples/telemetry_advanced.exs), and
  # the listener a Python program of one's own connects to
  # (examples/bidirectional_tools_demo_auto.exs with
  # examples/python_elixir_tools_demo.py).
  use Snakepit.PoolCase, async: false

  alias Snakepit.Bridge.ToolRegistry
  alias Snakepit.GRPC.Listener
  alias Snakepit.Telemetry.GrpcStream

  describe "correlation ids" do
    setup do
      :telemetry.attach_recorder()
      on_exit(fn -> :telemetry.detach_recorder() end)
    end

    test "a correlation_id in the args is the call's id, for telemetry and Python, not a tool argument" do
      # telemetry_demo returns telemetry.get_correlation_id() as Python sees it;
      # it has no correlation_id parameter, so passing the key on would raise.
      assert {:ok, %{"correlation_id" => "from-args-1", "operation" => "atom_key"}} =
               Snakepit.execute("telemetry_demo", %{
                 operation: "atom_key",
                 delay_ms: 0,
                 correlation_id: "from-args-1"
               })

      assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :start], _,
                      %{correlation_id: "from-args-1", command: "telemetry_demo"}}

      assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :stop], _,
                      %{correlation_id: "from-args-1", status: :ok}}

      assert {:ok, %{"correlation_id" => "from-args-2"}} =
               Snakepit.execute("telemetry_demo", %{
                 "delay_ms" => 0,
                 "correlation_id" => "from-args-2"
               })

      # The option wins over the args.
      assert {:ok, %{"correlation_id" => "from-option"}} =
               Snakepit.execute("telemetry_demo", %{delay_ms: 0, correlation_id: "from-args"},
                 correlation_id: "from-option"
               )
    end

    test "a traced call without one gets a new id, shared by its events and its Python side" do
      assert {:ok, %{"correlation_id" => "snakepit-" <> _ = generated}} =
               Snakepit.execute("telemetry_demo", %{delay_ms: 0})

      assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :stop], _,
                      %{correlation_id: ^generated}}

      assert_receive {:telemetry_event, [:snakepit, :request, :executed], _,
                      %{correlation_id: ^generated}}

      assert {:ok, %{"correlation_id" => other}} =
               Snakepit.execute("telemetry_demo", %{delay_ms: 0})

      assert other != generated
    end

    test "an untraced call sends none" do
      :telemetry.detach_recorder()
      saved = :ets.tab2list(:telemetry_handler_table)
      :ets.delete_all_objects(:telemetry_handler_table)
      on_exit(fn -> :ets.insert(:telemetry_handler_table, saved) end)

      assert {:ok, %{"correlation_id" => nil}} =
               Snakepit.execute("telemetry_demo", %{delay_ms: 0})
    end
  end

  describe "Snakepit.GRPC.Listener" do
    @client """
    import sys
    import grpc
    from snakepit_bridge_pb2_grpc import BridgeServiceStub
    from snakepit_bridge.session_context import SessionContext

    address, session = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(address) as channel:
        ctx = SessionContext(BridgeServiceStub(channel), session)
        print("tools", sorted(ctx.elixir_tools))
        print("sum", ctx.call_elixir_tool("process_list", list=[1, 2, 3], operation="sum"))
        print("proxy", ctx.elixir_tools["process_list"](list=[4, 5], operation="max"))
    """

    test "a Python client of one's own reaches a session's Elixir tools through host:port" do
      pid = start_supervised!({Listener, name: nil})
      assert {:ok, %{host: host, port: port, pid: ^pid}} = Listener.await_ready(5_000)
      assert host == "127.0.0.1" and is_integer(port) and port > 0
      assert Listener.address() == "#{host}:#{port}"

      session = "listener-#{System.unique_integer([:positive])}"

      :ok =
        ToolRegistry.register_elixir_tool(
          session,
          "process_list",
          fn %{"list" => list, "operation" => op} ->
            %{"result" => if(op == "sum", do: Enum.sum(list), else: Enum.max(list))}
          end,
          %{description: "list ops", exposed_to_python: true}
        )

      on_exit(fn -> ToolRegistry.cleanup_session(session) end)

      {:ok, %{path: python}} = Snakepit.PythonRuntime.resolve()

      {output, status} =
        System.cmd(python, ["-c", @client, "#{host}:#{port}", session],
          env: [{"PYTHONPATH", Snakepit.Python.bridge_dir()}],
          stderr_to_stdout: true
        )

      assert status == 0, output
      assert output =~ "tools ['process_list']"
      assert output =~ "sum {'result': 6}"
      assert output =~ "proxy {'result': 5}"
    end

    test "it listens on the grpc_listener host, by name or address" do
      previous = Application.get_env(:snakepit, :grpc_listener)

      on_exit(fn ->
        if previous,
          do: Application.put_env(:snakepit, :grpc_listener, previous),
          else: Application.delete_env(:snakepit, :grpc_listener)
      end)

      Application.put_env(:snakepit, :grpc_listener, %{mode: :internal, host: "localhost"})

      start_supervised!({Listener, name: nil})
      assert {:ok, %{host: "localhost", port: port}} = Listener.await_ready(5_000)
      assert {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [])
      :gen_tcp.close(socket)
    end

    test "stopping it closes the port and forgets the address" do
      pid = start_supervised!({Listener, name: nil})
      {:ok, %{port: port}} = Listener.await_ready(5_000)
      assert {:ok, socket} = :gen_tcp.connect(~c"127.0.0.1", port, [])
      :gen_tcp.close(socket)

      :ok = stop_supervised(Listener)
      refute Process.alive?(pid)
      assert Listener.address() == nil
      assert Listener.await_ready(50) == {:error, :timeout}
      assert {:error, :econnrefused} = :gen_tcp.connect(~c"127.0.0.1", port, [])
    end
  end

  describe "Snakepit.Telemetry.GrpcStream" do
    setup do
      :telemetry.attach_recorder()
      on_exit(fn -> :telemetry.detach_recorder() end)

      pool =
        start_pool!(
          name: :telemetry_control,
          pool_size: 1,
          fixture_adapter: "TelemetryAdapter"
        )

      [worker] = Snakepit.list_workers(pool)
      on_exit(fn -> GrpcStream.toggle(worker, true) end)
      %{pool: pool, worker: worker}
    end

    # The tools flush: they return once Elixir has handled their events, so
    # the mailbox holds all there will be.
    defp emit_some(pool, label),
      do:
        {:ok, true} = Snakepit.execute("emit_some", %{label: label, flush: true}, pool_name: pool)

    defp result_sizes(label) do
      receive do
        {:telemetry_event, [:snakepit, :python, :tool, :result_size], _, %{"label" => ^label}} ->
          1 + result_sizes(label)
      after
        0 -> 0
      end
    end

    defp count_many(acc \\ 0) do
      receive do
        {:telemetry_event, [:snakepit, :python, :tool, :result_size], _, %{tool: "emit_many"}} ->
          count_many(acc + 1)
      after
        0 -> acc
      end
    end

    test "toggle turns a worker's events off and on", %{pool: pool, worker: worker} do
      assert :ok = GrpcStream.toggle(worker, false)
      emit_some(pool, "off")
      assert :ok = GrpcStream.toggle(worker, true)
      emit_some(pool, "on")

      assert result_sizes("off") == 0
      assert result_sizes("on") == 1
    end

    test "a filter keeps the allowed names, minus the denied ones", %{pool: pool, worker: worker} do
      assert :ok =
               GrpcStream.update_filter(worker, allow: ["python.tool.*"], deny: ["*.result_size"])

      emit_some(pool, "filtered")

      assert result_sizes("filtered") == 0

      assert_received {:telemetry_event, [:snakepit, :python, :tool, :execution, :stop], _,
                       %{worker_id: ^worker}}
    end

    test "sampling keeps about rate of the matching events and all others",
         %{pool: pool, worker: worker} do
      assert :ok = GrpcStream.update_sampling(worker, 0.5, ["python.tool.result_size"])

      {:ok, _} = Snakepit.execute("emit_many", %{n: 2_000, flush: true}, pool_name: pool)
      assert count_many() in 700..1_300

      emit_some(pool, "sampled")

      assert_received {:telemetry_event, [:snakepit, :python, :tool, :execution, :stop], _,
                       %{worker_id: ^worker}}

      assert :ok = GrpcStream.update_sampling(worker, 0.0)
      emit_some(pool, "none")
      assert result_sizes("none") == 0

      refute_received {:telemetry_event, [:snakepit, :python, :tool, :execution, :stop], _,
                       %{worker_id: ^worker}}
    end

    test "a malformed control is refused", %{worker: worker} do
      assert_raise ArgumentError, ~r/rate in 0..1/, fn ->
        GrpcStream.update_sampling(worker, 1.5)
      end

      assert_raise ArgumentError, ~r/patterns must be strings/, fn ->
        GrpcStream.update_filter(worker, deny: [1])
      end

      assert_raise ArgumentError, ~r/boolean/, fn -> GrpcStream.toggle(worker, :off) end
    end
  end
end
