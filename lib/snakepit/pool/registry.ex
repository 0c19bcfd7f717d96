defmodule Snakepit.Pool.Registry do
  @moduledoc """
  Upstream's worker registry, for the queries apps make of it. Workers here
  are native (no Elixir process per worker), so there are no pids or
  registry entries to look up: these read the pools' worker lists.
  """

  @doc "Ids of every worker of every running pool."
  @spec list_workers() :: [String.t()]
  def list_workers, do: Snakepit.list_workers()

  @doc "How many workers the running pools have (starting ones included)."
  @spec worker_count() :: non_neg_integer()
  def worker_count, do: length(list_workers())

  @doc "Whether a worker with this id belongs to a running pool."
  @spec worker_exists?(String.t()) :: boolean()
  def worker_exists?(worker_id) when is_binary(worker_id), do: worker_id in list_workers()
end
