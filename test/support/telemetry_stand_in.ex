defmodule :telemetry do
  @moduledoc """
  Stand-in for the `:telemetry` library, which cannot be installed here (no
  hex). It keeps handlers where the real one does (an ETS table named
  `:telemetry_handler_table`, keyed by event name) and has its API:
  `attach/4`, `attach_many/4`, `detach/1`, `list_handlers/1`, `execute/3`,
  `span/3`. `attach_recorder/0` additionally sends every event to the
  calling process as `{:telemetry_event, event, measurements, metadata}`.
  """

  @table :telemetry_handler_table
  @all :__all_events__

  @doc "Attaches `fun` (arity 4) to `event`."
  @spec attach(term(), [atom()], function(), term()) :: :ok | {:error, :already_exists}
  def attach(id, event, fun, config), do: attach_many(id, [event], fun, config)

  @doc "Attaches `fun` (arity 4) to each of `events`."
  @spec attach_many(term(), [[atom()]], function(), term()) :: :ok | {:error, :already_exists}
  def attach_many(id, events, fun, config) when is_function(fun, 4) do
    ensure_table()

    :global.trans({__MODULE__, self()}, fn ->
      if :ets.match_object(@table, {:_, {id, :_, :_}}) == [] do
        :ets.insert(@table, for(event <- events, do: {event, {id, fun, config}}))
        :ok
      else
        {:error, :already_exists}
      end
    end)
  end

  @doc "Detaches handler `id`."
  @spec detach(term()) :: :ok | {:error, :not_found}
  def detach(id) do
    ensure_table()

    case :ets.match_object(@table, {:_, {id, :_, :_}}) do
      [] ->
        {:error, :not_found}

      _ ->
        :ets.match_delete(@table, {:_, {id, :_, :_}})
        :ok
    end
  end

  @doc "Handlers attached to events starting with `prefix`."
  @spec list_handlers([atom()]) :: [map()]
  def list_handlers(prefix) do
    ensure_table()

    for {event, {id, fun, config}} <- :ets.tab2list(@table),
        is_list(event) and List.starts_with?(event, prefix),
        do: %{id: id, event_name: event, function: fun, config: config}
  end

  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    handlers =
      case :ets.whereis(@table) do
        :undefined -> []
        _ -> :ets.lookup(@table, event) ++ :ets.lookup(@table, @all)
      end

    for {_event, {id, fun, config}} <- handlers do
      try do
        fun.(event, measurements, metadata, config)
      catch
        # As the real library does: a failing handler is detached.
        _kind, _reason -> detach(id)
      end
    end

    :ok
  end

  @doc "Runs `fun` between `prefix ++ [:start]` and `prefix ++ [:stop]` (or `:exception`)."
  @spec span([atom()], map(), (() -> {term(), map()} | {term(), map(), map()})) :: term()
  def span(prefix, metadata, fun) do
    start = System.monotonic_time()
    context = make_ref()
    metadata = Map.put(metadata, :telemetry_span_context, context)

    execute(
      prefix ++ [:start],
      %{system_time: System.system_time(), monotonic_time: start},
      metadata
    )

    try do
      fun.()
    catch
      kind, reason ->
        now = System.monotonic_time()

        execute(
          prefix ++ [:exception],
          %{duration: now - start, monotonic_time: now},
          Map.merge(metadata, %{kind: kind, reason: reason, stacktrace: __STACKTRACE__})
        )

        :erlang.raise(kind, reason, __STACKTRACE__)
    else
      result ->
        {value, extra, stop_metadata} =
          case result do
            {value, stop_metadata} -> {value, %{}, stop_metadata}
            {value, extra, stop_metadata} -> {value, extra, stop_metadata}
          end

        now = System.monotonic_time()

        execute(
          prefix ++ [:stop],
          Map.merge(extra, %{duration: now - start, monotonic_time: now}),
          Map.put(stop_metadata, :telemetry_span_context, context)
        )

        value
    end
  end

  @doc "Sends every future event to the calling process."
  @spec attach_recorder() :: :ok
  def attach_recorder do
    pid = self()

    attach_many({:recorder, pid}, [@all], &__MODULE__.record/4, pid)
  end

  @doc "Stops sending events to the calling process."
  @spec detach_recorder() :: :ok
  def detach_recorder do
    detach({:recorder, self()})
    :ok
  end

  @doc false
  # A recorder whose test process is gone is detached (execute/3 detaches a
  # handler that raises), so on_exit callbacks need not run in that process.
  def record(event, measurements, metadata, pid) do
    if Process.alive?(pid),
      do: send(pid, {:telemetry_event, event, measurements, metadata}),
      else: raise("recorder #{inspect(pid)} is gone")
  end

  # The table outlives the processes that attach, as the real one's does.
  defp ensure_table do
    if :ets.whereis(@table) == :undefined do
      :global.trans({__MODULE__, :table}, fn ->
        if :ets.whereis(@table) == :undefined do
          parent = self()

          spawn(fn ->
            :ets.new(@table, [:named_table, :public, :bag, read_concurrency: true])
            send(parent, :telemetry_table_ready)
            Process.sleep(:infinity)
          end)

          receive do
            :telemetry_table_ready -> :ok
          end
        end
      end)
    end
  end
end
