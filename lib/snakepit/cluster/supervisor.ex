defmodule Snakepit.Cluster.Supervisor do
  @moduledoc false
  # The cluster layer's node-wide parts: Snakepit's own pg scope and the load
  # table. Started before the pools; each clustered pool links its own
  # Snakepit.Cluster.Agent (so a pool leaves routing before it stops).
  use Supervisor

  @doc false
  def start_link(_), do: Supervisor.start_link(__MODULE__, nil, name: __MODULE__)

  @impl Supervisor
  def init(nil) do
    :persistent_term.put({Snakepit.Cluster, :settings}, Snakepit.Cluster.settings!())

    children = [
      %{id: :pg, start: {:pg, :start_link, [Snakepit.Cluster.scope()]}},
      Snakepit.Cluster.Loads
    ]

    Supervisor.init(children, strategy: :one_for_all)
  end
end
