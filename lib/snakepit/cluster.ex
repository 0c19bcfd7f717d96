defmodule Snakepit.Cluster do
  @moduledoc """
  Pools across BEAM nodes: one `Snakepit.execute/3` served by the workers of
  every connected node that runs the pool with `scope: :cluster`.

      # GPU nodes
      pools: [%{name: :ml, scope: :cluster, pool_size: 4, adapter_args: [...]}]
      # web nodes: the same pool name, no Python here, route only
      pools: [%{name: :ml, scope: :cluster, pool_size: 0}]

  Erlang distribution is the engine: which nodes connect is the
  application's business (`Node.connect/1`, libcluster, ...); membership is
  OTP's `:pg` (scope `#{inspect(:snakepit_cluster)}`); a lost node is seen
  by its lost connection. Each node publishes its pool's free slots,
  capacity and queue about every 100 ms (and at once when it saturates or
  frees up); a node enters routing when its pool has a ready worker, and
  only nodes whose adapter setup matches (a fingerprint of `adapter_args`,
  `worker_profile` and Snakepit's version, not of sizes: nodes may have
  different numbers of slots) route to each other.

  A call goes to a free local slot first; else by the power of two choices
  to one of the remote nodes with free slots; else to the shortest queue
  relative to capacity. A session has one home node (a rendezvous hash over
  the serving nodes, then pinned in `:pg` so that nodes joining move no
  session). Options of `Snakepit.execute/3` for clustered pools:

    * `node: :any | :local | node()` - where the call may run (default `:any`)
    * `idempotent: true` - a call whose node was lost while it ran is run
      once more on another node (default: it gets `{:error,
      %Snakepit.Error{category: :worker, details: %{reason: :node_down,
      node: node}}}`); a call that never started there is always re-routed

  Tuning (all optional), `config :snakepit, cluster: [...]`:

    * `:load_interval_ms` - period of the load push (100)
    * `:stale_after_ms` - older figures count as unknown, their node is
      ranked after fresh ones (1_000)
    * `:remote_payload_limit` - arguments larger than this (bytes, external
      term format) stay on this node when it has workers (8_000_000)

  Distribution means full trust between nodes; see the README's "Cluster"
  section for TLS distribution.
  """

  alias Snakepit.Cluster.{Agent, Loads}

  @scope :snakepit_cluster
  @defaults [load_interval_ms: 100, stale_after_ms: 1_000, remote_payload_limit: 8_000_000]

  @type node_load :: %{
          node: node(),
          free: non_neg_integer(),
          capacity: non_neg_integer(),
          queued: non_neg_integer(),
          age_ms: non_neg_integer()
        }

  @doc false
  def scope, do: @scope

  @doc false
  # Validated `:cluster` settings, read once at start (the hot path reads
  # them from :persistent_term).
  @spec settings!() :: %{atom() => pos_integer()}
  def settings! do
    given = Application.get_env(:snakepit, :cluster, [])

    unless Keyword.keyword?(given),
      do:
        raise(
          ArgumentError,
          "invalid value for :cluster: #{inspect(given)} (expected a keyword list)"
        )

    Enum.each(given, fn {key, value} ->
      cond do
        not Keyword.has_key?(@defaults, key) ->
          raise ArgumentError,
                "unknown key #{inspect(key)} in the :cluster config (known: " <>
                  "#{Enum.map_join(Keyword.keys(@defaults), ", ", &inspect/1)})"

        not (is_integer(value) and value > 0) ->
          raise ArgumentError,
                "invalid value for #{inspect(key)} in the :cluster config: #{inspect(value)} " <>
                  "(expected a positive integer)"

        true ->
          :ok
      end
    end)

    @defaults |> Keyword.merge(given) |> Map.new()
  end

  @doc false
  def settings, do: :persistent_term.get({__MODULE__, :settings}, Map.new(@defaults))

  @doc """
  The nodes serving `pool` as this node sees them: per node its free slots,
  capacity and queue, and the age of those figures in ms. Nodes whose
  adapter setup differs from this node's are left out.
  """
  @spec nodes(atom()) :: [node_load()]
  def nodes(pool) when is_atom(pool) do
    now = Loads.now_ms()

    pool
    |> Loads.rows()
    |> Snakepit.Cluster.Router.compatible(pool)
    |> Enum.map(fn {{_pool, node}, free, capacity, queued, _fp, at, _agent} ->
      %{node: node, free: free, capacity: capacity, queued: queued, age_ms: max(now - at, 0)}
    end)
  end

  @doc """
  `Snakepit.get_stats/1` of `pool` on every node that serves it, as `%{node
  => stats}` (a node that did not answer within `timeout` ms is left out).
  """
  @spec stats(atom(), timeout()) :: %{node() => map()}
  def stats(pool, timeout \\ 5_000) when is_atom(pool) do
    targets = Enum.map(nodes(pool), & &1.node)

    targets
    |> :erpc.multicall(Snakepit, :get_stats, [pool], timeout)
    |> Enum.zip(targets)
    |> Enum.flat_map(fn
      {{:ok, stats}, node} -> [{node, stats}]
      {_failed, _node} -> []
    end)
    |> Map.new()
  end

  @doc """
  Waits until at least `count` nodes serve `pool` (as `nodes/1` sees them).
  Returns `:ok`, or `{:error, :timeout}` after `timeout` ms.
  """
  @spec await_nodes(atom(), pos_integer(), timeout()) :: :ok | {:error, :timeout}
  def await_nodes(pool, count, timeout \\ 15_000) when is_atom(pool) and count > 0 do
    deadline = if timeout == :infinity, do: :infinity, else: Loads.now_ms() + timeout
    await_nodes_until(pool, count, deadline)
  end

  defp await_nodes_until(pool, count, deadline) do
    cond do
      length(nodes(pool)) >= count ->
        :ok

      deadline != :infinity and Loads.now_ms() >= deadline ->
        {:error, :timeout}

      true ->
        Process.sleep(10)
        await_nodes_until(pool, count, deadline)
    end
  end

  @doc """
  Takes this node out of `pool`'s routing (no other node sends it calls, and
  its own calls go to other nodes), then waits up to `timeout` ms for the
  calls running here to finish: for rolling deploys. Returns `:ok`, or
  `{:error, :timeout}` when calls still ran at the deadline.
  """
  @spec drain(atom(), timeout()) :: :ok | {:error, :timeout | :not_clustered}
  def drain(pool, timeout \\ 30_000) when is_atom(pool) do
    Agent.drain(pool)
    deadline = Loads.now_ms() + timeout
    await_idle(pool, deadline)
  catch
    :exit, {:noproc, _} -> {:error, :not_clustered}
  end

  defp await_idle(pool, deadline) do
    idle? =
      case Snakepit.Pool.lookup(pool) do
        {:ok, handle} ->
          {free, capacity, queued} = Snakepit.Native.load(handle)
          free == capacity and queued == 0

        {:error, _} ->
          true
      end

    cond do
      idle? -> :ok
      Loads.now_ms() >= deadline -> {:error, :timeout}
      true -> Process.sleep(10) && await_idle(pool, deadline)
    end
  end
end
