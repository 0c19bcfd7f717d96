defmodule Snakepit do
  @moduledoc """
  Pools of Python workers for Elixir, with the runtime in a C++ NIF.

  Configure pools under `config :snakepit, pooling_enabled: true, pools:
  [...]` (see `Snakepit.Config`) and call tools:

      {:ok, 3} = Snakepit.execute("add", %{a: 1, b: 2})
      {:ok, result} = Snakepit.execute("predict", %{data: [1, 2, 3]}, pool_name: :ml)

  Every call returns `{:ok, result}` or `{:error, %Snakepit.Error{}}`; it
  never raises for a worker-side failure or a bad option.
  """

  alias Snakepit.{Args, CrashBarrier, Error, Native, Pool, Telemetry}
  alias Snakepit.Bridge.SessionStore
  alias Snakepit.Telemetry.Calls

  # `timeout: :infinity` has no deadline; natively that is a very long one.
  @no_deadline_ms 10 * 365 * 24 * 3_600_000
  # The native side answers by the deadline; this only guards against a lost reply.
  @reply_margin_ms 2_000
  # `receive ... after` takes at most 2^32 - 1 ms; past that the native
  # deadline alone bounds the wait.
  @max_receive_ms 4_294_967_295 - @reply_margin_ms
  @affinities [:hint, :strict_queue, :strict_fail_fast]
  # Stream chunks are granted back to the native reader in batches of this
  # size (half the window Snakepit.Config sends), which bounds the caller's mailbox.
  @stream_grant Snakepit.Config.stream_grant()
  # Tags a stream callback's exception, so no value it returns is taken for one.
  @callback_raised :"$snakepit_callback_raised"

  @type result :: {:ok, term()} | {:error, Error.t()}
  @type stream_callback :: (map() -> :halt | {:halt, term()} | term())
  @type stream_result ::
          :ok
          | {:error, Error.t()}
          | {:error, {:callback_exception, Exception.t(), Exception.stacktrace()}}
          | {:error, term()}

  @doc """
  Runs the tool `command` with `args` (a map) in a worker of the pool.

  Options:

    * `:pool_name` (or `:pool`) - a pool name; default the first pool (also
      for `Snakepit.Pool`, as upstream Snakepit passes it)
    * `:timeout` - ms or `:infinity`, covering queueing and the call; default
      the pool's request timeout (`:pool_request_timeout`, else the
      `:timeout_profile`'s: 300 s for `:balanced`)
    * `:session_id` - a string; calls of a session prefer one worker
    * `:affinity` - `:hint | :strict_queue | :strict_fail_fast` or the same
      as a case-insensitive string; default the pool's
    * `:binary_parameters` - a map of name => binary, each arriving in Python
      as a `bytes` argument of that name
    * `:correlation_id` - a string passed to Python in the request metadata
      (`"correlation_id"`, what `telemetry.get_correlation_id()` returns
      there) and to telemetry metadata. As in upstream Snakepit, a
      `correlation_id` key of `args` (atom or string) is taken as this
      option (the option wins) and not passed to the tool. With neither,
      a call made while a `:telemetry` handler is attached gets a new one.
    * `:thread_sensitive` - `true` runs a sync tool on the worker's main
      thread (for libraries that install signal handlers or otherwise need
      it), as upstream Snakepit's option does; default `false`. The worker's
      `SNAKEPIT_THREAD_SENSITIVE` (comma-separated `module` or
      `module.function` names, matched against a call's `module_path` and
      `function` arguments) selects calls the same way.

  A bad option value is a `:validation` error naming the option.
  """
  @spec execute(String.t() | atom(), map(), keyword()) :: result()
  def execute(command, args, opts \\ []) do
    # Held only if a crash could be retried: otherwise `args` is dead once
    # submitted, and a large argument is not copied by the GC of a caller
    # that waits for a large result.
    retry_args = CrashBarrier.retry_args(args, opts)

    command
    |> run(args, opts)
    |> CrashBarrier.after_call(command, retry_args, opts)
  end

  defp run(command, args, opts) do
    with {:ok, call} <- submit(command, args, opts, false) do
      try do
        call |> await_reply() |> finish(call)
      catch
        kind, reason -> Calls.raised(call, kind, reason, __STACKTRACE__)
      end
    else
      {:cluster, entry} -> Snakepit.Cluster.Router.execute(entry, command, args, opts)
      error -> error
    end
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
  `"is_final"`. Called as `execute_stream(command, callback)`,
  `execute_stream(command, args, callback)` or with options last.

  The callback decides: `:halt` stops the stream (the Python generator is
  closed) and the call returns `:ok`; `{:halt, reason}` stops it and the
  call returns `{:error, reason}`; any other value continues. A callback
  that raises stops the stream first, then the call returns `{:error,
  {:callback_exception, exception, stacktrace}}` (a throw or exit is
  re-raised after the stream is stopped).

  Returns `:ok` at the end, or the error that ended the stream (chunks
  before it were delivered). Options as `execute/3`; the default `timeout`
  is the pool's stream timeout (`:pool_streaming_timeout`, else the
  `:timeout_profile`'s: 900 s for `:balanced`).
  """
  @spec execute_stream(String.t() | atom(), map(), stream_callback(), keyword()) ::
          stream_result()
  def execute_stream(command, args \\ %{}, callback, opts \\ []) when is_function(callback, 1) do
    with {:ok, call} <- submit(command, args, opts, true) do
      call |> stream_loop(callback, 0) |> finish(call) |> stream_result()
    else
      {:cluster, entry} -> Snakepit.Cluster.Router.stream(entry, command, args, callback, opts)
      error -> error
    end
  end

  @doc "Like `execute_stream/4`, in session `session_id`."
  @spec execute_in_session_stream(
          String.t(),
          String.t() | atom(),
          map(),
          stream_callback(),
          keyword()
        ) :: stream_result()
  def execute_in_session_stream(session_id, command, args \\ %{}, callback, opts \\ []) do
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
  Runs `fun` with Snakepit started and its pools ready, then shuts down so
  no worker outlives the script. Returns what `fun` returns (an exception
  it raises is re-raised after the shutdown), `{:error,
  :pool_initialization_timeout}` when the pools do not get ready in time,
  the pool's start error (with its Python traceback) when one cannot start,
  or `{:error, reason}` when Snakepit itself cannot start.

  Options, as upstream's:

    * `:timeout` - how long to wait for the pools (15_000 ms)
    * `:await_pool` - whether to wait for them (default: `pooling_enabled`)
    * `:restart` - restart an already started Snakepit so the script's
      config applies: `true`, `false` or `:auto` (default; restarts when
      `stop_mode: :always` inside a Mix project)
    * `:stop_mode` - `:if_started` (default: stop Snakepit only if this call
      started it), `:always` or `:never`
    * `:shutdown_timeout` - how long stopping Snakepit may take (15_000 ms)
    * `:cleanup_timeout` - after stopping, how long this run's workers get
      to exit before they are killed (5_000 ms; 0 skips the check)
    * `:exit_mode` - after the shutdown: `:none` (default), `:halt`
      (`System.halt/1`), `:stop` (`System.stop/1`) or `:auto` (`:stop` when
      this call started Snakepit and the VM runs with `--no-halt`, else
      `:none`); the status is 0, or 1 when `fun` raised or the pools did not
      start. Without the option: the `SNAKEPIT_SCRIPT_EXIT` environment
      variable (`none | halt | stop | auto`), else `:halt` when
      `SNAKEPIT_SCRIPT_HALT` is true (`1`, `true`, `yes`, `y`, `on`)
    * `:halt` - `true` for `exit_mode: :halt` (ignored when `:exit_mode` is given)
  """
  @spec run_as_script((() -> result), keyword()) :: result | {:error, term()}
        when result: term()
  def run_as_script(fun, opts \\ []) when is_function(fun, 0),
    do: Snakepit.Script.run(fun, opts)

  @doc """
  Stops this run's Python workers: every worker process this BEAM started
  gets SIGTERM (with its process group), and those still alive after 5 s
  SIGKILL. Returns `:ok` when all are gone, or `{:timeout, os_pids}` naming
  those that outlived even SIGKILL. Pools that are still running replace
  their workers; call it after stopping Snakepit (as `run_as_script/2`
  does) to be sure nothing is left.
  """
  @spec cleanup() :: :ok | {:timeout, [non_neg_integer()]}
  def cleanup, do: Snakepit.Orphans.stop_run(5_000)

  # ------------------------------------------------------------ internals

  defp submit(command, args, opts, stream?) do
    call = new_call(pool_name(opts), command, stream?)
    with {:ok, entry} <- route(call), do: submit_routed(call, entry, args, opts, stream?)
  end

  @doc false
  # The serving side of a remote call (Snakepit.Cluster.Executor): submits
  # to this node's workers of a clustered pool, whose running entry it has.
  # The NIF also sends {ref, :started} when a worker takes the call.
  @spec submit_local(atom(), tuple(), String.t(), map(), keyword(), boolean()) ::
          {:ok, map()} | {:error, Error.t()}
  def submit_local(pool_name, entry, command, args, opts, stream?) do
    call = pool_name |> new_call(command, stream?) |> Map.put(:notify_started, true)
    submit_routed(call, entry, args, opts, stream?)
  end

  @doc false
  # execute/3 on this node's workers of a clustered pool (routed here).
  @spec execute_local(atom(), tuple(), String.t(), map(), keyword()) :: result()
  def execute_local(pool_name, entry, command, args, opts) do
    with {:ok, call} <-
           submit_routed(new_call(pool_name, command, false), entry, args, opts, false) do
      try do
        call |> await_reply() |> finish(call)
      catch
        kind, reason -> Calls.raised(call, kind, reason, __STACKTRACE__)
      end
    end
  end

  @doc false
  # execute_stream/4 on this node's workers of a clustered pool.
  @spec stream_local(atom(), tuple(), String.t(), map(), stream_callback(), keyword()) ::
          stream_result()
  def stream_local(pool_name, entry, command, args, callback, opts) do
    with {:ok, call} <- submit_routed(new_call(pool_name, command, true), entry, args, opts, true) do
      call |> stream_loop(callback, 0) |> finish(call) |> stream_result()
    end
  end

  @doc false
  # The serving side's outcome of a call from submit_local/6: a reply (or
  # give_up/1's answer) turned into the caller's result, counted here.
  @spec finish_local({term(), String.t()}, map()) :: result() | {:error, term()}
  def finish_local(reply, call), do: finish(reply, call)

  @doc false
  @spec give_up_local(map()) :: {term(), String.t()}
  def give_up_local(call), do: give_up(call)

  @doc false
  @spec build_reply(term()) :: term()
  def build_reply(result), do: built(result)

  @doc false
  @spec build_chunk(term()) :: map()
  def build_chunk(chunk), do: built_chunk(chunk)

  defp new_call(pool_name, command, stream?) do
    %{
      pool_name: pool_name,
      command: to_string(command),
      started: System.monotonic_time(),
      session_id: nil,
      correlation_id: nil,
      stream: stream?,
      span: nil,
      telemetry: Telemetry.active?()
    }
  end

  defp submit_routed(call, {handle, affinity, call_timeout, stream_timeout}, args, opts, stream?) do
    {args, opts} = correlation_from_args(args, opts)

    with call = Map.merge(call, %{handle: handle, timeout: Keyword.get(opts, :timeout)}),
         call = %{
           call
           | timeout: call.timeout || if(stream?, do: stream_timeout, else: call_timeout)
         },
         {:ok, native_opts, thread_sensitive} <- native_opts(call, opts, affinity, stream?),
         {:ok, args} <- binary_parameters(call, args, Keyword.get(opts, :binary_parameters)) do
      call
      |> Map.merge(%{
        session_id: nonempty(elem(native_opts, 1)),
        correlation_id: nonempty(elem(native_opts, 4)),
        thread_sensitive: thread_sensitive
      })
      |> tap(&SessionStore.opened(&1.session_id))
      |> submit_native(args, native_opts)
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

  # Upstream reads a call's correlation id from its args too, and strips it
  # before the tool sees them. Only args holding the key pay for this.
  defp correlation_from_args(args, opts)
       when is_map_key(args, :correlation_id) or is_map_key(args, "correlation_id") do
    {atom_key, args} = Map.pop(args, :correlation_id)
    {string_key, args} = Map.pop(args, "correlation_id")
    {args, Keyword.put_new_lazy(opts, :correlation_id, fn -> atom_key || string_key end)}
  end

  defp correlation_from_args(args, opts), do: {args, opts}

  # {timeout_ms, session_id, affinity, stream?, correlation_id}, as the NIF takes them.
  defp native_opts(call, opts, default_affinity, stream?) do
    with {:ok, timeout} <- timeout_opt(call.timeout),
         {:ok, session_id} <- string_opt(:session_id, Keyword.get(opts, :session_id)),
         {:ok, affinity} <- affinity_opt(Keyword.get(opts, :affinity, default_affinity)),
         {:ok, correlation_id} <- string_opt(:correlation_id, Keyword.get(opts, :correlation_id)),
         {:ok, thread_sensitive} <- thread_sensitive_opt(Keyword.get(opts, :thread_sensitive)) do
      {:ok, {timeout, session_id, affinity, stream?, traced(correlation_id, call)},
       thread_sensitive}
    else
      {:error, message} -> {:error, option_error(call, message)}
    end
  end

  # A traced call without an id gets one, so its telemetry events and its
  # Python side (telemetry.get_correlation_id()) share it, as upstream's do.
  defp traced("", %{telemetry: true}), do: Calls.new_correlation_id()
  defp traced(correlation_id, _call), do: correlation_id

  # Upstream takes true or "true"; anything else but nil/false is refused here.
  defp thread_sensitive_opt(value) when value in [nil, false, "false"], do: {:ok, false}
  defp thread_sensitive_opt(value) when value in [true, "true"], do: {:ok, true}

  defp thread_sensitive_opt(other),
    do: {:error, "thread_sensitive must be true or false, got: #{inspect(other)}"}

  defp nonempty(""), do: nil
  defp nonempty(text), do: text

  defp timeout_opt(:infinity), do: {:ok, @no_deadline_ms}
  defp timeout_opt(ms) when is_integer(ms) and ms >= 0, do: {:ok, min(ms, @no_deadline_ms)}

  defp timeout_opt(other),
    do:
      {:error, "timeout must be a non-negative integer (ms) or :infinity, got: #{inspect(other)}"}

  defp string_opt(_name, nil), do: {:ok, ""}

  defp string_opt(name, value) when is_binary(value) do
    if String.valid?(value),
      do: {:ok, value},
      else: {:error, "#{name} must be valid UTF-8, got: #{inspect(value)}"}
  end

  # Atoms and integers have an obvious text; so does a valid charlist.
  defp string_opt(_name, value) when is_atom(value) or is_integer(value),
    do: {:ok, to_string(value)}

  defp string_opt(name, value) when is_list(value) do
    case :unicode.characters_to_binary(value) do
      text when is_binary(text) -> {:ok, text}
      _incomplete_or_error -> not_text(name, value)
    end
  rescue
    ArgumentError -> not_text(name, value)
  end

  defp string_opt(name, value), do: not_text(name, value)

  defp not_text(name, value),
    do: {:error, "#{name} must be a string, got: #{inspect(value, limit: 5)}"}

  defp affinity_opt(affinity) when affinity in @affinities, do: {:ok, affinity}

  defp affinity_opt(affinity) when is_binary(affinity) do
    case Enum.find(@affinities, &(Atom.to_string(&1) == String.downcase(affinity))) do
      nil -> invalid_affinity(affinity)
      found -> {:ok, found}
    end
  end

  defp affinity_opt(affinity), do: invalid_affinity(affinity)

  defp invalid_affinity(affinity) do
    {:error,
     "affinity must be one of #{inspect(@affinities)} (or the same as a string), " <>
       "got: #{inspect(affinity)}"}
  end

  # Each binary parameter travels as raw bytes ({:binary, bin}), as Python bytes.
  defp binary_parameters(_call, args, nil), do: {:ok, args}

  defp binary_parameters(call, args, params) when is_map(params) and is_map(args) do
    Enum.reduce_while(params, {:ok, args}, fn
      {name, bin}, {:ok, acc} when (is_binary(name) or is_atom(name)) and is_binary(bin) ->
        {:cont, {:ok, Map.put(acc, name, {:binary, bin})}}

      {name, value}, _acc ->
        message =
          "binary_parameters must map names (strings or atoms) to binaries, got " <>
            "#{inspect(name)} => #{inspect(value, limit: 5)}"

        {:halt, {:error, option_error(call, message)}}
    end)
  end

  # Args that are not a map are refused by submit_native.
  defp binary_parameters(_call, args, params) when is_map(params), do: {:ok, args}

  defp binary_parameters(call, _args, params) do
    {:error,
     option_error(
       call,
       "binary_parameters must be a map of name => binary, got: #{inspect(params, limit: 5)}"
     )}
  end

  defp option_error(call, message) do
    Error.new(:validation, :invalid_option, message,
      command: call.command,
      pool_name: call.pool_name
    )
  end

  defp submit_native(call, args, native_opts, prepared? \\ false)

  defp submit_native(call, args, _native_opts, _prepared?) when not is_map(args) do
    rejected(call, "args must be a map, got: #{inspect(args, limit: 5)}")
  end

  defp submit_native(call, args, native_opts, prepared?) do
    ref = make_ref()

    case Native.submit(call.handle, call.command, args, nif_opts(native_opts, call), ref) do
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

  # The NIF's optional elements: notify_started?, then thread_sensitive?.
  defp nif_opts(native_opts, %{thread_sensitive: true} = call),
    do: native_opts |> Tuple.append(Map.get(call, :notify_started, false)) |> Tuple.append(true)

  defp nif_opts(native_opts, %{notify_started: true}), do: Tuple.append(native_opts, true)
  defp nif_opts(native_opts, _call), do: native_opts

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
  defp reply_wait(timeout) when timeout > @max_receive_ms, do: :infinity
  defp reply_wait(timeout), do: timeout + @reply_margin_ms

  defp stream_loop(%{ref: ref} = call, callback, consumed) do
    receive do
      {^ref, :chunk, chunk} ->
        case run_callback(call, callback, built_chunk(chunk)) do
          :halt ->
            stop_stream(call)
            {{:ok, nil}, ""}

          {:halt, reason} ->
            stop_stream(call)
            {{:halted, reason}, ""}

          {@callback_raised, exception, stacktrace} ->
            {{:halted, {:callback_exception, exception, stacktrace}}, ""}

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

  # A callback that fails must not leave the stream running: cancel it and
  # drop what it sent first. An exception is returned (as upstream does),
  # a throw or exit re-raised.
  defp run_callback(call, callback, chunk) do
    callback.(chunk)
  rescue
    exception ->
      stop_stream(call)
      {@callback_raised, exception, __STACKTRACE__}
  catch
    kind, reason ->
      stop_stream(call)
      :erlang.raise(kind, reason, __STACKTRACE__)
  end

  defp stop_stream(call) do
    Native.cancel(call.handle, call.request_id)
    drain_stream(call.ref)
  end

  defp remaining(%{timeout: :infinity}), do: :infinity
  defp remaining(%{timeout: timeout}) when timeout > @max_receive_ms, do: :infinity

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

        # The stream callback stopped it: {:halt, reason} or an exception.
        {:halted, reason} ->
          {:error, reason}

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
