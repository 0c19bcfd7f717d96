defmodule Snakepit.Pool.Supervisor do
  @moduledoc """
  Supervises the pools the application starts, one `Snakepit.Pool`
  process each, and is registered as `Snakepit.Pool`: upstream Snakepit
  code checks `Process.whereis(Snakepit.Pool)` and passes `Snakepit.Pool` to
  the pool API (`Snakepit.Pool.await_ready(Snakepit.Pool, 30_000)`), which
  here means every pool.

  It is never on the request path: calls reach the NIF directly.
  """
  use Supervisor

  @doc "Starts the pools described by `pools` (normalised configs, see `Snakepit.Config.pools/1`)."
  @spec start_link([Snakepit.Config.pool_config()]) :: Supervisor.on_start()
  def start_link(pools) when is_list(pools) do
    Supervisor.start_link(__MODULE__, pools, name: Snakepit.Pool)
  end

  @doc "Names of the pools it supervises, in start order."
  @spec pool_names() :: [atom()]
  def pool_names do
    case Process.whereis(Snakepit.Pool) do
      nil ->
        []

      _pid ->
        # which_children lists the last started first.
        for {{Snakepit.Pool, name}, _pid, _type, _modules} <-
              Enum.reverse(Supervisor.which_children(Snakepit.Pool)),
            do: name
    end
  end

  @impl Supervisor
  def init(pools) do
    pools
    |> Enum.map(&{Snakepit.Pool, &1})
    |> Supervisor.init(strategy: :one_for_one)
  end
end
