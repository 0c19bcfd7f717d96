defmodule Snakepit.CallerMonitorTest do
  # The pool monitors each caller process once, from its first call until it
  # dies, and a caller's death cancels its calls in flight.
  use Snakepit.PoolCase, async: false

  defp monitors(pid), do: pid |> Process.info(:monitored_by) |> elem(1) |> length()

  test "a caller is monitored once however many calls it makes" do
    pool = start_pool!(name: :caller_monitors, pool_size: 1)
    parent = self()

    spawn_link(fn ->
      before = monitors(self())
      for n <- 1..50, do: {:ok, ^n} = Snakepit.execute("add", %{a: n, b: 0}, pool_name: pool)
      send(parent, {:monitors, before, monitors(self())})
    end)

    assert_receive {:monitors, before, after_calls}, 10_000
    assert after_calls == before + 1
  end

  test "a caller's death cancels its queued call: it never runs" do
    pool = start_pool!(name: :caller_dies, pool_size: 1)
    # An earlier call leaves the caller monitored before it queues the next.
    victim =
      spawn(fn ->
        {:ok, _} = Snakepit.execute("ping", %{}, pool_name: pool)
        receive do: (:go -> Snakepit.execute("sleep", %{ms: 1_000}, pool_name: pool))
      end)

    Process.sleep(200)
    blocker = Task.async(fn -> Snakepit.execute("sleep", %{ms: 800}, pool_name: pool) end)
    Process.sleep(100)
    send(victim, :go)
    Process.sleep(200)
    Process.exit(victim, :kill)
    assert {:ok, _} = Task.await(blocker, 5_000)

    # Had the victim's 1 s sleep run, this call would wait behind it.
    {micros, reply} =
      :timer.tc(fn -> Snakepit.execute("ping", %{}, pool_name: pool, timeout: 5_000) end)

    assert {:ok, _} = reply
    assert micros < 500_000, "ping waited #{div(micros, 1000)} ms behind the dead caller's call"
  end
end
