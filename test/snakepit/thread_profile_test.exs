defmodule Snakepit.ThreadProfileTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path
  import ExUnit.CaptureLog

  @fixtures Path.expand("../fixtures/python", __DIR__)
  @model_adapter ["--adapter", "snakepit_exunit_adapters.ModelAdapter"]

  defp thread_pool!(name, pool_size, threads, extra \\ []) do
    [
      name: name,
      worker_profile: :thread,
      pool_size: pool_size,
      threads_per_worker: threads,
      adapter_args: @model_adapter,
      adapter_env: [{"PYTHONPATH", @fixtures}]
    ]
    |> Keyword.merge(extra)
    |> start_pool!()
  end

  test "the seed's hammer test: 1,000 concurrent predicts, the locked counter is exact" do
    pool = thread_pool!(:ml, 2, 8, thread_safety_checks: true)

    results =
      1..1000
      |> Enum.map(fn _ ->
        Task.async(fn -> Snakepit.execute("predict", %{data: [1, 2, 3]}, pool_name: pool) end)
      end)
      |> Task.await_many(60_000)

    assert Enum.all?(results, &match?({:ok, %{"prediction" => [14.0, 32.0, 50.0]}}, &1))

    {:ok, reports} = Snakepit.Pool.thread_safety_report(pool)

    calls =
      for %{tools: tools} <- reports,
          %{tool: "predict", calls: n} <- tools,
          reduce: 0,
          do: (acc -> acc + n)

    assert calls == 1000

    # The adapter's own counter, written under acquire_lock, read per process.
    assert results |> Enum.map(fn {:ok, r} -> r["pid"] end) |> Enum.uniq() |> length() == 2
    assert count_per_process(pool, 2) |> Map.values() |> Enum.sum() == 1000
  end

  # Asks for the locked counter until every process has answered; asks sent
  # together are spread over the processes by the least-loaded choice.
  defp count_per_process(pool, processes, acc \\ %{}) do
    answers =
      1..processes
      |> Enum.map(fn _ ->
        Task.async(fn -> Snakepit.execute("request_count_total", %{}, pool_name: pool) end)
      end)
      |> Task.await_many(10_000)

    acc =
      Enum.reduce(answers, acc, fn {:ok, %{"pid" => pid, "count" => n}}, acc ->
        Map.put(acc, pid, n)
      end)

    if map_size(acc) >= processes, do: acc, else: count_per_process(pool, processes, acc)
  end

  test "one worker with 4 threads runs 4 calls at once: the intervals overlap" do
    pool = thread_pool!(:overlap, 1, 4)

    intervals =
      1..4
      |> Enum.map(fn _ ->
        Task.async(fn -> Snakepit.execute("timed_sleep", %{ms: 200}, pool_name: pool) end)
      end)
      |> Task.await_many(10_000)
      |> Enum.map(fn {:ok, %{"start" => s, "end" => e, "thread" => t}} -> {s, e, t} end)

    latest_start = intervals |> Enum.map(&elem(&1, 0)) |> Enum.max()
    earliest_end = intervals |> Enum.map(&elem(&1, 1)) |> Enum.min()
    assert latest_start < earliest_end
    assert intervals |> Enum.map(&elem(&1, 2)) |> Enum.uniq() |> length() == 4
  end

  test "load awareness: 2 workers x 4 threads, 4 long calls land 2 and 2" do
    pool = thread_pool!(:balanced, 2, 4)

    pids =
      1..4
      |> Enum.map(fn _ ->
        Task.async(fn -> Snakepit.execute("timed_sleep", %{ms: 500}, pool_name: pool) end)
      end)
      |> Task.await_many(10_000)
      |> Enum.map(fn {:ok, %{"pid" => pid}} -> pid end)

    assert pids |> Enum.frequencies() |> Map.values() |> Enum.sort() == [2, 2]
  end

  test "capacity: per-worker load in stats, queueing beyond capacity, capacity_reached telemetry" do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
    pool = thread_pool!(:capacity, 1, 2)

    tasks =
      for _ <- 1..3,
          do: Task.async(fn -> Snakepit.execute("timed_sleep", %{ms: 400}, pool_name: pool) end)

    assert eventually(fn -> Snakepit.get_stats(pool).queued == 1 end)
    assert [%{inflight: 2, capacity: 2}] = Snakepit.get_stats(pool).worker_loads
    assert_receive {:telemetry_event, [:snakepit, :pool, :capacity_reached], _, %{pool: ^pool}}
    assert Enum.all?(Task.await_many(tasks, 10_000), &match?({:ok, _}, &1))
  end

  test "thread profile env: BLAS threads = threads_per_worker unless adapter_env says otherwise" do
    pool =
      start_pool!(
        name: :thread_env,
        worker_profile: :thread,
        pool_size: 1,
        threads_per_worker: 8,
        adapter_env: [{"OMP_NUM_THREADS", "3"}, {"CUDA_VISIBLE_DEVICES", "0"}]
      )

    assert {:ok, "8"} = Snakepit.execute("env", %{name: "OPENBLAS_NUM_THREADS"}, pool_name: pool)
    assert {:ok, "8"} = Snakepit.execute("env", %{name: "MKL_NUM_THREADS"}, pool_name: pool)
    assert {:ok, "3"} = Snakepit.execute("env", %{name: "OMP_NUM_THREADS"}, pool_name: pool)
    assert {:ok, "0"} = Snakepit.execute("env", %{name: "CUDA_VISIBLE_DEVICES"}, pool_name: pool)
  end

  test "hybrid setup: a process pool and a thread pool side by side, routed by pool_name" do
    thread = thread_pool!(:hybrid_ml, 1, 4)

    assert {:ok, %{"prediction" => _}} =
             Snakepit.execute("predict", %{data: [1, 0, 0]}, pool_name: thread)

    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, pool_name: :default)

    assert {:error, %Snakepit.Error{category: :python_error}} =
             Snakepit.execute("add", %{a: 1, b: 2}, pool_name: thread)
  end

  test "a thread pool whose adapter is not thread-safe refuses to start, saying why" do
    config =
      Snakepit.Config.normalize_pool(%{
        name: :unsafe,
        worker_profile: :thread,
        pool_size: 1,
        threads_per_worker: 4,
        adapter_args: ["--adapter", "snakepit_exunit_adapters.NotThreadSafeAdapter"],
        adapter_env: [{"PYTHONPATH", @fixtures}]
      })

    start_supervised!({Snakepit.Pool, config})
    assert {:error, %Snakepit.Error{} = error} = Snakepit.Pool.await_ready(:unsafe, 30_000)
    assert error.details.python_type == "ThreadSafetyError"
    assert error.message =~ "__thread_safe__ = True"
  end

  test "thread_safety_checks warns once for an unmarked tool run concurrently, not for marked ones" do
    # The warning is a Python WARNING record; Snakepit's floor defaults to :error.
    Application.put_env(:snakepit, :log_level, :warning)
    on_exit(fn -> Application.delete_env(:snakepit, :log_level) end)
    pool = thread_pool!(:checks, 1, 4, thread_safety_checks: true)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)

    log =
      capture_log(fn ->
        for tool <- ["unmarked_sleep", "timed_sleep"], _round <- 1..2 do
          1..3
          |> Enum.map(fn _ ->
            Task.async(fn -> Snakepit.execute(tool, %{ms: 300}, pool_name: pool) end)
          end)
          |> Task.await_many(10_000)
        end

        Process.sleep(300)
      end)

    warnings = log |> String.split("\n") |> Enum.filter(&(&1 =~ "thread_safety_warning"))
    assert [warning] = warnings
    assert warning =~ "tool=unmarked_sleep"
    assert warning =~ worker.id

    {:ok, [%{tools: tools}]} = Snakepit.Pool.thread_safety_report(pool)
    unmarked = Enum.find(tools, &(&1.tool == "unmarked_sleep"))
    marked = Enum.find(tools, &(&1.tool == "timed_sleep"))
    assert unmarked.max_concurrency >= 2 and unmarked.thread_safe == false and unmarked.calls == 6
    assert marked.max_concurrency >= 2 and marked.thread_safe == true
  end
end
