defmodule Snakepit.Telemetry do
  @moduledoc """
  Emits Snakepit's telemetry events through `:telemetry.execute/3` when the
  host application has `:telemetry` loaded (as any Phoenix app does), and
  does nothing otherwise. Snakepit itself does not depend on `:telemetry`.
  """

  @doc "Emits `event` if `:telemetry` is loaded."
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    if function_exported?(:telemetry, :execute, 3) do
      apply(:telemetry, :execute, [event, measurements, metadata])
    end

    :ok
  end
end
