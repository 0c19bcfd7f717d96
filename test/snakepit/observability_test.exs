defmodule Snakepit.ObservabilityTest do
  use Snakepit.PoolCase, async: false
  import ExUnit.CaptureLog

  setup do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
  end

  test "request, spawn and termination telemetry" do
    pool = start_pool!(name: :telemetry_pool, pool_size: 1)

    assert_receive {:telemetry_event, [:snakepit, :pool, :worker, :spawned], %{},
                    %{pool_name: ^pool, worker_id: id}}

    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, pool_name: pool)

    assert_receive {:telemetry_event, [:snakepit, :request, :executed], %{duration_us: duration},
                    %{pool: ^pool, worker_id: ^id, command: "add", success: true}}

    assert is_integer(duration) and duration > 0

    {:ok, [worker]} = Snakepit.Pool.workers(pool)
    System.cmd("kill", ["-KILL", Integer.to_string(worker.os_pid)])

    assert_receive {:telemetry_event, [:snakepit, :pool, :worker, :terminated], %{lifetime: _},
                    %{pool_name: ^pool, worker_id: ^id, planned: false}},
                   5_000
  end

  test "arguments refused before reaching a worker count as requests and errors" do
    pool = start_pool!(name: :rejected_pool, pool_size: 1)
    before = Snakepit.get_stats(pool)

    # Refused in Elixir (not a map, an unencodable struct field), then in the NIF (a pid).
    assert {:error, %Snakepit.Error{category: :validation}} =
             Snakepit.execute("echo", [1, 2], pool_name: pool)

    assert {:error, %Snakepit.Error{category: :validation}} =
             Snakepit.execute("echo", %{at: %URI{host: self()}}, pool_name: pool)

    assert {:error, %Snakepit.Error{category: :validation}} =
             Snakepit.execute("echo", %{owner: self()}, pool_name: pool)

    assert {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool)
    stats = Snakepit.get_stats(pool)
    assert stats.requests - before.requests == 4
    assert stats.errors - before.errors == 3
  end

  test "worker stdout and stderr reach Logger once per line, the worker id as metadata" do
    Application.put_env(:snakepit, :log_level, :info)
    on_exit(fn -> Application.delete_env(:snakepit, :log_level) end)
    pool = start_pool!(name: :logging_pool, pool_size: 1)
    level = Logger.level()
    Logger.configure(level: :info)
    on_exit(fn -> Logger.configure(level: level) end)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)

    log =
      capture_log([level: :info], fn ->
        {:ok, true} = Snakepit.execute("log", %{message: "hello from stderr"}, pool_name: pool)

        {:ok, true} =
          Snakepit.execute("log", %{message: "hello from stdout", stream: "stdout"},
            pool_name: pool
          )

        Process.sleep(300)
      end)

    for text <- ["hello from stderr", "hello from stdout"] do
      assert [line] = log |> String.split("\n") |> Enum.filter(&(&1 =~ text))
      assert line =~ "worker_id=#{worker.id} [info] #{text}"
      refute line =~ "[#{worker.id}]"
    end
  end

  test "a Python log record reaches Logger at its level, without a second timestamp or prefix" do
    Application.put_env(:snakepit, :log_level, :debug)
    on_exit(fn -> Application.delete_env(:snakepit, :log_level) end)
    pool = start_pool!(name: :record_pool, pool_size: 1)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)
    level = Logger.level()
    Logger.configure(level: :debug)
    on_exit(fn -> Logger.configure(level: level) end)

    log =
      capture_log([level: :debug], fn ->
        for {record, text} <- [
              {"WARNING", "cache cold"},
              {"ERROR", "disk full"},
              {"DEBUG", "tick"}
            ] do
          line = "#{record} myapp.model: #{text}"
          {:ok, true} = Snakepit.execute("log", %{message: line}, pool_name: pool)
        end

        Process.sleep(300)
      end)

    lines = String.split(log, "\n")

    for {level, text} <- [{"warning", "cache cold"}, {"error", "disk full"}, {"debug", "tick"}] do
      assert [line] = Enum.filter(lines, &(&1 =~ text))
      assert line =~ "worker_id=#{worker.id} [#{level}] myapp.model: #{text}"
    end
  end

  test "Snakepit's own log floor defaults to :error" do
    pool = start_pool!(name: :default_floor_pool, pool_size: 1)
    level = Logger.level()
    Logger.configure(level: :debug)
    on_exit(fn -> Logger.configure(level: level) end)

    log =
      capture_log([level: :debug], fn ->
        {:ok, true} =
          Snakepit.execute("log", %{message: "WARNING x: below the floor"}, pool_name: pool)

        {:ok, true} =
          Snakepit.execute("log", %{message: "ERROR x: at the floor"}, pool_name: pool)

        Process.sleep(300)
      end)

    refute log =~ "below the floor"
    assert log =~ "at the floor"
  end

  test "the global log_level is a floor for Snakepit's log lines" do
    Application.put_env(:snakepit, :log_level, :warning)
    on_exit(fn -> Application.delete_env(:snakepit, :log_level) end)
    pool = start_pool!(name: :quiet_pool, pool_size: 1)
    level = Logger.level()
    Logger.configure(level: :info)
    on_exit(fn -> Logger.configure(level: level) end)

    log =
      capture_log([level: :info], fn ->
        {:ok, true} = Snakepit.execute("log", %{message: "plain chatter"}, pool_name: pool)

        {:ok, true} =
          Snakepit.execute("log", %{message: "WARNING: disk almost full"}, pool_name: pool)

        Process.sleep(300)
      end)

    refute log =~ "plain chatter"
    assert log =~ "WARNING: disk almost full"
  end

  test "worker environment: process-profile defaults, adapter_env wins, others pass through" do
    pool =
      start_pool!(
        name: :env_pool,
        pool_size: 1,
        adapter_env: [{"OPENBLAS_NUM_THREADS", "2"}, {"CUDA_VISIBLE_DEVICES", "0"}]
      )

    assert {:ok, "2"} = Snakepit.execute("env", %{name: "OPENBLAS_NUM_THREADS"}, pool_name: pool)
    assert {:ok, "1"} = Snakepit.execute("env", %{name: "OMP_NUM_THREADS"}, pool_name: pool)

    assert {:ok, "1"} =
             Snakepit.execute("env", %{name: "VECLIB_MAXIMUM_THREADS"}, pool_name: pool)

    assert {:ok, "0"} = Snakepit.execute("env", %{name: "CUDA_VISIBLE_DEVICES"}, pool_name: pool)
  end
end
