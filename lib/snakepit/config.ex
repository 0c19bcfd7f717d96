defmodule Snakepit.Config do
  @moduledoc """
  Reads, normalises and validates Snakepit's application configuration.

  Everything here is pure: the functions take the `:snakepit` application
  environment (for example `Application.get_all_env(:snakepit)`) and return
  plain maps, raising `ArgumentError` on any invalid value. The error message
  names the key, shows the offending value and says what is allowed.

  ## Pool forms

    * multi-pool: `pools: [%{name: :default, ...}, %{name: :ml, ...}]`
      (each pool a map or keyword list);
    * legacy single pool: no `:pools` key; the top-level `:pool_size`,
      `:pool_config` (merged in), `:adapter_module`, `:adapter_args` and
      `:adapter_env` become one pool named `:default`. With none of them set
      this is simply the default pool.

  ## Global defaults

  Top-level `:pool_size`, `:adapter_module`, `:affinity`,
  `:graceful_shutdown_timeout_ms` and `:heartbeat` act as defaults for every
  pool, as do `:pool_max_queue_size` (per pool `:max_queue_size`),
  `:pool_queue_timeout` (per pool `:queue_timeout_ms`) and
  `:python_executable`.

  ## Derived keys

  Every normalised pool also carries `:capacity_per_worker`, `:adapter` (the
  Python class passed after `--adapter`), `:env` (the final worker
  environment) and `:worker_ttl_ms`. They may appear in the input (so a
  normalised pool can be normalised again) but must then equal the derived
  value.
  """

  @default_adapter_module Snakepit.Adapters.GRPCPython
  @default_adapter "snakepit_bridge.adapters.showcase.ShowcaseAdapter"
  @global_ctx "in the :snakepit config"

  @profiles [:process, :thread]
  @affinities [:hint, :strict_queue, :strict_fail_fast]
  @log_levels [:debug, :info, :warning, :error, :none]
  @ttl_unit_ms %{seconds: 1_000, minutes: 60_000, hours: 3_600_000}

  @thread_env_vars [
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "NUMEXPR_NUM_THREADS"
  ]
  @process_env_vars @thread_env_vars ++ ["VECLIB_MAXIMUM_THREADS"]

  @heartbeat_defaults %{
    enabled: true,
    ping_interval_ms: 2_000,
    timeout_ms: 10_000,
    max_missed_heartbeats: 3,
    initial_delay_ms: 0,
    dependent: true
  }

  @heartbeat_fields [
    enabled: :boolean,
    ping_interval_ms: :pos_integer,
    timeout_ms: :pos_integer,
    max_missed_heartbeats: :pos_integer,
    initial_delay_ms: :non_neg_integer,
    dependent: :boolean
  ]

  # Pool keys validated one by one; `:name` and `:heartbeat` are handled apart.
  @pool_fields [
    worker_profile: {:one_of, @profiles},
    pool_size: :pos_integer,
    threads_per_worker: :pos_integer,
    adapter_module: :module,
    adapter_args: :string_list,
    adapter_spec: :optional_string,
    adapter_env: :env,
    startup_batch_size: :pos_integer,
    startup_batch_delay_ms: :non_neg_integer,
    thread_safety_checks: :boolean,
    worker_ttl: :ttl,
    worker_max_requests: :max_requests,
    graceful_shutdown_timeout_ms: :non_neg_integer,
    affinity: {:one_of, @affinities},
    session_ttl_ms: :pos_integer,
    tool_overrun_grace_ms: :non_neg_integer,
    max_queue_size: :pos_integer,
    queue_timeout_ms: :pos_integer,
    python_executable: :optional_string,
    restart_backoff_ms: :pos_integer,
    max_restart_backoff_ms: :pos_integer
  ]

  @static_defaults %{
    worker_profile: :process,
    threads_per_worker: 10,
    adapter_module: @default_adapter_module,
    adapter_args: [],
    adapter_spec: nil,
    adapter_env: [],
    startup_batch_size: 10,
    startup_batch_delay_ms: 500,
    thread_safety_checks: false,
    worker_ttl: :infinity,
    worker_max_requests: :infinity,
    graceful_shutdown_timeout_ms: 6_000,
    affinity: :hint,
    session_ttl_ms: 3_600_000,
    tool_overrun_grace_ms: 5_000,
    restart_backoff_ms: 500,
    max_restart_backoff_ms: 10_000
  }

  # Top-level keys that set a pool default of the same name.
  @global_pool_defaults [:pool_size, :adapter_module, :affinity, :graceful_shutdown_timeout_ms]
  @legacy_keys [:pool_size, :adapter_module, :adapter_args, :adapter_env]

  @derived_from %{
    adapter: ":adapter_args / :adapter_spec",
    capacity_per_worker: ":worker_profile and :threads_per_worker",
    env: ":worker_profile, :threads_per_worker and :adapter_env",
    worker_ttl_ms: ":worker_ttl"
  }

  # Upstream options accepted for compatibility and otherwise ignored.
  @ignored_keys [:max_workers, :capacity_strategy]

  @user_keys [:name, :heartbeat | Keyword.keys(@pool_fields)]
  @allowed_keys @user_keys ++ Map.keys(@derived_from) ++ @ignored_keys

  @typedoc "Worker execution model."
  @type worker_profile :: :process | :thread

  @typedoc "Maximum worker lifetime."
  @type worker_ttl :: :infinity | {pos_integer(), :seconds | :minutes | :hours}

  @type heartbeat :: %{
          enabled: boolean(),
          ping_interval_ms: pos_integer(),
          timeout_ms: pos_integer(),
          max_missed_heartbeats: pos_integer(),
          initial_delay_ms: non_neg_integer(),
          dependent: boolean()
        }

  @typedoc "A normalised, validated pool; every key is present."
  @type pool_config :: %{
          name: atom(),
          worker_profile: worker_profile(),
          pool_size: pos_integer(),
          threads_per_worker: pos_integer(),
          capacity_per_worker: pos_integer(),
          adapter_module: module(),
          adapter_args: [String.t()],
          adapter: String.t(),
          adapter_env: [{String.t(), String.t()}],
          env: [{String.t(), String.t()}],
          startup_batch_size: pos_integer(),
          startup_batch_delay_ms: non_neg_integer(),
          heartbeat: heartbeat(),
          thread_safety_checks: boolean(),
          worker_ttl: worker_ttl(),
          worker_ttl_ms: pos_integer() | nil,
          worker_max_requests: :infinity | pos_integer(),
          graceful_shutdown_timeout_ms: non_neg_integer(),
          affinity: :hint | :strict_queue | :strict_fail_fast,
          session_ttl_ms: pos_integer(),
          tool_overrun_grace_ms: non_neg_integer(),
          max_queue_size: pos_integer(),
          queue_timeout_ms: pos_integer(),
          python_executable: String.t() | nil,
          restart_backoff_ms: pos_integer(),
          max_restart_backoff_ms: pos_integer()
        }

  @type globals :: %{
          pool_max_queue_size: pos_integer(),
          pool_queue_timeout: pos_integer(),
          python_executable: String.t() | nil,
          log_level: :debug | :info | :warning | :error | :none | nil
        }

  @doc "The Python adapter class used when a pool names none."
  @spec default_adapter() :: String.t()
  def default_adapter, do: @default_adapter

  @doc """
  Returns the normalised pools described by the application environment.

  Raises `ArgumentError` on invalid values, unknown keys, a missing `:name`
  or duplicate pool names. With no pool configuration at all the result is
  a single default pool named `:default`.
  """
  @spec pools(keyword()) :: [pool_config()]
  def pools(env) when is_list(env) do
    case Keyword.get(env, :pools) do
      nil ->
        [legacy_pool(env)]

      [_ | _] = pools ->
        pools |> Enum.map(&normalize_pool(&1, env)) |> unique_names!()

      other ->
        raise ArgumentError,
              invalid_message(:pools, other, "a non-empty list of pool maps", @global_ctx)
    end
  end

  @doc """
  Normalises and validates one pool given as a map or keyword list.

  `globals` is the application environment, used for defaults (see the
  module documentation).
  """
  @spec normalize_pool(map() | keyword(), keyword()) :: pool_config()
  def normalize_pool(pool, globals \\ []) when is_list(globals) do
    attrs = attrs!(pool, "invalid pool config")
    name = name!(attrs)
    ctx = "in pool #{inspect(name)}"
    check_keys!(attrs, @allowed_keys, @user_keys, "key", ctx)

    defaults = pool_defaults(globals)

    values =
      Map.new(@pool_fields, fn {key, kind} ->
        {key, attrs |> Map.get(key, Map.fetch!(defaults, key)) |> value!(kind, key, ctx)}
      end)

    heartbeat = Map.merge(defaults.heartbeat, heartbeat!(Map.get(attrs, :heartbeat, %{}), ctx))

    values
    |> build(name, heartbeat, ctx)
    |> check_derived!(attrs, ctx)
  end

  @doc """
  Returns the validated global settings.

  `:pool_max_queue_size` defaults to 1000, `:pool_queue_timeout` to 10_000 ms,
  `:python_executable` to `nil` and `:log_level` to `nil`. `:log_level` is
  the lowest level of Snakepit's own log lines, worker output included
  (`:none` silences them; `:warn` is accepted as `:warning`); unset, only
  Logger's level decides.
  """
  @spec globals(keyword()) :: globals()
  def globals(env) when is_list(env) do
    %{
      pool_max_queue_size: global!(env, :pool_max_queue_size, 1_000, :pos_integer),
      pool_queue_timeout: global!(env, :pool_queue_timeout, 10_000, :pos_integer),
      python_executable: global!(env, :python_executable, nil, :optional_string),
      log_level: global!(env, :log_level, nil, :log_level)
    }
  end

  ## Pool forms

  defp legacy_pool(env) do
    pool_config =
      case Keyword.get(env, :pool_config) do
        nil -> %{}
        config -> attrs!(config, "invalid value for :pool_config #{@global_ctx}")
      end

    top_level =
      env
      |> Keyword.take(@legacy_keys)
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new()

    pool_config
    |> Map.merge(top_level)
    |> Map.put(:name, :default)
    |> normalize_pool(env)
  end

  defp unique_names!(pools) do
    Enum.reduce(pools, MapSet.new(), fn %{name: name}, seen ->
      case MapSet.member?(seen, name) do
        true ->
          raise ArgumentError,
                "duplicate pool name #{inspect(name)} in :pools (names must be unique)"

        false ->
          MapSet.put(seen, name)
      end
    end)

    pools
  end

  ## Defaults

  defp pool_defaults(env) do
    globals = globals(env)

    from_env =
      env
      |> Keyword.take(@global_pool_defaults)
      |> Enum.reject(fn {_key, value} -> is_nil(value) end)
      |> Map.new(fn {key, value} ->
        {key, value!(value, Keyword.fetch!(@pool_fields, key), key, @global_ctx)}
      end)

    global_heartbeat =
      case Keyword.get(env, :heartbeat) do
        nil -> %{}
        heartbeat -> heartbeat!(heartbeat, @global_ctx)
      end

    @static_defaults
    |> Map.merge(%{
      pool_size: System.schedulers_online() * 2,
      max_queue_size: globals.pool_max_queue_size,
      queue_timeout_ms: globals.pool_queue_timeout,
      python_executable: globals.python_executable,
      heartbeat: Map.merge(@heartbeat_defaults, global_heartbeat)
    })
    |> Map.merge(from_env)
  end

  defp global!(env, key, default, kind) do
    case Keyword.get(env, key) do
      nil -> default
      value -> value!(value, kind, key, @global_ctx)
    end
  end

  ## Building the normalised pool

  defp build(values, name, heartbeat, ctx) do
    {adapter, adapter_args} = adapter!(values.adapter_args, values.adapter_spec, ctx)
    check_backoff!(values, ctx)

    values
    |> Map.delete(:adapter_spec)
    |> Map.merge(%{
      name: name,
      adapter: adapter,
      adapter_args: adapter_args,
      heartbeat: heartbeat,
      capacity_per_worker: capacity(values),
      env: worker_env(values),
      worker_ttl_ms: ttl_ms(values.worker_ttl)
    })
  end

  defp adapter!(args, spec, ctx) do
    case {find_adapter(args), spec} do
      {{:ok, adapter}, nil} ->
        {adapter, args}

      {{:ok, adapter}, adapter} ->
        {adapter, args}

      {{:ok, adapter}, other} ->
        expected = "the class given to --adapter in :adapter_args (#{inspect(adapter)})"
        raise ArgumentError, invalid_message(:adapter_spec, other, expected, ctx)

      {:missing, _spec} ->
        expected = "\"--adapter\" followed by a Python class path"
        raise ArgumentError, invalid_message(:adapter_args, args, expected, ctx)

      {:none, nil} ->
        {@default_adapter, ["--adapter", @default_adapter | args]}

      {:none, spec} ->
        {spec, ["--adapter", spec | args]}
    end
  end

  defp find_adapter(["--adapter", adapter | _rest]) when adapter != "", do: {:ok, adapter}
  defp find_adapter(["--adapter" | _rest]), do: :missing
  defp find_adapter(["--adapter=" <> adapter | _rest]) when adapter != "", do: {:ok, adapter}
  defp find_adapter(["--adapter=" | _rest]), do: :missing
  defp find_adapter([_arg | rest]), do: find_adapter(rest)
  defp find_adapter([]), do: :none

  defp check_backoff!(%{restart_backoff_ms: min, max_restart_backoff_ms: max}, _ctx)
       when max >= min,
       do: :ok

  defp check_backoff!(%{restart_backoff_ms: min, max_restart_backoff_ms: max}, ctx) do
    expected = "an integer >= :restart_backoff_ms (#{min})"
    raise ArgumentError, invalid_message(:max_restart_backoff_ms, max, expected, ctx)
  end

  defp capacity(%{worker_profile: :process}), do: 1
  defp capacity(%{worker_profile: :thread, threads_per_worker: threads}), do: threads

  defp ttl_ms(:infinity), do: nil
  defp ttl_ms({count, unit}), do: count * Map.fetch!(@ttl_unit_ms, unit)

  defp worker_env(%{worker_profile: profile, threads_per_worker: threads, adapter_env: env}) do
    profile
    |> profile_env(threads)
    |> overlay_env(env)
  end

  defp profile_env(:process, _threads), do: Enum.map(@process_env_vars, &{&1, "1"})

  defp profile_env(:thread, threads),
    do: Enum.map(@thread_env_vars, &{&1, Integer.to_string(threads)})

  # Entries of `overrides` win (the last one for a repeated name); names the
  # base does not have are appended in their first-seen order.
  defp overlay_env(base, overrides) do
    latest = Map.new(overrides)
    base_names = Enum.map(base, &elem(&1, 0))
    merged = Enum.map(base, fn {name, value} -> {name, Map.get(latest, name, value)} end)

    extra =
      overrides
      |> Enum.map(&elem(&1, 0))
      |> Enum.uniq()
      |> Enum.reject(&(&1 in base_names))
      |> Enum.map(&{&1, Map.fetch!(latest, &1)})

    merged ++ extra
  end

  defp check_derived!(config, attrs, ctx) do
    Enum.each(@derived_from, fn {key, sources} ->
      expected = Map.fetch!(config, key)

      case Map.fetch(attrs, key) do
        :error ->
          :ok

        {:ok, ^expected} ->
          :ok

        {:ok, other} ->
          allowed = "#{inspect(expected)}, derived from #{sources}; set those instead"
          raise ArgumentError, invalid_message(key, other, allowed, ctx)
      end
    end)

    config
  end

  ## Shape checks

  defp attrs!(value, _what) when is_map(value) and not is_struct(value), do: value

  defp attrs!(value, what) when is_list(value) do
    case Keyword.keyword?(value) do
      # first occurrence wins, as with Keyword.get/2
      true -> value |> Enum.reverse() |> Map.new()
      false -> raise ArgumentError, "#{what}: #{inspect(value)} (expected a map or keyword list)"
    end
  end

  defp attrs!(value, what),
    do: raise(ArgumentError, "#{what}: #{inspect(value)} (expected a map or keyword list)")

  defp name!(%{name: name}) when is_atom(name) and name not in [nil, true, false], do: name

  defp name!(%{name: name}) do
    raise ArgumentError,
          "invalid value for :name in pool config: #{inspect(name)} (expected an atom such as :default)"
  end

  defp name!(attrs) do
    raise ArgumentError, "missing required key :name in pool config #{inspect(attrs)}"
  end

  defp check_keys!(attrs, allowed, shown, label, ctx) do
    allowed_text = shown |> Enum.sort() |> Enum.map_join(", ", &inspect/1)

    case attrs |> Map.keys() |> Enum.reject(&(&1 in allowed)) |> Enum.sort() do
      [] ->
        :ok

      [key] ->
        raise ArgumentError,
              "unknown #{label} #{inspect(key)} #{ctx}; allowed keys: #{allowed_text}"

      keys ->
        unknown = Enum.map_join(keys, ", ", &inspect/1)
        raise ArgumentError, "unknown #{label}s #{unknown} #{ctx}; allowed keys: #{allowed_text}"
    end
  end

  defp heartbeat!(value, ctx) when is_map(value) or is_list(value) do
    attrs = attrs!(value, "invalid value for :heartbeat #{ctx}")
    keys = Keyword.keys(@heartbeat_fields)
    check_keys!(attrs, keys, keys, "heartbeat key", ctx)
    heartbeat_ctx = "in :heartbeat #{ctx}"

    Map.new(attrs, fn {key, field_value} ->
      {key, value!(field_value, Keyword.fetch!(@heartbeat_fields, key), key, heartbeat_ctx)}
    end)
  end

  defp heartbeat!(value, ctx) do
    expected = "a map or keyword list of heartbeat options"
    raise ArgumentError, invalid_message(:heartbeat, value, expected, ctx)
  end

  ## Value validation

  defp value!(value, kind, key, ctx) do
    case validate(kind, value) do
      {:ok, valid} -> valid
      {:error, expected} -> raise ArgumentError, invalid_message(key, value, expected, ctx)
    end
  end

  defp invalid_message(key, value, expected, ctx) do
    "invalid value for #{inspect(key)} #{ctx}: #{inspect(value)} (expected #{expected})"
  end

  defp validate(:pos_integer, value) when is_integer(value) and value > 0, do: {:ok, value}
  defp validate(:pos_integer, _value), do: {:error, "a positive integer"}

  defp validate(:non_neg_integer, value) when is_integer(value) and value >= 0, do: {:ok, value}
  defp validate(:non_neg_integer, _value), do: {:error, "a non-negative integer"}

  defp validate(:boolean, value) when is_boolean(value), do: {:ok, value}
  defp validate(:boolean, _value), do: {:error, "true or false"}

  defp validate({:one_of, allowed}, value) do
    case value in allowed do
      true -> {:ok, value}
      false -> {:error, "one of " <> Enum.map_join(allowed, ", ", &inspect/1)}
    end
  end

  defp validate(:module, value) when is_atom(value) and value not in [nil, true, false],
    do: {:ok, value}

  defp validate(:module, _value), do: {:error, "a module name (an atom)"}

  defp validate(:optional_string, nil), do: {:ok, nil}
  defp validate(:optional_string, value) when is_binary(value) and value != "", do: {:ok, value}
  defp validate(:optional_string, _value), do: {:error, "nil or a non-empty string"}

  defp validate(:string_list, value) when is_list(value) do
    case Enum.all?(value, &is_binary/1) do
      true -> {:ok, value}
      false -> {:error, "a list of strings"}
    end
  end

  defp validate(:string_list, _value), do: {:error, "a list of strings"}

  defp validate(:ttl, :infinity), do: {:ok, :infinity}

  defp validate(:ttl, {count, unit} = ttl)
       when is_integer(count) and count > 0 and unit in [:seconds, :minutes, :hours],
       do: {:ok, ttl}

  defp validate(:ttl, _value),
    do: {:error, ":infinity or {n, :seconds | :minutes | :hours} with n a positive integer"}

  defp validate(:max_requests, :infinity), do: {:ok, :infinity}
  defp validate(:max_requests, value) when is_integer(value) and value > 0, do: {:ok, value}
  defp validate(:max_requests, _value), do: {:error, ":infinity or a positive integer"}

  defp validate(:log_level, nil), do: {:ok, nil}
  defp validate(:log_level, :warn), do: {:ok, :warning}
  defp validate(:log_level, value), do: validate({:one_of, @log_levels}, value)

  defp validate(:env, value) when is_map(value) or is_list(value) do
    entries = Enum.map(value, &env_entry/1)

    case Enum.member?(entries, :error) do
      false -> {:ok, entries}
      true -> {:error, env_expectation()}
    end
  end

  defp validate(:env, _value), do: {:error, env_expectation()}

  defp env_expectation do
    "a list of {\"NAME\", \"value\"} string pairs, or a map or keyword list with string values; " <>
      "names must be non-empty without \"=\" and no part may contain a NUL byte"
  end

  defp env_entry({name, value}) when is_atom(name) and name not in [nil, true, false],
    do: env_entry({Atom.to_string(name), value})

  defp env_entry({name, value}) when is_binary(name) and is_binary(value) do
    case name != "" and not String.contains?(name, ["=", <<0>>]) and
           not String.contains?(value, <<0>>) do
      true -> {name, value}
      false -> :error
    end
  end

  defp env_entry(_entry), do: :error
end
