defmodule Snakepit.Executor do
  @moduledoc """
  Ways to run a function with fault tolerance: retries
  (`Snakepit.RetryPolicy`), a circuit breaker (`Snakepit.CircuitBreaker`),
  a timeout, or a batch in parallel.

      Snakepit.Executor.execute_with_retry(fn -> Snakepit.execute("predict", args) end,
        max_attempts: 3, backoff_ms: [100, 200], retriable_errors: [:timeout, :worker_crash])

  Retry telemetry: `[:snakepit, :retry, :attempt]` (`%{attempt, delay_ms}`),
  `[:snakepit, :retry, :success]` and `[:snakepit, :retry, :exhausted]`
  (`%{attempts, total_duration}`, native time units; `last_error` in the
  metadata of the latter).
  """

  alias Snakepit.{CircuitBreaker, RetryPolicy, Telemetry}

  @policy_keys Map.keys(%RetryPolicy{}) -- [:__struct__]

  @doc "Runs `fun` as is."
  @spec execute((() -> result), keyword()) :: result when result: term()
  def execute(fun, _opts \\ []) when is_function(fun, 0), do: fun.()

  @doc """
  Runs `fun` until it returns `:ok` / `{:ok, _}`, a non-retriable result,
  or the attempts run out; options are `Snakepit.RetryPolicy` fields
  (default `max_attempts: 3`). Returns the last result.
  """
  @spec execute_with_retry((() -> result), keyword()) :: result when result: term()
  def execute_with_retry(fun, opts \\ []) when is_function(fun, 0) do
    policy = opts |> Keyword.take(@policy_keys) |> RetryPolicy.new()
    retry(fun, policy, 1, System.monotonic_time())
  end

  defp retry(fun, policy, attempt, started) do
    result = fun.()

    cond do
      result == :ok or match?({:ok, _}, result) ->
        emit(:success, %{attempts: attempt, total_duration: elapsed(started)}, %{})
        result

      not RetryPolicy.retry_for_error?(policy, result) ->
        result

      RetryPolicy.should_retry?(policy, attempt) ->
        delay = RetryPolicy.backoff_for_attempt(policy, attempt)
        emit(:attempt, %{attempt: attempt, delay_ms: delay}, %{operation: nil})
        Process.sleep(delay)
        retry(fun, policy, attempt + 1, started)

      true ->
        emit(:exhausted, %{attempts: attempt, total_duration: elapsed(started)}, %{
          last_error: result
        })

        result
    end
  end

  @doc "Runs `fun` through `circuit_breaker` (see `Snakepit.CircuitBreaker.call/2`)."
  @spec execute_with_circuit_breaker(GenServer.server(), (() -> result), keyword()) ::
          result | {:error, :circuit_open}
        when result: term()
  def execute_with_circuit_breaker(circuit_breaker, fun, _opts \\ []) when is_function(fun, 0),
    do: CircuitBreaker.call(circuit_breaker, fun)

  @doc """
  Runs `fun` in a separate process for at most `timeout_ms` (required).
  Returns its result, `{:error, :timeout}` (the process is killed), or
  `{:error, {:task_crashed, reason}}`.
  """
  @spec execute_with_timeout((() -> result), keyword()) ::
          result | {:error, :timeout | {:task_crashed, term()}}
        when result: term()
  def execute_with_timeout(fun, opts) when is_function(fun, 0) do
    timeout = Keyword.fetch!(opts, :timeout_ms)
    # Not linked: a crash must come back as a value, not take the caller down.
    {pid, ref} = spawn_monitor(fn -> exit({__MODULE__, fun.()}) end)

    receive do
      {:DOWN, ^ref, :process, ^pid, {__MODULE__, result}} -> result
      {:DOWN, ^ref, :process, ^pid, reason} -> {:error, {:task_crashed, reason}}
    after
      timeout ->
        Process.exit(pid, :kill)

        receive do
          {:DOWN, ^ref, :process, ^pid, {__MODULE__, result}} -> result
          {:DOWN, ^ref, :process, ^pid, _killed} -> {:error, :timeout}
        end
    end
  end

  @doc "Starts `fun` in a `Task` linked to the caller."
  @spec execute_async((() -> term()), keyword()) :: Task.t()
  def execute_async(fun, _opts \\ []) when is_function(fun, 0), do: Task.async(fun)

  @doc """
  Runs the functions in parallel, results in input order. Options:
  `:timeout_ms` per function (30 000) and `:max_concurrency` (all at once).
  A function that crashes or times out gives `{:error, {:exit, reason}}`.
  """
  @spec execute_batch([(() -> term())], keyword()) :: [term()]
  def execute_batch(functions, opts \\ []) when is_list(functions) do
    functions
    |> Task.async_stream(& &1.(),
      max_concurrency: max(Keyword.get(opts, :max_concurrency, length(functions)), 1),
      timeout: Keyword.get(opts, :timeout_ms, 30_000),
      on_timeout: :kill_task
    )
    |> Enum.map(fn
      {:ok, result} -> result
      {:exit, reason} -> {:error, {:exit, reason}}
    end)
  end

  @doc "`execute_with_retry/2` around `execute_with_circuit_breaker/3`."
  @spec execute_with_protection(GenServer.server(), (() -> result), keyword()) ::
          result | {:error, :circuit_open}
        when result: term()
  def execute_with_protection(circuit_breaker, fun, opts \\ []) do
    execute_with_retry(fn -> CircuitBreaker.call(circuit_breaker, fun) end, opts)
  end

  defp elapsed(started), do: System.monotonic_time() - started

  defp emit(event, measurements, metadata),
    do: Telemetry.execute([:snakepit, :retry, event], measurements, Map.put(metadata, :pool, nil))
end
