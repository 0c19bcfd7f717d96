defmodule Snakepit.PythonAdapterTest do
  @moduledoc "The Python adapter contract (issue 13): lifecycle, telemetry, results, streams."
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  import ExUnit.CaptureLog

  doctest Snakepit.Bridge.PythonTelemetry

  @fixtures Path.expand("../fixtures/python", __DIR__)

  defp adapter(name), do: ["--adapter", "snakepit_exunit_adapters." <> name]

  defp lifecycle_log do
    path =
      Path.join(System.tmp_dir!(), "snakepit-lifecycle-#{System.unique_integer([:positive])}")

    on_exit(fn -> File.rm(path) end)
    path
  end

  defp lifecycle_events(path) do
    case File.read(path) do
      {:ok, text} ->
        for line <- String.split(text, "\n", trim: true) do
          [kind, pid, _at] = String.split(line, " ")
          {kind, String.to_integer(pid)}
        end

      {:error, :enoent} ->
        []
    end
  end

  describe "lifecycle" do
    test "initialize() runs once per worker, before it is ready; cleanup() when the pool stops" do
      log = lifecycle_log()

      config =
        Snakepit.Config.normalize_pool(%{
          name: :lifecycle,
          pool_size: 2,
          startup_batch_delay_ms: 0,
          adapter_args: adapter("LifecycleAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}, {"LIFECYCLE_LOG", log}, {"INIT_MS", "500"}]
        })

      start_supervised!({Snakepit.Pool, config})
      :ok = Snakepit.Pool.await_ready(:lifecycle, 30_000)
      assert eventually(fn -> Snakepit.get_stats(:lifecycle).ready == 2 end, 30_000)

      # Both workers finished initialize() before they were ready.
      inits = for {"initialize", pid} <- lifecycle_events(log), do: pid
      assert length(inits) == 2 and length(Enum.uniq(inits)) == 2

      results =
        1..20
        |> Enum.map(fn _ ->
          Task.async(fn ->
            Snakepit.execute("lifecycle_state", %{ms: 20}, pool_name: :lifecycle)
          end)
        end)
        |> Task.await_many(30_000)

      for {:ok, state} <- results do
        assert state["initialized"] == 1 and state["model"] == %{"weights" => [1, 2, 3]}
        assert state["pid"] in inits
      end

      assert length(results) == 20
      stop_supervised!({Snakepit.Pool, :lifecycle})
      cleanups = for {"cleanup", pid} <- lifecycle_events(log), do: pid
      assert Enum.sort(cleanups) == Enum.sort(inits)
    end

    test "thread profile: initialize() once per process, shared by every thread" do
      log = lifecycle_log()

      pool =
        start_pool!(
          name: :lifecycle_threads,
          worker_profile: :thread,
          threads_per_worker: 4,
          pool_size: 1,
          adapter_args: adapter("LifecycleAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}, {"LIFECYCLE_LOG", log}]
        )

      results =
        1..8
        |> Enum.map(fn _ ->
          Task.async(fn -> Snakepit.execute("lifecycle_state", %{ms: 100}, pool_name: pool) end)
        end)
        |> Task.await_many(30_000)

      assert [{"initialize", pid}] = lifecycle_events(log)
      assert Enum.all?(results, &match?({:ok, %{"initialized" => 1, "pid" => ^pid}}, &1))
    end

    test "a recycled worker runs cleanup() and its successor runs initialize()" do
      log = lifecycle_log()

      pool =
        start_pool!(
          name: :lifecycle_recycle,
          pool_size: 1,
          worker_max_requests: 3,
          adapter_args: adapter("LifecycleAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}, {"LIFECYCLE_LOG", log}, {"INIT_MS", "0"}]
        )

      for _ <- 1..4, do: {:ok, _} = Snakepit.execute("lifecycle_state", %{}, pool_name: pool)

      assert eventually(
               fn -> Enum.any?(lifecycle_events(log), &match?({"cleanup", _}, &1)) end,
               20_000
             )

      events = lifecycle_events(log)
      [{"initialize", first} | _] = events
      assert {"cleanup", first} in events
      assert Enum.count(events, &match?({"initialize", _}, &1)) >= 2
    end

    test "an exception in initialize() is the pool's start error, with its traceback" do
      config =
        Snakepit.Config.normalize_pool(%{
          name: :initialize_fails,
          pool_size: 1,
          adapter_args: adapter("InitializeFailsAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}],
          restart_backoff_ms: 1_000
        })

      start_supervised!({Snakepit.Pool, config})

      assert {:error, %Snakepit.Error{} = error} =
               Snakepit.Pool.await_ready(:initialize_fails, 30_000)

      assert error.details.python_type == "FileNotFoundError"
      assert error.python_traceback =~ "weights not found: /models/absent.bin"
      assert error.python_traceback =~ "in initialize"
    end

    test "an async initialize() runs on the loop later async tools use" do
      pool =
        start_pool!(
          name: :async_init,
          pool_size: 1,
          adapter_args: adapter("AsyncInitAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}]
        )

      assert {:ok, true} = Snakepit.execute("same_loop", %{}, pool_name: pool)
    end

    test "an execute_tool override receives every call; super() dispatches to @tool methods" do
      pool =
        start_pool!(
          name: :override,
          pool_size: 1,
          adapter_args: adapter("OverrideAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}]
        )

      assert {:ok, 42} = Snakepit.execute("double", %{x: 21}, pool_name: pool)

      assert {:ok, %{"tool" => "dynamic", "arguments" => %{"k" => 1}, "session_id" => "s-9"}} =
               Snakepit.execute_in_session("s-9", "dynamic", %{k: 1}, pool_name: pool)

      assert {:error, %{python_type: "ToolNotFoundError"}} =
               Snakepit.execute("missing", %{}, pool_name: pool) |> unwrap_python_error()

      assert {:ok, ["double", "dynamic", "missing", "seen"]} =
               Snakepit.execute("seen", %{}, pool_name: pool)
    end
  end

  # Works with %Snakepit.Error{} and with the per-type exception structs.
  defp unwrap_python_error({:error, %{details: %{python_type: type}}}),
    do: {:error, %{python_type: type}}

  defp unwrap_python_error({:error, %{python_type: type}}), do: {:error, %{python_type: type}}
  defp unwrap_python_error(other), do: other

  describe "telemetry" do
    setup do
      :telemetry.attach_recorder()
      on_exit(fn -> :telemetry.detach_recorder() end)

      pool =
        start_pool!(
          name: :py_telemetry,
          worker_profile: :thread,
          threads_per_worker: 2,
          pool_size: 1,
          adapter_args: adapter("TelemetryAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}]
        )

      %{pool: pool}
    end

    test "telemetry.emit and telemetry.span in a tool reach Elixir as [:snakepit, :python, ...]",
         %{pool: pool} do
      [worker_id] = Snakepit.list_workers(pool)
      assert {:ok, true} = Snakepit.execute("emit_some", %{label: "one"}, pool_name: pool)

      assert_receive {:telemetry_event, [:snakepit, :python, :tool, :result_size],
                      %{bytes: 42, count: 1}, meta},
                     5_000

      assert meta.tool == "emit_some" and meta["label"] == "one"
      assert meta.worker_id == worker_id and meta.pool_name == pool
      assert is_integer(meta.python_pid) and is_integer(meta.timestamp_ns)

      assert_receive {:telemetry_event, [:snakepit, :python, :tool, :execution, :start],
                      %{system_time: _}, %{tool: "emit_some"}},
                     5_000

      assert_receive {:telemetry_event, [:snakepit, :python, :tool, :execution, :stop],
                      %{duration: duration}, %{tool: "emit_some"}},
                     5_000

      assert duration >= 10_000_000
    end

    test "a tool emitting 100 000 events is not slowed; past the bound events are dropped and counted",
         %{pool: pool} do
      log =
        capture_log(fn ->
          assert {:ok, %{"seconds" => seconds, "buffer" => buffer}} =
                   Snakepit.execute("emit_many", %{n: 100_000}, pool_name: pool, timeout: 60_000)

          # Appending to a bounded buffer only: a few microseconds per event.
          assert seconds < 2.0
          {received, dropped} = count_events(100_000, {0, 0}, 30_000)
          # Every event either arrived or was counted as dropped...
          assert received + dropped == 100_000
          # ...and no more arrived than the buffer holds plus what was sent meanwhile.
          assert dropped > 0 and received < 100_000
          assert received <= buffer * 2
        end)

      assert log =~ "dropped"
      assert log =~ "telemetry events"
      # The worker still serves, and still sends telemetry.
      assert {:ok, true} = Snakepit.execute("emit_some", %{label: "after"}, pool_name: pool)

      assert_receive {:telemetry_event, [:snakepit, :python, :tool, :result_size], _,
                      %{"label" => "after"}},
                     5_000
    end
  end

  # Receives result_size and dropped events until `total` are accounted for.
  defp count_events(total, {received, dropped}, _timeout) when received + dropped >= total,
    do: {received, dropped}

  defp count_events(total, {received, dropped}, timeout) do
    receive do
      {:telemetry_event, [:snakepit, :python, :tool, :result_size], _, %{tool: "emit_many"}} ->
        count_events(total, {received + 1, dropped}, timeout)

      {:telemetry_event, [:snakepit, :python, :telemetry, :dropped], %{count: n}, _} ->
        count_events(total, {received, dropped + n}, timeout)
    after
      timeout -> {received, dropped}
    end
  end

  describe "results and streams" do
    setup do
      pool =
        start_pool!(
          name: :py_results,
          pool_size: 1,
          adapter_args: adapter("ResultsAdapter"),
          adapter_env: [{"PYTHONPATH", @fixtures}]
        )

      %{pool: pool}
    end

    test "graceful serialization: converters, markers, integers stay integers", %{pool: pool} do
      assert {:ok, result} = Snakepit.execute("graceful", %{}, pool_name: pool)
      assert result["model"] == %{"kind" => "pydantic", "n" => 1}
      assert result["record"] == %{"kind" => "to_dict"}

      assert result["opaque"] == %{
               "__ffi_unserializable__" => true,
               "__type__" => "snakepit_exunit_adapters._Opaque"
             }

      assert [%{"__ffi_unserializable__" => true}, %{"when" => "2026-01-02T03:04:05"}] =
               result["nested"]

      assert result["pair"] == [1, 2]
      assert result["big"] == 2 ** 62
    end

    test "NaN is still an error naming its place", %{pool: pool} do
      assert {:error, error} = Snakepit.execute("nan_inside", %{}, pool_name: pool)
      assert Exception.message(error) =~ "result.values[1] is NaN or infinite"
    end

    test "chunk objects are unpacked: data, is_final, metadata", %{pool: pool} do
      parent = self()

      assert :ok =
               Snakepit.execute_stream("chunk_objects", %{}, &send(parent, {:chunk, &1}),
                 pool_name: pool
               )

      chunks = collect_chunks([])

      assert chunks == [
               %{"step" => 1, "is_final" => false},
               %{
                 "data" => 7,
                 "_metadata" => %{"unit" => "items", "n" => "2"},
                 "is_final" => false
               },
               # a dict is a value, as upstream sends it
               %{"data" => %{"step" => 3}, "is_final" => false},
               %{"step" => 4, "is_final" => true}
             ]
    end
  end

  defp collect_chunks(acc) do
    receive do
      {:chunk, chunk} -> collect_chunks([chunk | acc])
    after
      500 -> Enum.reverse(acc)
    end
  end
end
