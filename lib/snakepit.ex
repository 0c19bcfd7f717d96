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

  alias Snakepit.{Args, CrashBarrier, Error, Native, Pool, Telemetry}
  alias Snakepit.Bridge.SessionStore
  alias Snakepit.Telemetry.Calls

  @default_timeout 30_000
  # `timeout: :infinity` has no deadline; natively that is a very long one.
  @no_deadline_ms 10 * 365 * 24 * 3_600_000
  # The native side answers by the deadline; this only guards against a lost reply.
  @reply_margin_ms 2_000
  @affinities [:hint, :strict_queue, :strict_fail_fast]
  # Stream chunks are granted back to the native reader in batches of this
  # size; the native window is twice that, which bounds the caller's mailbox.
  @stream_grant 16

  @type result :: {:ok, term()} | {:error, Error.t()}
  @type stream_callback :: (map() -> :halt | term())

  @doc """
  Runs the tool `command` with `args` (a map) in a worker of the pool.

  Options: `:pool_name` (or `:pool`, a pool name; default the first pool,
  also for `Snakepit.Pool` as upstream Snakepit passes it), `:timeout` in ms
  or `:infinity` (default 30 s, covering queueing and the call itself),
  `:session_id`, `:affinity` (`:hint | :strict_queue | :strict_fail_fast`,
  default the pool's).
  """
  @spec execute(String.t() | atom(), map(), keyword()) :: result()
  def execute(command, args, opts \\ []) do
    with {:ok, call} <- submit(command, args, opts, false) do
      try do
        call |> await_reply() |> finish(call)
      catch
        kind, reason -> Calls.raised(call, kind, reason, __STACKTRACE__)
      end
    end
    |> CrashBarrier.after_call(command, args, opts)
  end

  @doc "Like `execute/3`, in session `session_id` (see the `:affinity` option)."
  @spec execute_in_session(String.t(), String.t() | atom(), map(), keyword()) :: result()
  def execute_in_session(session_id, command, args, opts \\ []) do
    execute(command, args, Keyword.put(opts, :session_id, session_id))
  end

  @doc """
  Runs a streaming tool (one that yields) and calls `callback` in the
  caller's process with each chunk: the chunk's JSON object as a map (a
  value that is not an object comes as `%{"data" => value}`) plus
  `"is_final"`. Returning `:halt` from the callback stops the stream and
  closes the Python generator. Returns `:ok` at the end, or the error that
  ended the stream (chunks before it were delivered). Options as `execute/3`.
  """
  @spec execute_stream(String.t() | atom(), map(), stream_callback(), keyword()) ::
          :ok | {:error, Error.t()}
  def execute_stream(command, args, callback, opts \\ []) when is_function(callback, 1) do
    with {:ok, call} <- submit(command, args, opts, true) do
      call |> stream_loop(callback, 0) |> finish(call) |> stream_result()
    end
  end

  @doc "Like `execute_stream/4`, in session `session_id`."
  @spec execute_in_session_stream(
          String.t(),
          String.t() | atom(),
          map(),
          stream_callback(),
          keyword()
        ) ::
          :ok | {:error, Error.t()}
  def execute_in_session_stream(session_id, command, args, callback, opts \\ []) do
    execute_stream(command, args, callback, Keyword.put(opts, :session_id, session_id))
  end

  @doc """
  Statistics of one pool, or summed over every pool: `requests`, `queued`,
  `errors`, `queue_timeouts`, `pool_saturated`, `workers`, `available`,
  `busy`, `recycles`, `worker_restarts`, `sessions`, and `worker_loads` (per
  worker its `id`, `inflight` requests and `capacity`).
  """
  @spec get_stats(atom() | nil) :: map()
  def get_stats(pool_name \\ nil)

  # Upstream Snakepit's default argument is its pool process, Snakepit.Pool.
  def get_stats(Pool), do: get_stats(nil)

  def get_stats(nil) do
    Pool.names()
    |> Enum.flat_map(&running_pool_stats/1)
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
    case pool_stats(pool_name) do
      {:ok, stats} -> stats
      {:error, error} -> raise error
    end
  end

  # A pool restarting right now has no stats to add.
  defp running_pool_stats(pool_name) do
    case pool_stats(pool_name) do
      {:ok, stats} -> [stats]
      {:error, _} -> []
    end
  end

  defp pool_stats(pool_name) do
    with {:ok, stats} <- Pool.stats(pool_name),
         {:ok, workers} <- Pool.workers(pool_name) do
      {:ok,
       Map.put(
         stats,
         :worker_loads,
         Enum.map(workers, &Map.take(&1, [:id, :inflight, :capacity]))
       )}
    end
  end

  @doc "Worker ids of one pool, or of every pool."
  @spec list_workers(atom() | nil) :: [String.t()]
  def list_workers(pool_name \\ nil)
  def list_workers(Pool), do: list_workers(nil)

  def list_workers(nil) do
    Enum.flat_map(Pool.names(), fn name ->
      case Pool.workers(name) do
        {:ok, workers} -> Enum.map(workers, & &1.id)
        {:error, _restarting} -> []
      end
    end)
  end

  def list_workers(pool_name) do
    case Pool.workers(pool_name) do
      {:ok, workers} -> Enum.map(workers, & &1.id)
      {:error, error} -> raise error
    end
  end

  @doc """
  Runs `fun` with Snakepit started and its pools ready, then stops Snakepit
  so no worker outlives the script. Returns what `fun` returns, or
  `{:error, reason}` when Snakepit cannot start or its pools do not get
  ready. Options: `:timeout` bounds the wait for readiness (default 30 s);
  `:stop_mode` is `:if_started` (default: stop Snakepit only if this call
  started it), `:always` or `:never`.
  """
  @spec run_as_script((() -> result), keyword()) :: result | {:error, term()}
        when result: term()
  def run_as_script(fun, opts \\ []) when is_function(fun, 0) do
    stop_mode = Keyword.get(opts, :stop_mode, :if_started)

    case Application.ensure_all_started(:snakepit) do
      {:ok, started} ->
        try do
          with :ok <- Pool.await_ready(:all, Keyword.get(opts, :timeout, 30_000)), do: fun.()
        after
          if stop?(stop_mode, started), do: Application.stop(:snakepit)
        end

      {:error, reason} ->
        {:error, reason}
    end
  end

  defp stop?(:always, _started), do: true
  defp stop?(:never, _started), do: false
  defp stop?(:if_started, started), do: :snakepit in started

  @doc "Kills worker processes left behind by BEAMs that are gone. Returns `:ok`."
  @spec cleanup() :: :ok
  def cleanup do
    {run_id, _runtime_dir} = Native.runtime_info()
    Snakepit.Orphans.sweep(run_id)
    :ok
  end

  # ------------------------------------------------------------ internals

  defp submit(command, args, opts, stream?) do
    call = %{
      pool_name: pool_name(opts),
      command: to_string(command),
      timeout: Keyword.get(opts, :timeout, @default_timeout),
      started: System.monotonic_time(),
      session_id: Keyword.get(opts, :session_id),
      correlation_id: Keyword.get(opts, :correlation_id),
      stream: stream?,
      span: nil
    }

    with :ok <- validate_opts(call, opts),
         {:ok, handle, default_affinity} <- route(call) do
      native_opts =
        {native_timeout(call.timeout), opts |> Keyword.get(:session_id, "") |> to_string(),
         Keyword.get(opts, :affinity, default_affinity), stream?}

      submit_native(Map.put(call, :handle, handle), args, native_opts)
    end
  end

  defp pool_name(opts) do
    case Keyword.get(opts, :pool_name) || Keyword.get(opts, :pool) do
      name when name in [nil, Pool] -> Pool.default_name()
      name -> name
    end
  end

  defp route(call) do
    with {:error, error} <- Pool.route(call.pool_name) do
      {:error, %{error | details: Map.put(error.details, :command, call.command)}}
    end
  end

  defp validate_opts(call, opts) do
    affinity = Keyword.get(opts, :affinity, :hint)

    cond do
      not (call.timeout == :infinity or (is_integer(call.timeout) and call.timeout >= 0)) ->
        {:error,
         option_error(
           call,
           "timeout must be a non-negative integer (ms) or :infinity, got: #{inspect(call.timeout)}"
         )}

      affinity not in @affinities ->
        {:error,
         option_error(
           call,
           "affinity must be one of #{inspect(@affinities)}, got: #{inspect(affinity)}"
         )}

      true ->
        :ok
    end
  end

  defp option_error(call, message) do
    Error.new(:validation, :invalid_option, message,
      command: call.command,
      pool_name: call.pool_name
    )
  end

  defp native_timeout(:infinity), do: @no_deadline_ms
  defp native_timeout(ms), do: ms

  defp submit_native(call, args, native_opts, prepared? \\ false)

  defp submit_native(call, args, _native_opts, _prepared?) when not is_map(args) do
    rejected(call, "args must be a map, got: #{inspect(args, limit: 5)}")
  end

  defp submit_native(call, args, native_opts, prepared?) do
    ref = make_ref()

    case Native.submit(call.handle, call.command, args, native_opts, ref) do
      {:ok, request_id} ->
        {:ok, call |> Map.merge(%{request_id: request_id, ref: ref}) |> Calls.started()}

      {:error, native_error} ->
        error = Error.from_native(native_error, command: call.command, pool_name: call.pool_name)
        if error.details.reason == :pool_saturated, do: saturated(call)
        {:error, error}

      # Args.prepare leaves no struct behind, so one pass is enough; a second
      # request for it would mean the NIF and Args disagree on what a struct
      # is, and is refused rather than retried forever.
      :needs_preprocess when prepared? ->
        rejected(call, "args still hold a struct after conversion", "args")

      :needs_preprocess ->
        case Args.prepare(args) do
          {:ok, prepared} -> submit_native(call, prepared, native_opts, true)
          {:error, message, path} -> rejected(call, message, path)
        end
    end
  end

  defp saturated(call) do
    stats = Native.stats(call.handle)

    # Refused because the queue is full: its length is its bound right now.
    Telemetry.execute(
      [:snakepit, :pool, :saturated],
      %{count: 1, queue_size: stats.queued, max_queue_size: stats.queued},
      %{
        pool: call.pool_name,
        command: call.command,
        available_workers: stats.available,
        busy_workers: stats.busy
      }
    )
  end

  # Refused here, before the pool saw it: still a request and an error in its stats.
  defp rejected(call, message, path \\ nil) do
    Native.count_rejected(call.handle)

    {:error,
     Error.new(:validation, :invalid_args, message,
       command: call.command,
       pool_name: call.pool_name,
       details: if(path, do: %{path: path}, else: %{})
     )}
  end

  defp await_reply(%{ref: ref} = call) do
    receive do
      {^ref, result, worker_id} -> {built(result), worker_id}
    after
      reply_wait(call.timeout) -> give_up(call)
    end
  end

  # A reply with a map too large to build off a scheduler (see
  # c_src/nif/term_builder.hpp) arrives as JSON and is built here.
  defp built({:json, payload}), do: Native.decode_result(payload)
  defp built(result), do: result

  defp built_chunk({:json, payload, is_final}), do: Native.decode_chunk(payload, is_final)
  defp built_chunk(chunk), do: chunk

  defp reply_wait(:infinity), do: :infinity
  defp reply_wait(timeout), do: timeout + @reply_margin_ms

  defp stream_loop(%{ref: ref} = call, callback, consumed) do
    receive do
      {^ref, :chunk, chunk} ->
        case run_callback(call, callback, built_chunk(chunk)) do
          :halt ->
            Native.cancel(call.handle, call.request_id)
            drain_stream(ref)
            {{:ok, nil}, ""}

          _ when consumed + 1 == @stream_grant ->
            Native.grant(call.handle, call.request_id, @stream_grant)
            stream_loop(call, callback, 0)

          _ ->
            stream_loop(call, callback, consumed + 1)
        end

      {^ref, result, worker_id} ->
        {built(result), worker_id}
    after
      remaining(call) -> give_up(call)
    end
  end

  # A raising callback must not leave the stream running against a caller
  # that is gone: cancel it, drop what it sent, then re-raise.
  defp run_callback(call, callback, chunk) do
    callback.(chunk)
  catch
    kind, reason ->
      Native.cancel(call.handle, call.request_id)
      drain_stream(call.ref)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp remaining(%{timeout: :infinity}), do: :infinity

  defp remaining(call) do
    elapsed =
      System.convert_time_unit(System.monotonic_time() - call.started, :native, :millisecond)

    max(call.timeout + @reply_margin_ms - elapsed, 0)
  end

  # After :halt, the chunks already sent and the cancelled reply are dropped.
  defp drain_stream(ref) do
    receive do
      {^ref, :chunk, _} -> drain_stream(ref)
      {^ref, _result, _worker_id} -> :ok
    after
      5_000 -> :ok
    end
  end

  # The native side owes exactly one reply; after the cancel it comes at
  # once. Waiting for it (and dropping stray chunks) keeps it out of the
  # caller's mailbox, where a GenServer would meet it in handle_info.
  defp give_up(call) do
    Native.cancel(call.handle, call.request_id)
    await_cancelled(call)
  end

  defp await_cancelled(%{ref: ref} = call) do
    receive do
      {^ref, :chunk, _} ->
        await_cancelled(call)

      {^ref, {tag, _} = result, worker_id} when tag in [:ok, :json] ->
        {built(result), worker_id}

      {^ref, _cancelled, worker_id} ->
        {timeout_error(call), worker_id}
    after
      @reply_margin_ms -> {timeout_error(call), ""}
    end
  end

  defp timeout_error(call),
    do: {:error, {:timeout, :worker_timeout, "no reply within #{call.timeout} ms", %{}}}

  defp finish({result, worker_id}, call) do
    result =
      case result do
        {:ok, _} = ok ->
          ok

        {:error, native_error} ->
          {:error,
           Error.from_native(native_error, command: call.command, pool_name: call.pool_name)}
      end

    Calls.finished(call, result, worker_id)
    SessionStore.served(call.session_id, worker_id)
    result
  end

  defp stream_result({:ok, _}), do: :ok
  defp stream_result(error), do: error
end
