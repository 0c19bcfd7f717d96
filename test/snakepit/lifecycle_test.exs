defmodule Snakepit.LifecycleTest do
  use Snakepit.PoolCase, async: false
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  @fixtures Path.expand("../fixtures/python", __DIR__)

  setup do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
  end

  defp drain_events(event, acc \\ []) do
    receive do
      {:telemetry_event, ^event, measurements, metadata} ->
        drain_events(event, [{measurements, metadata} | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  test "a worker stopped with SIGSTOP is replaced within interval * missed + timeout, its request fails" do
    heartbeat = %{ping_interval_ms: 200, timeout_ms: 300, max_missed_heartbeats: 2}
    pool = start_pool!(name: :sigstop, pool_size: 1, heartbeat: heartbeat)
    {:ok, [worker]} = Snakepit.Pool.workers(pool)

    task =
      Task.async(fn ->
        Snakepit.execute("sleep", %{ms: 20_000}, pool_name: pool, timeout: 30_000)
      end)

    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)

    stopped_at = System.monotonic_time(:millisecond)
    System.cmd("kill", ["-STOP", Integer.to_string(worker.os_pid)])
    assert {:error, %Snakepit.Error{category: :worker}} = Task.await(task, 10_000)
    failed_after = System.monotonic_time(:millisecond) - stopped_at

    assert_receive {:telemetry_event, [:snakepit, :heartbeat, :heartbeat_timeout], %{missed: 2},
                    %{worker_id: id}}

    assert id == worker.id
    # 200 * 2 + 300 = 700 ms, plus a margin for a loaded 2-core machine.
    assert failed_after < 700 + 1_500, "took #{failed_after} ms"

    assert eventually(fn ->
             {:ok, workers} = Snakepit.Pool.workers(pool)
             match?([%{state: :ready}], workers) and hd(workers).id != worker.id
           end)

    refute os_alive?(worker.os_pid)
  end

  test "a long tool call is not a missed heartbeat" do
    heartbeat = %{ping_interval_ms: 100, timeout_ms: 200, max_missed_heartbeats: 2}
    pool = start_pool!(name: :long_call, pool_size: 1, heartbeat: heartbeat)
    assert {:ok, _} = Snakepit.execute("sleep", %{ms: 1_000}, pool_name: pool)
    assert drain_events([:snakepit, :heartbeat, :heartbeat_timeout]) == []
  end

  test "worker_max_requests: 5 under 500 concurrent requests: no errors, recycles, full pool" do
    pool =
      start_pool!(
        name: :max_requests,
        pool_size: 4,
        worker_max_requests: 5,
        queue_timeout_ms: 120_000
      )

    results =
      1..500
      |> Enum.map(fn i ->
        Task.async(fn ->
          Snakepit.execute("add", %{a: i, b: 1}, pool_name: pool, timeout: 120_000)
        end)
      end)
      |> Task.await_many(180_000)

    failures = for {result, i} <- Enum.with_index(results, 1), result != {:ok, i + 1}, do: result
    assert failures == []

    # A worker past its limit serves on until its successor is ready, so
    # the count depends on start time; each of the 4 first workers passes 5.
    recycles = drain_events([:snakepit, :worker, :recycled])
    assert length(recycles) >= 4
    assert Enum.all?(recycles, fn {_, meta} -> meta.reason == :max_requests end)

    assert recycles |> Enum.map(fn {_, meta} -> meta.worker_id end) |> Enum.uniq() ==
             Enum.map(recycles, fn {_, meta} -> meta.worker_id end)

    assert eventually(fn ->
             {:ok, workers} = Snakepit.Pool.workers(pool)
             Enum.count(workers, &(&1.state == :ready)) == 4
           end)
  end

  test "recycling a slow-loading worker of a pool of 1: calls keep being served during the load" do
    pool =
      start_pool!(
        name: :slow_recycle,
        pool_size: 1,
        worker_max_requests: 3,
        queue_timeout_ms: 500,
        adapter_args: ["--adapter", "snakepit_exunit_adapters.SlowLoadAdapter"],
        adapter_env: [{"PYTHONPATH", @fixtures}, {"SLOW_LOAD_MS", "1500"}]
      )

    {:ok, [first]} = Snakepit.Pool.workers(pool)
    # The successor takes 1.5 s to load, three times queue_timeout: had the
    # old worker stopped taking calls at its limit, these would time out.
    pids = for _ <- 1..10, do: Snakepit.execute("whoami", %{}, pool_name: pool)
    assert Enum.all?(pids, &(&1 == {:ok, first.os_pid})), inspect(pids)

    assert [{_, %{worker_id: id, reason: :max_requests}}] =
             drain_events([:snakepit, :worker, :recycled])

    assert id == first.id

    # Once the successor is ready it takes over and the old process exits.
    assert eventually(fn ->
             Snakepit.execute("whoami", %{}, pool_name: pool) != {:ok, first.os_pid}
           end)

    assert eventually(fn -> not os_alive?(first.os_pid) end)
  end

  test "worker_ttl {1, :seconds}: workers are replaced under steady load without failed requests" do
    pool = start_pool!(name: :ttl, pool_size: 2, worker_ttl: {1, :seconds})
    {:ok, first} = Snakepit.Pool.workers(pool)
    deadline = System.monotonic_time(:millisecond) + 3_500

    results =
      1..2
      |> Enum.map(fn _ -> Task.async(fn -> steady_load(pool, deadline, []) end) end)
      |> Task.await_many(30_000)
      |> List.flatten()

    assert length(results) > 20

    assert Enum.all?(results, &match?({:ok, _}, &1)),
           inspect(Enum.reject(results, &match?({:ok, _}, &1)))

    recycles = drain_events([:snakepit, :worker, :recycled])
    assert length(recycles) >= 4
    assert Enum.all?(recycles, fn {_, meta} -> meta.reason == :ttl_expired end)
    {:ok, now} = Snakepit.Pool.workers(pool)
    assert MapSet.disjoint?(MapSet.new(first, & &1.id), MapSet.new(now, & &1.id))
  end

  defp steady_load(pool, deadline, acc) do
    if System.monotonic_time(:millisecond) > deadline do
      acc
    else
      steady_load(pool, deadline, [Snakepit.execute("sleep", %{ms: 20}, pool_name: pool) | acc])
    end
  end

  test "an adapter whose __init__ raises: await_ready has the traceback, restarts stay bounded" do
    config =
      Snakepit.Config.normalize_pool(%{
        name: :init_fails,
        pool_size: 1,
        adapter_args: ["--adapter", "snakepit_exunit_adapters.InitFailsAdapter"],
        adapter_env: [{"PYTHONPATH", @fixtures}],
        restart_backoff_ms: 200,
        max_restart_backoff_ms: 2_000
      })

    start_supervised!({Snakepit.Pool, config})
    assert {:error, %Snakepit.Error{} = error} = Snakepit.Pool.await_ready(:init_fails, 30_000)
    assert error.python_traceback =~ "model file missing"
    assert error.details.python_type == "RuntimeError"

    Process.sleep(3_000)
    # Backoff 0, 200, 400, 800, 1600 ms: at most about six starts in three seconds.
    restarts = Snakepit.get_stats(:init_fails).worker_restarts
    assert restarts >= 2 and restarts <= 8, "#{restarts} restarts"
  end

  test "stopping a pool stops every worker and answers pending callers" do
    pool = start_pool!(name: :stopping, pool_size: 2, graceful_shutdown_timeout_ms: 1_000)
    {:ok, workers} = Snakepit.Pool.workers(pool)
    task = Task.async(fn -> Snakepit.execute("sleep", %{ms: 10_000}, pool_name: pool) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)

    stop_supervised!({Snakepit.Pool, pool})
    assert {:error, %Snakepit.Error{}} = Task.await(task, 10_000)
    assert Enum.all?(workers, &(not os_alive?(&1.os_pid)))
  end

  test "boot sweep kills workers of a BEAM that is gone, with their process group" do
    {run_id, _dir} = Snakepit.Native.runtime_info()
    marker = "orphan-#{System.unique_integer([:positive])}"

    # A stand-in orphan in its own session: a shell (group leader) and its child.
    port =
      Port.open({:spawn_executable, "/usr/bin/setsid"}, [
        :binary,
        args: [
          "sh",
          "-c",
          "sleep 60 & echo $!; wait",
          "--snakepit-run-id",
          marker,
          "--snakepit-owner-pid",
          "999999999"
        ]
      ])

    {:os_pid, _} = Port.info(port, :os_pid)
    # Until the child has exec'd `sleep`, it is a copy of the shell with the
    # same command line: wait for that, so exactly one process matches.
    assert_receive {^port, {:data, child_line}}, 5_000
    child = child_line |> String.trim() |> String.to_integer()
    assert eventually(fn -> File.read("/proc/#{child}/comm") == {:ok, "sleep\n"} end)
    [{orphan, ^marker, _}] = Enum.filter(Snakepit.Orphans.workers(), &(elem(&1, 1) == marker))

    # Our own live workers carry this BEAM as owner: a sweep run with another
    # run id (as a second BEAM would) must leave them alone.
    {:ok, ours} = Snakepit.Pool.workers(:default)

    assert Enum.all?(ours, fn w ->
             Enum.any?(
               Snakepit.Orphans.workers(),
               &(elem(&1, 0) == w.os_pid and elem(&1, 2) == System.pid())
             )
           end)

    assert orphan in Snakepit.Orphans.sweep(run_id)
    assert eventually(fn -> not os_alive?(orphan) end, 2_000)

    refute Enum.any?(
             Snakepit.Orphans.sweep("another-beam"),
             &(&1 in Enum.map(ours, fn w -> w.os_pid end))
           )

    # Our own workers are untouched.
    assert {:ok, _} = Snakepit.execute("ping", %{})
  end

  test "startup in batches of startup_batch_size, startup_batch_delay_ms apart" do
    pool =
      start_pool!(
        name: :batches,
        pool_size: 4,
        startup_batch_size: 2,
        startup_batch_delay_ms: 600
      )

    # The event comes when a worker is ready; its duration reaches back to the spawn.
    spawned =
      for {%{system_time: ready, duration: duration}, %{pool_name: ^pool}} <-
            drain_events([:snakepit, :pool, :worker, :spawned]),
          do: System.convert_time_unit(ready - duration, :native, :millisecond)

    assert length(spawned) == 4
    [a, b, c, d] = Enum.sort(spawned)
    assert b - a < 300 and d - c < 300
    assert c - b >= 550
  end
end
