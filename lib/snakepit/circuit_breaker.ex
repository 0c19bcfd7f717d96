defmodule Snakepit.CircuitBreaker do
  @moduledoc """
  A circuit breaker: after `failure_threshold` failed calls it opens and
  refuses calls with `{:error, :circuit_open}` (without running them); after
  `reset_timeout_ms` it lets `half_open_max_calls` trial calls through. A
  trial that succeeds closes it, one that fails opens it again.

      {:ok, cb} = Snakepit.CircuitBreaker.start_link(failure_threshold: 5, reset_timeout_ms: 30_000)

      case Snakepit.CircuitBreaker.call(cb, fn -> Snakepit.execute("predict", args) end) do
        {:ok, result} -> result
        {:error, :circuit_open} -> :unavailable
        {:error, reason} -> {:error, reason}
      end

  A call fails when the function returns `{:error, _}` or raises (the
  exception is re-raised); anything else is a success. The function runs in
  the caller's process.

  Telemetry: `[:snakepit, :circuit_breaker, :opened]` (`%{failure_count}`,
  `%{pool: name, reason: :failures}`), `[:snakepit, :circuit_breaker,
  :half_open]` and `[:snakepit, :circuit_breaker, :closed]` (`%{pool: name}`).
  """
  use GenServer

  @type state :: :closed | :open | :half_open

  @defaults [failure_threshold: 5, reset_timeout_ms: 30_000, half_open_max_calls: 1]

  @doc """
  Starts a circuit breaker. Options: `:name`, `:failure_threshold` (5),
  `:reset_timeout_ms` (30 000), `:half_open_max_calls` (1).
  """
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []) do
    opts = Keyword.merge(@defaults, opts)

    for key <- Keyword.keys(@defaults) do
      value = opts[key]

      unless is_integer(value) and value > 0 do
        raise ArgumentError,
              "#{inspect(key)} must be a positive integer, got: #{inspect(value)}"
      end
    end

    gen_opts = if opts[:name], do: [name: opts[:name]], else: []
    GenServer.start_link(__MODULE__, opts, gen_opts)
  end

  @doc "The current state: `:closed`, `:open` or `:half_open`."
  @spec state(GenServer.server()) :: state()
  def state(server), do: GenServer.call(server, :state)

  @doc "Whether a call would be let through now (does not take a half-open trial slot)."
  @spec allow_call?(GenServer.server()) :: boolean()
  def allow_call?(server), do: GenServer.call(server, :allow_call?)

  @doc "Records a successful call made outside `call/2`."
  @spec record_success(GenServer.server()) :: :ok
  def record_success(server), do: GenServer.cast(server, :success)

  @doc "Records a failed call made outside `call/2`."
  @spec record_failure(GenServer.server()) :: :ok
  def record_failure(server), do: GenServer.cast(server, :failure)

  @doc "Runs `fun` through the breaker; `{:error, :circuit_open}` when it is open."
  @spec call(GenServer.server(), (() -> result)) :: result | {:error, :circuit_open}
        when result: term()
  def call(server, fun) when is_function(fun, 0) do
    case GenServer.call(server, :try_call) do
      :rejected ->
        {:error, :circuit_open}

      :allowed ->
        try do
          fun.()
        catch
          kind, reason ->
            record_failure(server)
            :erlang.raise(kind, reason, __STACKTRACE__)
        else
          {:error, _} = error ->
            record_failure(server)
            error

          result ->
            record_success(server)
            result
        end
    end
  end

  @doc "Counters: `state`, `failure_count`, `success_count`, `failure_threshold`, `half_open_calls`."
  @spec stats(GenServer.server()) :: map()
  def stats(server), do: GenServer.call(server, :stats)

  @doc "Closes the breaker and clears its failure count."
  @spec reset(GenServer.server()) :: :ok
  def reset(server), do: GenServer.cast(server, :reset)

  @impl GenServer
  def init(opts) do
    {:ok,
     %{
       name: opts[:name],
       state: :closed,
       failure_count: 0,
       success_count: 0,
       failure_threshold: opts[:failure_threshold],
       reset_timeout_ms: opts[:reset_timeout_ms],
       half_open_max_calls: opts[:half_open_max_calls],
       half_open_calls: 0,
       opened_at: nil
     }}
  end

  @impl GenServer
  def handle_call(:state, _from, s) do
    s = maybe_half_open(s)
    {:reply, s.state, s}
  end

  def handle_call(:allow_call?, _from, s) do
    s = maybe_half_open(s)
    {:reply, admits?(s), s}
  end

  def handle_call(:try_call, _from, s) do
    s = maybe_half_open(s)

    cond do
      not admits?(s) -> {:reply, :rejected, s}
      s.state == :half_open -> {:reply, :allowed, %{s | half_open_calls: s.half_open_calls + 1}}
      true -> {:reply, :allowed, s}
    end
  end

  def handle_call(:stats, _from, s) do
    s = maybe_half_open(s)

    {:reply,
     Map.take(s, [:state, :failure_count, :success_count, :failure_threshold, :half_open_calls]),
     s}
  end

  @impl GenServer
  def handle_cast(:success, s) do
    s = %{s | success_count: s.success_count + 1}
    if s.state == :half_open, do: {:noreply, close(s)}, else: {:noreply, s}
  end

  def handle_cast(:failure, s) do
    s = %{s | failure_count: s.failure_count + 1}

    case s.state do
      :closed when s.failure_count >= s.failure_threshold -> {:noreply, open(s)}
      :half_open -> {:noreply, open(s)}
      _ -> {:noreply, s}
    end
  end

  def handle_cast(:reset, s), do: {:noreply, close(s)}

  defp admits?(%{state: :closed}), do: true
  defp admits?(%{state: :open}), do: false
  defp admits?(%{state: :half_open} = s), do: s.half_open_calls < s.half_open_max_calls

  defp maybe_half_open(%{state: :open} = s) do
    if now() - s.opened_at >= s.reset_timeout_ms do
      emit(:half_open, %{}, s)
      %{s | state: :half_open, half_open_calls: 0}
    else
      s
    end
  end

  defp maybe_half_open(s), do: s

  defp open(s) do
    emit(:opened, %{failure_count: s.failure_count}, s, %{reason: :failures})
    %{s | state: :open, opened_at: now(), half_open_calls: 0}
  end

  defp close(s) do
    emit(:closed, %{}, s)
    %{s | state: :closed, failure_count: 0, half_open_calls: 0, opened_at: nil}
  end

  defp emit(event, measurements, s, extra \\ %{}) do
    Snakepit.Telemetry.execute(
      [:snakepit, :circuit_breaker, event],
      measurements,
      Map.merge(%{pool: s.name}, extra)
    )
  end

  defp now, do: System.monotonic_time(:millisecond)
end
