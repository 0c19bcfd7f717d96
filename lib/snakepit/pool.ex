defmodule Snakepit.Pool do
  @moduledoc """
  One process per pool. It owns the native pool (workers, scheduler and gRPC
  calls all run in the NIF), publishes the native handle for the hot path,
  and turns native events into Logger lines and telemetry.

  Requests never pass through this process: `Snakepit.execute/3` reads the
  handle from `:persistent_term` and submits to the NIF directly.
  """
  use GenServer
  require Logger

  alias Snakepit.{Error, Native, Python, Telemetry}

  @default_await_timeout 15_000

  @doc false
  def child_spec(config) do
    %{
      id: {__MODULE__, config.name},
      start: {__MODULE__, :start_link, [config]},
      # Workers get graceful_shutdown_timeout_ms to exit, then SIGKILL.
      shutdown: config.graceful_shutdown_timeout_ms + 5_000
    }
  end

  @doc "Starts a pool from a normalised config (see `Snakepit.Config.normalize_pool/2`)."
  @spec start_link(map()) :: GenServer.on_start()
  def start_link(config) do
    GenServer.start_link(__MODULE__, config, name: process_name(config.name))
  end

  @doc "The native handle of a running pool, for the hot path."
  @spec lookup(atom()) :: {:ok, reference()} | {:error, Error.t()}
  def lookup(pool_name) do
    with {:ok, handle, _affinity} <- route(pool_name), do: {:ok, handle}
  end

  @doc "The native handle of a running pool and its default session affinity."
  @spec route(atom()) :: {:ok, reference(), atom()} | {:error, Error.t()}
  def route(pool_name) do
    case :persistent_term.get({__MODULE__, pool_name}, nil) do
      nil ->
        {:error,
         Error.new(:pool, :pool_not_found, "no pool named #{inspect(pool_name)} is running",
           pool_name: pool_name
         )}

      {handle, affinity} ->
        {:ok, handle, affinity}
    end
  end

  @doc "Names of the pools that are running, in the order they were first started."
  @spec names() :: [atom()]
  def names do
    # The order is append-only, so a restarting pool keeps its place (and
    # the default pool stays the first); running means published.
    {__MODULE__, :order}
    |> :persistent_term.get([])
    |> Enum.filter(&(:persistent_term.get({__MODULE__, &1}, nil) != nil))
  end

  @doc "The first running pool in start order (`:default` when none runs): where calls go without `pool_name:`."
  @spec default_name() :: atom()
  def default_name do
    # On the hot path: stops at the first running pool, usually the first one.
    {__MODULE__, :order}
    |> :persistent_term.get([])
    |> Enum.find(:default, &(:persistent_term.get({__MODULE__, &1}, nil) != nil))
  end

  # Pools start concurrently (several supervisors, tests): the lock keeps
  # one's append from losing another's.
  defp remember_order(name) do
    :global.trans({{__MODULE__, :order}, self()}, fn ->
      order = :persistent_term.get({__MODULE__, :order}, [])
      unless name in order, do: :persistent_term.put({__MODULE__, :order}, order ++ [name])
    end)
  end

  @doc """
  Waits until `pool` (a pool name, or `:all` for every running pool;
  `Snakepit.Pool`, as upstream Snakepit passes it, means `:all`) has at least
  one ready worker. Returns the start error, with the Python traceback, if
  workers fail to start before any is ready.
  """
  @spec await_ready(atom(), timeout()) :: :ok | {:error, Error.t()}
  def await_ready(pool \\ :all, timeout \\ @default_await_timeout)

  def await_ready(__MODULE__, timeout), do: await_ready(:all, timeout)

  def await_ready(:all, timeout) do
    deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout

    Enum.reduce_while(names(), :ok, fn name, :ok ->
      case await_ready(name, remaining_ms(deadline)) do
        :ok -> {:cont, :ok}
        error -> {:halt, error}
      end
    end)
  end

  def await_ready(pool, timeout) when is_atom(pool) do
    GenServer.call(process_name(pool), {:await_ready, timeout}, :infinity)
  catch
    :exit, {:noproc, _} ->
      {:error,
       Error.new(:pool, :pool_not_found, "no pool named #{inspect(pool)} is running",
         pool_name: pool
       )}

    # The pool went down while we waited (its supervisor restarts it).
    :exit, {reason, _call} ->
      {:error,
       Error.new(
         :pool,
         :pool_not_initialized,
         "pool #{inspect(pool)} stopped while starting: #{inspect(reason)}",
         pool_name: pool
       )}
  end

  @doc "Native statistics of one pool."
  @spec stats(atom()) :: {:ok, map()} | {:error, Error.t()}
  def stats(pool) do
    with {:ok, handle} <- lookup(pool), do: {:ok, Native.stats(handle)}
  end

  @doc "The workers of one pool, as maps with `:id`, `:os_pid`, `:state`, `:inflight`, `:capacity`, `:requests`."
  @spec workers(atom()) :: {:ok, [map()]} | {:error, Error.t()}
  def workers(pool) do
    with {:ok, handle} <- lookup(pool), do: {:ok, Native.workers(handle)}
  end

  @doc """
  The thread-safety record of every worker (kept when the pool has
  `thread_safety_checks: true`): per tool the highest number of threads seen
  running it at once, its call count and whether it is marked
  `@thread_safe_method`. `tools` is `nil` for a worker that did not answer.
  """
  @spec thread_safety_report(atom(), timeout()) :: {:ok, [map()]} | {:error, Error.t()}
  def thread_safety_report(pool, timeout \\ 5_000) do
    with {:ok, handle} <- lookup(pool), do: {:ok, Native.reports(handle, timeout)}
  end

  defp process_name(pool), do: :"Elixir.Snakepit.Pool.#{pool}"

  defp now_ms, do: System.monotonic_time(:millisecond)
  defp remaining_ms(:infinity), do: :infinity
  defp remaining_ms(deadline), do: max(deadline - now_ms(), 0)

  # ---------------------------------------------------------------- server

  @impl GenServer
  def init(config) do
    Process.flag(:trap_exit, true)
    python = Python.executable!(config.python_executable)
    {:ok, handle} = config |> native_config(python) |> Native.pool_start(self())
    remember_order(config.name)
    :persistent_term.put({__MODULE__, config.name}, {handle, config.affinity})

    {:ok,
     %{
       config: config,
       handle: handle,
       log_level: Snakepit.Config.globals(Application.get_all_env(:snakepit)).log_level,
       ready: MapSet.new(),
       start_error: nil,
       waiters: []
     }}
  end

  @impl GenServer
  def handle_call({:await_ready, timeout}, from, state) do
    cond do
      MapSet.size(state.ready) > 0 ->
        {:reply, :ok, state}

      state.start_error != nil ->
        {:reply, {:error, state.start_error}, state}

      true ->
        timer =
          if timeout != :infinity, do: Process.send_after(self(), {:await_timeout, from}, timeout)

        {:noreply, %{state | waiters: [{from, timer} | state.waiters]}}
    end
  end

  @impl GenServer
  def handle_info({:snakepit_event, event, worker_id, data}, state) do
    {:noreply, handle_event(event, worker_id, data, state)}
  end

  def handle_info({:await_timeout, from}, state) do
    {waiting, rest} = Enum.split_with(state.waiters, fn {waiter, _} -> waiter == from end)

    for {waiter, _} <- waiting do
      GenServer.reply(
        waiter,
        {:error,
         Error.new(
           :pool,
           :pool_not_initialized,
           "pool #{inspect(state.config.name)} has no ready worker yet",
           pool_name: state.config.name
         )}
      )
    end

    {:noreply, %{state | waiters: rest}}
  end

  # Exit signals are trapped so terminate/2 stops the workers; ports (such
  # as the interpreter probe) also end with a :normal one.
  def handle_info({:EXIT, _from, :normal}, state), do: {:noreply, state}
  def handle_info({:EXIT, _from, reason}, state), do: {:stop, reason, state}

  @impl GenServer
  def terminate(_reason, state) do
    Native.pool_stop(state.handle)
    :persistent_term.erase({__MODULE__, state.config.name})
    :ok
  end

  defp handle_event(:worker_ready, worker_id, os_pid, state) do
    log(state, :debug, "worker #{worker_id} ready (os pid #{os_pid})", worker_id: worker_id)
    reply_waiters(%{state | ready: MapSet.put(state.ready, worker_id), start_error: nil}, :ok)
  end

  defp handle_event(:worker_spawned, worker_id, os_pid, state) do
    Telemetry.execute(
      [:snakepit, :pool, :worker, :spawned],
      %{count: 1, monotonic_ms: System.monotonic_time(:millisecond)},
      %{
        pool: state.config.name,
        worker_id: worker_id,
        os_pid: os_pid
      }
    )

    state
  end

  defp handle_event(:worker_start_failed, worker_id, native_error, state) do
    error = Error.from_native(native_error, pool_name: state.config.name)

    log(
      state,
      :error,
      "worker #{worker_id} of pool #{inspect(state.config.name)} failed to start: " <>
        "#{Exception.message(error)}\n#{error.python_traceback}",
      worker_id: worker_id
    )

    state = %{state | start_error: error}
    if MapSet.size(state.ready) == 0, do: reply_waiters(state, {:error, error}), else: state
  end

  defp handle_event(:worker_exited, worker_id, {os_pid, how}, state) do
    if MapSet.member?(state.ready, worker_id) do
      log(state, :warning, "worker #{worker_id} (os pid #{os_pid}) #{how}", worker_id: worker_id)
    end

    Telemetry.execute([:snakepit, :pool, :worker, :terminated], %{count: 1}, %{
      pool: state.config.name,
      worker_id: worker_id,
      os_pid: os_pid,
      reason: how
    })

    %{state | ready: MapSet.delete(state.ready, worker_id)}
  end

  defp handle_event(:worker_output, worker_id, {stream, line}, state) do
    log(state, output_level(line), "[#{worker_id}] #{line}", worker_id: worker_id, stream: stream)
    state
  end

  defp handle_event(:capacity_reached, worker_id, _data, state) do
    Telemetry.execute([:snakepit, :pool, :capacity_reached], %{count: 1}, %{
      pool: state.config.name,
      worker_id: worker_id
    })

    state
  end

  defp handle_event(:heartbeat_timeout, worker_id, missed, state) do
    action =
      if state.config.heartbeat.dependent,
        do: "killing and replacing it",
        else: "keeping it (dependent: false)"

    log(state, :error, "worker #{worker_id} missed #{missed} heartbeats in a row; #{action}",
      worker_id: worker_id
    )

    Telemetry.execute(
      [:snakepit, :heartbeat, :heartbeat_timeout],
      %{missed: String.to_integer(missed)},
      %{
        pool: state.config.name,
        worker_id: worker_id,
        dependent: state.config.heartbeat.dependent
      }
    )

    state
  end

  defp handle_event(:worker_recycled, worker_id, reason, state) do
    log(state, :debug, "recycling worker #{worker_id} (#{reason})", worker_id: worker_id)

    Telemetry.execute([:snakepit, :worker, :recycled], %{count: 1}, %{
      pool: state.config.name,
      worker_id: worker_id,
      reason: reason
    })

    %{state | ready: MapSet.delete(state.ready, worker_id)}
  end

  defp handle_event(:internal_error, worker_id, message, state) do
    log(state, :error, message, worker_id: worker_id)
    state
  end

  # The global `log_level` (if set) is a floor under Logger's own level.
  defp log(%{log_level: nil}, level, message, metadata), do: Logger.log(level, message, metadata)
  defp log(%{log_level: :none}, _level, _message, _metadata), do: :ok

  defp log(%{log_level: floor}, level, message, metadata) do
    if Logger.compare_levels(level, floor) != :lt, do: Logger.log(level, message, metadata)
    :ok
  end

  defp output_level(line) do
    cond do
      String.contains?(line, ["ERROR", "CRITICAL", "Traceback"]) -> :error
      String.contains?(line, "WARNING") -> :warning
      true -> :info
    end
  end

  defp reply_waiters(state, reply) do
    for {waiter, timer} <- state.waiters do
      if timer, do: Process.cancel_timer(timer)
      GenServer.reply(waiter, reply)
    end

    %{state | waiters: []}
  end

  defp native_config(config, python) do
    %{
      name: Atom.to_string(config.name),
      pool_size: config.pool_size,
      capacity_per_worker: config.capacity_per_worker,
      executable: python,
      worker_argv: worker_argv(config),
      env: Python.worker_env(config.env),
      working_dir: File.cwd!(),
      startup_batch_size: config.startup_batch_size,
      startup_batch_delay_ms: config.startup_batch_delay_ms,
      startup_timeout_ms: 60_000,
      max_queue: config.max_queue_size,
      queue_timeout_ms: config.queue_timeout_ms,
      restart_backoff_ms: config.restart_backoff_ms,
      max_restart_backoff_ms: config.max_restart_backoff_ms,
      graceful_shutdown_ms: config.graceful_shutdown_timeout_ms,
      heartbeat_enabled: config.heartbeat.enabled,
      ping_interval_ms: config.heartbeat.ping_interval_ms,
      heartbeat_initial_delay_ms: config.heartbeat.initial_delay_ms,
      ping_timeout_ms: config.heartbeat.timeout_ms,
      max_missed_heartbeats: config.heartbeat.max_missed_heartbeats,
      heartbeat_dependent: config.heartbeat.dependent,
      worker_ttl_ms: config.worker_ttl_ms || 0,
      session_ttl_ms: config.session_ttl_ms,
      max_requests: max_requests(config.worker_max_requests)
    }
  end

  defp max_requests(:infinity), do: 0
  defp max_requests(count), do: count

  defp worker_argv(config) do
    profile_args = [
      "--profile",
      Atom.to_string(config.worker_profile),
      "--threads",
      Integer.to_string(config.capacity_per_worker)
    ]

    checks = if config.thread_safety_checks, do: ["--thread-safety-checks"], else: []
    # In-flight calls may finish after SIGTERM, within the pool's own grace.
    grace = [
      "--shutdown-grace-ms",
      Integer.to_string(max(config.graceful_shutdown_timeout_ms - 500, 0))
    ]

    # Lets the boot-time sweep of another BEAM tell our live workers from orphans.
    owner = ["--snakepit-owner-pid", System.pid()]
    # Names the pool in the worker's telemetry metadata.
    pool = ["--pool-name", Atom.to_string(config.name)]

    ["-u", Path.join(Python.bridge_dir(), "grpc_server.py")] ++
      config.adapter_args ++ profile_args ++ grace ++ owner ++ pool ++ checks
  end
end
