defmodule Snakepit.SchedulerBlockingTest do
  use Snakepit.PoolCase, async: false

  # The BEAM reports every time a process holds a normal scheduler longer
  # than the threshold (never for the monitoring process itself, so the
  # calls run in a task). Encoding a 50 MB argument takes far longer than
  # the threshold, so it must happen on a dirty scheduler to pass. The
  # threshold leaves room for a loaded 2-core machine; the rule is ~1 ms.
  @threshold_ms 40

  # The large arguments go to `sizes`, which answers with their lengths:
  # echoing 100,000 rows back made the caller's GC of the reply (the VM's,
  # 20-70 ms here) one long schedule. Large replies have
  # large_reply_test.exs.
  setup do
    pool =
      start_pool!(
        name: :large_arguments,
        pool_size: 1,
        fixture_adapter: "LargeResultAdapter"
      )

    %{pool: pool}
  end

  test "no call holds a normal scheduler, whatever the argument size", %{pool: pool} do
    watch_long_schedules(@threshold_ms)

    big = String.duplicate("0123456789", 5_000_000)
    rows = for i <- 1..100_000, do: %{id: i, name: "row #{i}", tags: ["a", "b"]}

    caller =
      Task.async(fn ->
        {:ok, text_sizes} =
          Snakepit.execute("sizes", %{text: big}, pool_name: pool, timeout: 60_000)

        {:ok, row_sizes} =
          Snakepit.execute("sizes", %{rows: rows}, pool_name: pool, timeout: 60_000)

        for _ <- 1..200, do: {:ok, _} = Snakepit.execute("sizes", %{}, pool_name: pool)
        {text_sizes, row_sizes}
      end)

    assert Task.await(caller, 120_000) == {%{"text" => 50_000_000}, %{"rows" => 100_000}}
    assert long_schedules_of(caller.pid) == []
  end
end
