defmodule Snakepit.Telemetry.Calls do
  @moduledoc false
  # The per-call events (see Snakepit.Telemetry). `started/1` decides once
  # per call whether anything listens; with nobody listening a call carries
  # `span: nil` and every later step is a function-head match.

  alias Snakepit.Telemetry

  @doc """
  Emits the start events if a handler was attached when the call was made
  (`call.telemetry`, from `Snakepit.Telemetry.active?/0`); returns the call
  with its span.
  """
  @spec started(map()) :: map()
  def started(%{telemetry: true} = call), do: %{call | span: start(call)}
  def started(call), do: call

  @doc "A new correlation id for a call that has none."
  @spec new_correlation_id() :: String.t()
  def new_correlation_id,
    do: "snakepit-" <> Integer.to_string(System.unique_integer([:positive]))

  defp start(call) do
    kind = if call.session_id, do: :execute_session, else: :execute

    metadata = %{
      operation: kind,
      command: call.command,
      pool: call.pool_name,
      worker_id: nil,
      session_id: call.session_id,
      correlation_id: call.correlation_id,
      timeout_ms: call.timeout,
      span_kind: :client,
      rpc_system: :grpc,
      telemetry_source: :snakepit_grpc_worker,
      telemetry_span_context: make_ref()
    }

    unless call.stream do
      Telemetry.execute(
        [:snakepit, :grpc_worker, kind, :start],
        %{system_time: System.system_time(), monotonic_time: call.started},
        metadata
      )
    end

    Telemetry.execute(
      [:snakepit, :pool, :call, :dispatched],
      %{system_time: System.system_time()},
      %{pool: call.pool_name, worker_id: nil, command: call.command, queued: nil}
    )

    %{kind: kind, metadata: metadata}
  end

  @doc "Emits the stop events of a finished call."
  @spec finished(map(), {:ok, term()} | {:error, term()}, String.t()) :: :ok
  def finished(%{span: nil}, _result, _worker_id), do: :ok

  def finished(%{span: span} = call, result, worker_id) do
    now = System.monotonic_time()
    duration = now - call.started
    worker_id = if worker_id == "", do: nil, else: worker_id
    success = match?({:ok, _}, result)

    unless call.stream do
      measurements = %{
        duration: duration,
        monotonic_time: now,
        duration_ms: System.convert_time_unit(duration, :native, :millisecond),
        executions: 1
      }

      {measurements, status} =
        if success,
          do: {measurements, %{status: :ok}},
          else: {Map.put(measurements, :errors, 1), %{status: :error, error: elem(result, 1)}}

      Telemetry.execute(
        [:snakepit, :grpc_worker, span.kind, :stop],
        measurements,
        span.metadata |> Map.put(:worker_id, worker_id) |> Map.merge(status)
      )
    end

    Telemetry.execute(
      [:snakepit, :request, :executed],
      %{duration_us: System.convert_time_unit(duration, :native, :microsecond)},
      with_correlation(
        %{
          pool: call.pool_name,
          worker_id: worker_id,
          command: call.command,
          success: success,
          streaming: call.stream
        },
        call.correlation_id
      )
    )
  end

  @doc "Emits the exception event of a call that raised, then re-raises."
  @spec raised(map(), :error | :exit | :throw, term(), Exception.stacktrace()) :: no_return()
  def raised(%{span: %{} = span, stream: false} = call, kind, reason, stacktrace) do
    now = System.monotonic_time()

    Telemetry.execute(
      [:snakepit, :grpc_worker, span.kind, :exception],
      %{duration: now - call.started, monotonic_time: now},
      Map.merge(span.metadata, %{kind: kind, reason: reason, stacktrace: stacktrace})
    )

    :erlang.raise(kind, reason, stacktrace)
  end

  def raised(_call, kind, reason, stacktrace), do: :erlang.raise(kind, reason, stacktrace)

  defp with_correlation(metadata, nil), do: metadata
  defp with_correlation(metadata, id), do: Map.put(metadata, :correlation_id, id)
end
