defmodule Snakepit.CrashBarrier do
  @moduledoc """
  Retries a call whose worker crashed under it, once, on another worker,
  when the call is idempotent.

      config :snakepit, crash_barrier: [enabled: true]

      Snakepit.execute("embed", %{text: text}, idempotent: true)
      # or, as upstream Snakepit reads it, in the arguments:
      Snakepit.execute("embed", %{text: text, idempotent: true})

  A crash is the call's worker process dying under it: killed by `SIGSEGV`
  or `SIGBUS` (`:segfault`), `SIGABRT` (`:abort`), `SIGKILL` (`:oom`, as
  the kernel's OOM killer sends it), an exit status 139 / 134 / 137 (the
  same signals through a shell), a message naming CUDA or the GPU (`:gpu`),
  or a death whose cause the runtime could not see (`:unknown`: the
  connection dropped and no exit followed, or the pool killed the worker
  itself, after missed heartbeats or an overrun). A worker known to have
  exited with another status, or stopped by `SIGTERM`, is not a crash.
  The cause comes from the error's `details.exit_signal` /
  `details.exit_status` (set by the native runtime, whose worker guard
  sees every worker's wait status), else from its message ("killed by
  signal SIGSEGV (...)", "exited with status N"). The crashed worker is replaced by the pool (with a new worker id),
  so the retry runs on a different worker process.

  Config (`config :snakepit, crash_barrier: [...]`, keyword or map):

    * `enabled` (false) - retry at all
    * `retry` (`:idempotent`) - `:idempotent`, `:always` or `:never`
      (`true` / `false` mean `:always` / `:never`)
    * `max_restarts` (1) - retries per call
    * `backoff_ms` (`[50, 100, 200]`) - wait before retry n
    * `mark_on` (`[:segfault, :abort, :oom, :gpu, :unknown]`) - which crash
      kinds count; upstream's default is `[:segfault, :oom, :gpu]`: here an
      `abort()` (a failed assertion in native code) is a crash like a
      segfault, and so is a death of unknown cause, which the runtime cannot
      tell from one
    * `taint_on_exit_codes` (`[]`), `taint_on_error_types` (`[]`) - more
      exit statuses, and message substrings that mean `:gpu`

  A single call can opt out with `crash_barrier: false`.

  Telemetry, for every crash seen by a call while enabled:
  `[:snakepit, :worker, :crash]`, measurements `%{attempt}`, metadata
  `%{pool, worker_id, command, reason, classification, exit_code, signal,
  device, retry}` (`retry` true when the call is run again).

  Streams are never retried: their chunks may already have been delivered.
  """

  alias Snakepit.{Error, Telemetry}

  @type classification :: :segfault | :abort | :oom | :gpu | :unknown | :exited
  @type crash_info :: %{
          reason: String.t(),
          exit_code: integer() | nil,
          signal: String.t() | nil,
          classification: classification(),
          device: :cuda | nil,
          worker_id: String.t() | nil
        }

  @defaults %{
    enabled: false,
    retry: :idempotent,
    max_restarts: 1,
    backoff_ms: [50, 100, 200],
    mark_on: [:segfault, :abort, :oom, :gpu, :unknown],
    taint_on_exit_codes: [],
    taint_on_error_types: []
  }

  # Signal names as the native runtime reports them (Linux numbers).
  @signals %{
    "SIGSEGV" => {11, :segfault},
    "SIGBUS" => {7, :segfault},
    "SIGABRT" => {6, :abort},
    "SIGKILL" => {9, :oom}
  }
  @exit_codes %{139 => :segfault, 135 => :segfault, 134 => :abort, 137 => :oom}
  # The worker's process ended (exit seen) or its connection dropped first.
  @died [:worker_exited, :worker_unavailable]

  @doc """
  The effective config: the defaults, `config :snakepit, :crash_barrier`,
  then `pool_config.crash_barrier` when given.
  """
  @spec config(map()) :: map()
  def config(pool_config \\ %{}) do
    global = Application.get_env(:snakepit, :crash_barrier, [])
    local = Map.get(pool_config, :crash_barrier, [])

    @defaults
    |> Map.merge(Map.new(global))
    |> Map.merge(Map.new(local))
    |> Map.update!(:retry, &normalize_retry/1)
  end

  @doc "Whether the barrier is on."
  @spec enabled?(map()) :: boolean()
  def enabled?(config), do: config.enabled == true

  @doc "Whether call arguments mark the call idempotent (`idempotent: true`, atom or string key)."
  @spec idempotent?(term()) :: boolean()
  def idempotent?(%{idempotent: true}), do: true
  def idempotent?(%{"idempotent" => true}), do: true
  def idempotent?(_args), do: false

  @doc """
  Classifies a call result: `{:ok, info}` for a worker crash that `mark_on`
  (or the taint lists) count, `:error` for anything else.
  """
  @spec crash_info(term(), map()) :: {:ok, crash_info()} | :error
  def crash_info({:error, %Error{category: :worker, details: %{reason: reason}} = error}, config)
      when reason in @died do
    {signal, exit_code, by_exit} = exit_of(error)
    gpu? = gpu?(error.message, config)

    classification =
      cond do
        by_exit != nil -> by_exit
        gpu? -> :gpu
        # Known, and none of the above: a plain exit or a stop by the pool.
        exit_code != nil or signal != nil -> :exited
        true -> :unknown
      end

    counted? =
      classification in List.wrap(config.mark_on) or
        exit_code in List.wrap(config.taint_on_exit_codes)

    if counted? do
      {:ok,
       %{
         reason: error.message,
         exit_code: exit_code,
         signal: signal,
         classification: classification,
         device: if(gpu?, do: :cuda),
         worker_id: worker_id(error)
       }}
    else
      :error
    end
  end

  def crash_info(_result, _config), do: :error

  @doc "Whether retry number `attempt + 1` is allowed (`attempt` retries done so far)."
  @spec retry_allowed?(map(), boolean(), non_neg_integer()) :: boolean()
  def retry_allowed?(config, idempotent, attempt) do
    attempt < config.max_restarts and
      case config.retry do
        :always -> true
        :idempotent -> idempotent == true
        :never -> false
      end
  end

  @doc "The wait in ms before retry number `attempt` (1-based)."
  @spec retry_backoff(map(), pos_integer()) :: non_neg_integer()
  def retry_backoff(config, attempt) do
    backoffs = List.wrap(config.backoff_ms)
    Enum.at(backoffs, attempt - 1, List.last(backoffs) || 0)
  end

  @doc false
  # The arguments a retry would need, or nil when the barrier is off for
  # this call: Snakepit.execute/3 then drops them while it waits, so a large
  # argument is not kept alive (and copied by every GC) for the whole call.
  @spec retry_args(map(), keyword()) :: map() | nil
  def retry_args(args, opts) do
    with configured when configured not in [nil, false, []] <-
           Application.get_env(:snakepit, :crash_barrier),
         true <- Keyword.get(opts, :crash_barrier, true) != false,
         true <- enabled?(config()) do
      args
    else
      _off -> nil
    end
  end

  @doc false
  # Called by Snakepit.execute/3 with the result of a call; a crash of its
  # worker is retried per the config. Any other result passes untouched, so
  # a successful call costs one function-head match.
  @spec after_call(Snakepit.result(), String.t() | atom(), map() | nil, keyword()) ::
          Snakepit.result()
  def after_call(result, _command, nil, _opts), do: result

  def after_call(
        {:error, %Error{category: :worker, details: %{reason: reason}}} = result,
        command,
        args,
        opts
      )
      when reason in @died do
    if Keyword.get(opts, :crash_barrier, true) == false do
      result
    else
      guard(result, command, args, opts, config(), 0)
    end
  end

  def after_call(result, _command, _args, _opts), do: result

  defp guard(result, command, args, opts, config, attempt) do
    with true <- enabled?(config),
         {:ok, info} <- crash_info(result, config) do
      idempotent = Keyword.get(opts, :idempotent, false) == true or idempotent?(args)
      retry? = retry_allowed?(config, idempotent, attempt)
      report(result, info, command, attempt, retry?)

      if retry? do
        Process.sleep(retry_backoff(config, attempt + 1))

        command
        |> Snakepit.execute(args, Keyword.put(opts, :crash_barrier, false))
        |> guard(command, args, opts, config, attempt + 1)
      else
        mark(result, info, attempt)
      end
    else
      _ -> result
    end
  end

  defp mark({:error, error}, info, attempts) do
    {:error,
     %{
       error
       | details:
           Map.merge(error.details, %{
             classification: info.classification,
             exit_code: info.exit_code,
             crash_retries: attempts
           })
     }}
  end

  defp report({:error, error}, info, command, attempt, retry?) do
    Telemetry.execute([:snakepit, :worker, :crash], %{attempt: attempt}, %{
      pool: error.details[:pool_name],
      worker_id: info.worker_id,
      command: to_string(command),
      reason: info.reason,
      classification: info.classification,
      exit_code: info.exit_code,
      signal: info.signal,
      device: info.device,
      retry: retry?
    })
  end

  defp exit_of(%Error{details: %{exit_signal: signal}}) when is_binary(signal),
    do: by_signal(signal)

  defp exit_of(%Error{details: %{exit_status: code}}) when is_integer(code), do: by_status(code)

  defp exit_of(%Error{message: message}) do
    cond do
      match = Regex.run(~r/killed by signal (SIG[A-Z0-9]+)/, message) ->
        match |> Enum.at(1) |> by_signal()

      match = Regex.run(~r/exited with status (\d+)/, message) ->
        match |> Enum.at(1) |> String.to_integer() |> by_status()

      true ->
        {nil, nil, nil}
    end
  end

  defp by_signal(signal) do
    case Map.get(@signals, signal) do
      {number, class} -> {signal, 128 + number, class}
      nil -> {signal, nil, nil}
    end
  end

  defp by_status(code), do: {nil, code, Map.get(@exit_codes, code)}

  defp gpu?(message, config) do
    lower = String.downcase(message)

    Enum.any?(
      ["cuda", "gpu"] ++ Enum.map(List.wrap(config.taint_on_error_types), &String.downcase/1),
      &String.contains?(lower, &1)
    )
  end

  defp worker_id(%Error{details: %{worker_id: id}}), do: id

  defp worker_id(%Error{message: message}) do
    case Regex.run(~r/^worker (\S+) /, message) do
      [_, id] -> id
      nil -> nil
    end
  end

  defp normalize_retry(true), do: :always
  defp normalize_retry(false), do: :never
  defp normalize_retry(retry) when retry in [:always, :idempotent, :never], do: retry

  defp normalize_retry(other) do
    raise ArgumentError,
          "invalid :retry #{inspect(other)} in the :crash_barrier config; " <>
            "expected :idempotent, :always, :never, true or false"
  end
end
