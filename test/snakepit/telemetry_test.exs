defmodule Snakepit.TelemetryTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  setup do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
  end

  test "pool start: init_started, worker spawned and ready, init_complete" do
    pool = start_pool!(name: :telemetry_init, pool_size: 2)

    assert_receive {:telemetry_event, [:snakepit, :pool, :init_started],
                    %{total_workers: 2, count: 1}, %{pool_name: ^pool}}

    for _ <- 1..2 do
      assert_receive {:telemetry_event, [:snakepit, :pool, :worker, :spawned],
                      %{duration: duration, system_time: _},
                      %{
                        node: node,
                        pool_name: ^pool,
                        worker_id: "telemetry_init_worker_" <> _,
                        worker_pid: worker_pid,
                        python_pid: python_pid,
                        mode: :process
                      }}

      assert node == node() and is_pid(worker_pid) and is_integer(python_pid)
      assert duration > 0

      assert_receive {:telemetry_event, [:snakepit, :pool, :worker_ready],
                      %{worker_count: n, count: 1}, %{pool_name: ^pool, worker_id: _}}

      assert n in 1..2
    end

    assert_receive {:telemetry_event, [:snakepit, :pool, :init_complete],
                    %{duration_ms: ms, total_workers: 2, count: 1},
                    %{pool_workers: %{^pool => 2}}}

    assert is_integer(ms)
  end

  test "a call: grpc_worker span, call.dispatched, request.executed" do
    pool = start_pool!(name: :telemetry_calls, pool_size: 1)

    assert {:ok, 3} =
             Snakepit.execute("add", %{a: 1, b: 2}, pool_name: pool, correlation_id: "corr-1")

    assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :start],
                    %{system_time: _, monotonic_time: _},
                    %{
                      operation: :execute,
                      command: "add",
                      pool: ^pool,
                      correlation_id: "corr-1",
                      worker_id: nil,
                      session_id: nil,
                      timeout_ms: _,
                      telemetry_span_context: context
                    }}

    assert_receive {:telemetry_event, [:snakepit, :pool, :call, :dispatched], %{system_time: _},
                    %{pool: ^pool, command: "add", worker_id: nil, queued: nil}}

    assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :stop],
                    %{duration: duration, duration_ms: duration_ms, executions: 1} = measurements,
                    %{
                      command: "add",
                      worker_id: "telemetry_calls_worker_" <> _ = worker_id,
                      status: :ok,
                      telemetry_span_context: ^context
                    }}

    assert duration > 0 and is_integer(duration_ms)
    refute Map.has_key?(measurements, :errors)

    assert_receive {:telemetry_event, [:snakepit, :request, :executed], %{duration_us: us},
                    %{
                      pool: ^pool,
                      worker_id: ^worker_id,
                      command: "add",
                      success: true,
                      streaming: false
                    }}

    assert us > 0
  end

  test "a failed call and a session call" do
    pool = start_pool!(name: :telemetry_errors, pool_size: 1)
    {:error, error} = Snakepit.execute("raise_error", %{error_type: "KeyError"}, pool_name: pool)

    assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute, :stop],
                    %{errors: 1, executions: 1},
                    %{status: :error, error: ^error, correlation_id: "snakepit-" <> _}}

    assert_receive {:telemetry_event, [:snakepit, :request, :executed], _, %{success: false}}

    {:ok, _} = Snakepit.execute_in_session("s-1", "ping", %{}, pool_name: pool)

    assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute_session, :start], _,
                    %{operation: :execute_session, session_id: "s-1"}}

    assert_receive {:telemetry_event, [:snakepit, :grpc_worker, :execute_session, :stop], _,
                    %{session_id: "s-1", status: :ok}}
  end

  test "a stream: request.executed with streaming: true, no grpc_worker span" do
    pool = start_pool!(name: :telemetry_stream, pool_size: 1)
    :ok = Snakepit.execute_stream("stream_data", %{count: 2}, fn _ -> :ok end, pool_name: pool)

    assert_receive {:telemetry_event, [:snakepit, :request, :executed], _,
                    %{command: "stream_data", streaming: true, success: true}}

    refute_received {:telemetry_event, [:snakepit, :grpc_worker | _], _, _}
  end

  test "events/0 lists what is emitted" do
    events = Snakepit.Telemetry.events()

    for event <- [
          [:snakepit, :grpc_worker, :execute, :start],
          [:snakepit, :grpc_worker, :execute, :stop],
          [:snakepit, :grpc_worker, :execute, :exception],
          [:snakepit, :pool, :call, :dispatched],
          [:snakepit, :request, :executed],
          [:snakepit, :pool, :init_started],
          [:snakepit, :pool, :init_complete],
          [:snakepit, :pool, :worker_ready],
          [:snakepit, :pool, :worker, :spawned],
          [:snakepit, :worker, :crash]
        ] do
      assert event in events
    end

    assert events == Enum.uniq(events)
  end

  test "events/0 lists every event name written out in lib/" do
    emitted =
      for path <- Path.wildcard("lib/**/*.ex"),
          [_, names] <-
            Regex.scan(~r/Telemetry\.execute\(\s*\[:snakepit((?:,\s*:\w+)+)\]/, File.read!(path)),
          uniq: true do
        [:snakepit | names |> String.split(",", trim: true) |> Enum.map(&to_atom/1)]
      end

    assert length(emitted) > 15
    assert emitted -- Snakepit.Telemetry.events() == []
  end

  defp to_atom(name), do: name |> String.trim() |> String.trim_leading(":") |> String.to_atom()

  test "with no handler attached nothing is prepared per call" do
    :telemetry.detach_recorder()
    saved = :ets.tab2list(:telemetry_handler_table)
    :ets.delete_all_objects(:telemetry_handler_table)
    on_exit(fn -> :ets.insert(:telemetry_handler_table, saved) end)

    refute Snakepit.Telemetry.active?()
    call = %{span: nil, session_id: nil, telemetry: Snakepit.Telemetry.active?()}
    assert Snakepit.Telemetry.Calls.started(call) == call
  end
end
