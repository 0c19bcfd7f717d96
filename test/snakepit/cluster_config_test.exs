defmodule Snakepit.ClusterConfigTest do
  # Cluster scope on one node: config, options and drain; no peers needed.
  use ExUnit.Case, async: false

  alias Snakepit.{Cluster, Config}
  import Snakepit.ClusterCase, only: [pool: 2, start_local_pool!: 1, time_until: 2]

  test "scope defaults to :local; pool_size 0 is a route-only node and needs scope: :cluster" do
    assert Config.normalize_pool(%{name: :a}).scope == :local
    assert Config.normalize_pool(%{name: :a, scope: :cluster, pool_size: 0}).pool_size == 0

    assert_raise ArgumentError,
                 "invalid value for :pool_size in pool :a: 0 (expected a positive integer)",
                 fn -> Config.normalize_pool(%{name: :a, pool_size: 0}) end

    assert_raise ArgumentError,
                 ~r/:scope in pool :a: :global \(expected one of :local, :cluster\)/,
                 fn ->
                   Config.normalize_pool(%{name: :a, scope: :global})
                 end
  end

  test "the :cluster settings are validated, naming the key" do
    on_exit(fn -> Application.delete_env(:snakepit, :cluster) end)
    Application.put_env(:snakepit, :cluster, load_interval_ms: 50)
    assert Cluster.settings!().load_interval_ms == 50
    Application.put_env(:snakepit, :cluster, load_interval: 50)

    assert_raise ArgumentError,
                 ~r/unknown key :load_interval in the :cluster config/,
                 &Cluster.settings!/0

    Application.put_env(:snakepit, :cluster, stale_after_ms: 0)

    assert_raise ArgumentError,
                 ~r/:stale_after_ms in the :cluster config: 0/,
                 &Cluster.settings!/0
  end

  test "a local pool's hot-path entry is the plain running entry" do
    assert {:ok, {handle, _affinity, _call_timeout, _stream_timeout}} =
             Snakepit.Pool.route(:default)

    assert is_reference(handle)
  end

  test "a route-only pool with no serving node answers with an error, and options are checked" do
    start_local_pool!(pool(:route_only, 0))

    assert {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}}} =
             Snakepit.execute("whoami", %{}, pool_name: :route_only)

    assert {:error, %Snakepit.Error{category: :validation, details: %{reason: :invalid_option}}} =
             Snakepit.execute("whoami", %{}, pool_name: :route_only, node: "elsewhere")

    assert {:error, %Snakepit.Error{details: %{reason: :node_down, node: :nowhere@nohost}}} =
             Snakepit.execute("whoami", %{}, pool_name: :route_only, node: :nowhere@nohost)

    assert Cluster.nodes(:route_only) == []
    assert Cluster.await_nodes(:route_only, 1, 50) == {:error, :timeout}
  end

  test "a clustered pool serves this node's calls; drain takes it out of routing" do
    start_local_pool!(pool(:solo, 2))
    assert :ok = Cluster.await_nodes(:solo, 1, 5_000)
    assert [%{node: node, capacity: 2}] = Cluster.nodes(:solo)
    assert node == node()
    assert {:ok, %{"pid" => _}} = Snakepit.execute("whoami", %{}, pool_name: :solo)

    assert {:ok, _} = Snakepit.execute("whoami", %{}, pool_name: :solo, node: :local)
    assert %{} = Cluster.stats(:solo)

    task = Task.async(fn -> Snakepit.execute("whoami", %{ms: 300}, pool_name: :solo) end)
    assert time_until(fn -> match?([%{free: 1}], Cluster.nodes(:solo)) end, 2_000)
    assert :ok = Cluster.drain(:solo, 5_000)
    # drain returned only once the running call was done.
    assert Task.yield(task, 0) != nil
    assert Cluster.nodes(:solo) == []

    assert {:error, %Snakepit.Error{details: %{reason: :pool_not_initialized}}} =
             Snakepit.execute("whoami", %{}, pool_name: :solo)
  end
end
