defmodule Snakepit.Cluster.Loads do
  @moduledoc false
  # Owns the ETS table routers read without a process hop.
  #
  #   {{pool, node}, free, capacity, queued, fingerprint, received_at_ms, agent}
  #       one row per serving node, written by this node's agent of `pool`
  #       (its own figures, and those other nodes push); routers lower `free`
  #       (or raise `queued`) for each call they send, until the next push.
  #   {{:tombstone, pool, session_id}, until_ms}
  #       a session whose home node was lost (strict calls fail on it).
  use GenServer

  @table :snakepit_cluster_loads

  @type row ::
          {{atom(), node()}, non_neg_integer(), non_neg_integer(), non_neg_integer(),
           integer() | nil, integer(), pid()}

  @doc false
  def start_link(_), do: GenServer.start_link(__MODULE__, nil, name: __MODULE__)

  @impl GenServer
  def init(nil) do
    :ets.new(@table, [
      :ordered_set,
      :public,
      :named_table,
      read_concurrency: true,
      write_concurrency: true
    ])

    {:ok, nil}
  end

  @doc "Writes a node's figures, stamped with this node's clock."
  @spec put(
          atom(),
          node(),
          non_neg_integer(),
          non_neg_integer(),
          non_neg_integer(),
          term(),
          pid()
        ) ::
          true
  def put(pool, node, free, capacity, queued, fingerprint, agent) do
    :ets.insert(@table, {{pool, node}, free, capacity, queued, fingerprint, now_ms(), agent})
  end

  @doc "Every serving node's row of `pool` (ordered_set: a range scan of the pool's prefix)."
  @spec rows(atom()) :: [row()]
  def rows(pool) do
    :ets.select(@table, [{{{pool, :_}, :_, :_, :_, :_, :_, :_}, [], [:"$_"]}])
  rescue
    ArgumentError -> []
  end

  @doc "Forgets the rows an agent wrote for itself."
  @spec delete_agent(pid()) :: true
  def delete_agent(agent), do: :ets.match_delete(@table, {:_, :_, :_, :_, :_, :_, agent})

  @doc """
  Forgets `pool`'s rows written for agents not in `agents` (the pool's
  current pg members): rows whose node left while no agent of `pool` ran
  here to see it go.
  """
  @spec retain_agents(atom(), [pid()]) :: :ok
  def retain_agents(pool, agents) do
    for {key, _, _, _, _, _, agent} <- rows(pool),
        agent not in agents,
        do: :ets.delete(@table, key)

    :ok
  end

  @doc "Forgets `pool`'s row of `node`."
  @spec delete(atom(), node()) :: true
  def delete(pool, node), do: :ets.delete(@table, {pool, node})

  @doc "A call just went to `node`: one free slot fewer until its next push."
  @spec took_slot(atom(), node()) :: :ok
  def took_slot(pool, node), do: bump(pool, node, {2, -1, 0, 0})

  @doc "A call just went to `node`'s queue: one more queued until its next push."
  @spec queued_one(atom(), node()) :: :ok
  def queued_one(pool, node), do: bump(pool, node, {4, 1})

  defp bump(pool, node, op) do
    :ets.update_counter(@table, {pool, node}, op)
    :ok
  rescue
    # The row went away (the node left) between the read and this update.
    ArgumentError -> :ok
  end

  @doc "Marks session `session_id` of `pool` as having lost its home for `ttl_ms`."
  @spec tombstone(atom(), String.t(), non_neg_integer()) :: true
  def tombstone(pool, session_id, ttl_ms),
    do: :ets.insert(@table, {{:tombstone, pool, session_id}, now_ms() + ttl_ms})

  @doc "Clears the tombstone of a session that has a home again."
  @spec clear_tombstone(atom(), String.t()) :: true
  def clear_tombstone(pool, session_id), do: :ets.delete(@table, {:tombstone, pool, session_id})

  @doc "Whether the session's home was lost (and no new home was taken since)."
  @spec tombstoned?(atom(), String.t()) :: boolean()
  def tombstoned?(pool, session_id) do
    case :ets.lookup(@table, {:tombstone, pool, session_id}) do
      [{_, until}] -> until > now_ms()
      [] -> false
    end
  rescue
    ArgumentError -> false
  end

  @doc false
  def now_ms, do: System.monotonic_time(:millisecond)
end
