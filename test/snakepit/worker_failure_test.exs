defmodule Snakepit.WorkerFailureTest do
  use Snakepit.PoolCase, async: false

  test "SIGKILL of a worker under load: every request gets ok or a :worker error, the pool recovers" do
    pool = start_pool!(name: :kill_under_load, pool_size: 4)
    {:ok, [victim | _]} = Snakepit.Pool.workers(pool)

    tasks =
      for i <- 1..200 do
        Task.async(fn -> Snakepit.execute("sleep", %{ms: 20 + rem(i, 5)}, pool_name: pool) end)
      end

    Process.sleep(100)
    System.cmd("kill", ["-KILL", Integer.to_string(victim.os_pid)])
    results = Task.await_many(tasks, 60_000)

    for result <- results do
      assert match?({:ok, %{"pid" => _}}, result) or
               match?({:error, %Snakepit.Error{category: :worker}}, result),
             "unexpected result #{inspect(result)}"
    end

    assert eventually(fn ->
             {:ok, workers} = Snakepit.Pool.workers(pool)
             length(workers) == 4 and Enum.all?(workers, &(&1.state == :ready))
           end)

    {:ok, workers} = Snakepit.Pool.workers(pool)
    refute victim.id in Enum.map(workers, & &1.id)
    assert {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2}, pool_name: pool)
  end

  test "the request running on a killed worker gets a :worker error" do
    pool = start_pool!(name: :kill_inflight, pool_size: 1)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)
    task = Task.async(fn -> Snakepit.execute("sleep", %{ms: 5_000}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)
    System.cmd("kill", ["-KILL", Integer.to_string(worker.os_pid)])

    assert {:error, %Snakepit.Error{category: :worker} = error} = Task.await(task, 10_000)
    assert error.message =~ worker.id
    # The cause, not a dropped connection: the worker guard saw the signal.
    assert error.details.reason == :worker_exited
    assert error.message =~ "killed by signal SIGKILL (Killed) while running the request"
    assert error.details.exit_signal == "SIGKILL"
    assert {:ok, 2} = Snakepit.execute("add", %{a: 1, b: 1}, pool_name: pool, timeout: 15_000)
  end

  test "a worker that segfaults mid-call: the caller learns it was a segfault" do
    pool = start_pool!(name: :segv_inflight, pool_size: 1)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)
    task = Task.async(fn -> Snakepit.execute("sleep", %{ms: 5_000}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)
    System.cmd("kill", ["-SEGV", Integer.to_string(worker.os_pid)])

    assert {:error, %Snakepit.Error{category: :worker} = error} =
             result = Task.await(task, 10_000)

    assert error.details.reason == :worker_exited
    assert error.details.exit_signal == "SIGSEGV"

    assert error.message =~
             "killed by signal SIGSEGV (Segmentation fault) while running the request"

    assert {:ok, %{classification: :segfault, exit_code: 139, signal: "SIGSEGV"}} =
             Snakepit.CrashBarrier.crash_info(result, Snakepit.CrashBarrier.config())
  end

  test "a worker that exits by itself mid-call: its exit status reaches the caller" do
    pool =
      start_pool!(
        name: :exit_inflight,
        pool_size: 1,
        adapter_args: ["--adapter", "snakepit_exunit_adapters.CrashAdapter"],
        adapter_env: [{"PYTHONPATH", Path.expand("../fixtures/python", __DIR__)}]
      )

    assert {:error, %Snakepit.Error{category: :worker} = error} =
             Snakepit.execute("exit_worker", %{code: 7}, pool_name: pool)

    assert error.details.reason == :worker_exited
    assert error.details.exit_status == 7
    assert error.message =~ "exited with status 7 while running the request"
  end

  test "a queued caller that dies has its request removed from the queue" do
    pool = start_pool!(name: :caller_death, pool_size: 1)
    busy = Task.async(fn -> Snakepit.execute("sleep", %{ms: 1_500}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)

    doomed = spawn(fn -> Snakepit.execute("ping", %{}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).queued == 1 end)
    Process.exit(doomed, :kill)
    assert eventually(fn -> Snakepit.get_stats(pool).queued == 0 end, 2_000)
    assert {:ok, _} = Task.await(busy, 10_000)
  end

  test "a full queue answers :pool_saturated at once" do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
    pool = start_pool!(name: :saturated, pool_size: 1, max_queue_size: 1)
    busy = Task.async(fn -> Snakepit.execute("sleep", %{ms: 1_000}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)
    queued = Task.async(fn -> Snakepit.execute("ping", %{}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).queued == 1 end)

    assert {:error, %Snakepit.Error{category: :pool, details: %{reason: :pool_saturated}}} =
             Snakepit.execute("ping", %{}, pool_name: pool)

    assert {:ok, _} = Task.await(busy, 10_000)
    assert {:ok, _} = Task.await(queued, 10_000)
    assert Snakepit.get_stats(pool).pool_saturated == 1

    assert_received {:telemetry_event, [:snakepit, :pool, :saturated], %{count: 1},
                     %{pool: ^pool, command: "ping"}}
  end

  test "a request that waits past the queue timeout is a :queue_timeout error" do
    pool = start_pool!(name: :queue_timeout, pool_size: 1, queue_timeout_ms: 200)
    busy = Task.async(fn -> Snakepit.execute("sleep", %{ms: 1_000}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)

    assert {:error, %Snakepit.Error{category: :timeout, details: %{reason: :queue_timeout}}} =
             Snakepit.execute("ping", %{}, pool_name: pool)

    assert {:ok, _} = Task.await(busy, 10_000)
    stats = Snakepit.get_stats(pool)
    assert stats.queue_timeouts == 1
    assert stats.errors >= 1
  end
end
