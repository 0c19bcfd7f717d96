defmodule Snakepit.CallStreamTest do
  use Snakepit.PoolCase, async: false
  import ExUnit.CaptureLog
  # `make test` runs these again on the worker's grpc.server fallback.
  @moduletag :worker_path

  @fallback System.get_env("SNAKEPIT_WORKER_SERVER") == "fallback"

  test "the pool's calls reach a core-layer worker on its call stream, a grpc.server worker one RPC each" do
    Application.put_env(:snakepit, :log_level, :debug)
    on_exit(fn -> Application.delete_env(:snakepit, :log_level) end)
    level = Logger.level()
    Logger.configure(level: :debug)
    on_exit(fn -> Logger.configure(level: level) end)

    log =
      capture_log([level: :debug], fn ->
        pool = start_pool!(name: :call_stream_pool, pool_size: 1)

        for n <- 1..3,
            do: assert({:ok, ^n} = Snakepit.execute("add", %{a: n, b: 0}, pool_name: pool))

        # A call past its deadline and one whose caller died leave the stream serving.
        assert {:error, %Snakepit.Error{}} =
                 Snakepit.execute("sleep", %{ms: 300}, pool_name: pool, timeout: 50)

        caller = spawn(fn -> Snakepit.execute("sleep", %{ms: 300}, pool_name: pool) end)
        Process.sleep(100)
        Process.exit(caller, :kill)

        assert {:ok, 7} = Snakepit.execute("add", %{a: 3, b: 4}, pool_name: pool)
        Process.sleep(200)
      end)

    opened =
      log
      |> String.split("\n")
      |> Enum.count(&(&1 =~ "serving the runtime's calls on one stream"))

    if @fallback, do: assert(opened == 0), else: assert(opened == 1)
    # A grpc.server worker refuses the stream without an error in the log.
    refute log =~ "NotImplementedError"
    refute log =~ "Method not implemented"
  end

  test "deadlines end calls on time behind a call with a later one on the same stream" do
    pool =
      start_pool!(
        name: :mixed_deadlines,
        pool_size: 1,
        worker_profile: :thread,
        threads_per_worker: 3
      )

    long =
      Task.async(fn ->
        Snakepit.execute("sleep", %{ms: 1_500}, pool_name: pool, timeout: 10_000)
      end)

    Process.sleep(100)

    # Each tool runs 1.2 s: only the runtime's deadlines end the calls
    # sooner. The 150 ms one needs the stream's alarm armed earlier than the
    # long call's; the 400 ms one needs it armed again after it went off.
    short =
      for timeout <- [150, 400] do
        Task.async(fn ->
          :timer.tc(fn ->
            Snakepit.execute("sleep", %{ms: 1_200}, pool_name: pool, timeout: timeout)
          end)
        end)
      end

    for {micros, result} <- Task.await_many(short, 5_000) do
      assert {:error, %Snakepit.Error{}} = result
      assert micros < 1_000_000, "a short call ended after #{div(micros, 1000)} ms"
    end

    assert {:ok, _} = Task.await(long, 5_000)
    assert {:ok, 5} = Snakepit.execute("add", %{a: 2, b: 3}, pool_name: pool)
  end
end
