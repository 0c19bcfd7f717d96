defmodule Snakepit.SessionAffinityTest do
  use Snakepit.PoolCase, async: false

  @fixtures Path.expand("../fixtures/python", __DIR__)

  defp pool!(name, extra \\ []) do
    [
      name: name,
      pool_size: 2,
      adapter_args: ["--adapter", "snakepit_exunit_adapters.StreamSessionAdapter"],
      adapter_env: [{"PYTHONPATH", @fixtures}]
    ]
    |> Keyword.merge(extra)
    |> start_pool!()
  end

  defp whoami(pool, session, opts \\ []) do
    {ms, opts} = Keyword.pop(opts, :ms, 0)
    Snakepit.execute_in_session(session, "whoami", %{ms: ms}, [pool_name: pool] ++ opts)
  end

  defp busy(pool, session, ms, opts \\ []) do
    task = Task.async(fn -> whoami(pool, session, [ms: ms] ++ opts) end)
    assert eventually(fn -> Snakepit.get_stats(pool).busy == 1 end)
    task
  end

  test "the session id reaches the adapter, and later calls prefer the first worker" do
    pool = pool!(:sessions_hint)
    assert {:ok, %{"pid" => pid, "session_id" => "alpha"}} = whoami(pool, "alpha")
    for _ <- 1..10, do: assert({:ok, %{"pid" => ^pid}} = whoami(pool, "alpha"))
    assert Snakepit.get_stats(pool).sessions == 1
  end

  test ":hint falls back to another worker when the session's worker is busy" do
    pool = pool!(:sessions_fallback)
    {:ok, %{"pid" => home}} = whoami(pool, "h")
    long = busy(pool, "h", 800)
    assert {:ok, %{"pid" => other}} = whoami(pool, "h")
    assert other != home
    assert {:ok, %{"pid" => ^home}} = Task.await(long)
    assert {:ok, %{"pid" => ^home}} = whoami(pool, "h")
  end

  test ":strict_queue waits for the session's worker while another is free" do
    pool = pool!(:sessions_queue, affinity: :strict_queue)
    {:ok, %{"pid" => home}} = whoami(pool, "q")
    long = busy(pool, "q", 600)
    started = System.monotonic_time(:millisecond)
    assert {:ok, %{"pid" => ^home}} = whoami(pool, "q")
    assert System.monotonic_time(:millisecond) - started >= 300
    assert {:ok, %{"pid" => ^home}} = Task.await(long)
  end

  test ":strict_fail_fast answers :worker_busy at once, per call" do
    pool = pool!(:sessions_fail_fast)
    {:ok, %{"pid" => home}} = whoami(pool, "f")
    long = busy(pool, "f", 600)

    assert {:error, %Snakepit.Error{category: :pool, details: %{reason: :worker_busy}}} =
             whoami(pool, "f", affinity: :strict_fail_fast)

    assert {:ok, %{"pid" => ^home}} = Task.await(long)
  end

  test "a session whose worker died gets :session_worker_unavailable in strict modes" do
    pool = pool!(:sessions_dead)
    {:ok, %{"pid" => home}} = whoami(pool, "d")
    {:ok, %{"pid" => _}} = whoami(pool, "d2")
    System.cmd("kill", ["-KILL", Integer.to_string(home)])

    assert eventually(fn ->
             {:ok, workers} = Snakepit.Pool.workers(pool)
             length(workers) == 2 and not Enum.any?(workers, &(&1.os_pid == home))
           end)

    assert {:error,
            %Snakepit.Error{category: :pool, details: %{reason: :session_worker_unavailable}}} =
             whoami(pool, "d", affinity: :strict_queue)

    # The session starts afresh on its next call.
    assert {:ok, %{"pid" => pid}} = whoami(pool, "d", affinity: :strict_queue)
    assert pid != home
  end

  test "a strict_queue request waiting for a worker that dies gets :session_worker_unavailable" do
    pool = pool!(:sessions_dead_queued, affinity: :strict_queue)
    {:ok, %{"pid" => home}} = whoami(pool, "w")
    long = busy(pool, "w", 5_000)
    waiting = Task.async(fn -> whoami(pool, "w") end)
    assert eventually(fn -> Snakepit.get_stats(pool).queued == 1 end)
    System.cmd("kill", ["-KILL", Integer.to_string(home)])

    assert {:error, %Snakepit.Error{category: :worker}} = Task.await(long)

    assert {:error, %Snakepit.Error{details: %{reason: :session_worker_unavailable}}} =
             Task.await(waiting)
  end

  test "idle sessions expire, so the table stays bounded" do
    pool = pool!(:sessions_ttl, session_ttl_ms: 500)
    for i <- 1..20, do: {:ok, _} = whoami(pool, "s#{i}")
    assert Snakepit.get_stats(pool).sessions == 20
    assert eventually(fn -> Snakepit.get_stats(pool).sessions == 0 end, 5_000)
  end
end
