defmodule Snakepit.Cluster.Router do
  @moduledoc false
  # Where a call of a clustered pool runs, and the caller's side of a remote
  # call. Reads load figures from Snakepit.Cluster.Loads (ETS, no process
  # hop) and the local pool's exact figures from one NIF call.
  #
  # Remote protocol (one call, caller on node A, executor on node B):
  #   spawn_request(B, Executor, :run, [self(), alias, ...], [:monitor])
  #   {:spawn_reply, req, :error, _}          never started: re-routed
  #   {:snakepit_started, alias}              a worker on B took the call
  #   {:DOWN, req, _, _, {:snakepit_result, r}} the result
  #   {:DOWN, req, _, _, :snakepit_unavailable} never started: re-routed
  #   {:DOWN, req, _, _, :noconnection}       B lost: before :snakepit_started
  #                                           (queued or in transit there)
  #                                           re-routed; after it :node_down,
  #                                           or one retry if idempotent
  # The result rides on the DOWN, so one signal ends the call; a caller
  # that gives up abandons the request and demonitors with :flush, and
  # B's messages go to an alias it removes, so nothing arrives later.

  alias Snakepit.{Error, Native}
  alias Snakepit.Cluster.{Agent, Executor, Loads}

  @reply_margin_ms 2_000
  @no_deadline_ms 10 * 365 * 24 * 3_600_000
  # Chunks granted back at a time, as for a local stream.
  @stream_grant Snakepit.Config.stream_grant()
  # A remote queue counts this much fuller than the same local one.
  @remote_penalty 0.25
  # Re-routes of calls that never started, at most.
  @max_reroutes 3

  @doc false
  def execute({:cluster, pool, local, {affinity, call_timeout, _}}, command, args, opts) do
    with {:ok, ctx} <- context(pool, local, command, args, opts, {affinity, call_timeout}, nil) do
      run(ctx, [], 0)
    end
  end

  @doc false
  def stream(
        {:cluster, pool, local, {affinity, _, stream_timeout}},
        command,
        args,
        callback,
        opts
      ) do
    with {:ok, ctx} <-
           context(pool, local, command, args, opts, {affinity, stream_timeout}, callback) do
      run(ctx, [], 0)
    end
  end

  defp context(pool, local, command, args, opts, {default_affinity, default_timeout}, callback) do
    timeout = Keyword.get(opts, :timeout) || default_timeout
    command = to_string(command)

    with :ok <- check_timeout(timeout, pool, command),
         {:ok, target} <- node_opt(Keyword.get(opts, :node, :any), pool, command),
         {:ok, session_id} <- session_opt(Keyword.get(opts, :session_id)) do
      ms = if timeout == :infinity, do: @no_deadline_ms, else: min(timeout, @no_deadline_ms)

      {:ok,
       %{
         pool: pool,
         local: local,
         command: command,
         args: args,
         opts: Keyword.drop(opts, [:node, :idempotent]),
         target: target,
         idempotent: Keyword.get(opts, :idempotent, false) == true,
         session_id: session_id,
         strict: strict?(Keyword.get(opts, :affinity) || default_affinity),
         spill: false,
         deadline: Loads.now_ms() + ms,
         callback: callback
       }}
    end
  end

  defp check_timeout(:infinity, _pool, _command), do: :ok
  defp check_timeout(ms, _pool, _command) when is_integer(ms) and ms >= 0, do: :ok

  defp check_timeout(other, pool, command),
    do:
      invalid(
        pool,
        command,
        "timeout must be a non-negative integer (ms) or :infinity, got: #{inspect(other)}"
      )

  defp node_opt(target, _pool, _command) when target in [:any, :local], do: {:ok, target}
  defp node_opt(target, _pool, _command) when is_atom(target) and target != nil, do: {:ok, target}

  defp node_opt(other, pool, command),
    do: invalid(pool, command, "node must be :any, :local or a node name, got: #{inspect(other)}")

  defp session_opt(nil), do: {:ok, nil}
  defp session_opt(id) when is_binary(id), do: {:ok, id}
  defp session_opt(id) when is_atom(id) or is_integer(id), do: {:ok, to_string(id)}

  defp session_opt(id) when is_list(id) do
    case :unicode.characters_to_binary(id) do
      text when is_binary(text) -> {:ok, text}
      _ -> {:ok, nil}
    end
  rescue
    ArgumentError -> {:ok, nil}
  end

  # Anything else is refused by the serving side's own option checks.
  defp session_opt(_other), do: {:ok, nil}

  defp strict?(affinity) when is_binary(affinity),
    do: String.downcase(affinity) in ["strict_queue", "strict_fail_fast"]

  defp strict?(affinity), do: affinity in [:strict_queue, :strict_fail_fast]

  defp invalid(pool, command, message) do
    {:error, Error.new(:validation, :invalid_option, message, command: command, pool_name: pool)}
  end

  # ------------------------------------------------------------- routing

  defp run(ctx, exclude, reroutes) do
    # Taken before the load figures are read: a route event after a node's
    # loss was known shows a decision made without it.
    decided_at = System.monotonic_time()
    # A re-routed call is decided afresh: it may go home this time.
    ctx = %{ctx | spill: false}

    case pick(ctx, exclude) do
      :local ->
        local(ctx)

      {:spill, target} ->
        run_spilled(%{ctx | spill: true}, target, decided_at, exclude, reroutes)

      {:remote, node, reason} ->
        route_event(ctx, node, reason, decided_at)
        remote(ctx, node, exclude, reroutes)

      {:error, _} = error ->
        error
    end
  end

  # A :hint call of a session whose home is full runs where a slot is free,
  # without making that node a home of the session. A spill to this node is
  # routed too: the call left its home.
  defp run_spilled(ctx, :local, decided_at, _exclude, _reroutes) do
    route_event(ctx, node(), :session_spill, decided_at)
    local(ctx)
  end

  defp run_spilled(ctx, node, decided_at, exclude, reroutes) do
    route_event(ctx, node, :session_spill, decided_at)
    remote(ctx, node, exclude, reroutes)
  end

  defp route_event(ctx, node, reason, decided_at) do
    Snakepit.Telemetry.execute(
      [:snakepit, :cluster, :route],
      %{monotonic_time: decided_at},
      %{pool: ctx.pool, node: node, command: ctx.command, reason: reason}
    )
  end

  defp local(%{local: nil} = ctx), do: no_server(ctx, "no ready workers on #{node()}")

  defp local(ctx) do
    opts = Keyword.put(ctx.opts, :timeout, remaining(ctx))
    unless ctx.spill, do: Agent.served_session(ctx.pool, ctx.session_id)

    if ctx.callback,
      do: Snakepit.stream_local(ctx.pool, ctx.local, ctx.command, ctx.args, ctx.callback, opts),
      else: Snakepit.execute_local(ctx.pool, ctx.local, ctx.command, ctx.args, opts)
  end

  @doc false
  # The rows of nodes this node may route to: the same adapter setup as
  # the local pool; a route-only node follows the servers' majority.
  def compatible(rows, pool) do
    case :persistent_term.get({Snakepit.Cluster, :fingerprint, pool}, nil) do
      nil when rows == [] ->
        rows

      nil ->
        {majority, _} =
          rows |> Enum.frequencies_by(&elem(&1, 4)) |> Enum.max_by(fn {_fp, n} -> n end)

        Enum.filter(rows, &(elem(&1, 4) == majority))

      fingerprint ->
        Enum.filter(rows, &(elem(&1, 4) == fingerprint))
    end
  end

  defp pick(ctx, exclude) do
    rows =
      ctx.pool
      |> Loads.rows()
      |> compatible(ctx.pool)
      |> Enum.reject(fn {{_, node}, _, _, _, _, _, _} -> node in exclude end)

    cond do
      ctx.target == :local -> :local
      ctx.target == node() -> :local
      ctx.target != :any -> pinned(ctx, rows)
      ctx.session_id != nil -> session_home(ctx, rows)
      true -> least_loaded(ctx, rows)
    end
  end

  defp pinned(ctx, rows) do
    if Enum.any?(rows, fn {{_, node}, _, _, _, _, _, _} -> node == ctx.target end),
      do: {:remote, ctx.target, :pinned},
      else: node_down(ctx, ctx.target, "node #{ctx.target} does not serve this pool")
  end

  # Local first; else the power of two choices among remote nodes with
  # free slots; else the shortest queue relative to capacity.
  defp least_loaded(ctx, rows) do
    {mine, remote} = Enum.split_with(rows, fn {{_, node}, _, _, _, _, _, _} -> node == node() end)
    local_load = if mine != [] and ctx.local, do: Native.load(elem(ctx.local, 0))

    case local_load do
      {free, _capacity, _queued} when free > 0 ->
        :local

      _ ->
        fresh_after = Loads.now_ms() - Snakepit.Cluster.settings().stale_after_ms

        free =
          Enum.filter(remote, fn {_, free, _, _, _, at, _} -> free > 0 and at >= fresh_after end)

        if free != [] and (local_load == nil or remote_size_ok?(ctx)) do
          {{_, node}, _, _, _, _, _, _} = two_choices(free)
          Loads.took_slot(ctx.pool, node)
          {:remote, node, :remote_free}
        else
          shortest_queue(ctx, local_load, remote, fresh_after)
        end
    end
  end

  defp remote_size_ok?(ctx),
    do: :erlang.external_size(ctx.args) <= Snakepit.Cluster.settings().remote_payload_limit

  defp two_choices([only]), do: only

  defp two_choices(rows) do
    count = length(rows)
    a = :rand.uniform(count)
    b = rem(a + :rand.uniform(count - 1) - 1, count) + 1
    first = Enum.at(rows, a - 1)
    second = Enum.at(rows, b - 1)
    if elem(second, 1) > elem(first, 1), do: second, else: first
  end

  defp shortest_queue(ctx, local_load, remote, fresh_after) do
    remote_scores =
      if local_load == nil or remote_size_ok?(ctx) do
        for {{_, node}, _free, capacity, queued, _, at, _} <- remote, capacity > 0 do
          stale = if at < fresh_after, do: 1.0, else: 0.0
          {(queued + 1) / capacity + @remote_penalty + stale, node}
        end
      else
        []
      end

    local_scores =
      case local_load do
        {_free, capacity, queued} when capacity > 0 -> [{(queued + 1) / capacity, node()}]
        _ -> []
      end

    case Enum.min(local_scores ++ remote_scores, fn -> nil end) do
      nil ->
        no_server(ctx, "no node serves it")

      {_score, node} when node == node() ->
        :local

      {_score, node} ->
        Loads.queued_one(ctx.pool, node)
        {:remote, node, :remote_queue}
    end
  end

  # A session's home: where it is pinned (any node's agent that served it
  # joined its pg group), else the rendezvous-hash choice among the
  # serving nodes, on which every router with the same view agrees.
  defp session_home(ctx, rows) do
    nodes = for {{_, node}, _, _, _, _, _, _} <- rows, do: node
    group = {:session, 1, ctx.pool, ctx.session_id}

    members = Snakepit.Cluster.scope() |> :pg.get_members(group) |> Enum.map(&node/1)
    live = [node() | Node.list()]
    homes = Enum.filter(members, &(&1 in nodes and &1 in live))

    cond do
      homes != [] ->
        homes |> Enum.max_by(&:erlang.phash2({ctx.session_id, &1})) |> home_or_spill(ctx, rows)

      # A home on a node already down that pg (or the tombstone) has not
      # caught up with yet is lost all the same: a strict call must not
      # make a second home in that window.
      ctx.strict and (lost_home?(members, live) or Loads.tombstoned?(ctx.pool, ctx.session_id)) ->
        {:error,
         Error.new(
           :worker,
           :session_worker_unavailable,
           "the home node of session #{inspect(ctx.session_id)} was lost",
           command: ctx.command,
           pool_name: ctx.pool,
           details: %{session_id: ctx.session_id}
         )}

      nodes == [] ->
        no_server(ctx, "no node serves it")

      true ->
        nodes |> Enum.max_by(&:erlang.phash2({ctx.session_id, &1})) |> home_or_spill(ctx, rows)
    end
  end

  defp lost_home?(members, live), do: members != [] and Enum.all?(members, &(&1 not in live))

  # Strict calls wait for their home. A :hint call goes home unless the home
  # is seen full (its own load, or a fresh row with no free slot) and
  # another node has a free slot.
  defp home_or_spill(home, %{strict: true}, _rows), do: to_target(home)

  defp home_or_spill(home, ctx, rows) do
    fresh_after = Loads.now_ms() - Snakepit.Cluster.settings().stale_after_ms
    local_free? = local_free?(ctx, rows)

    remote_free =
      for {{_, node}, free, _, _, _, at, _} = row <- rows,
          node != node() and free > 0 and at >= fresh_after,
          do: row

    home_full? =
      if home == node(),
        do: not local_free?,
        else:
          Enum.any?(rows, fn {{_, node}, free, _, _, _, at, _} ->
            node == home and free == 0 and at >= fresh_after
          end)

    cond do
      not home_full? ->
        to_target(home)

      local_free? ->
        {:spill, :local}

      remote_free != [] and (ctx.local == nil or remote_size_ok?(ctx)) ->
        {{_, node}, _, _, _, _, _, _} = two_choices(remote_free)
        Loads.took_slot(ctx.pool, node)
        {:spill, node}

      true ->
        to_target(home)
    end
  end

  defp local_free?(%{local: nil}, _rows), do: false

  defp local_free?(ctx, rows) do
    Enum.any?(rows, fn {{_, node}, _, _, _, _, _, _} -> node == node() end) and
      match?({free, _, _} when free > 0, Native.load(elem(ctx.local, 0)))
  end

  defp to_target(node) when node == node(), do: :local
  defp to_target(node), do: {:remote, node, :session}

  defp no_server(ctx, why) do
    {:error,
     Error.new(
       :pool,
       :pool_not_initialized,
       "pool #{inspect(ctx.pool)} cannot take the call: #{why}",
       command: ctx.command,
       pool_name: ctx.pool
     )}
  end

  defp node_down(ctx, node, message) do
    {:error,
     Error.new(:worker, :node_down, message,
       command: ctx.command,
       pool_name: ctx.pool,
       details: %{node: node}
     )}
  end

  # ------------------------------------------------------- remote calls

  defp remote(ctx, node, exclude, reroutes) do
    reply_alias = :erlang.alias([:explicit_unalias])
    opts = Keyword.put(ctx.opts, :timeout, remaining(ctx))
    opts = if ctx.spill, do: Keyword.put(opts, :session_spill, true), else: opts

    req =
      :erlang.spawn_request(
        node,
        Executor,
        :run,
        [self(), reply_alias, ctx.callback != nil, ctx.pool, ctx.command, ctx.args, opts],
        [:monitor]
      )

    call = %{
      req: req,
      pid: nil,
      node: node,
      alias: reply_alias,
      started: false,
      consumed: 0,
      delivered: 0
    }

    case await(ctx, call) do
      {:never_started, why} when reroutes < @max_reroutes ->
        telemetry(:reroute, ctx, node, %{why: why})
        run(ctx, [node | exclude], reroutes + 1)

      {:never_started, why} ->
        node_down(ctx, node, "node #{node} could not take the call: #{inspect(why)}")

      {:lost, delivered} when ctx.idempotent and delivered == 0 ->
        telemetry(:retry, ctx, node)
        run(%{ctx | idempotent: false}, [node | exclude], reroutes)

      {:lost, _delivered} ->
        telemetry(:node_down, ctx, node)
        node_down(ctx, node, "node #{node} was lost while the call ran there")

      {:result, result} ->
        result
    end
  end

  defp telemetry(event, ctx, node, extra \\ %{}) do
    Snakepit.Telemetry.execute(
      [:snakepit, :cluster, event],
      %{count: 1},
      Map.merge(%{pool: ctx.pool, node: node, command: ctx.command}, extra)
    )
  end

  defp await(ctx, %{req: req} = call) do
    receive do
      {:snakepit_chunk, alias, pid, chunk} when alias == call.alias ->
        chunk(ctx, %{call | pid: pid, started: true}, chunk)

      {:snakepit_started, alias} when alias == call.alias ->
        await(ctx, %{call | started: true})

      {:spawn_reply, ^req, :ok, pid} ->
        await(ctx, %{call | pid: pid})

      {:spawn_reply, ^req, :error, reason} ->
        finished(call)
        {:never_started, reason}

      {:DOWN, ^req, :process, _pid, reason} ->
        finished(call)

        case reason do
          {:snakepit_result, result} -> {:result, outcome(ctx, result)}
          # No worker there took it: it ran nowhere, whatever became of B.
          :noconnection when not call.started -> {:never_started, :noconnection}
          :noconnection -> {:lost, call.delivered}
          :snakepit_unavailable -> {:never_started, :unavailable}
          # An executor missing on that node (another release) never submitted.
          {:undef, _} -> {:never_started, :undef}
          other -> {:result, remote_exit(ctx, call.node, other)}
        end
    after
      wait(ctx) -> give_up(ctx, call)
    end
  end

  defp outcome(%{callback: nil}, result), do: result
  defp outcome(_stream, {:ok, _}), do: :ok
  defp outcome(_stream, other), do: other

  defp remote_exit(ctx, node, reason) do
    {:error,
     Error.new(
       :worker,
       :remote_exit,
       "the call's executor on #{node} exited: #{inspect(reason, limit: 10)}",
       command: ctx.command,
       pool_name: ctx.pool,
       details: %{node: node}
     )}
  end

  defp chunk(ctx, call, chunk) do
    call = %{call | delivered: call.delivered + 1}

    case run_callback(ctx.callback, chunk) do
      :halt ->
        stop(ctx, call, {:result, :ok})

      {:halt, reason} ->
        stop(ctx, call, {:result, {:error, reason}})

      {:raised, exception, stacktrace} ->
        stop(ctx, call, {:result, {:error, {:callback_exception, exception, stacktrace}}})

      {:thrown, kind, reason, stacktrace} ->
        stop(ctx, call, nil)
        :erlang.raise(kind, reason, stacktrace)

      _continue when call.consumed + 1 == @stream_grant ->
        send(call.pid, {:snakepit_grant, @stream_grant})
        await(ctx, %{call | consumed: 0})

      _continue ->
        await(ctx, %{call | consumed: call.consumed + 1})
    end
  end

  defp run_callback(callback, chunk) do
    callback.(chunk)
  rescue
    exception -> {:raised, exception, __STACKTRACE__}
  catch
    kind, reason -> {:thrown, kind, reason, __STACKTRACE__}
  end

  # The caller stopped the stream: the executor cancels (the generator
  # closes on its node) and ends; its DOWN and late chunks are dropped.
  defp stop(_ctx, call, outcome) do
    send(call.pid, {:snakepit_cancel, call.req})
    drain(call, @reply_margin_ms)
    outcome
  end

  # Past the deadline (plus a margin: the serving node answers by the
  # deadline itself): cancel there, take an answer that still comes, else
  # abandon the request so nothing of it arrives later.
  defp give_up(ctx, call) do
    if call.pid, do: send(call.pid, {:snakepit_cancel, call.req})

    case drain(call, @reply_margin_ms) do
      {:snakepit_result, result} ->
        {:result, outcome(ctx, result)}

      :noconnection ->
        {:lost, call.delivered}

      _none ->
        {:result,
         {:error,
          Error.new(:timeout, :worker_timeout, "no reply within the call's timeout",
            command: ctx.command,
            pool_name: ctx.pool,
            details: %{node: call.node}
          )}}
    end
  end

  defp drain(%{req: req} = call, wait_ms) do
    receive do
      {:snakepit_chunk, alias, _pid, _chunk} when alias == call.alias ->
        drain(call, wait_ms)

      {:snakepit_started, alias} when alias == call.alias ->
        drain(call, wait_ms)

      {:spawn_reply, ^req, :ok, pid} ->
        send(pid, {:snakepit_cancel, req})
        drain(%{call | pid: pid}, wait_ms)

      {:spawn_reply, ^req, :error, _reason} ->
        finished(call)
        nil

      {:DOWN, ^req, :process, _pid, reason} ->
        finished(call)
        reason
    after
      wait_ms ->
        abandon(call)
        nil
    end
  end

  defp abandon(%{req: req} = call) do
    # Not yet spawned: no reply and no DOWN will come. Spawned: the
    # monitor goes, with whatever of it already arrived.
    unless :erlang.spawn_request_abandon(req), do: :erlang.demonitor(req, [:flush])
    flush_spawn_reply(req)
    finished(call)
  end

  defp flush_spawn_reply(req) do
    receive do
      {:spawn_reply, ^req, _, _} -> :ok
    after
      0 -> :ok
    end
  end

  # The alias goes first, then what it already let in is dropped.
  defp finished(%{alias: reply_alias}) do
    :erlang.unalias(reply_alias)
    flush_alias(reply_alias)
  end

  defp flush_alias(reply_alias) do
    receive do
      {:snakepit_chunk, ^reply_alias, _pid, _chunk} -> flush_alias(reply_alias)
      {:snakepit_started, ^reply_alias} -> flush_alias(reply_alias)
    after
      0 -> :ok
    end
  end

  defp remaining(ctx), do: max(ctx.deadline - Loads.now_ms(), 0)
  defp wait(ctx), do: min(remaining(ctx) + @reply_margin_ms, 4_294_967_295)
end
