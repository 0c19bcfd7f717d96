defmodule Snakepit do
  @moduledoc """
  Pools of Python workers for Elixir, with the runtime in a C++ NIF.

  Configure pools under `config :snakepit, pools: [...]` (see
  `Snakepit.Config`) and call tools:

      {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2})
      {:ok, result} = Snakepit.execute("predict", %{data: [1, 2, 3]}, pool_name: :ml)

  Every call returns `{:ok, result}` or `{:error, %Snakepit.Error{}}`; it
  never raises for a worker-side failure.
  """

  alias Snakepit.{Args, Error, Native, Pool, Telemetry}

  @default_timeout 30_000
  # The native side answers by the deadline; this only guards against a lost reply.
  @reply_margin_ms 2_000

  @type result :: {:ok, term()} | {:error, Error.t()}

  @doc """
  Runs the tool `command` with `args` (a map) in a worker of the pool.

  Options: `:pool_name` (or `:pool`, a pool name; default the first pool),
  `:timeout` in ms (default 30 s, covering queueing and the call itself),
  `:session_id`.
  """
  @spec execute(String.t() | atom(), map(), keyword()) :: result()
  def execute(command, args, opts \\ []) do
    pool_name = pool_name(opts)
    command = to_string(command)
    session_id = opts |> Keyword.get(:session_id, "") |> to_string()
    timeout = Keyword.get(opts, :timeout, @default_timeout)

    with {:ok, handle} <- Pool.lookup(pool_name) do
      call(handle, pool_name, command, args, session_id, timeout)
    end
  end

  @doc "Like `execute/3`, with `session_id` set for the call."
  @spec execute_in_session(String.t(), String.t() | atom(), map(), keyword()) :: result()
  def execute_in_session(session_id, command, args, opts \\ []) do
    execute(command, args, Keyword.put(opts, :session_id, session_id))
  end

  @doc """
  Statistics of one pool, or summed over every pool: `requests`, `queued`,
  `errors`, `queue_timeouts`, `pool_saturated`, `workers`, `available`,
  `busy`, `recycles`, `worker_restarts`, and `worker_loads` (per worker its
  `id`, `inflight` requests and `capacity`).
  """
  @spec get_stats(atom() | nil) :: map()
  def get_stats(pool_name \\ nil)

  def get_stats(nil) do
    Pool.names()
    |> Enum.map(&get_stats/1)
    |> Enum.reduce(%{}, fn stats, acc ->
      Map.merge(acc, stats, fn
        _key, a, b when is_integer(a) and is_integer(b) -> a + b
        _key, a, b when is_list(a) and is_list(b) -> a ++ b
        _key, a, nil -> a
        _key, _a, b -> b
      end)
    end)
  end

  def get_stats(pool_name) do
    with {:ok, stats} <- Pool.stats(pool_name),
         {:ok, workers} <- Pool.workers(pool_name) do
      Map.put(stats, :worker_loads, Enum.map(workers, &Map.take(&1, [:id, :inflight, :capacity])))
    else
      {:error, error} -> raise error
    end
  end

  @doc "Worker ids of one pool, or of every pool."
  @spec list_workers(atom() | nil) :: [String.t()]
  def list_workers(pool_name \\ nil)
  def list_workers(nil), do: Enum.flat_map(Pool.names(), &list_workers/1)

  def list_workers(pool_name) do
    case Pool.workers(pool_name) do
      {:ok, workers} -> Enum.map(workers, & &1.id)
      {:error, error} -> raise error
    end
  end

  defp pool_name(opts) do
    Keyword.get(opts, :pool_name) || Keyword.get(opts, :pool) || List.first(Pool.names()) ||
      :default
  end

  defp call(_handle, pool_name, command, args, _session_id, _timeout) when not is_map(args) do
    {:error,
     Error.new(:validation, :invalid_args, "args must be a map, got: #{inspect(args, limit: 5)}",
       command: command,
       pool_name: pool_name
     )}
  end

  defp call(handle, pool_name, command, args, session_id, timeout) do
    ref = make_ref()
    started = System.monotonic_time()

    case Native.submit(handle, command, args, timeout, session_id, ref) do
      {:ok, request_id} ->
        await_reply(handle, request_id, ref, timeout)
        |> finish(pool_name, command, started)

      {:error, native_error} ->
        {:error, Error.from_native(native_error, command: command, pool_name: pool_name)}

      :needs_preprocess ->
        case Args.prepare(args) do
          {:ok, prepared} ->
            call(handle, pool_name, command, prepared, session_id, timeout)

          {:error, message} ->
            {:error,
             Error.new(:validation, :invalid_args, message, command: command, pool_name: pool_name)}
        end
    end
  end

  defp await_reply(handle, request_id, ref, timeout) do
    receive do
      {^ref, result, worker_id} -> {result, worker_id}
    after
      timeout + @reply_margin_ms ->
        Native.cancel(handle, request_id)

        receive do
          {^ref, result, worker_id} -> {result, worker_id}
        after
          0 -> {{:error, {:timeout, :worker_timeout, "no reply within #{timeout} ms", %{}}}, ""}
        end
    end
  end

  defp finish({result, worker_id}, pool_name, command, started) do
    duration_us =
      System.convert_time_unit(System.monotonic_time() - started, :native, :microsecond)

    Telemetry.execute([:snakepit, :request, :executed], %{duration_us: duration_us}, %{
      pool: pool_name,
      worker_id: worker_id,
      command: command,
      success: match?({:ok, _}, result)
    })

    case result do
      {:ok, _} = ok ->
        ok

      {:error, native_error} ->
        {:error, Error.from_native(native_error, command: command, pool_name: pool_name)}
    end
  end
end
