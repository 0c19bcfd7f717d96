defmodule Snakepit.Status do
  @moduledoc """
  A snapshot of every running pool, as `mix snakepit.status` prints it.

  It runs where the pools run: `mix snakepit.status --node NAME` calls
  `pools/0` on that node over Erlang distribution.
  """

  alias Snakepit.Pool

  @type pool_status :: %{
          name: atom(),
          profile: atom(),
          workers: non_neg_integer(),
          ready: non_neg_integer(),
          pool_size: pos_integer(),
          capacity: non_neg_integer(),
          in_flight: non_neg_integer(),
          queued: non_neg_integer(),
          requests: non_neg_integer(),
          errors: non_neg_integer(),
          recycles: non_neg_integer(),
          restarts: non_neg_integer(),
          python: String.t(),
          python_reason: String.t(),
          adapter: String.t(),
          start_error: String.t() | nil
        }

  @doc "One map per running pool, in start order."
  @spec pools() :: [pool_status()]
  def pools do
    Enum.flat_map(Pool.names(), fn name ->
      with {:ok, info} <- Pool.info(name),
           {:ok, stats} <- Pool.stats(name),
           {:ok, workers} <- Pool.workers(name) do
        [snapshot(name, info, stats, workers)]
      else
        # Stopped between listing and asking.
        {:error, _} -> []
      end
    end)
  end

  defp snapshot(name, info, stats, workers) do
    %{
      name: name,
      profile: info.config.worker_profile,
      workers: length(workers),
      ready: stats.ready,
      pool_size: info.config.pool_size,
      capacity: for(w <- workers, w.state == :ready, do: w.capacity) |> Enum.sum(),
      in_flight: workers |> Enum.map(& &1.inflight) |> Enum.sum(),
      queued: stats.queued,
      requests: stats.requests,
      errors: stats.errors,
      recycles: stats.recycles,
      restarts: stats.worker_restarts,
      python: info.python.path,
      python_reason: info.python.reason,
      adapter: info.config.adapter,
      start_error: info.start_error && Exception.message(info.start_error)
    }
  end
end
