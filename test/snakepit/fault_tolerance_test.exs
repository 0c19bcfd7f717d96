defmodule Snakepit.FaultToleranceTest do
  use ExUnit.Case, async: false

  alias Snakepit.{CircuitBreaker, Executor, HealthMonitor, RetryPolicy}

  setup do
    :telemetry.attach_recorder()
    on_exit(fn -> :telemetry.detach_recorder() end)
  end

  describe "CircuitBreaker" do
    test "closed -> open after the threshold -> half-open after the reset timeout -> closed" do
      cb = start_supervised!({CircuitBreaker, failure_threshold: 2, reset_timeout_ms: 200})
      assert CircuitBreaker.state(cb) == :closed
      assert {:ok, 1} = CircuitBreaker.call(cb, fn -> {:ok, 1} end)
      assert {:error, :x} = CircuitBreaker.call(cb, fn -> {:error, :x} end)
      assert CircuitBreaker.state(cb) == :closed
      assert {:error, :x} = CircuitBreaker.call(cb, fn -> {:error, :x} end)
      assert CircuitBreaker.state(cb) == :open

      assert_receive {:telemetry_event, [:snakepit, :circuit_breaker, :opened],
                      %{failure_count: 2}, %{reason: :failures}}

      # Open: refused without running the function.
      assert {:error, :circuit_open} = CircuitBreaker.call(cb, fn -> send(self(), :ran) end)
      refute_received :ran
      refute CircuitBreaker.allow_call?(cb)

      Process.sleep(250)
      assert CircuitBreaker.state(cb) == :half_open
      assert_receive {:telemetry_event, [:snakepit, :circuit_breaker, :half_open], _, _}
      assert {:ok, :trial} = CircuitBreaker.call(cb, fn -> {:ok, :trial} end)
      assert CircuitBreaker.state(cb) == :closed
      assert_receive {:telemetry_event, [:snakepit, :circuit_breaker, :closed], _, _}

      assert %{state: :closed, failure_count: 0, success_count: 2, failure_threshold: 2} =
               CircuitBreaker.stats(cb)
    end

    test "half-open admits half_open_max_calls trials; a failed trial reopens" do
      cb =
        start_supervised!(
          {CircuitBreaker, failure_threshold: 1, reset_timeout_ms: 100, half_open_max_calls: 1}
        )

      assert_raise RuntimeError, fn -> CircuitBreaker.call(cb, fn -> raise "boom" end) end
      assert CircuitBreaker.state(cb) == :open
      Process.sleep(150)

      parent = self()

      trial =
        Task.async(fn ->
          CircuitBreaker.call(cb, fn ->
            send(parent, :trial_running)
            receive(do: (:finish -> {:error, :still_broken}))
          end)
        end)

      assert_receive :trial_running
      # The one trial slot is taken.
      assert {:error, :circuit_open} = CircuitBreaker.call(cb, fn -> {:ok, :second} end)
      send(trial.pid, :finish)
      assert {:error, :still_broken} = Task.await(trial)
      assert CircuitBreaker.state(cb) == :open

      CircuitBreaker.reset(cb)
      assert CircuitBreaker.state(cb) == :closed
    end

    test "bad options are refused" do
      assert_raise ArgumentError, ~r/:failure_threshold must be a positive integer/, fn ->
        CircuitBreaker.start_link(failure_threshold: 0)
      end
    end
  end

  describe "RetryPolicy" do
    test "attempts, backoff and retriable errors" do
      policy = RetryPolicy.new(max_attempts: 4, backoff_ms: [100, 200, 400, 800])

      assert Enum.map(1..5, &RetryPolicy.should_retry?(policy, &1)) == [
               true,
               true,
               true,
               false,
               false
             ]

      assert Enum.map(1..5, &RetryPolicy.backoff_for_attempt(policy, &1)) == [
               100,
               200,
               400,
               800,
               800
             ]

      assert RetryPolicy.retry_for_error?(policy, {:error, :timeout})
      refute RetryPolicy.retry_for_error?(policy, {:error, :bad_input})
      refute RetryPolicy.retry_for_error?(policy, :timeout)

      assert RetryPolicy.retry_for_error?(
               policy,
               {:error, Snakepit.Error.new(:timeout, :queue_timeout, "late")}
             )

      assert RetryPolicy.retry_for_error?(
               policy,
               {:error, Snakepit.Error.new(:worker, :worker_exited, "gone")}
             )

      jittered = RetryPolicy.new(backoff_ms: [1000], jitter: true)
      delays = for _ <- 1..50, do: RetryPolicy.backoff_for_attempt(jittered, 1)
      assert Enum.all?(delays, &(&1 in 750..1250))
      assert length(Enum.uniq(delays)) > 1

      exponential = RetryPolicy.new(backoff_ms: [], base_backoff_ms: 10, max_backoff_ms: 50)
      assert Enum.map(1..4, &RetryPolicy.backoff_for_attempt(exponential, &1)) == [10, 20, 40, 50]
      assert_raise KeyError, fn -> RetryPolicy.new(max_attempt: 3) end
    end
  end

  describe "Executor" do
    test "retries retriable errors until success, with telemetry" do
      counter = :counters.new(1, [])

      result =
        Executor.execute_with_retry(
          fn ->
            :counters.add(counter, 1, 1)
            if :counters.get(counter, 1) < 3, do: {:error, :timeout}, else: {:ok, :done}
          end,
          max_attempts: 5,
          backoff_ms: [1, 1]
        )

      assert result == {:ok, :done}
      assert :counters.get(counter, 1) == 3

      assert_receive {:telemetry_event, [:snakepit, :retry, :attempt], %{attempt: 1, delay_ms: 1},
                      _}

      assert_receive {:telemetry_event, [:snakepit, :retry, :success], %{attempts: 3}, _}
    end

    test "stops at a non-retriable error and when attempts run out" do
      assert {:error, :bad} =
               Executor.execute_with_retry(fn -> {:error, :bad} end, backoff_ms: [1])

      assert {:error, :timeout} =
               Executor.execute_with_retry(fn -> {:error, :timeout} end,
                 max_attempts: 2,
                 backoff_ms: [1]
               )

      assert_receive {:telemetry_event, [:snakepit, :retry, :exhausted], %{attempts: 2},
                      %{last_error: {:error, :timeout}}}
    end

    test "timeout, crash, batch, async and protection" do
      assert {:ok, :fast} =
               Executor.execute_with_timeout(fn -> {:ok, :fast} end, timeout_ms: 1000)

      assert {:error, :timeout} =
               Executor.execute_with_timeout(fn -> Process.sleep(1_000) end, timeout_ms: 50)

      assert {:error, {:task_crashed, {%RuntimeError{message: "x"}, _}}} =
               Executor.execute_with_timeout(fn -> raise "x" end, timeout_ms: 1000)

      assert Executor.execute_batch([fn -> 1 end, fn -> Process.sleep(500) end, fn -> 3 end],
               timeout_ms: 100,
               max_concurrency: 2
             ) == [1, {:error, {:exit, :timeout}}, 3]

      assert Task.await(Executor.execute_async(fn -> :async end)) == :async
      assert Executor.execute(fn -> :direct end) == :direct

      cb = start_supervised!({CircuitBreaker, failure_threshold: 3})
      counter = :counters.new(1, [])

      assert {:ok, 2} =
               Executor.execute_with_protection(
                 cb,
                 fn ->
                   :counters.add(counter, 1, 1)
                   n = :counters.get(counter, 1)
                   if n < 2, do: {:error, :timeout}, else: {:ok, n}
                 end,
                 max_attempts: 3,
                 backoff_ms: [1]
               )

      assert CircuitBreaker.state(cb) == :closed
      assert CircuitBreaker.stats(cb).failure_count == 1
    end
  end

  describe "HealthMonitor" do
    test "crashes in the window decide pool and worker health" do
      hm =
        start_supervised!({HealthMonitor, pool: :demo, max_crashes: 3, crash_window_ms: 60_000})

      assert HealthMonitor.healthy?(hm)
      HealthMonitor.record_crash(hm, "w1", %{reason: :segfault})
      HealthMonitor.record_crash(hm, "w1", %{reason: :oom})

      assert_receive {:telemetry_event, [:snakepit, :worker, :crash], %{},
                      %{pool: :demo, worker_id: "w1", reason: :segfault}}

      assert HealthMonitor.healthy?(hm)
      assert %{healthy: true, crash_count: 2} = HealthMonitor.worker_health(hm, "w1")
      HealthMonitor.record_crash(hm, "w1", %{reason: :oom})
      refute HealthMonitor.healthy?(hm)
      assert %{healthy: false, crash_count: 3} = HealthMonitor.worker_health(hm, "w1")
      assert %{healthy: true, crash_count: 0} = HealthMonitor.worker_health(hm, "w2")

      assert %{
               pool: :demo,
               total_crashes: 3,
               crashes_in_window: 3,
               workers_with_crashes: 1,
               is_healthy: false
             } = HealthMonitor.stats(hm)
    end

    test "crashes leave the window" do
      hm =
        start_supervised!(
          {HealthMonitor,
           pool: :demo, max_crashes: 1, crash_window_ms: 100, check_interval_ms: 50}
        )

      HealthMonitor.record_crash(hm, "w1")
      refute HealthMonitor.healthy?(hm)
      Process.sleep(250)
      assert HealthMonitor.healthy?(hm)

      assert %{total_crashes: 1, crashes_in_window: 0, workers_with_crashes: 0} =
               HealthMonitor.stats(hm)
    end
  end
end
