defmodule Snakepit.SchedulerBlockingTest do
  use Snakepit.PoolCase, async: false

  # The BEAM reports every time a process holds a normal scheduler longer
  # than the threshold (never for the monitoring process itself, so the
  # calls run in a task). Encoding a 50 MB argument takes far longer than
  # the threshold, so it must happen on a dirty scheduler to pass. The
  # threshold leaves room for a loaded 2-core machine; the rule is ~1 ms.
  @threshold_ms 40

  test "no call holds a normal scheduler, whatever the payload size" do
    watch_long_schedules(@threshold_ms)

    big = String.duplicate("0123456789", 5_000_000)
    nested = %{rows: for(i <- 1..100_000, do: %{id: i, name: "row #{i}", tags: ["a", "b"]})}

    caller =
      Task.async(fn ->
        {:ok, %{"echoed" => %{"text" => text}}} =
          Snakepit.execute("echo", %{text: big}, timeout: 60_000)

        {:ok, %{"echoed" => %{"rows" => rows}}} =
          Snakepit.execute("echo", nested, timeout: 60_000)

        for _ <- 1..200, do: {:ok, _} = Snakepit.execute("ping", %{})
        {byte_size(text), length(rows)}
      end)

    assert Task.await(caller, 120_000) == {50_000_000, 100_000}
    assert long_schedules_of(caller.pid) == []
  end
end
