defmodule Snakepit.ExecuteTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  # The application's :default pool (config/test.exs), real Python workers.

  test "ping, echo and add run in a Python worker" do
    # upstream's shapes: ping's timestamp is a string, echo wraps its arguments
    assert {:ok, %{"message" => "pong", "timestamp" => stamp}} = Snakepit.execute("ping", %{})
    assert is_binary(stamp)
    assert {:ok, pid} = Snakepit.execute("get_pid", %{})
    assert is_integer(pid) and pid != System.pid() |> String.to_integer()

    assert {:ok, %{"echoed" => %{"a" => 1, "nested" => %{"list" => [1, 2.5, "x", nil, true]}}}} =
             Snakepit.execute("echo", %{a: 1, nested: %{list: [1, 2.5, "x", nil, true]}})

    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2})
    assert {:ok, 3.5} = Snakepit.execute(:add, %{"a" => 1, "b" => 2.5})
  end

  test "integers stay integers across the whole 64-bit range" do
    for n <- [0, -1, 2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1] do
      assert {:ok, %{"echoed" => %{"n" => ^n}}} = Snakepit.execute("echo", %{n: n})
    end
  end

  test "atoms become strings, calendar values ISO 8601" do
    {:ok, datetime} = DateTime.new(~D[2026-11-26], ~T[10:20:30], "Etc/UTC")

    assert {:ok,
            %{
              "echoed" => %{
                "status" => "active",
                "when" => "2026-11-26T10:20:30Z",
                "day" => "2026-11-26"
              }
            }} = Snakepit.execute("echo", %{status: :active, when: datetime, day: ~D[2026-11-26]})
  end

  test "1,000 concurrent adds each return the right integer" do
    results =
      1..1000
      |> Enum.map(fn i -> Task.async(fn -> {i, Snakepit.execute("add", %{a: i, b: 1})} end) end)
      |> Task.await_many(60_000)

    for {i, result} <- results, do: assert(result == {:ok, i + 1})
  end

  test "a 20 MB argument round-trips" do
    big = String.duplicate("snakepit", div(20_000_000, 8))

    assert {:ok, %{"echoed" => %{"text" => ^big}}} =
             Snakepit.execute("echo", %{text: big}, timeout: 60_000)
  end

  test "stats, workers and await_ready" do
    assert :ok = Snakepit.Pool.await_ready()
    {:ok, _} = Snakepit.execute("ping", %{})
    stats = Snakepit.get_stats()
    assert stats.workers == 2
    assert stats.requests >= 1
    assert Map.has_key?(stats, :queued) and Map.has_key?(stats, :busy)
    assert Map.has_key?(stats, :available) and Map.has_key?(stats, :pool_saturated)
    assert Snakepit.get_stats(:default).workers == 2

    workers = Snakepit.list_workers()
    assert length(workers) == 2
    assert Enum.all?(workers, &String.starts_with?(&1, "default_worker_"))
  end

  test "a Python exception is its exception struct, with category, type and traceback" do
    assert {:error, %Snakepit.Error.ValueError{} = error} =
             Snakepit.execute("raise_error", %{message: "bad input", error_type: "ValueError"})

    assert error.category == :python_error
    assert error.python_type == "ValueError"
    assert error.details.python_type == "ValueError"
    assert error.details.command == "raise_error"
    assert error.details.pool_name == :default
    assert error.message =~ "bad input"
    assert error.python_traceback =~ "Traceback"
    assert error.python_traceback =~ "ValueError"
  end

  test "an unknown tool is a %Snakepit.Error{} (:tool_not_found) and the pool keeps serving" do
    assert {:error,
            %Snakepit.Error{category: :python_error, details: %{reason: :tool_not_found}} = error} =
             Snakepit.execute("no_such_tool", %{})

    assert error.message =~ "no_such_tool"
    assert {:ok, 2} = Snakepit.execute("add", %{a: 1, b: 1})
  end

  test "an unknown pool is :pool_not_found" do
    assert {:error, %Snakepit.Error{category: :pool, details: %{reason: :pool_not_found}}} =
             Snakepit.execute("ping", %{}, pool_name: :nope)

    assert {:error, %Snakepit.Error{details: %{reason: :pool_not_found}}} =
             Snakepit.execute("ping", %{}, pool: :nope)
  end

  test "a call that outlives its timeout is a :timeout error and the worker is reused" do
    assert {:error, %Snakepit.Error{category: :timeout, details: %{reason: :worker_timeout}}} =
             Snakepit.execute("sleep", %{ms: 1500}, timeout: 200)

    assert {:ok, 5} = Snakepit.execute("add", %{a: 2, b: 3}, timeout: 5_000)
  end

  test "session_id reaches the adapter's session context" do
    assert {:ok, _} = Snakepit.execute_in_session("s-1", "ping", %{})
  end

  test "cleanup/0 stops this run's workers; the running pool replaces them" do
    {:ok, before} = Snakepit.Pool.workers(:default)
    assert Snakepit.cleanup() == :ok
    refute Enum.any?(before, &os_alive?(&1.os_pid))

    old_ids = Enum.map(before, & &1.id)

    assert eventually(
             fn ->
               {:ok, now} = Snakepit.Pool.workers(:default)

               length(now) == length(before) and Enum.all?(now, &(&1.state == :ready)) and
                 Enum.all?(now, &(&1.id not in old_ids))
             end,
             30_000
           )

    assert {:ok, _} = Snakepit.execute("ping", %{})
  end

  describe "upstream calling conventions and options" do
    test "Snakepit.Pool as the pool argument means the default pool" do
      pool = start_pool!(name: :upstream_default, pool_size: 1)
      assert :ok = Snakepit.Pool.await_ready(Snakepit.Pool, 10_000)
      assert %{workers: workers} = Snakepit.get_stats(Snakepit.Pool)
      assert workers >= 1
      assert Snakepit.list_workers(pool) -- Snakepit.list_workers(Snakepit.Pool) == []
      assert {:ok, _} = Snakepit.execute("ping", %{}, pool: Snakepit.Pool)
    end

    test "await_ready with :infinity answers and leaves the pool running" do
      pool = start_pool!(name: :await_infinity, pool_size: 1)
      pid = Process.whereis(:"Elixir.Snakepit.Pool.await_infinity")
      assert :ok = Snakepit.Pool.await_ready(pool, :infinity)
      assert :ok = Snakepit.Pool.await_ready(:all, :infinity)
      assert Process.whereis(:"Elixir.Snakepit.Pool.await_infinity") == pid
    end

    test "timeout: :infinity runs the call; a bad timeout or affinity is a validation error" do
      pool = start_pool!(name: :options_pool, pool_size: 1)

      assert {:ok, 3} =
               Snakepit.execute("add", %{a: 1, b: 2}, pool_name: pool, timeout: :infinity)

      assert {:error, %Snakepit.Error{category: :validation, message: message}} =
               Snakepit.execute("ping", %{}, pool_name: pool, timeout: -5)

      assert message =~ "timeout must be a non-negative integer (ms) or :infinity"

      assert {:error, %Snakepit.Error{category: :validation, message: message}} =
               Snakepit.execute("ping", %{}, pool_name: pool, affinity: :sticky)

      assert message =~ "affinity must be one of"
    end

    test "an unknown pool's error names the command" do
      assert {:error, %Snakepit.Error{category: :pool, details: details}} =
               Snakepit.execute("predict", %{}, pool_name: :no_such_pool)

      assert details.reason == :pool_not_found
      assert details.command == "predict"
    end

    test "a restarted pool keeps its place in the pool order" do
      first = start_pool!(name: :order_first, pool_size: 1)
      second = start_pool!(name: :order_second, pool_size: 1)
      before = Snakepit.Pool.names() |> Enum.filter(&(&1 in [first, second]))
      assert before == [first, second]

      old = Process.whereis(:"Elixir.Snakepit.Pool.order_first")
      Process.exit(old, :kill)

      assert eventually(fn ->
               new = Process.whereis(:"Elixir.Snakepit.Pool.order_first")
               is_pid(new) and new != old and first in Snakepit.Pool.names()
             end)

      assert Snakepit.Pool.names() |> Enum.filter(&(&1 in [first, second])) == [first, second]
    end

    test "run_as_script leaves an already started Snakepit running (stop_mode: :if_started)" do
      assert Snakepit.run_as_script(fn -> :ran end) == :ran
      assert List.keymember?(Application.started_applications(), :snakepit, 0)
    end
  end
end
