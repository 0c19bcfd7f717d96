defmodule :telemetry do
  @moduledoc """
  Recording stand-in for the `:telemetry` library, which cannot be installed
  here (no hex). It has the real `execute/3` signature; every event goes to
  the processes that called `attach_recorder/0`, as
  `{:telemetry_event, event, measurements, metadata}`.
  """

  @key {__MODULE__, :recorders}

  @doc "Sends future events to the calling process."
  @spec attach_recorder() :: :ok
  def attach_recorder do
    :persistent_term.put(@key, [self() | :persistent_term.get(@key, [])])
  end

  @doc "Stops sending events to the calling process."
  @spec detach_recorder() :: :ok
  def detach_recorder do
    :persistent_term.put(@key, List.delete(:persistent_term.get(@key, []), self()))
  end

  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    for pid <- :persistent_term.get(@key, []),
        do: send(pid, {:telemetry_event, event, measurements, metadata})

    :ok
  end
end
