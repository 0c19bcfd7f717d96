defmodule Snakepit.GrpcQueueTest do
  # Every gRPC operation of the BEAM completes on the NIF's one queue thread
  # (c_src/transport/queue_thread.hpp). gRPC's callback API would start its
  # own completion threads ("nexting_thread"), which hand the poller to each
  # other on every event; one use of it anywhere brings them back.
  use Snakepit.PoolCase, async: false

  alias Snakepit.Bridge.ToolRegistry

  defp thread_names do
    for tid <- File.ls!("/proc/self/task"),
        {:ok, name} <- [File.read("/proc/self/task/#{tid}/comm")],
        do: String.trim(name)
  end

  test "calls, deadlines, streams, heartbeats and Python's Elixir-tool calls all run on one queue thread" do
    pool = start_pool!(name: :grpc_queue, pool_size: 1, heartbeat: %{ping_interval_ms: 50})

    assert {:error, %Snakepit.Error{}} =
             Snakepit.execute("sleep", %{ms: 500}, pool_name: pool, timeout: 50)

    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, pool_name: pool)

    streams =
      start_pool!(
        name: :grpc_queue_streams,
        pool_size: 1,
        fixture_adapter: "StreamSessionAdapter"
      )

    assert :ok =
             Snakepit.execute_stream("count_stream", %{n: 3}, fn _ -> :ok end, pool_name: streams)

    callers =
      start_pool!(
        name: :grpc_queue_tools,
        pool_size: 1,
        fixture_adapter: "ElixirCallerAdapter"
      )

    session = "queue-#{System.unique_integer([:positive])}"
    on_exit(fn -> ToolRegistry.cleanup_session(session) end)
    :ok = ToolRegistry.register_elixir_tool(session, "twice", fn %{"x" => x} -> 2 * x end)

    assert {:ok, %{"result" => 42}} =
             Snakepit.execute_in_session(
               session,
               "call_elixir",
               %{name: "twice", arguments: %{x: 21}},
               pool_name: callers
             )

    # A few heartbeats go by.
    Process.sleep(200)
    names = thread_names()
    assert Enum.count(names, &(&1 == "grpc_queue")) == 1
    refute "nexting_thread" in names
  end

  test "the Elixir-tool socket answers any other method UNIMPLEMENTED at once" do
    {:ok, %{path: python}} = Snakepit.PythonRuntime.resolve()

    probe = """
    import sys, grpc
    channel = grpc.insecure_channel("unix:" + sys.argv[1])
    try:
        channel.unary_unary("/snakepit.bridge.BridgeService/Ping")(b"", timeout=10)
        print("answered")
    except grpc.RpcError as error:
        print(error.code().name, error.details())
    """

    {out, 0} =
      System.cmd(python, ["-c", probe, Snakepit.Python.elixir_tools_socket()],
        stderr_to_stdout: true
      )

    assert out =~ "UNIMPLEMENTED /snakepit.bridge.BridgeService/Ping is not served"
  end
end
