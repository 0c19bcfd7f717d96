defmodule Snakepit.LargeReplyTest do
  # Replies with large maps are built on the caller's scheduler (OTP 25
  # crashes when a non-scheduler thread sends a map of more than 128 keys,
  # erlang/otp#8208), on a dirty one when large, never holding a normal
  # scheduler for long.
  use Snakepit.PoolCase, async: false
  # As in scheduler_blocking_test: room for a loaded 2-core machine; the rule is ~1 ms.
  @threshold_ms 40

  setup do
    pool =
      start_pool!(
        name: :large_replies,
        pool_size: 1,
        worker_profile: :thread,
        threads_per_worker: 2,
        fixture_adapter: "LargeResultAdapter"
      )

    %{pool: pool}
  end

  defp wide(n, offset \\ 0), do: Map.new(0..(n - 1), &{"k#{&1}", &1 + offset})

  test "maps of 33, 128, 129 and 1,000 keys come back whole", %{pool: pool} do
    for n <- [33, 128, 129, 1_000] do
      assert {:ok, result} = Snakepit.execute("wide_map", %{n: n}, pool_name: pool)
      assert result == wide(n)
    end
  end

  test "the built-in echo returns 129 argument keys", %{pool: _pool} do
    start_pool!(name: :large_echo, pool_size: 1)
    args = Map.new(1..129, &{"k#{&1}", &1})
    assert {:ok, %{"echoed" => echoed}} = Snakepit.execute("echo", args, pool_name: :large_echo)
    assert Map.take(echoed, Map.keys(args)) == args
  end

  test "stream chunks of 129 keys arrive whole, in order", %{pool: pool} do
    parent = self()

    assert :ok =
             Snakepit.execute_stream(
               "wide_chunks",
               %{n: 129, count: 3},
               &send(parent, {:chunk, &1}),
               pool_name: pool
             )

    chunks = for _ <- 1..3, do: assert_received({:chunk, chunk}) && chunk

    for {chunk, c} <- Enum.with_index(chunks) do
      assert Map.delete(chunk, "is_final") == wide(129, c)
    end
  end

  test "a 100,000-key map, a 1,000-deep map and a 200 MB string hold no normal scheduler",
       %{pool: pool} do
    watch_long_schedules(@threshold_ms)

    caller =
      Task.async(fn ->
        {:ok, wide} =
          Snakepit.execute("wide_map", %{n: 100_000}, pool_name: pool, timeout: 120_000)

        {:ok, deep} =
          Snakepit.execute("deep_map", %{depth: 1_000}, pool_name: pool, timeout: 60_000)

        {:ok, %{"text" => text}} =
          Snakepit.execute("long_string", %{n: 200_000_000}, pool_name: pool, timeout: 120_000)

        {map_size(wide), wide["k99999"], depth(deep, 0), byte_size(text)}
      end)

    assert Task.await(caller, 300_000) == {100_000, 99_999, 1_000, 200_000_000}
    assert long_schedules_of(caller.pid) == []
  end

  test "duplicate keys in a large JSON object keep the last value, and the map equals one built in Elixir" do
    keys = for i <- 1..40, do: "k#{i}"

    json =
      "{" <> Enum.map_join(keys ++ ["k1", "k2"], ",", &~s("#{&1}":"#{&1}")) <> ~s(,"k1":"last"})

    assert {:ok, map} = Snakepit.Native.decode_result(json)
    expected = keys |> Map.new(&{&1, &1}) |> Map.put("k1", "last")
    assert map == expected
    assert map_size(map) == 40
    assert Map.get(map, "k1") == "last"
  end

  defp depth(%{"child" => child}, acc), do: depth(child, acc + 1)
  defp depth(%{"leaf" => true}, acc), do: acc + 1
end
