defmodule Snakepit.ClusterTest do
  # Pools across BEAM nodes: peers on 127.0.0.1 serve the fixture adapter
  # on thread-profile workers, so throughput is bound by slots, not by the
  # machine's cores. Figures are printed as "cluster: ..." lines.
  use Snakepit.ClusterCase, async: false

  alias Snakepit.Cluster

  @pool :ml

  defp whoami(ms, opts \\ []),
    do: Snakepit.execute("whoami", %{ms: ms}, [pool_name: @pool] ++ opts)

  defp report(line), do: IO.puts("cluster: " <> line)

  # Worker OS pid => node, for every peer.
  defp pid_nodes(peers),
    do: Map.new(for p <- peers, pid <- worker_pids(p.node, @pool), do: {pid, p.node})

  defp served_by(records, pid_nodes) do
    for {_i, _a, {:ok, %{"pid" => pid}}} <- records, reduce: %{} do
      acc -> Map.update(acc, Map.fetch!(pid_nodes, pid), 1, &(&1 + 1))
    end
  end

  test "calls/s scale with the slots of 1, 2 and 3 nodes; 3 equal nodes share the load fairly" do
    start_local_pool!(pool(@pool, 0))

    {peers, rates} =
      Enum.reduce(1..3, {[], []}, fn n, {peers, rates} ->
        peers = peers ++ start_peers!([{:"scale#{n}", [pool(@pool, 4)]}])
        assert :ok = Cluster.await_nodes(@pool, n, 10_000)
        slots = 4 * n
        # Warm: the new node loads its modules and threads on first use.
        load(2 * slots, 600, 100, fn _ -> whoami(100) end)
        t0 = now_ms()
        records = load(2 * slots, 2_500, 100, fn _ -> whoami(100) end)
        assert Enum.all?(records, &match?({_, _, {:ok, _}}, &1))
        rate = rate(records, t0 + 500, t0 + 2_500)
        report("#{n} node(s), #{slots} slots, sleep 100: #{Float.round(rate, 1)} calls/s")
        assert rate >= 0.9 * 10 * slots
        {peers, rates ++ [{n, rate, records}]}
      end)

    {3, _rate, records} = List.last(rates)
    counts = served_by(records, pid_nodes(peers))
    index = jain(Map.values(counts))

    report(
      "3 equal nodes, 24 callers: served #{inspect(Map.values(counts), charlists: :as_lists)}, Jain #{Float.round(index, 3)}"
    )

    assert map_size(counts) == 3
    assert index >= 0.95
  end

  test "a caller with a free local slot stays local; past it, calls spill to other nodes" do
    start_local_pool!(pool(@pool, 4))
    peers = start_peers!([{:lf1, [pool(@pool, 4)]}, {:lf2, [pool(@pool, 4)]}])
    assert :ok = Cluster.await_nodes(@pool, 3, 10_000)
    local = MapSet.new(worker_pids(node(), @pool))

    records = load(2, 1_000, 100, fn _ -> whoami(20) end)
    pids = for {_, _, {:ok, %{"pid" => pid}}} <- records, do: pid
    assert length(pids) == length(records)
    assert Enum.all?(pids, &MapSet.member?(local, &1))
    report("local first: 2 callers, #{length(pids)} calls, 100 % local")

    records = load(16, 1_500, 100, fn _ -> whoami(100) end)
    by_node = served_by(records, Map.merge(pid_nodes(peers), Map.new(local, &{&1, node()})))
    remote = Enum.sum(for {n, c} <- by_node, n != node(), do: c)
    report("16 callers on 12 slots: #{by_node[node()]} local, #{remote} remote")
    assert remote > 0
    assert by_node[node()] > 0

    # The cost of the hop: the same call, in sequence, local and remote.
    remote_node = hd(peers).node

    [local_us, remote_us] =
      for target <- [:local, remote_node] do
        whoami(0, node: target)

        times =
          for _ <- 1..300 do
            {us, {:ok, _}} = :timer.tc(fn -> whoami(0, node: target) end)
            us
          end

        sorted = Enum.sort(times)
        {Enum.at(sorted, 149), Enum.at(sorted, 296)}
      end

    report(
      "round trip of whoami(0), p50/p99: local #{elem(local_us, 0)}/#{elem(local_us, 1)} us, " <>
        "remote #{elem(remote_us, 0)}/#{elem(remote_us, 1)} us"
    )
  end

  test "a node killed mid-load: every call answered once, :node_down only for calls it ran, load moves on" do
    start_local_pool!(pool(@pool, 0))

    [_a, b, c] =
      peers =
      start_peers!([{:k1, [pool(@pool, 4)]}, {:k2, [pool(@pool, 4)]}, {:k3, [pool(@pool, 4)]}])

    assert :ok = Cluster.await_nodes(@pool, 3, 10_000)
    t0 = now_ms()

    killer =
      Task.async(fn ->
        Process.sleep(1_500)
        killed_at = kill!(c)

        detected =
          time_until(fn -> c.node not in Enum.map(Cluster.nodes(@pool), & &1.node) end, 5_000)

        {killed_at, detected}
      end)

    records = load(24, 4_000, 100, fn _ -> whoami(200) end)
    {killed_at, detected} = Task.await(killer)
    {ok, errors} = Enum.split_with(records, &match?({_, _, {:ok, _}}, &1))

    node_down =
      for {issued, answered, {:error, %Snakepit.Error{details: %{reason: :node_down} = d}}} <-
            errors,
          do: {issued, answered, d.node}

    # Every call got exactly one reply (callers' mailboxes were empty), and
    # only calls that ran on the lost node failed, with :node_down.
    assert length(node_down) == length(errors)
    assert Enum.all?(node_down, fn {issued, _, n} -> n == c.node and issued < killed_at end)
    # Its 4 slots plus its share of the queue (24 callers on 12 slots).
    assert length(node_down) <= 12
    last_answer = node_down |> Enum.map(&elem(&1, 1)) |> Enum.max(fn -> killed_at end)
    # Nothing was routed to it once its loss was known.
    assert Enum.all?(records, fn {issued, _, r} ->
             issued < killed_at + detected or match?({:ok, _}, r)
           end)

    recovered = rate(records, killed_at + 500, t0 + 4_000)
    pids = pid_nodes(Enum.take(peers, 2))

    after_kill =
      for {issued, _, {:ok, %{"pid" => pid}}} <- records, issued > killed_at + detected, do: pid

    assert Enum.all?(after_kill, &Map.has_key?(pids, &1))

    report(
      "node kill: #{length(records)} calls, #{length(ok)} ok, #{length(node_down)} :node_down, lost 0; " <>
        "kill -> out of routing #{detected} ms, -> last in-flight answer #{max(last_answer - killed_at, 0)} ms; " <>
        "2-node rate after kill #{Float.round(recovered, 1)} calls/s (slot bound 40)"
    )

    assert recovered >= 0.9 * 40

    # The same with idempotent calls: a call lost with its node runs again.
    killer =
      Task.async(fn ->
        Process.sleep(1_000)
        kill!(b)
      end)

    records = load(16, 2_500, 100, fn _ -> whoami(200, idempotent: true) end)
    Task.await(killer)
    assert Enum.all?(records, &match?({_, _, {:ok, _}}, &1))
    report("node kill, idempotent: #{length(records)} calls, all ok")
  end

  test "a lost caller node frees the serving node's slots within the tool's time" do
    # A cancelled call's slot frees when the worker's next ping shows the
    # tool done (see README, "a call's slot"): ping often here.
    [s] = start_peers!([{:serve, [pool(@pool, 4, heartbeat: %{ping_interval_ms: 50})]}])
    [c] = start_peers!([{:caller, [pool(@pool, 0)]}])
    assert on(c, Snakepit.Cluster, :await_nodes, [@pool, 1, 10_000]) == :ok

    for _ <- 1..8,
        do: :erpc.cast(c.node, Snakepit, :execute, ["whoami", %{ms: 1_000}, [pool_name: @pool]])

    handle = elem(on(s, Snakepit.Pool, :lookup, [@pool]), 1)
    load = fn -> :erpc.call(s.node, Snakepit.Native, :load, [handle]) end
    # Once every slot is taken, the tools have started: they end within 1 s.
    assert time_until(fn -> match?({0, 4, _}, load.()) end, 5_000)
    busy_at = now_ms()
    killed_at = kill!(c)
    assert time_until(fn -> load.() == {4, 4, 0} end, 5_000)
    freed = now_ms() - busy_at

    report(
      "caller node killed #{killed_at - busy_at} ms after its calls filled the slots: " <>
        "all free #{freed} ms after they filled (tool 1000 ms, ping 50 ms)"
    )

    assert freed <= 1_000 + 100
  end

  test "a cut link: calls in flight are answered, the node is back in routing soon after reconnecting" do
    start_local_pool!(pool(@pool, 0))
    [s] = start_peers!([{:part, [pool(@pool, 4)]}])
    assert :ok = Cluster.await_nodes(@pool, 1, 10_000)

    cutter =
      Task.async(fn ->
        Process.sleep(800)
        cut_at = now_ms()
        true = :erlang.disconnect_node(s.node)
        Process.sleep(300)
        true = Node.connect(s.node)
        rejoined = time_until(fn -> Cluster.nodes(@pool) != [] end, 5_000)
        {cut_at, rejoined}
      end)

    records = load(8, 2_500, 100, fn _ -> whoami(300) end)
    {cut_at, rejoined} = Task.await(cutter)
    report("partition: back in routing #{rejoined} ms after reconnecting")
    assert rejoined <= 1_000

    for {issued, answered, result} <- records do
      case result do
        {:ok, _} ->
          :ok

        {:error, %Snakepit.Error{details: %{reason: :node_down}}} ->
          assert issued < cut_at

        # Still in flight at the cut (a spawn not yet confirmed is re-routed,
        # and no other node serves): answered after it.
        {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}}} ->
          assert answered >= cut_at
      end
    end

    assert Enum.any?(records, fn {issued, _, r} ->
             issued > cut_at + 1_500 and match?({:ok, _}, r)
           end)
  end

  test "a remote stream keeps the caller's mailbox bounded; :halt closes the generator there" do
    start_local_pool!(pool(@pool, 0))
    [s] = start_peers!([{:stream, [pool(@pool, 4)]}])
    assert :ok = Cluster.await_nodes(@pool, 1, 10_000)
    me = self()

    max_queue = :counters.new(2, [])

    t0 = now_ms()

    assert :ok =
             Snakepit.execute_stream(
               "count_stream",
               %{n: 5_000},
               fn _chunk ->
                 :counters.add(max_queue, 2, 1)
                 {:message_queue_len, len} = Process.info(me, :message_queue_len)
                 if len > :counters.get(max_queue, 1), do: :counters.put(max_queue, 1, len)
                 if rem(:counters.get(max_queue, 2), 10) == 0, do: Process.sleep(1)
               end,
               pool_name: @pool
             )

    chunks = :counters.get(max_queue, 2)

    report(
      "remote stream: #{chunks} chunks in #{now_ms() - t0} ms, max mailbox #{:counters.get(max_queue, 1)}"
    )

    assert chunks >= 5_000
    assert :counters.get(max_queue, 1) <= 40
    assert Process.info(self(), :messages) == {:messages, []}

    marker =
      Path.join(System.tmp_dir!(), "snakepit_cluster_halt_#{System.unique_integer([:positive])}")

    seen = :counters.new(1, [])

    assert :ok =
             Snakepit.execute_stream(
               "guarded_stream",
               %{marker: marker},
               fn _ ->
                 :counters.add(seen, 1, 1)
                 if :counters.get(seen, 1) >= 20, do: :halt
               end,
               pool_name: @pool
             )

    assert time_until(fn -> File.exists?(marker) end, 5_000)
    File.rm(marker)
    handle = elem(on(s, Snakepit.Pool, :lookup, [@pool]), 1)

    assert time_until(
             fn -> :erpc.call(s.node, Snakepit.Native, :load, [handle]) == {4, 4, 0} end,
             5_000
           )

    assert Process.info(self(), :messages) == {:messages, []}
  end

  test "a session has one home every node agrees on; a joining node moves none; a lost home fails strict calls" do
    start_local_pool!(pool(@pool, 0))

    [a, b, _c] =
      peers =
      start_peers!([{:s1, [pool(@pool, 4)]}, {:s2, [pool(@pool, 4)]}, {:s3, [pool(@pool, 4)]}])

    assert :ok = Cluster.await_nodes(@pool, 3, 10_000)
    # Routers agree on a new session's home when they see the same nodes.
    for p <- peers, do: assert(on(p, Cluster, :await_nodes, [@pool, 3, 10_000]) == :ok)
    sessions = for i <- 1..12, do: "session-#{i}"
    opts = fn id -> [pool_name: @pool, session_id: id, affinity: :strict_queue] end

    homes =
      Map.new(sessions, fn id ->
        pids =
          for caller <- [nil, a, b], _ <- 1..2 do
            {:ok, %{"pid" => pid}} =
              if caller,
                do: :erpc.call(caller.node, Snakepit, :execute, ["whoami", %{}, opts.(id)]),
                else: Snakepit.execute("whoami", %{}, opts.(id))

            pid
          end

        assert length(Enum.uniq(pids)) == 1, "session #{id} ran on #{inspect(Enum.uniq(pids))}"
        {id, hd(pids)}
      end)

    [d] = start_peers!([{:s4, [pool(@pool, 4)]}])
    assert :ok = Cluster.await_nodes(@pool, 4, 10_000)
    # Pins are pg joins: give them the time of a broadcast.
    Process.sleep(100)

    for id <- sessions do
      assert {:ok, %{"pid" => pid}} = Snakepit.execute("whoami", %{}, opts.(id))
      assert pid == homes[id], "session #{id} moved when #{d.node} joined"
    end

    pid_nodes = pid_nodes(peers)
    homed = Enum.frequencies(for {_id, pid} <- homes, do: pid_nodes[pid])

    report(
      "sessions: 12 homes over 3 nodes #{inspect(Map.values(homed), charlists: :as_lists)}, 0 moved by a 4th node"
    )

    # Kill the home of one session.
    id = hd(sessions)
    home = Enum.find(peers, &(&1.node == pid_nodes[homes[id]]))
    kill!(home)

    assert time_until(
             fn -> home.node not in Enum.map(Cluster.nodes(@pool), & &1.node) end,
             10_000
           )

    assert {:error, %Snakepit.Error{details: %{reason: :session_worker_unavailable}}} =
             Snakepit.execute("whoami", %{}, opts.(id))

    assert {:ok, %{"pid" => new_pid}} =
             Snakepit.execute("whoami", %{}, pool_name: @pool, session_id: id, affinity: :hint)

    assert new_pid != homes[id]
  end
end
