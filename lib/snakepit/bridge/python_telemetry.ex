defmodule Snakepit.Bridge.PythonTelemetry do
  @moduledoc """
  Turns the telemetry Python tools emit into BEAM telemetry events.

  In a tool, `telemetry.emit("tool.result_size", {"bytes": 42}, {"tool": "x"})`
  or `with telemetry.span("inference", {"model": "m"}): ...` (module
  `snakepit_bridge.telemetry`) becomes
  `[:snakepit, :python, :tool, :result_size]` (a leading `"python"` part is
  dropped: `"python.call.start"` is `[:snakepit, :python, :call, :start]`),
  emitted with `Snakepit.Telemetry.execute/3`.

  The worker buffers events (bounded) and sends them over its existing
  connection to the native runtime in batches, one batch in flight at a
  time; this process emits a batch's events and only then answers it. A slow
  consumer therefore fills the worker's buffer, where events past the bound
  are dropped and counted, never an Elixir mailbox; the count arrives with
  the next batch and is logged here as a warning (at most once per 5
  seconds per worker, with the total since the last warning) and
  emitted as `[:snakepit, :python, :telemetry, :dropped]` `%{count: n}`.

  Per worker, `control/2` (upstream's `Snakepit.Telemetry.GrpcStream`
  API) turns its events off, samples them or filters them by name. Here
  that is applied where the events arrive, before any handler runs: the
  worker keeps sending them (its own bound still holds).

  No atom is created from what Python sends: an event part must be an
  existing atom (any event a handler is attached to is one), else the event
  is skipped with a debug log. Measurement and metadata keys become atoms
  when they are in the lists below (upstream's), and stay strings otherwise.
  Metadata values are strings (Python's `str()` of each value), plus
  `node`, `worker_id`, `pool_name`, `python_pid`, `correlation_id`
  (`nil` when none) and `timestamp_ns`.
  """
  use GenServer
  require Logger

  alias Snakepit.Native

  @warn_interval_ms 5_000

  # Upstream's Python event catalog: listed so their atoms exist.
  @catalog [
    [:snakepit, :python, :call, :start],
    [:snakepit, :python, :call, :stop],
    [:snakepit, :python, :call, :exception],
    [:snakepit, :python, :memory, :sampled],
    [:snakepit, :python, :cpu, :sampled],
    [:snakepit, :python, :gc, :completed],
    [:snakepit, :python, :error, :occurred],
    [:snakepit, :python, :tool, :execution, :start],
    [:snakepit, :python, :tool, :execution, :stop],
    [:snakepit, :python, :tool, :execution, :exception],
    [:snakepit, :python, :tool, :result_size],
    [:snakepit, :python, :telemetry, :dropped]
  ]

  @measurement_keys ~w(duration duration_ms bytes system_time queue_depth queue_time
    available_workers busy_workers total_workers worker_count lifetime total_commands
    command_count downtime restart_count retry_count request_size response_size message_size
    sequence_number message_count network_time uptime call_count affinity_duration
    commands_with_affinity rss_bytes vms_bytes cpu_percent collected generation latency_ms
    count python_pid first_seen)a

  @metadata_keys ~w(node pool_name worker_id session_id command correlation_id worker_pid
    python_port python_pid mode reason planned previous_pid new_pid retry_count timeout_ms
    result error_type error_category error_message traceback rpc_method grpc_status stream_id
    direction is_final tool library function python_type model operation timestamp_ns
    worker_module adapter_module size failure_reason kind device dtype shape exit_code
    payload_version call_type idempotent retry type)a

  @measurement_lookup Map.new(@measurement_keys, &{Atom.to_string(&1), &1})
  @metadata_lookup Map.new(@metadata_keys, &{Atom.to_string(&1), &1})

  @doc false
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc "The event names of upstream's Python catalog."
  @spec catalog() :: [[atom()]]
  def catalog, do: @catalog

  @doc """
  Hands a batch message from the native runtime to this process; when it is
  not running the worker's call is answered with an error at once (the
  worker counts the batch as dropped).
  """
  @spec forward(tuple()) :: :ok
  def forward({:snakepit_python_telemetry, id, _, _, _, _, _} = batch) do
    case Process.whereis(__MODULE__) do
      nil -> Native.elixir_tool_reply(id, {:error, "Python telemetry is not being received"})
      pid -> send(pid, batch)
    end

    :ok
  end

  @doc """
  The BEAM event name for a Python event's dotted parts, or `:error` when a
  part is not an existing atom.

      iex> Snakepit.Bridge.PythonTelemetry.event_name(["tool", "execution", "start"])
      {:ok, [:snakepit, :python, :tool, :execution, :start]}
      iex> Snakepit.Bridge.PythonTelemetry.event_name(["python", "call", "stop"])
      {:ok, [:snakepit, :python, :call, :stop]}
  """
  @spec event_name([String.t()]) :: {:ok, [atom()]} | :error
  def event_name(["python" | parts]) when parts != [], do: event_name(parts)
  def event_name([]), do: :error

  def event_name(parts) do
    {:ok, [:snakepit, :python | Enum.map(parts, &String.to_existing_atom/1)]}
  rescue
    ArgumentError -> :error
  end

  @typedoc """
  A worker's event control: `{:toggle, enabled}`, `{:sampling, rate,
  patterns}` (each event whose name matches one of the glob `patterns`, or
  any event when there are none, is kept with probability `rate`), or
  `{:filter, allow: patterns, deny: patterns}`. Names are dotted, as the
  BEAM event after `:snakepit`: `"python.tool.execution.start"`.
  """
  @type control ::
          {:toggle, boolean()}
          | {:sampling, number(), [String.t()]}
          | {:filter, keyword()}

  @doc """
  Applies `control` to the events of worker `worker_id` from now on.
  Raises `ArgumentError` for a malformed control (a rate outside 0..1,
  patterns that are not strings).
  """
  @spec control(String.t(), control()) :: :ok
  def control(worker_id, control) when is_binary(worker_id) do
    GenServer.call(__MODULE__, {:control, worker_id, compile_control!(control)})
  end

  defp compile_control!({:toggle, enabled}) when is_boolean(enabled), do: {:toggle, enabled}

  defp compile_control!({:sampling, rate, patterns})
       when is_number(rate) and rate >= 0 and rate <= 1,
       do: {:sampling, rate, globs!(patterns)}

  defp compile_control!({:filter, opts}) when is_list(opts) do
    {:filter, Keyword.get(opts, :allow) && globs!(Keyword.get(opts, :allow)),
     globs!(Keyword.get(opts, :deny, []))}
  end

  defp compile_control!(other) do
    raise ArgumentError,
          "telemetry control must be {:toggle, boolean}, {:sampling, rate in 0..1, patterns} " <>
            "or {:filter, allow: patterns, deny: patterns}, got: #{inspect(other)}"
  end

  # "python.call.*" -> ~r/^python\.call\..*$/
  defp globs!(patterns) when is_list(patterns) do
    Enum.map(patterns, fn
      pattern when is_binary(pattern) or is_atom(pattern) ->
        source =
          pattern |> to_string() |> String.split("*") |> Enum.map_join(".*", &Regex.escape/1)

        Regex.compile!("^" <> source <> "$")

      other ->
        raise ArgumentError, "telemetry event patterns must be strings, got: #{inspect(other)}"
    end)
  end

  defp globs!(other),
    do: raise(ArgumentError, "telemetry event patterns must be a list, got: #{inspect(other)}")

  @impl GenServer
  def init(:ok), do: {:ok, %{dropped: %{}, controls: %{}}}

  @impl GenServer
  # An enabling toggle clears the worker's control, so no entry is kept for
  # workers that are back to the default.
  def handle_call({:control, worker_id, {:toggle, true}}, _from, state),
    do: {:reply, :ok, %{state | controls: Map.delete(state.controls, worker_id)}}

  def handle_call({:control, worker_id, control}, _from, state),
    do: {:reply, :ok, put_in(state.controls[worker_id], control)}

  @impl GenServer
  def handle_info(
        {:snakepit_python_telemetry, id, worker_id, pool_name, python_pid, dropped, events},
        state
      ) do
    context = %{
      node: node(),
      worker_id: worker_id,
      pool_name: pool_atom(pool_name),
      python_pid: python_pid
    }

    control = Map.get(state.controls, worker_id)
    Enum.each(events, &emit(&1, context, control))
    state = note_dropped(state, context, dropped)
    Native.elixir_tool_reply(id, {:ok, nil})
    {:noreply, state}
  end

  defp emit(event, context, nil), do: emit(event, context)

  defp emit({parts, _, _, _, _} = event, context, control) do
    if kept?(control, dotted(parts)), do: emit(event, context)
  end

  defp emit({parts, measurements, metadata, timestamp_ns, correlation_id}, context) do
    case event_name(parts) do
      {:ok, event} ->
        metadata =
          metadata
          |> Map.new(fn {key, value} -> {Map.get(@metadata_lookup, key, key), value} end)
          |> Map.merge(context)
          |> Map.merge(%{
            correlation_id: if(correlation_id == "", do: nil, else: correlation_id),
            timestamp_ns: timestamp_ns
          })

        measurements =
          Map.new(measurements, fn {key, value} ->
            {Map.get(@measurement_lookup, key, key), value}
          end)

        Snakepit.Telemetry.execute(event, measurements, metadata)

      :error ->
        Logger.debug(
          "Python telemetry event #{Enum.join(parts, ".")} skipped: no handler-known atom for one of its parts"
        )
    end
  end

  defp dotted(["python" | parts]), do: dotted(parts)
  defp dotted(parts), do: Enum.join(["python" | parts], ".")

  defp kept?({:toggle, enabled}, _name), do: enabled

  defp kept?({:sampling, rate, globs}, name),
    do: not (globs == [] or any_match?(globs, name)) or :rand.uniform() < rate

  defp kept?({:filter, allow, deny}, name),
    do: (allow == nil or any_match?(allow, name)) and not any_match?(deny, name)

  defp any_match?(globs, name), do: Enum.any?(globs, &Regex.match?(&1, name))

  defp note_dropped(state, _context, 0), do: state

  defp note_dropped(state, context, count) do
    Snakepit.Telemetry.execute(
      [:snakepit, :python, :telemetry, :dropped],
      %{count: count},
      context
    )

    now = System.monotonic_time(:millisecond)
    key = context.worker_id
    # Entries of workers with nothing left to report are forgotten, so
    # replaced workers do not accumulate here.
    dropped =
      Map.reject(state.dropped, fn {_, {n, t}} -> n == 0 and now - t >= @warn_interval_ms end)

    state = %{state | dropped: dropped}
    {pending, last} = Map.get(dropped, key, {0, nil})
    pending = pending + count

    if last == nil or now - last >= @warn_interval_ms do
      Logger.warning(
        "Python worker #{key} (pool #{inspect(context.pool_name)}) dropped #{pending} telemetry " <>
          "events: its buffer was full (a tool emits faster than they are handled)"
      )

      put_in(state.dropped[key], {0, now})
    else
      put_in(state.dropped[key], {pending, last})
    end
  end

  defp pool_atom(name) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> name
  end
end
