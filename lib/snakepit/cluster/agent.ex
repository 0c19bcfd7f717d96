defmodule Snakepit.Cluster.Agent do
  @moduledoc false
  # One per clustered pool on each node, linked to its Snakepit.Pool.
  #
  # * Membership: joins pg group {:listeners, 1, pool} at once (it receives
  #   load figures), and {:servers, 1, pool} only while the local pool has a
  #   ready worker and is not drained: a node joins routing when it can serve.
  # * Load: checks the local figures (Native.load, one NIF call) every
  #   @check_ms and pushes them to every remote listener every
  #   load_interval_ms (+-25 % jitter), and at once when the pool saturates or
  #   gets a free slot again. Sends use [:noconnect, :nosuspend]: soft state,
  #   the next push repairs a dropped one.
  # * Receives the other nodes' pushes into Snakepit.Cluster.Loads; a pg leave
  #   (agent gone, drained, node disconnected) removes a node's row at once.
  # * Sessions: joins {:session, 1, pool, id} for sessions served here (their
  #   home), leaves after session_ttl_ms idle; a home lost with its node
  #   leaves a tombstone.
  use GenServer

  alias Snakepit.{Cluster, Native, Pool}
  alias Snakepit.Cluster.Loads

  @check_ms 10
  @vsn Mix.Project.config()[:version]

  @doc false
  def start_link(config), do: GenServer.start_link(__MODULE__, config, name: name(config.name))

  @doc false
  def name(pool), do: :"Elixir.Snakepit.Cluster.Agent.#{pool}"

  @doc false
  def stop(agent) do
    GenServer.stop(agent, :normal, 5_000)
  catch
    :exit, _ -> :ok
  end

  @doc "Leaves routing for good (until the pool restarts)."
  def drain(pool), do: GenServer.call(name(pool), :drain)

  @doc "Records that this node served session `session_id` of `pool` (its home)."
  def served_session(_pool, nil), do: :ok

  def served_session(pool, session_id) do
    case Process.whereis(name(pool)) do
      nil -> :ok
      agent -> send(agent, {:served_session, session_id})
    end
  end

  @doc """
  What keeps nodes with a different adapter setup apart (`nil` on a
  route-only node). Sizes (workers, threads per worker) are left out: a
  bigger node is the same service with more slots, and routing weighs
  slots by the capacity each node publishes.
  """
  @spec fingerprint(map()) :: integer() | nil
  def fingerprint(%{pool_size: 0}), do: nil
  def fingerprint(config), do: :erlang.phash2({config.adapter_args, config.worker_profile, @vsn})

  @impl GenServer
  def init(config) do
    scope = Cluster.scope()
    pool = config.name
    # Read by routers; written once per pool start.
    :persistent_term.put({Snakepit.Cluster, :fingerprint, pool}, fingerprint(config))
    :ok = :pg.join(scope, {:listeners, 1, pool}, self())
    {ref, _groups} = :pg.monitor_scope(scope)
    # Rows left by an earlier agent of this pool: a node that left while no
    # agent ran here sent no leave to anyone (monitoring first, so a leave
    # from now on is seen).
    Loads.retain_agents(pool, :pg.get_members(scope, {:servers, 1, pool}))
    settings = Cluster.settings()

    state = %{
      pool: pool,
      scope: scope,
      ref: ref,
      serves: config.pool_size > 0,
      fingerprint: fingerprint(config),
      interval: settings.load_interval_ms,
      session_ttl: config.session_ttl_ms,
      joined: false,
      drained: false,
      saturated: nil,
      next_push: 0,
      sessions: %{}
    }

    send(self(), :check)
    :timer.send_interval(1_000, :sweep_sessions)
    {:ok, state}
  end

  @impl GenServer
  def handle_call(:drain, _from, state) do
    {:reply, :ok, leave(%{state | drained: true})}
  end

  @impl GenServer
  def handle_info(:check, state) do
    Process.send_after(self(), :check, @check_ms)
    {:noreply, check(state)}
  end

  def handle_info({:snakepit_load, pool, node, free, capacity, queued, fingerprint, agent}, state)
      when pool == state.pool do
    # A push that crossed the sender's leave must not bring its row back.
    if agent in :pg.get_members(state.scope, {:servers, 1, pool}),
      do: Loads.put(pool, node, free, capacity, queued, fingerprint, agent)

    {:noreply, state}
  end

  def handle_info({ref, :leave, group, agents}, %{ref: ref} = state) do
    case group do
      {:servers, 1, pool} when pool == state.pool ->
        Enum.each(agents, &Loads.delete_agent/1)

      {:session, 1, pool, session_id} when pool == state.pool ->
        # Gone with its node (not idle, not drained): the session lost its home.
        if Enum.any?(agents, &(node(&1) not in Node.list())),
          do: Loads.tombstone(pool, session_id, state.session_ttl)

      _ ->
        :ok
    end

    {:noreply, state}
  end

  def handle_info({ref, :join, group, agents}, %{ref: ref} = state) do
    case group do
      # A node that just started routing this pool gets our figures now.
      {:listeners, 1, pool} when pool == state.pool and state.joined ->
        state = push(state, Enum.reject(agents, &(node(&1) == node())))
        {:noreply, state}

      {:session, 1, pool, session_id} when pool == state.pool ->
        Loads.clear_tombstone(pool, session_id)
        {:noreply, state}

      _ ->
        {:noreply, state}
    end
  end

  def handle_info({:served_session, session_id}, state) do
    unless Map.has_key?(state.sessions, session_id),
      do: :pg.join(state.scope, {:session, 1, state.pool, session_id}, self())

    {:noreply, put_in(state.sessions[session_id], Loads.now_ms())}
  end

  def handle_info(:sweep_sessions, state) do
    idle_since = Loads.now_ms() - state.session_ttl

    {idle, live} = Enum.split_with(state.sessions, fn {_id, at} -> at < idle_since end)

    for {session_id, _} <- idle,
        do: :pg.leave(state.scope, {:session, 1, state.pool, session_id}, self())

    {:noreply, %{state | sessions: Map.new(live)}}
  end

  def handle_info(_other, state), do: {:noreply, state}

  @impl GenServer
  def terminate(_reason, state) do
    leave(state)
    :ok
  end

  defp check(%{serves: false} = state), do: state
  defp check(%{drained: true} = state), do: state

  defp check(state) do
    case local_load(state.pool) do
      {free, capacity, queued} when capacity > 0 ->
        state = if state.joined, do: state, else: join(state)
        saturated = free == 0

        if saturated != state.saturated or Loads.now_ms() >= state.next_push,
          do: publish(%{state | saturated: saturated}, free, capacity, queued),
          else: state

      _no_ready_worker ->
        leave(state)
    end
  end

  defp local_load(pool) do
    case Pool.lookup(pool) do
      {:ok, handle} -> Native.load(handle)
      {:error, _} -> nil
    end
  end

  defp join(state) do
    :ok = :pg.join(state.scope, {:servers, 1, state.pool}, self())
    %{state | joined: true, next_push: 0}
  end

  defp leave(%{joined: false} = state), do: state

  defp leave(state) do
    :pg.leave(state.scope, {:servers, 1, state.pool}, self())
    Loads.delete(state.pool, node())
    %{state | joined: false, saturated: nil}
  end

  defp publish(state, free, capacity, queued) do
    Loads.put(state.pool, node(), free, capacity, queued, state.fingerprint, self())
    listeners = :pg.get_members(state.scope, {:listeners, 1, state.pool})
    push(state, Enum.reject(listeners, &(node(&1) == node())), {free, capacity, queued})
  end

  defp push(state, listeners, load \\ nil) do
    {free, capacity, queued} = load || local_load(state.pool) || {0, 0, 0}

    message =
      {:snakepit_load, state.pool, node(), free, capacity, queued, state.fingerprint, self()}

    Enum.each(listeners, &:erlang.send(&1, message, [:noconnect, :nosuspend]))
    jitter = div(state.interval, 4)

    %{
      state
      | next_push: Loads.now_ms() + state.interval - jitter + :rand.uniform(2 * jitter + 1) - 1
    }
  end
end
