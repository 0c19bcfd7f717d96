defmodule Snakepit.ClusterCase do
  @moduledoc """
  Peer BEAM nodes on 127.0.0.1 for the `:cluster` tests (OTP's `:peer`),
  each running Snakepit with the project's code path. epmd is started when
  it is not running; without epmd or `:peer` the tests fail, never skip.
  """
  use ExUnit.CaseTemplate

  @fixtures Path.expand("../fixtures/python", __DIR__)

  using do
    quote do
      import Snakepit.ClusterCase
      @moduletag :cluster
    end
  end

  setup_all do
    ensure_distributed!()
    :ok
  end

  @doc "Makes this node a distributed node named after its OS pid, starting epmd when needed."
  @spec ensure_distributed!() :: :ok
  def ensure_distributed! do
    epmd = System.find_executable("epmd") || raise "epmd is not on PATH (Debian erlang-base)"
    {:module, :peer} = Code.ensure_loaded(:peer)
    {_, 0} = System.cmd(epmd, ["-daemon"])

    unless Node.alive?() do
      {:ok, _} = :net_kernel.start([:"snakepit_test_#{System.pid()}@127.0.0.1", :longnames])
      Node.set_cookie(:"snakepit_#{System.unique_integer([:positive])}")
    end

    :ok
  end

  @doc """
  A clustered pool config: `slots` calls at once (one thread-profile
  worker), the suite's fixture adapter; `slots: 0` makes a route-only node.
  """
  @spec pool(atom(), non_neg_integer(), keyword()) :: map()
  def pool(name, slots, extra \\ []) do
    base =
      if slots == 0,
        do: %{name: name, scope: :cluster, pool_size: 0},
        else: %{
          name: name,
          scope: :cluster,
          pool_size: 1,
          worker_profile: :thread,
          threads_per_worker: slots,
          adapter_args: ["--adapter", "snakepit_exunit_adapters.StreamSessionAdapter"],
          adapter_env: [{"PYTHONPATH", @fixtures}],
          startup_batch_delay_ms: 0
        }

    Map.merge(base, Map.new(extra))
  end

  @doc "Starts a pool of this node under the test supervisor and waits until it serves."
  @spec start_local_pool!(map()) :: atom()
  def start_local_pool!(config) do
    config = Snakepit.Config.normalize_pool(config)
    ExUnit.Callbacks.start_supervised!({Snakepit.Pool, config}, id: {:local_pool, config.name})
    :ok = Snakepit.Pool.await_ready(config.name, 60_000)
    config.name
  end

  @doc """
  Starts peer nodes in parallel, one per `{name, pools}`, each running
  Snakepit with `pools` ready and connected to this node. Returns
  `[%{name, node, peer}]`. The test supervisor stops them at the test's end.

  Options: `args:` more VM arguments (e.g. TLS distribution); `connect:
  false` leaves them unconnected to this node (which could not join a
  TLS-distribution cluster).
  """
  @spec start_peers!([{atom(), [map()]}], keyword()) :: [map()]
  def start_peers!(specs, options \\ []) do
    extra_args = Keyword.get(options, :args, [])
    connect? = Keyword.get(options, :connect, true)

    specs
    |> Enum.map(fn {name, _pools} -> boot_peer(name, extra_args) end)
    |> Enum.map(fn {name, node, options} ->
      peer =
        ExUnit.Callbacks.start_supervised!(
          %{id: {:peer, name}, start: {:peer, :start_link, [options]}, restart: :temporary},
          id: {:peer, name}
        )

      %{name: name, node: node, peer: peer}
    end)
    |> Enum.map(&Task.async(fn -> start_snakepit!(&1, pools_of(specs, &1.name), connect?) end))
    |> Enum.map(&Task.await(&1, 120_000))
  end

  defp pools_of(specs, name) do
    Enum.find_value(specs, fn {spec_name, pools} ->
      if String.starts_with?(Atom.to_string(name), "#{spec_name}_"), do: pools
    end)
  end

  defp boot_peer(name, extra_args) do
    name = :"#{name}_#{System.unique_integer([:positive])}"
    paths = Enum.flat_map(:code.get_path(), &[~c"-pa", &1])

    args =
      [~c"-setcookie", Atom.to_charlist(Node.get_cookie())] ++
        [~c"+S", ~c"1:1", ~c"+sbwt", ~c"none", ~c"+sbwtdcpu", ~c"none", ~c"+sbwtdio", ~c"none"] ++
        extra_args ++ paths

    options = %{
      name: name,
      host: ~c"127.0.0.1",
      longnames: true,
      args: args,
      # Controlled over stdio: the peer outlives a cut distribution link.
      connection: :standard_io,
      wait_boot: 60_000
    }

    {name, :"#{name}@127.0.0.1", options}
  end

  defp start_snakepit!(peer, pools, connect?) do
    call = fn m, f, a -> :peer.call(peer.peer, m, f, a, 120_000) end
    :ok = call.(:logger, :set_primary_config, [:level, :error])

    :ok =
      call.(Application, :put_all_env, [
        [snakepit: [pooling_enabled: true, pools: pools], logger: [level: :error]]
      ])

    {:ok, _} = call.(Application, :ensure_all_started, [:snakepit])
    :ok = call.(Snakepit.Pool, :await_ready, [Snakepit.Pool, 60_000])
    if connect?, do: true = Node.connect(peer.node)
    peer
  end

  @doc "Runs `fun` on a peer."
  @spec on(map(), module(), atom(), list()) :: term()
  def on(peer, m, f, a), do: :peer.call(peer.peer, m, f, a, 60_000)

  @doc "SIGKILLs a peer's BEAM; returns the monotonic ms once the signal was sent."
  @spec kill!(map()) :: integer()
  def kill!(peer) do
    os_pid = on(peer, :os, :getpid, [])
    # kill(1) itself can take a while on a loaded host: the node is gone
    # only once it has run.
    {_, 0} = System.cmd("kill", ["-KILL", to_string(os_pid)])
    System.monotonic_time(:millisecond)
  end

  @doc "OS pids of the workers of `pool` on `node`."
  @spec worker_pids(node(), atom()) :: [integer()]
  def worker_pids(node, pool) do
    {:ok, workers} = :erpc.call(node, Snakepit.Pool, :workers, [pool])
    Enum.map(workers, & &1.os_pid)
  end

  @doc """
  Closed-loop load: `callers` processes each call `fun.(caller_index)` until
  `duration_ms` passes or it made `max_calls` calls. Each caller records
  `{issued_ms, answered_ms, result}` per call, counts one reply per call and
  checks its mailbox is empty at the end. Returns the records of all.
  """
  @spec load(pos_integer(), pos_integer(), pos_integer(), (non_neg_integer() -> term())) :: [
          {integer(), integer(), term()}
        ]
  def load(callers, duration_ms, max_calls, fun) do
    deadline = now_ms() + duration_ms

    1..callers
    |> Enum.map(fn index ->
      Task.async(fn ->
        records = caller_loop(fun, index, deadline, max_calls, [])
        {:messages, mailbox} = Process.info(self(), :messages)
        {records, mailbox}
      end)
    end)
    |> Enum.flat_map(fn task ->
      {records, mailbox} = Task.await(task, duration_ms + 60_000)
      if mailbox != [], do: raise("a caller ended with messages: #{inspect(mailbox, limit: 5)}")
      records
    end)
  end

  defp caller_loop(_fun, _index, _deadline, 0, acc), do: Enum.reverse(acc)

  defp caller_loop(fun, index, deadline, left, acc) do
    issued = now_ms()

    if issued >= deadline do
      Enum.reverse(acc)
    else
      result = fun.(index)
      answered = now_ms()
      # A failing call must not turn the loop into a busy spin.
      if match?({:error, _}, result), do: Process.sleep(20)
      caller_loop(fun, index, deadline, left - 1, [{issued, answered, result} | acc])
    end
  end

  @doc "Monotonic ms."
  def now_ms, do: System.monotonic_time(:millisecond)

  @doc """
  Round trips of `n` sequential `whoami(0)` calls of `pool` with `opts`, in
  µs, sorted (runs on whichever node calls it, e.g. a peer via `on/4`).
  """
  @spec round_trips(atom(), pos_integer(), keyword()) :: [non_neg_integer()]
  def round_trips(pool, n, opts \\ []) do
    call = fn -> Snakepit.execute("whoami", %{ms: 0}, [pool_name: pool] ++ opts) end
    {:ok, _} = call.()

    Enum.sort(
      for _ <- 1..n do
        {us, {:ok, _}} = :timer.tc(call)
        us
      end
    )
  end

  @doc """
  Head-of-line probe, run on a route-only node (via `on/4`): `callers`
  closed-loop `whoami(0)` calls of `pool` for `idle_ms`, then again while
  one `echo_bytes` call of `bytes` random bytes on `big_pool` crosses the
  distribution link both ways. Returns the echo's round trip in ms, whether
  its bytes came back equal, the failed pings, and each phase's sorted ping
  round trips in µs.
  """
  @spec head_of_line(atom(), atom(), pos_integer(), pos_integer(), pos_integer()) :: map()
  def head_of_line(pool, big_pool, bytes, callers, idle_ms) do
    big = random_bytes(bytes)
    {idle, :ok} = ping_while(pool, callers, fn -> Process.sleep(idle_ms) end)

    {busy, {echo_ms, equal?}} = ping_while(pool, callers, fn -> echo(big_pool, big) end)

    %{
      echo_ms: echo_ms,
      equal?: equal?,
      failed: idle.failed ++ busy.failed,
      idle_us: idle.us,
      busy_us: busy.us
    }
  end

  @doc """
  One `echo_bytes` call of `bytes` random bytes on `big_pool`: its round
  trip in ms and whether the bytes came back equal.
  """
  @spec echo(atom(), pos_integer() | binary()) :: {non_neg_integer(), boolean()}
  def echo(big_pool, bytes) when is_integer(bytes),
    do: echo(big_pool, random_bytes(bytes))

  def echo(big_pool, big) do
    {us, echoed} =
      :timer.tc(fn ->
        Snakepit.execute("echo_bytes", %{data: big}, pool_name: big_pool, timeout: 120_000)
      end)

    {div(us, 1_000), echoed == {:ok, big}}
  end

  # `:crypto` is not among the app's dependencies: a random 64 KB block, repeated.
  defp random_bytes(n),
    do: binary_part(:binary.copy(:rand.bytes(65_536), div(n, 65_536) + 1), 0, n)

  # Pings from `callers` processes until `during` returns (its result is
  # returned with them); a ping counts if it was issued before then.
  defp ping_while(pool, callers, during) do
    stop = :atomics.new(1, [])
    call = fn -> Snakepit.execute("whoami", %{ms: 0}, pool_name: pool) end

    tasks =
      for _ <- 1..callers do
        Task.async(fn -> pings(call, stop, [], []) end)
      end

    result = during.()
    :atomics.put(stop, 1, 1)
    {us, failed} = tasks |> Enum.map(&Task.await(&1, 60_000)) |> Enum.unzip()
    {%{us: Enum.sort(List.flatten(us)), failed: List.flatten(failed)}, result}
  end

  defp pings(call, stop, us, failed) do
    if :atomics.get(stop, 1) == 1 do
      {us, failed}
    else
      case :timer.tc(call) do
        {took, {:ok, _}} -> pings(call, stop, [took | us], failed)
        {_took, error} -> pings(call, stop, us, [error | failed])
      end
    end
  end

  @doc "The value at quantile `q` (0..1) of a sorted list."
  def quantile(sorted, q), do: Enum.at(sorted, min(round(q * length(sorted)), length(sorted) - 1))

  @doc "Calls answered within [from, to) per second."
  def rate(records, from, to) do
    count = Enum.count(records, fn {_i, a, r} -> a >= from and a < to and match?({:ok, _}, r) end)
    count * 1_000 / (to - from)
  end

  @doc "Jain's fairness index of a list of non-negative numbers."
  def jain(xs) do
    sum = Enum.sum(xs)
    sum * sum / (length(xs) * Enum.sum(Enum.map(xs, &(&1 * &1))))
  end

  @doc "Polls `fun` every 5 ms until true or `timeout_ms`; returns the ms it took or nil."
  def time_until(fun, timeout_ms) do
    start = now_ms()
    poll(fun, start, start + timeout_ms)
  end

  defp poll(fun, start, deadline) do
    cond do
      fun.() -> now_ms() - start
      now_ms() > deadline -> nil
      true -> Process.sleep(5) && poll(fun, start, deadline)
    end
  end
end
