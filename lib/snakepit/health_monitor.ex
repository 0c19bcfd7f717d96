defmodule Snakepit.HealthMonitor do
  @moduledoc """
  Counts worker crashes in a rolling window and says whether a pool is
  healthy (fewer than `max_crashes` crashes in the last `crash_window_ms`).

      {:ok, hm} = Snakepit.HealthMonitor.start_link(pool: :default, max_crashes: 5, crash_window_ms: 60_000)
      Snakepit.HealthMonitor.record_crash(hm, "worker_1", %{reason: :segfault})
      Snakepit.HealthMonitor.healthy?(hm)

  A worker is healthy with fewer than 3 recorded crashes. Crash records
  older than the window are dropped every `check_interval_ms`. Each
  `record_crash/3` emits `[:snakepit, :worker, :crash]` (`%{pool, worker_id,
  reason}`).
  """
  use GenServer

  @worker_crash_limit 3

  @doc """
  Starts a monitor. Options: `:pool` (required), `:name`, `:max_crashes`
  (10), `:crash_window_ms` (60 000), `:check_interval_ms` (30 000).
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts) do
    Keyword.fetch!(opts, :pool)
    gen_opts = if opts[:name], do: [name: opts[:name]], else: []
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "Records a crash of `worker_id`; `info.reason` is kept."
  @spec record_crash(GenServer.server(), String.t(), map()) :: :ok
  def record_crash(server, worker_id, info \\ %{}),
    do: GenServer.cast(server, {:crash, worker_id, info})

  @doc "Whether the pool had fewer than `max_crashes` crashes in the window."
  @spec healthy?(GenServer.server()) :: boolean()
  def healthy?(server), do: GenServer.call(server, :healthy?)

  @doc "`%{healthy, crash_count, last_crash_time}` of one worker."
  @spec worker_health(GenServer.server(), String.t()) :: map()
  def worker_health(server, worker_id), do: GenServer.call(server, {:worker, worker_id})

  @doc """
  `%{pool, total_crashes, crashes_in_window, workers_with_crashes,
  max_crashes, crash_window_ms, is_healthy}`.
  """
  @spec stats(GenServer.server()) :: map()
  def stats(server), do: GenServer.call(server, :stats)

  @impl GenServer
  def init(opts) do
    state = %{
      pool: opts[:pool],
      max_crashes: Keyword.get(opts, :max_crashes, 10),
      crash_window_ms: Keyword.get(opts, :crash_window_ms, 60_000),
      check_interval_ms: Keyword.get(opts, :check_interval_ms, 30_000),
      total_crashes: 0,
      workers: %{}
    }

    schedule_cleanup(state)
    {:ok, state}
  end

  @impl GenServer
  def handle_call(:healthy?, _from, state),
    do: {:reply, in_window(state) < state.max_crashes, state}

  def handle_call({:worker, worker_id}, _from, state) do
    worker = Map.get(state.workers, worker_id, %{crash_count: 0, last_crash_time: nil})

    {:reply,
     %{
       healthy: worker.crash_count < @worker_crash_limit,
       crash_count: worker.crash_count,
       last_crash_time: worker.last_crash_time
     }, state}
  end

  def handle_call(:stats, _from, state) do
    crashes = in_window(state)

    {:reply,
     %{
       pool: state.pool,
       total_crashes: state.total_crashes,
       crashes_in_window: crashes,
       workers_with_crashes: map_size(state.workers),
       max_crashes: state.max_crashes,
       crash_window_ms: state.crash_window_ms,
       is_healthy: crashes < state.max_crashes
     }, state}
  end

  @impl GenServer
  def handle_cast({:crash, worker_id, info}, state) do
    now = now()
    reason = Map.get(info, :reason)

    worker =
      state.workers
      |> Map.get(worker_id, %{crash_count: 0, last_crash_time: nil, crash_reasons: [], times: []})
      |> then(
        &%{
          &1
          | crash_count: &1.crash_count + 1,
            last_crash_time: now,
            crash_reasons: Enum.take([reason | &1.crash_reasons], 10),
            times: [now | &1.times]
        }
      )

    Snakepit.Telemetry.execute([:snakepit, :worker, :crash], %{}, %{
      pool: state.pool,
      worker_id: worker_id,
      reason: reason
    })

    {:noreply,
     %{
       state
       | workers: Map.put(state.workers, worker_id, worker),
         total_crashes: state.total_crashes + 1
     }}
  end

  @impl GenServer
  def handle_info(:cleanup, state) do
    since = now() - state.crash_window_ms

    workers =
      for {id, worker} <- state.workers,
          times = Enum.filter(worker.times, &(&1 >= since)),
          times != [],
          into: %{},
          do: {id, %{worker | times: times}}

    schedule_cleanup(state)
    {:noreply, %{state | workers: workers}}
  end

  defp in_window(state) do
    since = now() - state.crash_window_ms

    state.workers
    |> Map.values()
    |> Enum.map(&Enum.count(&1.times, fn t -> t >= since end))
    |> Enum.sum()
  end

  defp schedule_cleanup(state), do: Process.send_after(self(), :cleanup, state.check_interval_ms)
  defp now, do: System.monotonic_time(:millisecond)
end
