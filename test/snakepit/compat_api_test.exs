defmodule Snakepit.CompatApiTest do
  @moduledoc "Upstream Snakepit's public API, arities and options, on real workers."
  use Snakepit.PoolCase, async: false

  @fixtures Path.expand("../fixtures/python", __DIR__)

  defp collector do
    {:ok, agent} = Agent.start_link(fn -> [] end)
    on_exit(fn -> if Process.alive?(agent), do: Agent.stop(agent) end)
    {agent, fn chunk -> Agent.update(agent, &[chunk | &1]) end}
  end

  # The data chunks, without the final end-of-stream marker (%{"is_final" => true}).
  defp chunks(agent) do
    agent |> Agent.get(& &1) |> Enum.reverse() |> Enum.reject(&(&1 == %{"is_final" => true}))
  end

  defp no_stray_messages do
    refute_received {_ref, :chunk, _}
    refute_received {_ref, _result, _worker_id}
  end

  describe "execute_stream arities and callback outcomes" do
    test "execute_stream/2 streams the tool with no arguments to the default pool" do
      {agent, callback} = collector()
      assert :ok = Snakepit.execute_stream("stream_data", callback)
      # Upstream's defaults: 5 chunks, 1 s apart, indexed from 1.
      assert Enum.map(chunks(agent), & &1["index"]) == [1, 2, 3, 4, 5]
    end

    test "execute_stream/3 takes args, execute_stream/4 options" do
      {agent, callback} = collector()
      assert :ok = Snakepit.execute_stream("stream_data", %{count: 2, delay: 0}, callback)
      assert [%{"index" => 1, "total" => 2}, %{"index" => 2, "is_final" => true}] = chunks(agent)

      pool = start_pool!(name: :stream_opts, pool_size: 1)
      {agent, callback} = collector()

      assert :ok =
               Snakepit.execute_stream("stream_data", %{count: 3, delay: 0}, callback,
                 pool_name: pool,
                 timeout: 10_000
               )

      assert length(chunks(agent)) == 3
    end

    test ":halt stops the stream and returns :ok" do
      test_pid = self()

      assert :ok =
               Snakepit.execute_stream("stream_data", %{count: 50, delay: 0.01}, fn chunk ->
                 send(test_pid, {:seen, chunk["index"]})
                 if chunk["index"] == 2, do: :halt, else: :ok
               end)

      assert_received {:seen, 2}
      refute_received {:seen, 3}
      no_stray_messages()
    end

    test "{:halt, reason} stops the stream and returns {:error, reason}" do
      assert {:error, {:enough, 1}} =
               Snakepit.execute_stream("stream_data", %{count: 50, delay: 0.01}, fn chunk ->
                 if chunk["index"] == 1, do: {:halt, {:enough, 1}}, else: :cont
               end)

      no_stray_messages()
      assert {:ok, _} = Snakepit.execute("ping", %{})
    end

    test "a raising callback: the stream is cancelled, then {:error, {:callback_exception, e, stacktrace}}" do
      assert {:error, {:callback_exception, %ArgumentError{message: "bad chunk"}, [_ | _]}} =
               Snakepit.execute_stream("stream_data", %{count: 50, delay: 0.01}, fn chunk ->
                 if chunk["index"] == 1, do: raise(ArgumentError, "bad chunk"), else: :ok
               end)

      no_stray_messages()
      # Both default workers take calls again: the cancelled stream freed its slot.
      assert eventually(fn -> Snakepit.get_stats(:default).busy == 0 end)
    end

    test "a throwing callback: the stream is cancelled, the throw propagates" do
      assert catch_throw(
               Snakepit.execute_stream("stream_data", %{count: 50, delay: 0.01}, fn _ ->
                 throw(:stop_now)
               end)
             ) == :stop_now

      no_stray_messages()
      assert eventually(fn -> Snakepit.get_stats(:default).busy == 0 end)
    end

    test "execute_in_session_stream/3, /4 and /5" do
      config =
        Snakepit.Config.normalize_pool(%{
          name: :session_streams,
          pool_size: 1,
          adapter_args: ["--adapter", "snakepit_exunit_adapters.StreamSessionAdapter"],
          adapter_env: [{"PYTHONPATH", @fixtures}],
          startup_batch_delay_ms: 0
        })

      start_supervised!({Snakepit.Pool, config})
      :ok = Snakepit.Pool.await_ready(:session_streams, 30_000)

      {agent, callback} = collector()
      # /3 uses the default pool's showcase tool with no args.
      assert :ok = Snakepit.execute_in_session_stream("s-3", "stream_data", callback)
      assert length(chunks(agent)) == 5

      {agent, callback} = collector()

      assert :ok =
               Snakepit.execute_in_session_stream(
                 "s-4",
                 "stream_data",
                 %{count: 1, delay: 0},
                 callback
               )

      assert [%{"index" => 1}] = chunks(agent)

      {agent, callback} = collector()

      assert :ok =
               Snakepit.execute_in_session_stream("s-5", "count_stream", %{n: 2}, callback,
                 pool_name: :session_streams
               )

      assert [%{"i" => 0}, %{"i" => 1}] = chunks(agent)
    end
  end

  describe "Snakepit.Pool, the registered pool process and API" do
    test "Snakepit.Pool is a live registered process" do
      pid = Process.whereis(Snakepit.Pool)
      assert is_pid(pid) and Process.alive?(pid)
      assert Snakepit.Pool.Supervisor.pool_names() == [:default]
    end

    test "get_stats/0,1,2 and list_workers/0,1,2" do
      pool = start_pool!(name: :pool_api, pool_size: 1)
      pid = Process.whereis(Snakepit.Pool)

      for stats <- [Snakepit.Pool.get_stats(), Snakepit.Pool.get_stats(Snakepit.Pool)] do
        assert %{requests: _, queued: _, errors: _, workers: workers, available: _, busy: _} =
                 stats

        assert workers >= 3
      end

      assert Snakepit.Pool.get_stats(pid).workers == Snakepit.Pool.get_stats().workers
      assert %{workers: 1} = Snakepit.Pool.get_stats(pool)
      assert %{workers: 1} = Snakepit.Pool.get_stats(Snakepit.Pool, pool)
      assert {:error, {:pool_not_found, :nope}} = Snakepit.Pool.get_stats(Snakepit.Pool, :nope)

      [worker_id] = Snakepit.Pool.list_workers(pool)
      assert worker_id in Snakepit.Pool.list_workers()
      assert worker_id in Snakepit.Pool.list_workers(Snakepit.Pool)
      assert worker_id in Snakepit.Pool.list_workers(pid)
      assert Snakepit.Pool.list_workers(Snakepit.Pool, pool) == [worker_id]
      assert {:error, {:pool_not_found, :nope}} = Snakepit.Pool.list_workers(Snakepit.Pool, :nope)
    end

    test "Snakepit.Pool.Registry answers upstream's worker queries" do
      ids = Snakepit.list_workers()
      assert Snakepit.Pool.Registry.worker_count() == length(ids)
      assert Snakepit.Pool.Registry.list_workers() == ids
      assert Snakepit.Pool.Registry.worker_exists?(hd(ids))
      refute Snakepit.Pool.Registry.worker_exists?("no_such_worker")
    end

    test "execute/3 and execute_stream/4" do
      assert {:ok, 5} = Snakepit.Pool.execute("add", %{a: 2, b: 3}, [])
      assert {:ok, 5} = Snakepit.Pool.execute("add", %{a: 2, b: 3})
      {agent, callback} = collector()

      assert :ok =
               Snakepit.Pool.execute_stream("stream_data", %{count: 2, delay: 0}, callback, [])

      assert length(chunks(agent)) == 2
    end

    test "await_ready/0,1,2 and await_init_complete/0,1,2" do
      pool = start_pool!(name: :await_api, pool_size: 2)
      assert :ok = Snakepit.Pool.await_ready()
      assert :ok = Snakepit.Pool.await_ready(Snakepit.Pool)
      assert :ok = Snakepit.Pool.await_ready(Process.whereis(Snakepit.Pool), 5_000)
      assert :ok = Snakepit.Pool.await_ready(pool, 5_000)
      assert :ok = Snakepit.Pool.await_init_complete()
      assert :ok = Snakepit.Pool.await_init_complete(pool)
      assert :ok = Snakepit.Pool.await_init_complete(Snakepit.Pool, 5_000)
    end

    test "await_ready and await_init_complete time out with a :timeout error" do
      config =
        Snakepit.Config.normalize_pool(%{
          name: :slow_start,
          pool_size: 1,
          adapter_args: ["--adapter", "snakepit_exunit_adapters.SlowLoadAdapter"],
          adapter_env: [{"PYTHONPATH", @fixtures}, {"SLOW_LOAD_MS", "3000"}],
          startup_batch_delay_ms: 0
        })

      start_supervised!({Snakepit.Pool, config})

      assert {:error, %Snakepit.Error{category: :timeout, details: %{reason: :pool_init_timeout}}} =
               Snakepit.Pool.await_ready(:slow_start, 100)

      assert {:error, %Snakepit.Error{category: :timeout}} =
               Snakepit.Pool.await_init_complete(:slow_start, 100)

      assert :ok = Snakepit.Pool.await_init_complete(:slow_start, 30_000)
    end

    test "await_init_complete waits for every worker slot" do
      config =
        Snakepit.Config.normalize_pool(%{
          name: :slow_all,
          pool_size: 2,
          startup_batch_size: 1,
          startup_batch_delay_ms: 1_500
        })

      start_supervised!({Snakepit.Pool, config})
      assert :ok = Snakepit.Pool.await_ready(:slow_all, 30_000)
      assert :ok = Snakepit.Pool.await_init_complete(:slow_all, 30_000)
      assert Snakepit.get_stats(:slow_all).ready == 2
    end
  end

  describe "options" do
    test "binary_parameters arrive in Python as bytes, next to the other arguments" do
      pool = arg_types_pool!()

      assert {:ok, %{"blob" => "bytes", "text" => "bytes", "n" => "int"}} =
               Snakepit.execute("arg_types", %{n: 1},
                 pool_name: pool,
                 binary_parameters: %{"blob" => <<0, 255, 7>>, text: "plain utf-8"}
               )

      assert {:ok, <<0, 255, 7>>} =
               Snakepit.execute("echo_bytes", %{}, binary_parameters: %{"data" => <<0, 255, 7>>})
    end

    test "bad binary_parameters are a :validation error naming the option" do
      for bad <- [%{"blob" => 42}, %{{:a} => "x"}, [blob: "x"], "blob"] do
        assert {:error, %Snakepit.Error{category: :validation, message: message}} =
                 Snakepit.execute("ping", %{}, binary_parameters: bad)

        assert message =~ "binary_parameters"
      end
    end

    test "correlation_id goes to the request telemetry" do
      :telemetry.attach_recorder()
      on_exit(fn -> :telemetry.detach_recorder() end)

      assert {:ok, _} = Snakepit.execute("ping", %{}, correlation_id: "req-42")

      assert_receive {:telemetry_event, [:snakepit, :request, :executed], _,
                      %{correlation_id: "req-42", command: "ping"}}

      # Without one, a traced call gets its own (as upstream's calls do).
      assert {:ok, _} = Snakepit.execute("ping", %{})

      assert_receive {:telemetry_event, [:snakepit, :request, :executed], _,
                      %{correlation_id: "snakepit-" <> _}}

      assert {:error, %Snakepit.Error{category: :validation, message: message}} =
               Snakepit.execute("ping", %{}, correlation_id: self())

      assert message =~ "correlation_id must be a string"
    end

    test "affinity as a case-insensitive string" do
      pool = start_pool!(name: :affinity_strings, pool_size: 2)

      pids =
        for mode <- ["strict_queue", "STRICT_QUEUE", "Hint"] do
          {:ok, pid} =
            Snakepit.execute_in_session("sticky", "get_pid", %{}, pool_name: pool, affinity: mode)

          pid
        end

      assert length(Enum.uniq(pids)) == 1

      assert {:error, %Snakepit.Error{category: :validation, message: message}} =
               Snakepit.execute("ping", %{}, pool_name: pool, affinity: "sticky")

      assert message =~ "affinity must be one of"
    end
  end

  describe "bad options are :validation errors, never a raise or a late message (issue 10 item 7)" do
    test "a session_id that is not a string" do
      invalid_charlist = [0xD800]

      for bad <- [self(), {:session, 1}, %{id: 1}, invalid_charlist, make_ref(), <<0xFF, 0xFE>>] do
        assert {:error, %Snakepit.Error{category: :validation, details: details} = error} =
                 Snakepit.execute_in_session(bad, "ping", %{})

        assert details.reason == :invalid_option
        assert error.message =~ "session_id must"
      end

      assert {:ok, _} = Snakepit.execute_in_session(~c"charlist-session", "ping", %{})
      assert {:ok, _} = Snakepit.execute_in_session(:atom_session, "ping", %{})
      no_stray_messages()
    end

    test "a timeout of 2^32 ms or more runs the call and leaves nothing in the mailbox" do
      for timeout <- [4_294_967_296, 4_294_967_295, 2 ** 40, 2 ** 70] do
        assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, timeout: timeout)
      end

      {agent, callback} = collector()

      assert :ok =
               Snakepit.execute_stream("stream_data", %{count: 2, delay: 0}, callback,
                 timeout: 2 ** 33
               )

      assert length(chunks(agent)) == 2
      Process.sleep(100)
      no_stray_messages()
    end

    test "a negative or non-integer timeout" do
      for bad <- [-1, 1.5, "10s", :forever] do
        assert {:error, %Snakepit.Error{category: :validation, message: message}} =
                 Snakepit.execute("ping", %{}, timeout: bad)

        assert message =~ "timeout must be"
      end
    end
  end

  describe "timeouts reach the native deadline" do
    setup do
      on_exit(fn ->
        for key <- [:timeout_profile, :pool_request_timeout, :pool_streaming_timeout],
            do: Application.delete_env(:snakepit, key)
      end)
    end

    # The deadline (ms) each call hands the NIF, from a call trace of the NIF
    # itself (a process cannot be its own tracer: a forwarder is).
    defp traced_deadlines(fun) do
      test_pid = self()
      tracer = spawn_link(fn -> forward_traces(test_pid) end)
      :erlang.trace(self(), true, [:call, {:tracer, tracer}])
      :erlang.trace_pattern({Snakepit.Native, :submit, 5}, true, [:local])

      try do
        fun.()
      after
        :erlang.trace_pattern({Snakepit.Native, :submit, 5}, false, [:local])
        :erlang.trace(self(), false, [:call])
      end

      # Trace messages are in order: the marker comes after every call's.
      send(tracer, {:done, test_pid})
      collect_deadlines([])
    end

    defp forward_traces(test_pid) do
      receive do
        {:done, ^test_pid} -> send(test_pid, :traces_done)
        message -> send(test_pid, message) && forward_traces(test_pid)
      end
    end

    defp collect_deadlines(acc) do
      receive do
        {:trace, _pid, :call, {Snakepit.Native, :submit, [_pool, tool, _args, opts, _ref]}} ->
          collect_deadlines([{tool, elem(opts, 0)} | acc])

        :traces_done ->
          Enum.reverse(acc)
      after
        5_000 -> flunk("the tracer did not answer")
      end
    end

    @no_deadline_ms 10 * 365 * 24 * 3_600_000

    test "each timeout_profile's call and stream defaults" do
      for {profile, %{default_timeout: call, stream_timeout: stream}} <-
            Snakepit.Config.timeout_profiles() do
        Application.put_env(:snakepit, :timeout_profile, profile)
        pool = start_pool!(name: :"profile_#{profile}", pool_size: 1)

        deadlines =
          traced_deadlines(fn ->
            {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool)

            :ok =
              Snakepit.execute_stream("stream_data", %{count: 1, delay: 0}, fn _ -> :ok end,
                pool_name: pool
              )
          end)

        stream = if stream == :infinity, do: @no_deadline_ms, else: stream
        assert deadlines == [{"ping", call}, {"stream_data", stream}], inspect(profile)
        assert Snakepit.get_stats(pool).workers == 1
      end
    end

    test "pool_request_timeout and pool_streaming_timeout override the profile; timeout: wins" do
      Application.put_env(:snakepit, :timeout_profile, :batch)
      Application.put_env(:snakepit, :pool_request_timeout, 45_000)
      Application.put_env(:snakepit, :pool_streaming_timeout, 90_000)
      pool = start_pool!(name: :override_timeouts, pool_size: 1)

      deadlines =
        traced_deadlines(fn ->
          {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool)
          {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool, timeout: 1_234)
          {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool, timeout: :infinity)

          :ok =
            Snakepit.execute_stream("stream_data", %{count: 1, delay: 0}, fn _ -> :ok end,
              pool_name: pool
            )
        end)

      assert deadlines == [
               {"ping", 45_000},
               {"ping", 1_234},
               {"ping", @no_deadline_ms},
               {"stream_data", 90_000}
             ]
    end

    test "a short pool_request_timeout is enforced natively on a slow tool" do
      Application.put_env(:snakepit, :pool_request_timeout, 300)
      pool = start_pool!(name: :short_deadline, pool_size: 1)
      started = System.monotonic_time(:millisecond)

      assert {:error, %Snakepit.Error{category: :timeout}} =
               Snakepit.execute("sleep", %{ms: 3_000}, pool_name: pool)

      # The native deadline answered, not the 2 s receive guard after it.
      assert System.monotonic_time(:millisecond) - started < 2_000
      no_stray_messages()
    end
  end

  defp arg_types_pool! do
    start_pool!(
      name: :arg_types,
      pool_size: 1,
      fixture_adapter: "ArgTypesAdapter"
    )
  end
end
