defmodule Snakepit.StreamingTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  @fixtures Path.expand("../fixtures/python", __DIR__)

  setup_all do
    config =
      Snakepit.Config.normalize_pool(%{
        name: :streams,
        worker_profile: :thread,
        threads_per_worker: 4,
        pool_size: 1,
        adapter_args: ["--adapter", "snakepit_exunit_adapters.StreamSessionAdapter"],
        adapter_env: [{"PYTHONPATH", @fixtures}],
        startup_batch_delay_ms: 0
      })

    {:ok, pid} = Snakepit.Pool.start_link(config)
    Process.unlink(pid)
    :ok = Snakepit.Pool.await_ready(:streams, 30_000)
    on_exit(fn -> GenServer.stop(pid) end)
    :ok
  end

  defp collect(tool, args, opts \\ []) do
    {:ok, agent} = Agent.start_link(fn -> [] end)

    result =
      Snakepit.execute_stream(
        tool,
        args,
        fn chunk -> Agent.update(agent, &[chunk | &1]) end,
        [pool_name: :streams] ++ opts
      )

    {result, agent |> Agent.get(& &1) |> Enum.reverse()}
  end

  test "chunks arrive in order, as maps with is_final, then :ok" do
    {result, chunks} = collect("count_stream", %{n: 50})
    assert result == :ok
    assert Enum.map(Enum.drop(chunks, -1), & &1["i"]) == Enum.to_list(0..49)
    assert Enum.all?(Enum.drop(chunks, -1), &(&1["is_final"] == false))
    assert List.last(chunks) == %{"is_final" => true}
  end

  test "a value that is not an object comes as %{\"data\" => value}" do
    {:ok = _, chunks} = collect("scalar_stream", %{})
    assert Enum.map(Enum.drop(chunks, -1), & &1["data"]) == [1, "two", [3]]
  end

  test ":halt stops the stream and closes the Python generator (its finally runs)" do
    marker = Path.join(System.tmp_dir!(), "snakepit_halt_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(marker) end)

    result =
      Snakepit.execute_stream(
        "guarded_stream",
        %{marker: marker},
        fn %{"i" => i} -> if i == 5, do: :halt, else: :cont end,
        pool_name: :streams
      )

    assert result == :ok
    assert eventually(fn -> File.exists?(marker) end, 5_000)
    assert File.read!(marker) =~ "closed after"
    refute_received {_, :chunk, _}
  end

  test "a raising callback cancels the stream, returns {:callback_exception, e, stacktrace}, leaves no messages" do
    marker = Path.join(System.tmp_dir!(), "snakepit_raise_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(marker) end)

    assert {:error,
            {:callback_exception, %RuntimeError{message: "callback broke at 3"}, stacktrace}} =
             Snakepit.execute_stream(
               "guarded_stream",
               %{marker: marker},
               fn %{"i" => i} -> if i == 3, do: raise("callback broke at 3"), else: :cont end,
               pool_name: :streams
             )

    assert [{__MODULE__, _fun, _arity, _location} | _] = stacktrace
    assert eventually(fn -> File.exists?(marker) end, 5_000)
    assert File.read!(marker) =~ "closed after"
    refute_received {_, :chunk, _}
    refute_received {_, _, _}
  end

  test "100,000 chunks to a slow callback: the caller's mailbox stays bounded" do
    Process.put(:chunks, 0)
    Process.put(:max_queue_len, 0)

    result =
      Snakepit.execute_stream(
        "count_stream",
        %{n: 100_000},
        fn chunk ->
          {:message_queue_len, len} = Process.info(self(), :message_queue_len)
          Process.put(:max_queue_len, max(len, Process.get(:max_queue_len)))
          Process.put(:chunks, Process.get(:chunks) + 1)
          if rem(chunk["i"] || 0, 10_000) == 0, do: Process.sleep(200)
        end,
        pool_name: :streams,
        timeout: 120_000
      )

    assert result == :ok
    assert Process.get(:chunks) == 100_001
    # The native window is 32 chunks; the final reply may sit behind them.
    assert Process.get(:max_queue_len) <= 33
  end

  test "a Python exception mid-stream: earlier chunks delivered, then a :python_error with traceback" do
    {result, chunks} = collect("failing_stream", %{n: 3})
    assert Enum.map(chunks, & &1["i"]) == [0, 1, 2]
    assert {:error, %Snakepit.Error.ValueError{category: :python_error} = error} = result
    assert error.details.python_type == "ValueError"
    assert error.message =~ "stream broke after 3"
    assert error.python_traceback =~ "failing_stream"
  end

  test "a stream that outlives its timeout is cancelled with a :timeout error" do
    marker =
      Path.join(System.tmp_dir!(), "snakepit_timeout_#{System.unique_integer([:positive])}")

    on_exit(fn -> File.rm(marker) end)

    assert {:error, %Snakepit.Error{category: :timeout}} =
             Snakepit.execute_stream("guarded_stream", %{marker: marker}, fn _ -> :ok end,
               pool_name: :streams,
               timeout: 300
             )

    assert eventually(fn -> File.exists?(marker) end, 5_000)
  end

  test "a caller that dies cancels its stream on the Python side" do
    marker = Path.join(System.tmp_dir!(), "snakepit_death_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(marker) end)
    parent = self()

    caller =
      spawn(fn ->
        Snakepit.execute_stream(
          "guarded_stream",
          %{marker: marker},
          fn _ -> send(parent, :streaming) end,
          pool_name: :streams
        )
      end)

    assert_receive :streaming, 5_000
    Process.exit(caller, :kill)
    assert eventually(fn -> File.exists?(marker) end, 5_000)
  end

  test "streams count against worker capacity" do
    marker = Path.join(System.tmp_dir!(), "snakepit_cap_#{System.unique_integer([:positive])}")
    on_exit(fn -> File.rm(marker) end)
    parent = self()
    # A stream an earlier test cancelled holds its slot until Python closes it.
    assert eventually(fn ->
             match?([%{inflight: 0}], Snakepit.get_stats(:streams).worker_loads)
           end)

    task =
      Task.async(fn ->
        Snakepit.execute_stream(
          "guarded_stream",
          %{marker: marker},
          fn %{"i" => i} ->
            if i == 0, do: send(parent, :started)
            if i >= 20, do: :halt, else: :cont
          end,
          pool_name: :streams
        )
      end)

    assert_receive :started, 5_000
    assert [%{inflight: 1}] = Snakepit.get_stats(:streams).worker_loads
    assert :ok = Task.await(task, 10_000)
  end

  test "execute_in_session_stream passes the session" do
    assert :ok =
             Snakepit.execute_in_session_stream(
               "stream-session",
               "count_stream",
               %{n: 2},
               fn _ -> :ok end,
               pool_name: :streams
             )
  end
end
