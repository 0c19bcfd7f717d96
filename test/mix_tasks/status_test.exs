defmodule Snakepit.MixTasks.StatusTest do
  use ExUnit.Case, async: false

  alias Snakepit.TempApp

  @moduletag timeout: 600_000

  @config """
  import Config

  config :snakepit,
    pooling_enabled: true,
    pools: [
      %{name: :default, pool_size: 2, adapter_args: ["--adapter", "envprobe.adapter.WhereAdapter"]},
      %{name: :threads, worker_profile: :thread, threads_per_worker: 3, pool_size: 1}
    ]
  """

  # Runs on the second node: some traffic, then waits for stdin to close.
  @node_script """
  :ok = Snakepit.Pool.await_ready(:all, 60_000)
  for _ <- 1..3, do: {:ok, _} = Snakepit.execute("where", %{})
  {:error, _} = Snakepit.execute("fail", %{})
  {:ok, _} = Snakepit.execute("ping", %{}, pool_name: :threads)
  IO.puts("READY")
  IO.read(:stdio, :line)
  """

  setup_all do
    dir = TempApp.create!(@config)
    on_exit(fn -> File.rm_rf!(dir) end)
    %{dir: dir}
  end

  test "starts the configured pools and prints each one", %{dir: dir} do
    {output, status} = TempApp.mix(dir, ["snakepit.status"])
    assert status == 0, output

    assert output =~
             ~r/^ok    pool :default +profile process, workers 2\/2 ready, capacity 2, in flight 0, queued 0, requests 0, errors 0, recycles 0, restarts 0$/m

    assert output =~ ~r/^ok    pool :threads +profile thread, workers 1\/1 ready, capacity 3, /m

    assert output =~
             ~r/^      python   \/\S+python3 \(chosen by the first system interpreter that can import grpc\)$/m

    assert output =~ ~r/^      adapter  envprobe\.adapter\.WhereAdapter$/m
    assert output =~ ~r/^      adapter  snakepit_bridge\.adapters\.showcase\.ShowcaseAdapter$/m
  end

  test "--node asks a running node over distribution and shows its live figures", %{dir: dir} do
    ensure_epmd!()
    name = "snakepit_status_target_#{System.unique_integer([:positive])}"
    port = start_node!(dir, name)

    try do
      {output, status} = TempApp.mix(dir, ["snakepit.status", "--node", name])
      assert status == 0, output

      assert output =~
               ~r/^ok    pool :default +profile process, workers 2\/2 ready, capacity 2, in flight 0, queued 0, requests 4, errors 1, recycles 0, restarts 0$/m

      assert output =~
               ~r/^ok    pool :threads +profile thread, workers 1\/1 ready, capacity 3, in flight 0, queued 0, requests 1, errors 0/m

      {output, status} = TempApp.mix(dir, ["snakepit.status", "--node", "nobody_here"])
      assert status != 0
      assert output =~ "cannot connect to nobody_here@"
    after
      Port.close(port)
    end
  end

  defp ensure_epmd! do
    case System.cmd("epmd", ["-names"], stderr_to_stdout: true) do
      {_, 0} -> :ok
      _ -> {_, 0} = System.cmd("epmd", ["-daemon"])
    end
  end

  # A second BEAM running the app's pools, as `elixir --sname NAME -S mix run`.
  defp start_node!(dir, name) do
    env =
      for {key, value} <- TempApp.base_env(),
          do: {String.to_charlist(key), value && String.to_charlist(value)}

    port =
      Port.open({:spawn_executable, System.find_executable("elixir")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 10_000},
        {:cd, dir},
        {:env, Enum.map(env, fn {k, v} -> {k, v || false} end)},
        {:args, ["--sname", name, "-S", "mix", "run", "-e", @node_script]}
      ])

    await_ready(port, "")
  end

  defp await_ready(port, seen) do
    receive do
      {^port, {:data, {:eol, "READY"}}} -> port
      {^port, {:data, {_, line}}} -> await_ready(port, seen <> line <> "\n")
      {^port, {:exit_status, status}} -> flunk("the node exited with #{status}:\n#{seen}")
    after
      120_000 -> flunk("the node did not get ready:\n#{seen}")
    end
  end
end
