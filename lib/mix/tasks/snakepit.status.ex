defmodule Mix.Tasks.Snakepit.Status do
  @shortdoc "Shows each pool: workers, capacity, load, counters, interpreter and adapter"

  @moduledoc """
  Prints one line per pool (profile, workers ready / total, capacity, in
  flight, queued, requests, errors, recycles, restarts), followed by its
  interpreter and adapter. Exits non-zero when a pool has no ready worker.

      mix snakepit.status
      mix snakepit.status --node myapp@host

  Without `--node` it starts Snakepit with the configured pools (as the
  app would, so `pooling_enabled` must be true) and waits for them. With
  `--node` it asks a running node over Erlang distribution
  (`Snakepit.Status.pools/0`), as an operator would from a shell; this
  needs `epmd` and the node's cookie.

  ## Options

    * `--node NAME` - the node to ask (`name@host`; a bare `name` means this
      host's short name)
    * `--cookie COOKIE` - the node's cookie (default: `~/.erlang.cookie`)
    * `--timeout MS` - how long to wait for pools to get ready, or for the
      node to answer (default 30000)
  """

  use Mix.Task

  alias Snakepit.MixOutput

  @switches [node: :string, cookie: :string, timeout: :integer]

  @impl Mix.Task
  def run(args) do
    {opts, _rest} = OptionParser.parse!(args, strict: @switches)
    timeout = Keyword.get(opts, :timeout, 30_000)

    {where, pools} =
      case opts[:node] do
        nil -> {"this node", local(timeout)}
        name -> remote(name, opts[:cookie], timeout)
      end

    if pools == [], do: Mix.raise("snakepit.status: no Snakepit pool is running on #{where}")
    Enum.each(pools, &print/1)

    down = for %{ready: 0, name: name} <- pools, do: inspect(name)
    if down != [], do: Mix.raise("snakepit.status: no ready worker in #{Enum.join(down, ", ")}")
  end

  defp local(timeout) do
    Mix.Task.run("app.config")

    if Application.get_env(:snakepit, :pooling_enabled) == false do
      Mix.raise(
        "snakepit.status: pooling is disabled (set config :snakepit, pooling_enabled: true)"
      )
    end

    case Application.ensure_all_started(:snakepit) do
      {:ok, _apps} ->
        :ok

      {:error, {app, reason}} ->
        Mix.raise("snakepit.status: #{app} did not start: #{inspect(reason)}")
    end

    # Until every worker is up; a pool that cannot start is reported with
    # its error.
    deadline = System.monotonic_time(:millisecond) + timeout
    _ = Snakepit.Pool.await_ready(:all, timeout)
    settled(deadline)
  end

  defp settled(deadline) do
    pools = Snakepit.Status.pools()
    starting? = Enum.any?(pools, &(&1.ready < &1.pool_size and &1.start_error == nil))

    if starting? and System.monotonic_time(:millisecond) < deadline do
      Process.sleep(100)
      settled(deadline)
    else
      pools
    end
  end

  defp remote(name, cookie, timeout) do
    node = node_name(name)
    start_distribution(node)
    if cookie, do: Node.set_cookie(node, String.to_atom(cookie))

    unless Node.connect(node) do
      Mix.raise(
        "snakepit.status: cannot connect to #{node} (is it running, with the same cookie?)"
      )
    end

    try do
      {to_string(node), :erpc.call(node, Snakepit.Status, :pools, [], timeout)}
    catch
      :error, {:exception, :undef, _} ->
        Mix.raise("snakepit.status: #{node} does not run Snakepit")

      :error, reason ->
        Mix.raise("snakepit.status: #{node} did not answer: #{inspect(reason)}")
    end
  end

  defp node_name(name) do
    if String.contains?(name, "@") do
      String.to_atom(name)
    else
      {:ok, host} = :inet.gethostname()
      String.to_atom("#{name}@#{host}")
    end
  end

  defp start_distribution(node) do
    unless Node.alive?() do
      [_, host] = node |> Atom.to_string() |> String.split("@", parts: 2)
      names = if String.contains?(host, "."), do: :longnames, else: :shortnames
      self_name = :"snakepit_status_#{System.pid()}"

      case Node.start(self_name, names) do
        {:ok, _} ->
          :ok

        {:error, reason} ->
          Mix.raise(
            "snakepit.status: cannot start distribution (is epmd running?): #{inspect(reason)}"
          )
      end
    end
  end

  defp print(pool) do
    status = if pool.ready > 0, do: :ok, else: :error

    MixOutput.line(
      status,
      "pool #{inspect(pool.name)}",
      "profile #{pool.profile}, workers #{pool.ready}/#{pool.pool_size} ready, capacity #{pool.capacity}, " <>
        "in flight #{pool.in_flight}, queued #{pool.queued}, requests #{pool.requests}, " <>
        "errors #{pool.errors}, recycles #{pool.recycles}, restarts #{pool.restarts}"
    )

    Mix.shell().info("      python   #{pool.python} (chosen by #{pool.python_reason})")
    Mix.shell().info("      adapter  #{pool.adapter}")
    if pool.start_error, do: Mix.shell().error("      error    #{pool.start_error}")
  end
end
