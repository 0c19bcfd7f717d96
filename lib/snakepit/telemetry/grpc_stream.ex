defmodule Snakepit.Telemetry.GrpcStream do
  @moduledoc """
  Upstream Snakepit's runtime control of a worker's Python telemetry.

  Upstream sends these settings to the worker over a telemetry stream;
  here Python telemetry arrives in batches at
  `Snakepit.Bridge.PythonTelemetry`, which applies them to the worker's
  events before any handler sees them (the worker keeps sending). Worker
  ids are those of `Snakepit.list_workers/1`; a worker's setting lasts
  until it is changed (`toggle(id, true)` restores the default).
  """

  alias Snakepit.Bridge.PythonTelemetry

  @doc """
  Keeps a worker's events with probability `rate` (0.0..1.0): those whose
  dotted name (`"python.tool.execution.start"`) matches one of the glob
  `patterns`, or all of them when `patterns` is empty.
  """
  @spec update_sampling(String.t(), number(), [String.t()]) :: :ok
  def update_sampling(worker_id, rate, patterns \\ []),
    do: PythonTelemetry.control(worker_id, {:sampling, rate, patterns})

  @doc "Turns a worker's events off (`false`) or back on (`true`)."
  @spec toggle(String.t(), boolean()) :: :ok
  def toggle(worker_id, enabled), do: PythonTelemetry.control(worker_id, {:toggle, enabled})

  @doc """
  Keeps only a worker's events matching one of the glob patterns in
  `allow:` (all when absent) and none matching `deny:`.
  """
  @spec update_filter(String.t(), keyword()) :: :ok
  def update_filter(worker_id, opts), do: PythonTelemetry.control(worker_id, {:filter, opts})
end
