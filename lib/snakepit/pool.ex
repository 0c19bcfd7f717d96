defmodule Snakepit.Pool do
  @moduledoc """
  One process per pool. It owns the native pool (workers, scheduler and gRPC
  calls all run in the NIF), publishes the native handle for the hot path,
  and turns native events into Logger lines and telemetry.

  Requests never pass through this process: `Snakepit.execute/3` reads the
  handle from `:persistent_term` and submits to the NIF directly.

  The pools the application starts are children of the supervisor
  registered as `Snakepit.Pool` (`Snakepit.Pool.Supervisor`), so
  `Process.whereis(Snakepit.Pool)` is a live process as upstream code
  expects; this module also has upstream's pool API (`get_stats/0,1,2`,
  `list_workers/0,1,2`, `execute/3`, `execute_stream/4`, `await_ready/0,1,2`,
  `await_init_complete/0,1,2`), where `Snakepit.Pool` (or that process's
  pid) as the first argument means every pool.

  A pool starts asynchronously: its workers boot after `start_link/1`
  returns. A pool none of whose workers ever got ready, and one of which
  failed to start, is *failed*: calls to it return `:pool_not_initialized`
  with the start error and its Python traceback (in `python_traceback` and
  `details.python_traceback`) until a worker does get ready.
  """
  use GenServer
  require Logger

  alias Snakepit.{Config, Error, Native, Python, PythonRuntime, Telemetry}
  alias Snakepit.Telemetry.PoolEvents

  # What the hot path reads per pool: a running pool's handle, default
  # affinity and timeouts; or a failed pool's error (and its native handle,
  # if it has one, for stats).
  # A clustered pool publishes {:cluster, name, running entry or nil when no
  # local worker serves, {affinity, call timeout, stream timeout}}.
  @type entry ::
          {reference(), atom(), timeout(), timeout()}
          | {:failed, Error.t(), reference() | nil}
          | {:cluster, atom(), {reference(), atom(), timeout(), timeout()} | nil,
             {atom(), timeout(), timeout()}}

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

  @doc "The native handle of a pool (also of a failed one, whose workers keep retrying)."
  @spec lookup(atom()) :: {:ok, reference()} | {:error, Error.t()}
  def lookup(pool_name) do
    case :persistent_term.get({__MODULE__, pool_name}, nil) do
      {:failed, _error, handle} when handle != nil -> {:ok, handle}
      {:failed, error, nil} -> {:error, error}
      nil -> {:error, not_found(pool_name)}
      {:cluster, _name, {handle, _, _, _}, _defaults} -> {:ok, handle}
      {:cluster, _name, nil, _defaults} -> {:error, no_local_workers(pool_name)}
      {handle, _affinity, _call_timeout, _stream_timeout} -> {:ok, handle}
    end
  end

  @doc """
  What the hot path needs of a running pool: its native handle, its default
  session affinity and the default timeouts of calls and streams.
  A clustered pool answers `{:cluster, entry}`: `Snakepit.Cluster.Router`
  decides where its calls go.
  """
  @spec route(atom()) ::
          {:ok, {reference(), atom(), timeout(), timeout()}}
          | {:cluster, tuple()}
          | {:error, Error.t()}
  def route(pool_name) do
    case :persistent_term.get({__MODULE__, pool_name}, nil) do
      {:failed, error, _handle} -> {:error, error}
      nil -> {:error, not_found(pool_name)}
      {:cluster, _, _, _} = entry -> {:cluster, entry}
      entry -> {:ok, entry}
    end
  end

  defp no_local_workers(pool_name) do
    Error.new(
      :pool,
      :pool_not_initialized,
      "pool #{inspect(pool_name)} has no ready workers on #{node()}",
      pool_name: pool_name
    )
  end

  defp not_found(pool_name) do
    message =
      if Application.get_env(:snakepit, :pooling_enabled, false) or names() != [] do
        "no pool named #{inspect(pool_name)} is running"
      else
        "no pool named #{inspect(pool_name)} is running: pooling is disabled; " <>
          "enable it with `config :snakepit, pooling_enabled: true`"
      end

    Error.new(:pool, :pool_not_found, message, pool_name: pool_name)
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
    # The lock is this node's only: with distribution on, the default node
    # list would take it on every connected node.
    :global.trans(
      {{__MODULE__, :order}, self()},
      fn ->
        order = :persistent_term.get({__MODULE__, :order}, [])
        unless name in order, do: :persistent_term.put({__MODULE__, :order}, order ++ [name])
      end,
      [node()]
    )
  end

  @doc """
  Waits until `pool` has at least one ready worker. `pool` is a pool name,
  or `Snakepit.Pool` (or the pid registered under that name) or `:all` for
  every running pool. `timeout` is in ms or `:infinity`; `nil` (the
  default) means the `:pool_await_ready_timeout` config (15 s).

  Returns `:ok`; the start error with the Python traceback
  (`:pool_not_initialized`) when the pool failed to start; or a `:timeout`
  error (`details.reason` `:pool_init_timeout`) when no worker got ready in
  time.
  """
  @spec await_ready(atom() | pid(), timeout() | nil) :: :ok | {:error, Error.t()}
  def await_ready(pool \\ __MODULE__, timeout \\ nil) do
    await(:await_ready, pool, timeout || default_await_timeout())
  end

  @doc """
  Waits until `pool` (as in `await_ready/2`) has finished starting: every
  worker slot has either got ready or failed to start once. `:ok` when at
  least one worker is ready, otherwise the start error with its Python
  traceback, or a `:timeout` error.
  """
  @spec await_init_complete(atom() | pid(), timeout() | nil) :: :ok | {:error, Error.t()}
  def await_init_complete(pool \\ __MODULE__, timeout \\ nil) do
    await(:await_init_complete, pool, timeout || default_await_timeout())
  end

  defp default_await_timeout do
    Snakepit.Config.globals(Application.get_all_env(:snakepit)).pool_await_ready_timeout
  end

  defp await(what, pool, timeout) do
    if every_pool?(pool) do
      deadline = if timeout == :infinity, do: :infinity, else: now_ms() + timeout

      Enum.reduce_while(names(), :ok, fn name, :ok ->
        case await_one(what, name, remaining_ms(deadline)) do
          :ok -> {:cont, :ok}
          error -> {:halt, error}
        end
      end)
    else
      await_one(what, pool, timeout)
    end
  end

  defp every_pool?(pool) when pool in [__MODULE__, :all], do: true
  defp every_pool?(pid) when is_pid(pid), do: pid == Process.whereis(__MODULE__)
  defp every_pool?(_pool), do: false

  defp await_one(what, pool, timeout) when is_atom(pool) do
    GenServer.call(process_name(pool), {what, timeout}, :infinity)
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

  @doc """
  Statistics as upstream's `Snakepit.Pool.get_stats/1`: summed over every
  pool for `Snakepit.Pool` (the default) or its pid, else of the pool
  named `pool` (see `Snakepit.get_stats/1`).
  """
  @spec get_stats(atom() | pid()) :: map()
  def get_stats(pool \\ __MODULE__)
  def get_stats(pool) when is_pid(pool), do: Snakepit.get_stats(nil)
  def get_stats(pool), do: Snakepit.get_stats(pool)

  @doc "Statistics of the pool named `pool_name` (`{:error, {:pool_not_found, name}}` when none runs)."
  @spec get_stats(atom() | pid(), atom()) :: map() | {:error, {:pool_not_found, atom()}}
  def get_stats(_pool, pool_name) when is_atom(pool_name) do
    case stats(pool_name) do
      {:ok, _stats} -> Snakepit.get_stats(pool_name)
      {:error, _} -> {:error, {:pool_not_found, pool_name}}
    end
  end

  @doc "Worker ids of every pool (`Snakepit.Pool`, the default, or its pid) or of the pool named `pool`."
  @spec list_workers(atom() | pid()) :: [String.t()]
  def list_workers(pool \\ __MODULE__)
  def list_workers(pool) when is_pid(pool), do: Snakepit.list_workers(nil)
  def list_workers(pool), do: Snakepit.list_workers(pool)

  @doc "Worker ids of the pool named `pool_name` (`{:error, {:pool_not_found, name}}` when none runs)."
  @spec list_workers(atom() | pid(), atom()) :: [String.t()] | {:error, {:pool_not_found, atom()}}
  def list_workers(_pool, pool_name) when is_atom(pool_name) do
    case workers(pool_name) do
      {:ok, workers} -> Enum.map(workers, & &1.id)
      {:error, _} -> {:error, {:pool_not_found, pool_name}}
    end
  end

  @doc "Upstream's entry point for a call: the same as `Snakepit.execute/3`."
  @spec execute(String.t() | atom(), map(), keyword()) :: {:ok, term()} | {:error, term()}
  def execute(command, args, opts \\ []), do: Snakepit.execute(command, args, opts)

  @doc "Upstream's entry point for a stream: the same as `Snakepit.execute_stream/4`."
  @spec execute_stream(String.t() | atom(), map(), (map() -> term()), keyword()) ::
          :ok | {:error, term()}
  def execute_stream(command, args, callback, opts \\ []),
    do: Snakepit.execute_stream(command, args, callback, opts)

  @doc """
  What a running pool was started with: its normalised `config`, the
  `python` interpreter (`Snakepit.PythonRuntime.choice/0`) and its
  `start_error` (the last worker start failure while no worker was ready).
  """
  @spec info(atom(), timeout()) :: {:ok, map()} | {:error, Error.t()}
  def info(pool, timeout \\ 5_000) when is_atom(pool) do
    {:ok, GenServer.call(process_name(pool), :info, timeout)}
  catch
    :exit, _ ->
      {:error,
       Error.new(:pool, :pool_not_found, "no pool named #{inspect(pool)} is running",
         pool_name: pool
       )}
  end

  @doc "Native statistics of one pool."
  @spec stats(atom()) :: {:ok, map()} | {:error, Error.t()}
  def stats(pool) do
    with {:ok, handle} <- lookup(pool), do: {:ok, Native.stats(handle)}
  end

  @doc """
  The workers of one pool, as maps with `:id`, `:os_pid`, `:state`,
  `:inflight`, `:capacity`, `:requests`. `:state` is `:starting`, `:ready`,
  `:draining` (recycled: finishing its calls) or `:stopping` (signalled by
  the pool: its exit is coming).
  """
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
    globals = Snakepit.Config.globals(Application.get_all_env(:snakepit))
    remember_order(config.name)

    state = %{
      config: config,
      handle: nil,
      log_level: globals.log_level,
      ready: MapSet.new(),
      ever_ready: false,
      settled: MapSet.new(),
      start_error: nil,
      waiters: [],
      entry: nil,
      running: nil,
      output_levels: %{},
      telemetry: PoolEvents.init(config),
      python: nil,
      cluster_agent: nil,
      defaults: {config.affinity, globals.request_timeout, globals.stream_timeout}
    }

    state = start_cluster_agent(state)

    # A pool that cannot even start (no usable interpreter, a native
    # refusal) is failed, not a crash: the application and its other pools
    # keep running.
    case if(config.pool_size == 0, do: :route_only, else: start_native(config, globals)) do
      :route_only ->
        {:ok, publish(state, nil)}

      {:ok, handle, python} ->
        running = {handle, config.affinity, globals.request_timeout, globals.stream_timeout}
        {:ok, publish(%{state | handle: handle, running: running, python: python}, running)}

      {:error, message} ->
        error = Error.new(:worker, :start_failed, message, pool_name: config.name)
        log(state, :error, "pool #{inspect(config.name)} cannot start: #{message}", [])
        {:ok, fail(state, error)}
    end
  end

  defp start_cluster_agent(%{config: %{scope: :cluster} = config} = state) do
    {:ok, agent} = Snakepit.Cluster.Agent.start_link(config)
    %{state | cluster_agent: agent}
  end

  defp start_cluster_agent(state), do: state

  defp start_native(config, globals) do
    python = PythonRuntime.resolve!(python_executable: config.python_executable)

    case config |> Config.native_config(python.path, globals) |> Native.pool_start(self()) do
      {:ok, handle} -> {:ok, handle, python}
      {:error, message} -> {:error, message}
    end
  rescue
    error in ArgumentError -> {:error, Exception.message(error)}
  end

  # Published entries are read on every call; they change only when the
  # pool starts, fails or recovers.
  defp publish(%{config: %{scope: :cluster}} = state, entry) do
    local = if match?({:failed, _, _}, entry), do: nil, else: entry
    entry = {:cluster, state.config.name, local, state.defaults}
    if state.entry != entry, do: :persistent_term.put({__MODULE__, state.config.name}, entry)
    %{state | entry: entry}
  end

  defp publish(state, entry) do
    if state.entry != entry, do: :persistent_term.put({__MODULE__, state.config.name}, entry)
    %{state | entry: entry}
  end

  defp fail(state, error) do
    failed =
      Error.new(
        :pool,
        :pool_not_initialized,
        "pool #{inspect(state.config.name)} failed to start: #{Exception.message(error)}",
        pool_name: state.config.name,
        python_type: error.details[:python_type],
        python_traceback: error.python_traceback,
        details:
          error.details
          |> Map.take([:python, :python_rule, :python_path])
          |> Map.merge(%{
            python_traceback: error.python_traceback,
            start_error: error.details,
            start_message: error.message
          })
      )

    # Republished only on the transition: retries of a failing worker do
    # not rewrite the entry every hot-path call reads.
    state = %{state | start_error: failed}

    state =
      if match?({:failed, _, _}, state.entry) or match?({:cluster, _, nil, _}, state.entry),
        do: state,
        else: publish(state, {:failed, failed, state.handle})

    reply_waiters(state)
  end

  @impl GenServer
  def handle_call(:info, _from, state) do
    {:reply, Map.take(state, [:config, :python, :start_error]), state}
  end

  def handle_call({kind, timeout}, from, state)
      when kind in [:await_ready, :await_init_complete] do
    case await_reply(kind, state) do
      nil ->
        timer =
          if timeout != :infinity,
            do: Process.send_after(self(), {:await_timeout, from, timeout}, timeout)

        {:noreply, %{state | waiters: [{kind, from, timer} | state.waiters]}}

      reply ->
        {:reply, reply, state}
    end
  end

  # The answer a waiter of `kind` gets now, or nil to keep it waiting.
  defp await_reply(_kind, %{config: %{pool_size: 0}}), do: :ok

  defp await_reply(:await_ready, state) do
    cond do
      MapSet.size(state.ready) > 0 -> :ok
      state.start_error != nil -> {:error, state.start_error}
      true -> nil
    end
  end

  defp await_reply(:await_init_complete, state) do
    cond do
      state.handle == nil -> {:error, state.start_error}
      MapSet.size(state.settled) < state.config.pool_size -> nil
      state.ever_ready -> :ok
      true -> {:error, state.start_error}
    end
  end

  @impl GenServer
  def handle_info({:snakepit_event, event, worker_id, data}, state) do
    {:noreply, handle_event(event, worker_id, data, state)}
  end

  def handle_info({:await_timeout, from, timeout}, state) do
    {waiting, rest} = Enum.split_with(state.waiters, fn {_kind, waiter, _} -> waiter == from end)

    for {_kind, waiter, _} <- waiting do
      GenServer.reply(
        waiter,
        {:error,
         Error.new(
           :timeout,
           :pool_init_timeout,
           "pool #{inspect(state.config.name)} did not finish starting within #{timeout} ms",
           pool_name: state.config.name,
           details: %{timeout_ms: timeout}
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
    # Leave cluster routing before the workers stop.
    if state.cluster_agent, do: Snakepit.Cluster.Agent.stop(state.cluster_agent)
    if state.handle, do: Native.pool_stop(state.handle)
    :persistent_term.erase({__MODULE__, state.config.name})
    :ok
  end

  defp handle_event(:worker_ready, worker_id, os_pid, state) do
    log(state, :debug, "worker #{worker_id} ready (os pid #{os_pid})", worker_id: worker_id)
    ready = MapSet.put(state.ready, worker_id)

    state = %{
      state
      | ready: ready,
        ever_ready: true,
        settled: settle(state.settled, worker_id),
        start_error: nil,
        telemetry: PoolEvents.ready(state.telemetry, worker_id, os_pid, MapSet.size(ready))
    }

    # A worker that got ready brings a failed pool back.
    state |> publish(state.running) |> reply_waiters()
  end

  defp handle_event(:worker_spawned, worker_id, _os_pid, state) do
    %{state | telemetry: PoolEvents.spawned(state.telemetry, worker_id)}
  end

  defp handle_event(:worker_start_failed, worker_id, native_error, state) do
    error = native_error |> Error.from_native(pool_name: state.config.name) |> with_python(state)

    log(
      state,
      :error,
      "worker #{worker_id} of pool #{inspect(state.config.name)} failed to start: " <>
        "#{Exception.message(error)}\n#{error.python_traceback}",
      worker_id: worker_id
    )

    state = %{state | settled: settle(state.settled, worker_id)}

    cond do
      # Never served: the pool is failed until a worker gets ready.
      not state.ever_ready -> fail(state, error)
      MapSet.size(state.ready) == 0 -> reply_waiters(%{state | start_error: error})
      true -> state
    end
  end

  defp handle_event(:worker_exited, worker_id, {os_pid, how}, state) do
    if MapSet.member?(state.ready, worker_id) do
      log(state, :warning, "worker #{worker_id} (os pid #{os_pid}) #{how}", worker_id: worker_id)
    end

    telemetry = PoolEvents.exited(state.telemetry, worker_id, os_pid, how)
    %{state | ready: MapSet.delete(state.ready, worker_id), telemetry: telemetry}
  end

  # The worker formats its log records as "LEVEL logger: message"; the line
  # goes to Logger at that level, the worker id as metadata. Other lines
  # (print, tracebacks) get a level from their text; on stderr at least the
  # level of the line before, so a traceback's lines stay together.
  defp handle_event(:worker_output, worker_id, {stream, line}, state) do
    {level, message, state} = output_level(state, worker_id, stream, line)
    log(state, level, message, worker_id: worker_id, stream: stream)
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
      %{missed: missed},
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

  defp handle_event(:worker_hung, worker_id, {tool, overrun_ms}, state) do
    log(
      state,
      :error,
      "worker #{worker_id} still ran tool #{tool} #{overrun_ms} ms past its caller's deadline; " <>
        "killing and replacing it",
      worker_id: worker_id
    )

    Telemetry.execute([:snakepit, :worker, :hung], %{overrun_ms: overrun_ms}, %{
      pool: state.config.name,
      worker_id: worker_id,
      command: tool
    })

    state
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

  @python_levels %{
    "DEBUG" => :debug,
    "INFO" => :info,
    "WARNING" => :warning,
    "ERROR" => :error,
    "CRITICAL" => :critical
  }

  defp output_level(state, worker_id, stream, line) do
    with [name, message] <- :binary.split(line, " "),
         {:ok, level} <- Map.fetch(@python_levels, name) do
      levels =
        if stream == :stderr,
          do: Map.put(state.output_levels, worker_id, level),
          else: state.output_levels

      {level, message, %{state | output_levels: levels}}
    else
      _ when stream == :stderr ->
        level = max_level(text_level(line), Map.get(state.output_levels, worker_id, :info))
        {level, line, %{state | output_levels: Map.put(state.output_levels, worker_id, level)}}

      _ ->
        {text_level(line), line, state}
    end
  end

  defp text_level(line) do
    cond do
      String.contains?(line, ["ERROR", "CRITICAL", "Traceback"]) -> :error
      String.contains?(line, "WARNING") -> :warning
      true -> :info
    end
  end

  defp max_level(a, b), do: if(Logger.compare_levels(a, b) == :lt, do: b, else: a)

  # A start error says which interpreter ran and where it looked for modules.
  defp with_python(error, %{python: python, config: config}) do
    python_path = config.env |> Map.new() |> Map.get("PYTHONPATH") |> Python.python_path()

    %{
      error
      | message:
          "#{error.message} (Python #{python.path}, chosen by #{python.reason}; " <>
            "PYTHONPATH #{Enum.join(python_path, ":")})",
        details:
          Map.merge(error.details, %{
            python: python.path,
            python_rule: python.rule,
            python_path: python_path
          })
    }
  end

  # Worker ids are <pool>_worker_<slot>_<serial>; a replacement keeps the slot.
  defp settle(settled, worker_id) do
    case Regex.run(~r/_worker_(\d+)_\d+$/, worker_id) do
      [_, slot] -> MapSet.put(settled, slot)
      nil -> MapSet.put(settled, worker_id)
    end
  end

  # Answers every waiter whose question has an answer now.
  defp reply_waiters(state) do
    waiters =
      Enum.reject(state.waiters, fn {kind, waiter, timer} ->
        case await_reply(kind, state) do
          nil ->
            false

          reply ->
            if timer, do: Process.cancel_timer(timer)
            GenServer.reply(waiter, reply)
            true
        end
      end)

    %{state | waiters: waiters}
  end
end
