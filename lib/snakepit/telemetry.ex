defmodule Snakepit.Telemetry do
  @moduledoc """
  Snakepit's telemetry, emitted through `:telemetry.execute/3` when the host
  application has `:telemetry` (as any Phoenix app does), and not at all
  otherwise: Snakepit itself does not depend on `:telemetry`.

  Per call (`Snakepit.execute/3` and friends), only while at least one
  `:telemetry` handler is attached (one check per call, see `active?/0`):

    * `[:snakepit, :grpc_worker, :execute, :start | :stop | :exception]`
      (`:execute_session` for calls in a session), as `:telemetry.span/3`
      emits them: start `%{system_time, monotonic_time}`; stop `%{duration,
      monotonic_time, duration_ms, executions: 1}` plus `errors: 1` on
      failure, metadata with `worker_id`, `status` (`:ok | :error`) and
      `error`; exception `%{duration, monotonic_time}` with `kind`, `reason`,
      `stacktrace`. Metadata: `operation, command, pool, worker_id,
      session_id, correlation_id, timeout_ms, span_kind, rpc_system,
      telemetry_source, telemetry_span_context`. `worker_id` is `nil` in the
      start event: the worker is known when the reply comes.
    * `[:snakepit, :pool, :call, :dispatched]` `%{system_time}` /
      `%{pool, worker_id, command, queued}` when the pool has taken the call
      (`worker_id` and `queued` are `nil`: the native scheduler decides).
    * `[:snakepit, :request, :executed]` `%{duration_us}` /
      `%{pool, worker_id, command, success, streaming}`.

  Pool and worker events are listed by `events/0`.
  """

  # Where :telemetry keeps its handlers. Its size is the one check per call:
  # it does not exist without :telemetry and is empty with no handler.
  @handler_table :telemetry_handler_table

  @doc "Emits `event` if `:telemetry` is loaded."
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if function_exported?(:telemetry, :execute, 3) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end

  @doc """
  Whether any `:telemetry` handler is attached at all: `:telemetry` is
  loaded (a few ns to check) and its handler table is not empty (one ETS
  size read; no table means `:telemetry` is not running). Checked once per
  call, instead of one handler lookup per event.
  """
  @spec active?() :: boolean()
  def active? do
    function_exported?(:telemetry, :execute, 3) and
      case :ets.info(@handler_table, :size) do
        size when is_integer(size) -> size > 0
        :undefined -> false
      end
  end

  @doc "Every event Snakepit emits."
  @spec events() :: [[atom()]]
  def events do
    call_events() ++
      pool_events() ++
      worker_events() ++
      session_events() ++
      fault_events() ++
      error_events() ++
      cluster_events()
  end

  defp call_events do
    for kind <- [:execute, :execute_session], phase <- [:start, :stop, :exception] do
      [:snakepit, :grpc_worker, kind, phase]
    end ++ [[:snakepit, :pool, :call, :dispatched], [:snakepit, :request, :executed]]
  end

  defp pool_events do
    [
      [:snakepit, :pool, :init_started],
      [:snakepit, :pool, :init_complete],
      [:snakepit, :pool, :worker_ready],
      [:snakepit, :pool, :worker, :spawned],
      [:snakepit, :pool, :worker, :terminated],
      [:snakepit, :pool, :saturated],
      [:snakepit, :pool, :capacity_reached]
    ]
  end

  defp worker_events do
    [
      [:snakepit, :worker, :recycled],
      [:snakepit, :worker, :crash],
      [:snakepit, :worker, :hung],
      [:snakepit, :heartbeat, :heartbeat_timeout]
    ]
  end

  defp session_events do
    [
      [:snakepit, :session_store, :session, :created],
      [:snakepit, :session_store, :session, :deleted],
      [:snakepit, :session_store, :session, :expired]
    ]
  end

  defp fault_events do
    [
      [:snakepit, :circuit_breaker, :opened],
      [:snakepit, :circuit_breaker, :half_open],
      [:snakepit, :circuit_breaker, :closed],
      [:snakepit, :retry, :attempt],
      [:snakepit, :retry, :success],
      [:snakepit, :retry, :exhausted]
    ]
  end

  defp error_events do
    [
      [:snakepit, :python, :exception, :mapped],
      [:snakepit, :python, :exception, :unmapped],
      [:snakepit, :python, :telemetry, :dropped],
      [:snakepit, :error, :shape_mismatch],
      [:snakepit, :error, :device],
      [:snakepit, :error, :oom]
    ]
  end

  # scope: :cluster pools (Snakepit.Cluster.Router).
  defp cluster_events do
    for event <- [:route, :reroute, :retry, :node_down], do: [:snakepit, :cluster, event]
  end
end
